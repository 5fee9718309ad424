"""The ``agent`` command line.

Exit codes: 0 success; 1 the thing checked is not right (a runbook fails verification, a host failed), or an
unexpected internal error; 2 usage or configuration error (a bad option, a missing file or folder, a busy port).
Bad input never ends in a traceback: :func:`entry` turns every error into one line (a JSON object for ``--json``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent import __version__
from agent.config.schema import COMMAND_KEY_ENV, CONFIG_ENV, RELAY_TOKEN_ENV, AgentConfig, load_config
from agent.errors import ConfigError, InvalidArguments, RequestRefused, RunbookNotRunnable, SigningError
from agent.shell.startup import stdin_is_terminal

# Each command imports what it uses, inside its function: `agent runbooks verify` never loads asyncssh, and no
# command but `agent run` loads websockets, APScheduler, requests or psycopg2 (benchmarks/bench_process.py).
if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.lockfile import Lock
    from agent.catalog.store import Catalog, Problem
    from agent.checks import CheckResult
    from agent.redaction import Redactor
    from agent.runs.gate import RunGate
    from agent.runs.plan import RunPlan
    from agent.runs.results import HostResult, RunResult
    from agent.shell.prepare import Prepared

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PASSPHRASE_ENV = "AGENT_SIGNING_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
OPERATOR_TOKEN_ENV = "AGENT_OPERATOR_TOKEN"  # noqa: S105 - the name of a variable, not a secret


DEBUG_ENV = "AGENT_DEBUG"  # set to 1: an unexpected error shows its traceback


def _wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def _error(message: str, code: int, as_json: bool, problems: list[str] | None = None) -> None:
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


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    _error(message, code, _wants_json())
    sys.exit(code)


def _config(ctx: click.Context) -> AgentConfig:
    state: dict[str, Any] = ctx.ensure_object(dict)
    if "config" not in state:
        try:
            state["config"] = load_config(state.get("config_path"))
        except ConfigError as exc:
            _error(f"configuration {exc.source} is not valid:", EXIT_USAGE, _wants_json(), exc.problems)
            sys.exit(EXIT_USAGE)
    config: AgentConfig = state["config"]
    return config


def _catalog(ctx: click.Context) -> Catalog:
    from agent.catalog.store import Catalog

    return Catalog.for_config(_config(ctx))


def _gate(config: AgentConfig, catalog: Catalog, redactor: Redactor) -> RunGate:
    """The run gate for a command on the agent PC: the agent's audit log and output store, a fresh executor.

    Raises:
        ConfigError: a key or known_hosts file that cannot be read.
    """
    from agent.runs.executor import Executor
    from agent.runs.gate import RunGate
    from agent.runs.outputs import OutputStore
    from agent.state.audit import AuditLog

    executor = Executor(config.inventory, config.executor, config.base_dir)
    audit_log = AuditLog(config.path(config.state.dir) / "audit.jsonl", redact=redactor.redact_json)
    return RunGate(config, catalog, executor, audit_log, redactor, OutputStore.for_config(config))


def _prepared(config: AgentConfig, print_warnings: bool = True) -> Prepared:
    """Run the prepare step; print warnings (unless the caller logs them); on errors print every one and exit 2."""
    from agent.shell.prepare import prepare

    found = prepare(config)
    for warning in found.warnings if print_warnings else []:
        click.echo(f"warning: {warning}", err=True)
    if found.errors:
        click.echo(f"error: configuration is not usable ({len(found.errors)} problem(s)):", err=True)
        for problem in found.errors:
            click.echo(f"  - {problem}", err=True)
        sys.exit(EXIT_USAGE)
    return found


def _os_user() -> str:
    """The local OS user running the command (for the audit log)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no user name in the environment or the password database
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="guardia-agent")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"Agent config (TOML). Default: ${CONFIG_ENV}, else built-in defaults relative to the working directory.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AGENT_ENV_FILE",
    help="Read environment variables (KEY=VALUE lines: relay URL, DB_*, tokens) from this file first; "
    "its values win over the inherited environment. The Windows service uses it.",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, env_file: Path | None) -> None:
    """GUARDiA agent: a sandboxed runbook executor for locked-down internal networks.

    It runs only hash-locked, approved scripts from runbooks/ on hosts of its inventory, on command from a chat
    relay it dials out to, and answers with redacted output.

    Exit codes: 0 success, 1 a check failed (verification, a run), 2 usage or configuration error.
    """
    ctx.ensure_object(dict)["config_path"] = config_path
    if env_file is not None:
        from agent.config.envfile import InvalidEnvFile, read_env_file

        try:
            os.environ.update(read_env_file(env_file))
        except InvalidEnvFile as exc:
            _error(f"environment file {env_file} is not valid:", EXIT_USAGE, False, exc.problems)
            sys.exit(EXIT_USAGE)


# -- agent runbooks ---------------------------------------------------------------------------------------


