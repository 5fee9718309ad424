"""Serves the operator of an installed agent: ``agent run``, ``audit``, ``checks``, ``config`` and ``redact``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    catalog_of,
    config_of,
    environment_of,
    fail,
    os_user,
    prepare_or_exit,
    print_json,
    run_gate,
)
from agent.errors import ConfigError

# Each command imports what it uses, inside its function: no command but `agent run` loads websockets, APScheduler,
# requests or psycopg2 (benchmarks/bench_process.py).
if TYPE_CHECKING:  # pragma: no cover
    from agent.checks import CheckResult
    from agent.config.schema import AgentConfig


# -- agent run ----------------------------------------------------------------------------------------------


@click.command("run")
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

    config = config_of(ctx)
    prepared = prepare_or_exit(config, print_warnings=False)
    if log_file is not None:
        from agent.state.acl import folder_problems

        if problems := folder_problems([log_file.parent]):  # Windows: the log folder's ACL
            fail("the log folder is not private: " + "; ".join(problems))

    async def serve() -> int:
        try:
            app = App(config)
        except ConfigError as exc:
            fail(str(exc))
        configure_logging(app.redactor, log_level, log_json, log_file)
        log_startup(app.environment, app.catalog.verify())
        for warning in prepared.warnings:
            logging.getLogger("agent").warning("config: %s", warning)
        install_signal_handlers(app.stopping)
        return await app.run()

    sys.exit(asyncio.run(serve()))


# -- agent audit --------------------------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """The keyed, hash-chained audit log."""


@audit.command("verify")
@click.option("--file", "paths", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="Audit log to check (default: audit.jsonl in the config's state dir); a rotated log's files "
                   "oldest first, each --file once, to check them as one chain.")  # fmt: skip
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The chain's key (default: audit.key beside the log).")  # fmt: skip
@click.pass_context
def audit_verify(ctx: click.Context, paths: tuple[Path, ...], key_file: Path | None) -> None:
    """Check that no entry was edited, removed, inserted, reordered or re-chained, and that the log does not end
    before the head the agent last wrote (audit.head). Exit 0 if intact, 1 if not.

    The relay keeps the same head off this PC and tells the rooms when it goes backwards or forks.
    """
    from agent.state.audit import BESIDE, verify_files
    from agent.state.audit_key import AuditKeyError, read_key

    if not paths:
        config = config_of(ctx)
        paths = (config.path(config.state.dir) / "audit.jsonl",)
        if not paths[0].exists():
            fail(f"no audit log at {paths[0]}")
    try:
        key = read_key(key_file) if key_file is not None else BESIDE
        report = verify_files(list(paths), key=key)
    except (AuditKeyError, OSError) as exc:
        fail(f"cannot verify {', '.join(map(str, paths))}: {exc}")
    if report.ok:
        click.echo(f"OK: {report.entries} entries, seq {report.seq}, head {report.head}")
        for note in report.notes:
            click.echo(f"  note: {note}")
        sys.exit(EXIT_OK)
    click.echo(f"BROKEN: {len(report.problems)} problem(s) in {report.entries} entries", err=True)
    for problem in report.problems:
        click.echo(f"  {problem}", err=True)
    for note in report.notes:
        click.echo(f"  note: {note}", err=True)
    sys.exit(EXIT_FAILED)


# -- agent checks -------------------------------------------------------------------------------------------


@click.group()
def checks() -> None:
    """Health and DB checks from the config."""


@checks.command("list")
@click.pass_context
def checks_list(ctx: click.Context) -> None:
    """List configured checks and the schedules that run them."""
    config = config_of(ctx)
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
    config = config_of(ctx)
    if name not in config.checks:
        fail(f"no check named {name!r} (see 'agent checks list')")
    from agent.checks import CheckStatus
    from agent.checks.runner import CheckRunner
    from agent.runs.gate import Via

    catalog = catalog_of(ctx)
    catalog.verify()
    try:
        gate = run_gate(config, catalog)
    except ConfigError as exc:
        fail(str(exc))

    async def go() -> CheckResult:
        try:
            return await CheckRunner(config, gate, gate.environment.environ).run(
                name, via=Via.CLI, user=os_user()
            )
        finally:
            await gate.close()

    result = asyncio.run(go())
    shown = gate.redactor.redact_json(result.to_json())
    if as_json:
        print_json(shown)
    else:
        click.echo(f"{name}: {shown['status']}  {shown['message']}  ({result.duration:.2f}s)")
    sys.exit(EXIT_OK if result.status is CheckStatus.OK else EXIT_FAILED)


# -- agent redact -----------------------------------------------------------------------------------------


@click.command()
@click.option("--runbook", "runbook_name", help="Also apply this runbook's own [[redact]] rules.")
@click.option("--stats", is_flag=True, help="Print how many of each kind were masked to stderr.")
@click.pass_context
def redact(ctx: click.Context, runbook_name: str | None, stats: bool) -> None:
    """Redact standard input to standard output, exactly as the agent redacts what it sends.

    Uses the inventory aliases, secrets (environment and secret files) and rules of the config, so an operator
    can see what a log would look like in the chat room, and a reviewer can test new rules:

        journalctl -u tomcat9 -n 200 | agent -c agent.toml redact --stats
    """
    config = config_of(ctx)
    rules = []
    if runbook_name is not None:
        status = catalog_of(ctx).verify().runbooks.get(runbook_name)
        if status is None or status.manifest is None:
            fail(f"no runbook named {runbook_name!r} with a valid manifest")
        rules = status.manifest.redact
    try:
        redactor = environment_of(config).redactor(rules)
    except ConfigError as exc:
        fail(str(exc))
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


@click.group("config")
def config_group() -> None:
    """Check the agent configuration."""


@config_group.command()
@click.option("--before-start", is_flag=True, help="What the service runs before each start: try no connection, "
              "and fail only for what would keep 'agent run' from starting (exit 2). What the agent reports by itself "
              "once running (a catalog problem, an original action not ready in v0 mode) is listed, exit 0: a WAS or "
              "database that is down must not keep the agent that reports it from starting.")  # fmt: skip
@click.pass_context
def check(ctx: click.Context, before_start: bool) -> None:
    """Validate the config and everything it points to; list every problem at once (exit 2 if any; 1 when it
    would start but a runbook of the catalog would not run, or, with [relay] protocol = "v0", one of the original
    agent's three actions would not work).

    The same check 'agent run' makes before it starts: relay URL and token, files and keys, redaction rules,
    cron lines, the catalog against its lock, and every runbook check against the catalog and inventory. In v0
    mode also FETCH_MES_QC (DB_* set, the table readable), CHECK_INTERNAL_WAS_STATUS (a WAS http check that
    answers) and CHECK_DISK_SPACE (the disk paths exist), each tried under its own timeouts (with --before-start,
    only what the config and environment say: no connection).
    """
    config = config_of(ctx)
    found = prepare_or_exit(config)
    hosts = len(config.inventory.hosts)
    report = found.catalog.report if found.catalog else None
    runnable = len(report.runnable) if report else 0
    summary = (
        f"agent {config.agent_id}, {hosts} host(s), {runnable} runnable runbook(s), "
        f"{len(config.checks)} check(s), {len(config.schedules)} schedule(s)"
    )
    problems = []
    if report is not None and report.problems:  # the agent would start, but not everything would run
        problems.append(
            f"{len(report.problems)} catalog problem(s) above: 'agent runbooks verify' says what to fix"
        )
    if config.relay.protocol == "v0":
        not_ready = _v0_readiness(config, offline=before_start)
        if not_ready:
            problems.append(f"{not_ready} of the original agent's 3 actions not ready in v0 mode (above)")
    if problems and before_start:
        click.echo(f"OK to start: {summary}; it will report: " + "; ".join(problems), err=True)
        return
    if problems:
        click.echo(f"NOT OK: {summary}; " + "; ".join(problems), err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"OK: {summary}")


def _v0_readiness(config: AgentConfig, offline: bool) -> int:
    """Print whether each original action would work (ready on stdout, not ready on stderr); how many would not."""
    from agent.actions.readiness import v0_readiness

    results = asyncio.run(v0_readiness(config, environment_of(config).environ, connect=not offline))
    for result in results:
        if result.ready:
            click.echo(f"v0 {result.action}: ready ({result.why})")
        else:
            click.echo(f"error: v0 {result.action}: not ready: {result.why}", err=True)
    return sum(1 for r in results if not r.ready)
