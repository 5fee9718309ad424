"""Serves every command module of ``agent``: exit codes, error output, the config, catalog and run gate."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent.config.schema import AgentConfig, load_config
from agent.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.store import Catalog
    from agent.config.environment import Environment
    from agent.runs.gate import RunGate
    from agent.shell.prepare import Prepared

#: 0 success; 1 the thing checked is not right, or an unexpected error; 2 usage or configuration error.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PASSPHRASE_ENV = "AGENT_SIGNING_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
OPERATOR_TOKEN_ENV = "AGENT_OPERATOR_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEBUG_ENV = "AGENT_DEBUG"  # set to 1: an unexpected error shows its traceback


def _wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def print_error(message: str, code: int, as_json: bool, problems: list[str] | None = None) -> None:
    """Print one error: ``error: …`` on stderr (problems indented below), or one JSON object on stdout."""
    if as_json:
        answer: dict[str, object] = {"error": message, "exit_code": code}
        if problems:
            answer["problems"] = problems
        click.echo(json.dumps(answer, ensure_ascii=False))
        return
    click.echo(f"error: {message}", err=True)
    for problem in problems or []:
        click.echo(f"  - {problem}", err=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print_error(message, code, _wants_json())
    sys.exit(code)


def config_of(ctx: click.Context) -> AgentConfig:
    state: dict[str, Any] = ctx.ensure_object(dict)
    if "config" not in state:
        try:
            state["config"] = load_config(state.get("config_path"))
        except ConfigError as exc:
            print_error(f"configuration {exc.source} is not valid:", EXIT_USAGE, _wants_json(), exc.problems)
            sys.exit(EXIT_USAGE)
    config: AgentConfig = state["config"]
    return config


def catalog_of(ctx: click.Context) -> Catalog:
    from agent.catalog.store import Catalog

    return Catalog.for_config(config_of(ctx))


def environment_of(config: AgentConfig) -> Environment:
    """The config with this process's environment (after ``--env-file``): the command line's one place for it."""
    from agent.config.environment import Environment

    return Environment(config, os.environ)


def run_gate(config: AgentConfig, catalog: Catalog) -> RunGate:
    """The run gate for a command on the agent PC: the agent's redactor, audit log and output store, a fresh
    executor.

    Raises:
        ConfigError: a key, known_hosts or secret file that cannot be read.
    """
    from agent.runs.executor import Executor
    from agent.runs.gate import RunGate
    from agent.runs.outputs import OutputStore
    from agent.state.audit import AuditLog

    environment = environment_of(config)
    redactor = environment.redactor()
    executor = Executor(config.inventory, config.executor, config.base_dir, environment.environ)
    audit_log = AuditLog(config.path(config.state.dir) / "audit.jsonl", redact=redactor.redact_json)
    return RunGate(environment, catalog, executor, audit_log, redactor, OutputStore.for_config(config))


def prepare_or_exit(config: AgentConfig, print_warnings: bool = True) -> Prepared:
    """Run the prepare step; print warnings (unless the caller logs them); on errors print every one and exit 2."""
    from agent.shell.prepare import prepare

    found = prepare(environment_of(config))
    for warning in found.warnings if print_warnings else []:
        click.echo(f"warning: {warning}", err=True)
    if found.errors:
        click.echo(f"error: configuration is not usable ({len(found.errors)} problem(s)):", err=True)
        for problem in found.errors:
            click.echo(f"  - {problem}", err=True)
        sys.exit(EXIT_USAGE)
    return found


def os_user() -> str:
    """The local OS user running the command (for the audit log)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no user name in the environment or the password database
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error, in the same words on every platform (Windows' texts for socket errors differ by
    version and language, and Wine has none: "windows error 0x2740")."""
    import errno
    import socket

    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    text = exc.strerror or str(exc) or type(exc).__name__
    where = re.search(r"address \(?'?([^,')]+)'?, (\d+)\)?", text)
    at = f" ({where[1]} port {where[2]})" if where else ""
    if exc.errno == errno.EADDRINUSE:
        return f"address already in use{at}: another program listens on that port"
    if exc.errno == errno.EADDRNOTAVAIL or text.startswith("could not bind on any address"):
        return f"cannot assign the requested address{at}: it is not an address of this machine"
    if exc.filename is not None:
        text += f": {exc.filename}"
    return text
