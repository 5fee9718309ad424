"""Serves whoever installs the agent on a machine: ``agent service`` (install, uninstall, status)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from agent.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, print_error
from agent.shell.startup import stdin_is_terminal

# The work is done by agent.cli.service_install, imported inside each command.


@click.group()
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
        fail(str(exc), EXIT_FAILED)


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
@click.option("--relay", is_flag=True, help="Install the relay (agent relay) instead of the agent: -c names the "
              "relay's TOML, --env its tokens; the service is guardia-relay unless --name says otherwise.")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="--relay: the address it listens on "
              "(behind a reverse proxy that terminates TLS).")  # fmt: skip
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="--relay: its port."
)
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
    relay: bool,
    host: str,
    port: int,
    name: str,
    target: str,
    nssm: str | None,
    root: Path | None,
    dry_run: bool,
) -> None:
    """Install and start the agent (or, with --relay, the relay) as a service, with the config given by -c and the
    secrets in --env.

    The config is checked with those secrets first; a failed step undoes the steps before it and says what, if
    anything, is left to do by hand. Exit 0 installed, 1 a step failed, 2 bad input.

        agent -c C:\\guardia\\agent.toml service install --env C:\\guardia\\secrets.env
        agent -c /opt/guardia-relay/relay.toml service install --relay --env relay.env
    """
    import agent.cli.service_install as svcinstall

    config_path = ctx.ensure_object(dict).get("config_path")
    if config_path is None:
        fail("give the agent's config: agent -c PATH service install …")
    password = None
    platform = _target(target)
    if platform == "windows" and account and account not in ("LocalService", "NT AUTHORITY\\LocalService"):
        password = os.environ.get("AGENT_SERVICE_PASSWORD")
        if password is None and not dry_run:
            if not stdin_is_terminal():
                fail(f"the password of {account}: set $AGENT_SERVICE_PASSWORD (no terminal to ask on)")
            password = click.prompt(f"Password of {account}", hide_input=True)
    # The console script beside this Python: Scripts\\agent.exe on Windows (bin/agent for a dry run elsewhere).
    scripts = Path(sys.executable).absolute().parent
    names = ("agent.exe", "agent") if platform == "windows" else ("agent",)
    agent_exe = next((scripts / n for n in names if (scripts / n).is_file()), scripts / names[0])
    if relay and name == svcinstall.DEFAULT_NAME:
        name = "guardia-relay"
    spec = svcinstall.ServiceSpec(
        agent_exe=agent_exe,
        config=config_path.absolute(),
        env_source=env_source.absolute(),
        name=name,
        account=account,
        password=password,
        start=not no_start,
        relay=svcinstall.RelayListen(host, port) if relay else None,
    )
    problems = svcinstall.check_spec(spec)
    if platform == "linux" and root is None:  # a dry run says what would stop the real install, too
        problems += svcinstall.check_linux_host(spec)
    if problems:
        print_error("cannot install the service:", EXIT_USAGE, False, problems)
        sys.exit(EXIT_USAGE)
    try:
        if platform == "windows":
            exe = svcinstall.find_nssm(nssm)
            if not dry_run and svcinstall.windows_status(name, exe) is not None:
                fail(
                    f"service {name} already exists: 'agent service uninstall --name {name}' first",
                    EXIT_FAILED,
                )
            steps = svcinstall.windows_install_steps(spec, exe)
        else:
            steps = svcinstall.linux_install_steps(spec, root)
    except svcinstall.ServiceError as exc:
        fail(str(exc))
    if dry_run:
        # The config check only reads: a dry run runs it for real, so it says whether the install would get past
        # its first step (a typo in agent.toml, a secret the config names but the --env file lacks).
        try:
            svcinstall.carry_out([svcinstall.config_check_step(spec)], echo=click.echo)
        except svcinstall.ServiceError as exc:
            fail(f"the install would stop at its first step: {exc}", EXIT_FAILED)
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
        fail(f"service name {name!r}: letters, digits, _ and -, starting with a letter")
    try:
        if platform == "windows":
            exe = svcinstall.find_nssm(nssm)
            if not dry_run and svcinstall.windows_status(name, exe) is None:
                fail(f"no service named {name}", EXIT_FAILED)
            config_path = ctx.ensure_object(dict).get("config_path")
            env_path = None
            if not keep_env and config_path is not None:
                env_path = svcinstall.windows_env_path(config_path, name)
            elif not keep_env:  # its folder is the config's: without -c it cannot be found, so say it stays
                click.echo(f"warning: without -c the service's environment file ({name}.env beside agent.toml, "
                           "holding its secrets) is not deleted: rerun with -c, or delete it by hand", err=True)  # fmt: skip
            steps = svcinstall.windows_uninstall_steps(name, exe, env_path)
        else:
            steps = svcinstall.linux_uninstall_steps(name, root, keep_env)
    except svcinstall.ServiceError as exc:
        fail(str(exc))
    _carry_out(steps, dry_run, f"removing service {name} ({platform})")


@service.command("status")
@_NAME
@_PLATFORM
@_NSSM
def service_status(name: str, target: str, nssm: str | None) -> None:
    """Print the service's state. Exit 0 when it is running, 1 when it is not (or not installed)."""
    import agent.cli.service_install as svcinstall

    if not svcinstall.NAME_PATTERN.fullmatch(name):
        fail(f"service name {name!r}: letters, digits, _ and -, starting with a letter")
    try:
        if _target(target) == "windows":
            state = svcinstall.windows_status(name, svcinstall.find_nssm(nssm))
            running = state == "SERVICE_RUNNING"
        else:
            state = svcinstall.linux_status(name)
            running = state == "active"
    except svcinstall.ServiceError as exc:
        fail(str(exc))
    click.echo(f"{name}: {state or 'not installed'}")
    sys.exit(EXIT_OK if running else EXIT_FAILED)