@main.group()
def runbooks() -> None:
    """Inspect, lock, sign and verify the runbook catalog."""


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(f"  {problem}", err=True)


@runbooks.command()
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every script and manifest against runbooks.lock (and its signatures when approver keys are set).

    Exit 0 when everything verifies, 1 when anything does not; each problem is named by runbook and kind.
    """
    report = _catalog(ctx).verify()
    if as_json:
        _print_json(report.to_json())
    elif report.ok:
        signed = f", signed by {', '.join(report.signed_by)}" if report.signed_by else ""
        digest = report.lock.catalog_sha256[:16] if report.lock else ""
        click.echo(f"OK: {len(report.runbooks)} runbooks verify against the lock (catalog {digest}…{signed})")
    else:
        click.echo(
            f"FAILED: {len(report.problems)} problem(s); runnable: {len(report.runnable)} "
            f"of {len(report.runbooks)}",
            err=True,
        )
        _print_problems(report.problems)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


def _sign_lock(lock: Lock, key_file: Path) -> Lock:
    from agent.catalog.signing import load_private_key, sign
    from agent.catalog.store import Catalog

    passphrase_text = os.environ.get(PASSPHRASE_ENV)
    passphrase = passphrase_text.encode() if passphrase_text else None
    try:
        key = load_private_key(key_file, passphrase)
    except SigningError as exc:
        if passphrase is None and "encrypted" in str(exc) and stdin_is_terminal():
            entered = click.prompt(f"Passphrase for {key_file}", hide_input=True)
            key = load_private_key(key_file, entered.encode())
        else:
            raise
    return Catalog.add_signature(lock, sign(key, lock.signed_message()))


@runbooks.command()
@click.option(
    "--sign",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Also sign the lock with this approver private key (passphrase: ${PASSPHRASE_ENV} or a prompt).",
)
@click.pass_context
def lock(ctx: click.Context, key_file: Path | None) -> None:
    """Write runbooks.lock from the runbooks as they are now.

    Refuses (exit 1) while any manifest is invalid or a script has no manifest. Review the diff and commit it;
    signatures survive a re-lock only when nothing changed.
    """
    catalog = _catalog(ctx)
    new_lock, problems = catalog.build_lock()
    if new_lock is None:
        click.echo("not locked: fix these first:", err=True)
        _print_problems(problems)
        sys.exit(EXIT_FAILED)
    if not _lint_gate(catalog):
        sys.exit(EXIT_FAILED)
    if key_file is not None:
        try:
            new_lock = _sign_lock(new_lock, key_file)
        except SigningError as exc:
            _fail(str(exc))
    catalog.write_lock(new_lock)
    signed = f", {len(new_lock.signatures)} signature(s)" if new_lock.signatures else ""
    click.echo(
        f"wrote {catalog.lock_path}: {len(new_lock.runbooks)} runbooks, "
        f"catalog {new_lock.catalog_sha256[:16]}…{signed}"
    )


def _lint_gate(catalog: Catalog) -> bool:
    """Print shellcheck's findings; False (and nothing locked) when any is an error."""
    from agent.catalog.lint import LintError

    try:
        findings = catalog.lint()
    except LintError as exc:
        _fail(str(exc))
    for finding in findings:
        click.echo(f"  {finding}", err=True)
    blocking = [f for f in findings if f.blocking]
    if blocking:
        click.echo(f"not locked: shellcheck found {len(blocking)} error(s); fix them first", err=True)
        return False
    if findings:
        click.echo(f"warning: shellcheck: {len(findings)} warning(s) above; locking anyway", err=True)
    return True


@runbooks.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def lint(ctx: click.Context, as_json: bool) -> None:
    """Run ShellCheck on every runbook script (as its manifest's interpreter).

    Exit 0 when no script has an error-level finding (warnings are printed), 1 when any has, 2 when shellcheck
    cannot run. `agent runbooks lock` runs the same check and refuses to lock on errors.
    """
    from agent.catalog.lint import LintError

    catalog = _catalog(ctx)
    if not catalog.directory.is_dir():
        _fail(f"the runbook folder {catalog.directory} does not exist")
    try:
        findings = catalog.lint()
    except LintError as exc:
        _fail(str(exc))
    errors = sum(f.blocking for f in findings)
    if as_json:
        _print_json(
            [
                {"runbook": f.runbook, "line": f.line, "column": f.column, "level": f.level,
                 "code": f"SC{f.code}", "message": f.message}
                for f in findings
            ]
        )  # fmt: skip
    else:
        for finding in findings:
            click.echo(str(finding))
        click.echo(f"shellcheck: {errors} error(s), {len(findings) - errors} other finding(s)")
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


@runbooks.command("sign")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def sign_command(ctx: click.Context, key_file: Path) -> None:
    """Add an approver's signature to the existing lock, after checking that the runbooks match it.

    Run it on the approver's own machine, in a checkout they reviewed: the private key never goes to the agent PC.
    """
    catalog = _catalog(ctx)
    report = catalog.verify()
    blocking = [p for p in report.problems if not p.kind.startswith("signature_")]
    if report.lock is None or blocking:
        click.echo("not signed: the runbooks do not match the lock:", err=True)
        _print_problems(blocking)
        sys.exit(EXIT_FAILED)
    try:
        signed = _sign_lock(report.lock, key_file)
    except SigningError as exc:
        _fail(str(exc))
    catalog.write_lock(signed)
    click.echo(
        f"signed {catalog.lock_path} (catalog {signed.catalog_sha256[:16]}…), "
        f"{len(signed.signatures)} signature(s)"
    )


@runbooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List runbooks: name, description, targets, whether it changes state, and whether it verifies."""
    report = _catalog(ctx).verify()
    rows: list[dict[str, Any]] = []
    for name, status in sorted(report.runbooks.items()):
        manifest = status.manifest
        rows.append(
            {
                "name": name,
                "description": manifest.description if manifest else "(invalid manifest)",
                "targets": manifest.targets if manifest else [],
                "changes_state": manifest.changes_state if manifest else None,
                "verified": status.verified,
            }
        )
    if as_json:
        _print_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        mark = "ok " if row["verified"] else "BAD"
        state = "changes state" if row["changes_state"] else ""
        click.echo(f"{mark} {row['name']:<{width}}  {row['description']}")
        click.echo(f"    {'':<{width}}  targets: {', '.join(row['targets']) or '-'}  {state}".rstrip())
    if not report.ok:
        click.echo(f"\n{len(report.problems)} problem(s): run 'agent runbooks verify' for details", err=True)


@runbooks.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one runbook: parameters, argv mapping, limits, targets, rooms and hashes."""
    report = _catalog(ctx).verify()
    status = report.runbooks.get(name)
    if status is None:
        _fail(f"no runbook named {name!r} (see 'agent runbooks list')", EXIT_FAILED)
    manifest = status.manifest
    entry = report.lock.runbooks.get(name) if report.lock else None
    problems = [str(p) for p in report.problems_of(name)]
    if as_json:
        _print_json(
            {
                "name": name,
                "verified": status.verified,
                "problems": problems,
                "manifest": manifest.model_dump(mode="json") if manifest else None,
                "argv": manifest.argv_template() if manifest else None,
                "manifest_sha256": status.manifest_sha256,
                "script_sha256": status.script_sha256,
                "locked": entry.model_dump() if entry else None,
            }
        )
        return
    click.echo(f"{name}: {manifest.description if manifest else '(invalid manifest)'}")
    click.echo(f"  verified:      {'yes' if status.verified else 'NO'}")
    for problem in problems:
        click.echo(f"    {problem}")
    if manifest:
        click.echo(f"  interpreter:   {manifest.interpreter}")
        click.echo(
            f"  argv:          {manifest.interpreter} -s -- {' '.join(manifest.argv_template())}".rstrip()
        )
        click.echo(f"  timeout:       {manifest.timeout:g} s")
        click.echo(f"  max output:    {manifest.max_output} bytes per stream")
        click.echo(
            f"  changes state: {'yes (one run per host at a time)' if manifest.changes_state else 'no'}"
        )
        click.echo(f"  targets:       {', '.join(manifest.targets)}")
        click.echo(f"  rooms:         {', '.join(manifest.rooms) or '(none: command line only)'}")
        click.echo("  parameters:" if manifest.params else "  parameters:    (none)")
        for param in manifest.params:
            need = "required" if param.is_required else f"default {getattr(param, 'default', None)!r}"
            click.echo(f"    {param.name} ({need}): {param.describe()}")
            if param.help:
                click.echo(f"        {param.help}")
    click.echo(f"  script sha256:   {status.script_sha256 or '-'}")
    click.echo(f"  manifest sha256: {status.manifest_sha256 or '-'}")


def _parse_args(pairs: tuple[str, ...]) -> dict[str, str]:
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--arg takes KEY=VALUE (got {pair.split('=')[0][:32]!r} without '=')")
        if key in args:
            _fail(f"--arg {key} given twice")
        args[key] = value
    return args


def _print_run(result: RunResult) -> None:
    from agent.runs.results import Outcome

    for host in result.hosts:
        code = "-" if host.exit_code is None else str(host.exit_code)
        note = f"  {host.message}" if host.message else ""
        cut = "  (output truncated)" if host.truncated else ""
        click.echo(f"== {host.host}: {host.status.value}  exit={code}  {host.duration:.2f}s{note}{cut}")
        if host.stdout:
            click.echo(host.stdout.rstrip("\n"))
        if host.stderr:
            click.echo("-- stderr:")
            click.echo(host.stderr.rstrip("\n"))
    ok = sum(h.status is Outcome.SUCCESS for h in result.hosts)
    click.echo(f"{result.runbook}: {result.status.value} ({ok} of {len(result.hosts)} hosts succeeded)")


@runbooks.command("run")
@click.argument("name")
@click.option("--host", "hosts", multiple=True, required=True, help="Host alias or group (repeatable).")
@click.option(
    "--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE", help="A parameter value (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def run_command(
    ctx: click.Context, name: str, hosts: tuple[str, ...], arg_pairs: tuple[str, ...], as_json: bool
) -> None:
    """Run a runbook now, exactly as a chat command would: same checks, same redaction.

    Exit 0 only when every host succeeded, 1 when any did not or the request was refused, 2 on usage errors.

        agent runbooks run disk_usage --host was01 --arg mount=/app
    """
    from agent.runs.gate import Held, RunRequest, Via

    config = _config(ctx)
    catalog = _catalog(ctx)
    args = _parse_args(arg_pairs)
    report = catalog.verify()
    if not report.ok:
        click.echo(
            f"warning: {len(report.problems)} catalog problem(s); see 'agent runbooks verify'", err=True
        )
    try:
        gate = _gate(config, catalog, config.redactor())
    except ConfigError as exc:
        _fail(str(exc))
    request = RunRequest(name, list(hosts), args, via=Via.CLI, user=_os_user())
    total = 0
    done = 0

    def accepted(plan: RunPlan) -> None:
        nonlocal total
        total = len(plan.hosts)

    def progress(host: HostResult) -> None:
        nonlocal done
        done += 1
        if total > 1:
            click.echo(f"[{done}/{total}] {host.host}: {host.status.value} ({host.duration:.1f}s)", err=True)

    async def go() -> RunResult | Held:
        try:
            return await gate.run(request, on_accept=accepted, on_host=progress)
        finally:
            await gate.close()

    try:
        result = asyncio.run(go())
    except (RunbookNotRunnable, RequestRefused, InvalidArguments) as exc:
        _fail(f"refused: {exc}", EXIT_FAILED)
    if isinstance(result, Held):
        gate.audit.append("run_refused", runbook=result.runbook, via=Via.CLI.value, user_id=request.user,
                         reason="requires approval")  # fmt: skip
        _fail(
            f"refused: runbook {result.runbook!r} requires a second person's approval (four eyes), which the "
            "command line cannot give. Request it in the chat room instead (run it there; an approver releases "
            "it with 'approve CODE').",
            EXIT_FAILED,
        )
    if as_json:
        _print_json(result.to_json())
    else:
        _print_run(result)
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


# -- agent run / relay / audit ------------------------------------------------------------------------------


@main.command("run")
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO", show_default=True
)
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of text.")
@click.option(
    "--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Also log to this file (rotated)."
)
@click.pass_context
def run_agent(ctx: click.Context, log_level: str, log_json: bool, log_file: Path | None) -> None:
    """Run the agent: dial the relay ($EXTERNAL_WS_URL or relay.url) and serve commands until SIGTERM/SIGINT.

    Every log line passes the same redaction as chat answers. Refuses to start (exit 2) on any problem that
    'agent config check' lists; exits 1 if the relay link ever stops by itself.
    """
    from agent.shell.app import App, install_signal_handlers
    from agent.shell.logsetup import configure_logging, log_startup

    config = _config(ctx)
    prepared = _prepared(config, print_warnings=False)

    async def serve() -> int:
        try:
            app = App(config)
        except ConfigError as exc:
            _fail(str(exc))
        configure_logging(app.redactor, log_level, log_json, log_file)
        log_startup(app.config, app.catalog.verify())
        for warning in prepared.warnings:
            logging.getLogger("agent").warning("config: %s", warning)
        install_signal_handlers(app.stopping)
        return await app.run()

    sys.exit(asyncio.run(serve()))


@main.command("relay")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--config", "relay_config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The relay's TOML config: [agents.ID] rooms, offline_wait, notices (docs/protocol.md).",
)  # fmt: skip
def relay_command(host: str, port: int, relay_config: Path | None) -> None:
    """Run the reference relay: agents on /agent, operators on /operator (see docs/protocol.md).

    Tokens: $AGENT_RELAY_TOKEN for agents, $AGENT_OPERATOR_TOKEN for operators (unset: not checked).
    With $AGENT_COMMAND_KEY it signs every command before forwarding it (the agent must have the same key).
    """
    from agent.reference.relay import AGENT_PATH, OPERATOR_PATH, Relay, RelayConfigError, load_relay_settings
    from agent.shell.app import install_signal_handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        settings = load_relay_settings(relay_config) if relay_config else None
    except RelayConfigError as exc:
        _fail(str(exc), EXIT_USAGE)

    async def serve() -> None:
        relay = Relay(
            os.environ.get(RELAY_TOKEN_ENV) or None,
            os.environ.get(OPERATOR_TOKEN_ENV) or None,
            command_key=os.environ.get(COMMAND_KEY_ENV) or None,
            settings=settings,
        )
        bound = await relay.start(host, port)
        click.echo(
            f"relay on ws://{host}:{bound}{AGENT_PATH} (agents) and ws://{host}:{bound}{OPERATOR_PATH}"
        )
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        await stopping.wait()
        await relay.stop()

    asyncio.run(serve())


@main.command("chat")
@click.option(
    "--relay", "relay_url", required=True, help="The relay's operator URL (ws://HOST:PORT/operator)."
)
@click.option("--room", required=True, help="The chat room to speak in.")
@click.option("--user", required=True, help="Who you are in the room (the relay's user_id).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for an answer.")
@click.argument("line", nargs=-1)
def chat_command(relay_url: str, room: str, user: str, timeout: float, line: tuple[str, ...]) -> None:
    """Speak in a room through the relay, as a chat bridge would: one LINE, or an interactive prompt.

    The token comes from $AGENT_OPERATOR_TOKEN. Example: agent chat --relay ws://127.0.0.1:8765/operator
    --room ops --user kim help tail_log. Exit status: 0 when the answer succeeded (or the request is now held for
    an approver), 1 when it failed, 2 for a bad line or relay URL. Like the agent, it refuses a plain ws:// URL to a
    relay that is not on loopback (the operator token would travel in clear text).
    """
    import shlex

    from agent.config.schema import is_loopback_url, ws_url_problems

    problems = ws_url_problems(relay_url)
    if problems:
        _fail(f"--relay: {'; '.join(problems)}", EXIT_USAGE)
    if relay_url.startswith("ws://") and not is_loopback_url(relay_url):
        _fail("--relay: a plain ws:// URL is allowed for a loopback relay only (the operator token would travel "
              "in clear text): use wss://", EXIT_USAGE)  # fmt: skip

    from agent.reference.chat import ChatSession
    from agent.reference.operator_client import OperatorClient

    async def talk() -> int:
        try:
            client = await OperatorClient.connect(relay_url, token=os.environ.get(OPERATOR_TOKEN_ENV) or None)
        except (OSError, TimeoutError, ValueError) as exc:
            _fail(f"cannot reach the relay at {relay_url}: {exc}", EXIT_USAGE)
        except Exception as exc:  # websockets' handshake errors (HTTP 401 and the like)
            _fail(f"the relay refused the connection: {exc}", EXIT_USAGE)
        session = ChatSession(client, room, user, sys.stdout)
        try:
            if not line:
                await session.interactive()
                return 0
            try:
                typed = line[0] if len(line) == 1 else shlex.join(line)  # one quoted LINE, or its words
                answer = await session.ask(typed, timeout=timeout, echo=False, until_held=True)
            except ValueError as exc:
                _fail(str(exc), EXIT_USAGE)
            except TimeoutError:
                _fail(f"no answer within {timeout:g} s", 1)
            held = answer.get("event") == "TASK_PENDING_APPROVAL"
            return 0 if held or answer.get("payload", {}).get("status") == "SUCCESS" else 1
        finally:
            await client.close()

    sys.exit(asyncio.run(talk()))


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Audit log to check (default: audit.jsonl in the config's state dir).")  # fmt: skip
@click.pass_context
def audit_verify(ctx: click.Context, path: Path | None) -> None:
    """Check that no entry was edited, removed, inserted or reordered. Exit 0 if intact, 1 if not.

    Record the printed head hash elsewhere: entries cut from the end can only be detected against it.
    """
    from agent.state.audit import verify_chain

    if path is None:
        config = _config(ctx)
        path = config.path(config.state.dir) / "audit.jsonl"
        if not path.exists():
            _fail(f"no audit log at {path}")
    report = verify_chain(path)
    if report.ok:
        click.echo(f"OK: {report.entries} entries, head {report.head}")
        sys.exit(EXIT_OK)
    click.echo(f"BROKEN: {len(report.problems)} problem(s) in {report.entries} entries", err=True)
    for problem in report.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_FAILED)


# -- agent demo -------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--interactive", is_flag=True, help="Type chat commands yourself instead of the scripted scenes."
)
@click.option("-v", "--verbose", is_flag=True, help="Also show the agent's own log (INFO).")
@click.option(
    "--language", type=click.Choice(["ko", "en"]), default="ko", show_default=True,
    help="The chat language ([chat] language) of the demo's agent and transcript.",
)  # fmt: skip
def demo(interactive: bool, verbose: bool, language: str) -> None:
    """See the whole path work on this machine, in ~10 s, on loopback only.

    Starts the reference relay, an embedded SSH host and the agent with a temp copy of the bundled runbooks, then
    plays a chat conversation: a runbook that succeeds, a hostile argument refused, a tampered script refused, a
    timeout, and a scheduled report nobody asked for. Nothing outside a temp folder is touched.
    """
    from agent.reference.demo import run_demo

    sys.exit(run_demo(interactive=interactive, verbose=verbose, language=language))


# -- agent checks -------------------------------------------------------------------------------------------


@main.group()
def checks() -> None:
    """Health and DB checks from the config."""


@checks.command("list")
@click.pass_context
def checks_list(ctx: click.Context) -> None:
    """List configured checks and the schedules that run them."""
    config = _config(ctx)
    scheduled: dict[str, list[str]] = {}
    for schedule in config.schedules:
        when = f"every {schedule.interval:g} s" if schedule.interval else f"cron {schedule.cron}"
        for name in schedule.checks:
            scheduled.setdefault(name, []).append(f"{schedule.name} ({when}, {schedule.notify})")
    if not config.checks:
        click.echo("no checks configured ([checks.NAME] in the config)")
    for name, spec in config.checks.items():
        click.echo(f"{name:<20} {spec.kind:<8} {', '.join(scheduled.get(name, [])) or 'on demand only'}")
    for schedule in config.schedules:
        if schedule.kind == "summary":
            click.echo(
                f"{'(summary)':<20} {'':<8} {schedule.name} (cron {schedule.cron or schedule.interval})"
            )


@checks.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def checks_run(ctx: click.Context, name: str, as_json: bool) -> None:
    """Run one check now and print its result. Exit 0 only when it is OK (1 for WARN, DOWN or ERROR)."""
    config = _config(ctx)
    if name not in config.checks:
        _fail(f"no check named {name!r} (see 'agent checks list')")
    from agent.checks import CheckStatus
    from agent.checks.runner import CheckRunner
    from agent.runs.gate import Via

    catalog = _catalog(ctx)
    catalog.verify()
    try:
        redactor = config.redactor()
        gate = _gate(config, catalog, redactor)
    except ConfigError as exc:
        _fail(str(exc))

    async def go() -> CheckResult:
        try:
            return await CheckRunner(config, gate).run(name, via=Via.CLI, user=_os_user())
        finally:
            await gate.close()

    result = asyncio.run(go())
    shown = redactor.redact_json(result.to_json())
    if as_json:
        _print_json(shown)
    else:
        click.echo(f"{name}: {shown['status']}  {shown['message']}  ({result.duration:.2f}s)")
    sys.exit(EXIT_OK if result.status is CheckStatus.OK else EXIT_FAILED)


# -- agent keys -------------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Approver keys for signing runbooks.lock."""


@keys.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--comment", default="", help="Name shown for this key (e.g. the approver's name).")
@click.option(
    "--passphrase/--no-passphrase",
    default=True,
    show_default=True,
    help="Encrypt the private key with a passphrase (prompted, or from $" + PASSPHRASE_ENV + ").",
)
def generate(path: Path, comment: str, passphrase: bool) -> None:
    """Make an approver key pair: PATH (private; keep it off the agent PC) and PATH.pub.

    Put the line in PATH.pub into the agent config's catalog.approver_keys.
    """
    from agent.catalog.signing import generate_key_pair

    folder = path.absolute().parent
    if not folder.is_dir():
        _fail(f"folder {folder} does not exist; create it first (mkdir {folder})")
    secret: bytes | None = None
    if passphrase:
        text = os.environ.get(PASSPHRASE_ENV)
        if not text and not stdin_is_terminal():
            _fail(f"no terminal to ask for a passphrase: set ${PASSPHRASE_ENV}, or pass --no-passphrase")
        text = text or click.prompt("Passphrase", hide_input=True, confirmation_prompt=True)
        secret = text.encode()
    try:
        public_path, line = generate_key_pair(path, comment, secret)
    except SigningError as exc:
        _fail(str(exc))
    click.echo(f"wrote {path} (private) and {public_path}")
    click.echo("add this line to catalog.approver_keys in the agent config:")
    click.echo(f"  {line}")


# -- agent redact -----------------------------------------------------------------------------------------


@main.command()
@click.option("--runbook", "runbook_name", help="Also apply this runbook's own [[redact]] rules.")
@click.option("--stats", is_flag=True, help="Print how many of each kind were masked to stderr.")
@click.pass_context
def redact(ctx: click.Context, runbook_name: str | None, stats: bool) -> None:
    """Redact standard input to standard output, exactly as the agent redacts what it sends.

    Uses the inventory aliases, secrets (environment and secret files) and rules of the config, so an operator
    can see what a log would look like in the chat room, and a reviewer can test new rules:

        journalctl -u tomcat9 -n 200 | agent -c agent.toml redact --stats
    """
    config = _config(ctx)
    rules = []
    if runbook_name is not None:
        status = _catalog(ctx).verify().runbooks.get(runbook_name)
        if status is None or status.manifest is None:
            _fail(f"no runbook named {runbook_name!r} with a valid manifest")
        rules = status.manifest.redact
    try:
        redactor = config.redactor(rules)
    except ConfigError as exc:
        _fail(str(exc))
    stream = redactor.stream()
    out = sys.stdout.buffer
    read = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
    while chunk := read(64 * 1024):
        out.write(stream.feed(chunk))
        out.flush()
    out.write(stream.finish())
    out.flush()
    if stats:
        summary = ", ".join(f"{rule}: {n}" for rule, n in sorted(stream.counts.items())) or "nothing"
        click.echo(f"masked: {summary}", err=True)


# -- agent config -----------------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Check the agent configuration."""


@config_group.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the config and everything it points to; list every problem at once (exit 2 if any).

    The same check 'agent run' makes before it starts: relay URL and token, files and keys, redaction rules,
    cron lines, the catalog against its lock, and every runbook check against the catalog and inventory.
    """
    config = _config(ctx)
    found = _prepared(config)
    hosts = len(config.inventory.hosts)
    runnable = len(found.catalog.report.runnable) if found.catalog else 0
    click.echo(
        f"OK: agent {config.agent_id}, {hosts} host(s), {runnable} runnable runbook(s), "
        f"{len(config.checks)} check(s), {len(config.schedules)} schedule(s)"
    )


# -- agent service ----------------------------------------------------------------------------------------


@main.group()
def service() -> None:
    """Install the agent as a service: NSSM on Windows, a hardened systemd unit on Linux."""


_PLATFORM = click.option(
    "--platform",
    "target",
    type=click.Choice(["auto", "windows", "linux"]),
    default="auto",
    show_default=True,
    help="Which service manager (auto: this machine's). For dry runs and tests.",
)
_NAME = click.option("--name", default="guardia-agent", show_default=True, help="Service name.")
_NSSM = click.option("--nssm", help="Path of nssm.exe (default: nssm on PATH). Windows.")
_ROOT = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Linux: write under this folder instead of / (systemctl --root; nothing is started).",
)
_DRY_RUN = click.option(
    "--dry-run",
    is_flag=True,
    help="Print every step (exact argument lists); change nothing. An install's config check (read-only) is run.",
)


def _target(target: str) -> str:
    if target != "auto":
        return target
    return "windows" if sys.platform == "win32" else "linux"


def _carry_out(steps: list[Any], dry_run: bool, title: str) -> None:
    from agent.cli.service_install import ServiceError, carry_out

    if dry_run:
        click.echo(f"{title} (dry run; nothing changed):")
        for step in steps:
            click.echo(f"  {step.what}" + (f"\n    {step.show()}" if step.argv else ""))
        return
    click.echo(f"{title}:")
    try:
        carry_out(steps, echo=click.echo)
    except ServiceError as exc:
        _fail(str(exc), EXIT_FAILED)


@service.command("install")
@click.option(
    "--env",
    "env_source",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="KEY=VALUE file with EXTERNAL_WS_URL, AGENT_RELAY_TOKEN, DB_*… (copied where only the service reads it).",
)
@click.option(
    "--account",
    help="Windows: run as this account (DOMAIN\\user; password from $AGENT_SERVICE_PASSWORD or a prompt) "
    "instead of the virtual account NT SERVICE\\NAME. Linux: the user (default guardia).",
)
@click.option("--no-start", is_flag=True, help="Install and enable, but do not start it now.")
@_NAME
@_PLATFORM
@_NSSM
@_ROOT
@_DRY_RUN
@click.pass_context
def service_install(
    ctx: click.Context,
    env_source: Path,
    account: str | None,
    no_start: bool,
    name: str,
    target: str,
    nssm: str | None,
    root: Path | None,
    dry_run: bool,
) -> None:
    """Install and start the agent as a service, with the config given by -c and the secrets in --env.

    The config is checked with those secrets first; a failed step undoes the steps before it and says what, if
    anything, is left to do by hand. Exit 0 installed, 1 a step failed, 2 bad input.

        agent -c C:\\guardia\\agent.toml service install --env C:\\guardia\\secrets.env
    """
    import agent.cli.service_install as svcinstall

    config_path = ctx.ensure_object(dict).get("config_path")
    if config_path is None:
        _fail("give the agent's config: agent -c PATH service install …")
    password = None
    platform = _target(target)
    if platform == "windows" and account and account not in ("LocalService", "NT AUTHORITY\\LocalService"):
        password = os.environ.get("AGENT_SERVICE_PASSWORD")
        if password is None and not dry_run:
            if not stdin_is_terminal():
                _fail(f"the password of {account}: set $AGENT_SERVICE_PASSWORD (no terminal to ask on)")
            password = click.prompt(f"Password of {account}", hide_input=True)
    # The console script beside this Python: Scripts\\agent.exe on Windows (bin/agent for a dry run elsewhere).
    scripts = Path(sys.executable).absolute().parent
    names = ("agent.exe", "agent") if platform == "windows" else ("agent",)
    agent_exe = next((scripts / n for n in names if (scripts / n).is_file()), scripts / names[0])
    spec = svcinstall.ServiceSpec(
        agent_exe=agent_exe,
        config=config_path.absolute(),
        env_source=env_source.absolute(),
        name=name,
        account=account,
        password=password,
        start=not no_start,
    )
    problems = svcinstall.check_spec(spec)
    if platform == "linux" and root is None and not dry_run:
        problems += svcinstall.check_linux_host(spec)
    if problems:
        _error("cannot install the service:", EXIT_USAGE, False, problems)
        sys.exit(EXIT_USAGE)
    try:
        if platform == "windows":
            exe = svcinstall.find_nssm(nssm)
            if not dry_run and svcinstall.windows_status(name, exe) is not None:
                _fail(
                    f"service {name} already exists: 'agent service uninstall --name {name}' first",
                    EXIT_FAILED,
                )
            steps = svcinstall.windows_install_steps(spec, exe)
        else:
            steps = svcinstall.linux_install_steps(spec, root)
    except svcinstall.ServiceError as exc:
        _fail(str(exc))
    if dry_run:
        # The config check only reads: a dry run runs it for real, so it says whether the install would get past
        # its first step (a typo in agent.toml, a secret the config names but the --env file lacks).
        try:
            svcinstall.carry_out([svcinstall.config_check_step(spec)], echo=click.echo)
        except svcinstall.ServiceError as exc:
            _fail(f"the install would stop at its first step: {exc}", EXIT_FAILED)
    _carry_out(steps, dry_run, f"installing service {name} ({platform})")
    if not dry_run:
        click.echo(f"installed {name}; check it with 'agent service status --name {name}'")


@service.command("uninstall")
@click.option("--keep-env", is_flag=True, help="Keep the service's environment file (the secrets).")
@_NAME
@_PLATFORM
@_NSSM
@_ROOT
@_DRY_RUN
@click.pass_context
def service_uninstall(
    ctx: click.Context,
    keep_env: bool,
    name: str,
    target: str,
    nssm: str | None,
    root: Path | None,
    dry_run: bool,
) -> None:
    """Stop and remove the service, and delete its environment file (the agent's folder and var/ stay).

    Exit 0 removed, 1 not installed or a step failed, 2 bad input.
    """
    import agent.cli.service_install as svcinstall

    platform = _target(target)
    if not svcinstall.NAME_PATTERN.fullmatch(name):
        _fail(f"service name {name!r}: letters, digits, _ and -, starting with a letter")
    try:
        if platform == "windows":
            exe = svcinstall.find_nssm(nssm)
            if not dry_run and svcinstall.windows_status(name, exe) is None:
                _fail(f"no service named {name}", EXIT_FAILED)
            config_path = ctx.ensure_object(dict).get("config_path")
            env_path = None
            if not keep_env and config_path is not None:
                env_path = config_path.absolute().parent / f"{name}.env"
            steps = svcinstall.windows_uninstall_steps(name, exe, env_path)
        else:
            steps = svcinstall.linux_uninstall_steps(name, root)
            if keep_env:
                steps = [s for s in steps if not s.what.endswith(".env")]
    except svcinstall.ServiceError as exc:
        _fail(str(exc))
    _carry_out(steps, dry_run, f"removing service {name} ({platform})")


@service.command("status")
@_NAME
@_PLATFORM
@_NSSM
def service_status(name: str, target: str, nssm: str | None) -> None:
    """Print the service's state. Exit 0 when it is running, 1 when it is not (or not installed)."""
    import agent.cli.service_install as svcinstall

    if not svcinstall.NAME_PATTERN.fullmatch(name):
        _fail(f"service name {name!r}: letters, digits, _ and -, starting with a letter")
    try:
        if _target(target) == "windows":
            state = svcinstall.windows_status(name, svcinstall.find_nssm(nssm))
            running = state == "SERVICE_RUNNING"
        else:
            state = svcinstall.linux_status(name)
            running = state == "active"
    except svcinstall.ServiceError as exc:
        _fail(str(exc))
    click.echo(f"{name}: {state or 'not installed'}")
    sys.exit(EXIT_OK if running else EXIT_FAILED)


# -- the entry point: no traceback, ever ------------------------------------------------------------------


def _describe_os_error(exc: OSError) -> str:
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


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code; every error becomes one line (JSON with --json).

    Exit 2 for usage and input errors (a click usage error, a missing file or folder, a busy port, an unknown
    host), 1 for an unexpected error (``AGENT_DEBUG=1`` prints its traceback), 130 for Ctrl-C.
    """
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        code = main.main(args=args, prog_name="agent", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
        if not isinstance(exc.code, int | None):
            click.echo(str(exc.code), err=True)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        hint = ""
        if exc.__class__ is not click.ClickException and getattr(exc, "ctx", None) is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"  # type: ignore[attr-defined]
        _error(exc.format_message() + hint, exc.exit_code, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except OSError as exc:
        _error(_describe_os_error(exc), EXIT_USAGE, as_json)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        _error(
            f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)", EXIT_FAILED, as_json
        )
        return EXIT_FAILED
    return code if isinstance(code, int) else EXIT_OK


def entry() -> NoReturn:
    """The ``agent`` console script."""
    from agent.shell.startup import prepare_process

    prepare_process()
    sys.exit(run_cli())
