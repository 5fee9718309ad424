"""Serves runbook authors and approvers: ``agent runbooks …`` and ``agent keys generate``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    PASSPHRASE_ENV,
    catalog_of,
    config_of,
    fail,
    os_user,
    print_json,
    run_gate,
)
from agent.errors import ConfigError, InvalidArguments, RequestRefused, RunbookNotRunnable, SigningError
from agent.shell.startup import stdin_is_terminal

# Each command imports what it uses, inside its function: `agent runbooks verify` never loads asyncssh
# (benchmarks/bench_process.py).
if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.lockfile import Lock
    from agent.catalog.store import Catalog, Problem
    from agent.runs.plan import RunPlan
    from agent.runs.results import HostResult, RunResult


# -- agent runbooks ---------------------------------------------------------------------------------------


@click.group()
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
    report = catalog_of(ctx).verify()
    if as_json:
        print_json(report.to_json())
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
    catalog = catalog_of(ctx)
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
            fail(str(exc))
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
        fail(str(exc))
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

    catalog = catalog_of(ctx)
    if not catalog.directory.is_dir():
        fail(f"the runbook folder {catalog.directory} does not exist")
    try:
        findings = catalog.lint()
    except LintError as exc:
        fail(str(exc))
    errors = sum(f.blocking for f in findings)
    if as_json:
        print_json(
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
    catalog = catalog_of(ctx)
    report = catalog.verify()
    blocking = [p for p in report.problems if not p.kind.startswith("signature_")]
    if report.lock is None or blocking:
        click.echo("not signed: the runbooks do not match the lock:", err=True)
        _print_problems(blocking)
        sys.exit(EXIT_FAILED)
    try:
        signed = _sign_lock(report.lock, key_file)
    except SigningError as exc:
        fail(str(exc))
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
    report = catalog_of(ctx).verify()
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
        print_json(rows)
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
    report = catalog_of(ctx).verify()
    status = report.runbooks.get(name)
    if status is None:
        fail(f"no runbook named {name!r} (see 'agent runbooks list')", EXIT_FAILED)
    manifest = status.manifest
    entry = report.lock.runbooks.get(name) if report.lock else None
    problems = [str(p) for p in report.problems_of(name)]
    if as_json:
        print_json(
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
            fail(f"--arg takes KEY=VALUE (got {pair.split('=')[0][:32]!r} without '=')")
        if key in args:
            fail(f"--arg {key} given twice")
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

    config = config_of(ctx)
    catalog = catalog_of(ctx)
    args = _parse_args(arg_pairs)
    report = catalog.verify()
    if not report.ok:
        click.echo(
            f"warning: {len(report.problems)} catalog problem(s); see 'agent runbooks verify'", err=True
        )
    try:
        gate = run_gate(config, catalog)
    except ConfigError as exc:
        fail(str(exc))
    request = RunRequest(name, list(hosts), args, via=Via.CLI, user=os_user())
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
        fail(f"refused: {exc}", EXIT_FAILED)
    if isinstance(result, Held):
        gate.audit.append("run_refused", runbook=result.runbook, via=Via.CLI.value, user_id=request.user,
                         reason="requires approval")  # fmt: skip
        fail(
            f"refused: runbook {result.runbook!r} requires a second person's approval (four eyes), which the "
            "command line cannot give. Request it in the chat room instead (run it there; an approver releases "
            "it with 'approve CODE').",
            EXIT_FAILED,
        )
    if as_json:
        print_json(result.to_json())
    else:
        _print_run(result)
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


# -- agent keys -------------------------------------------------------------------------------------------


@click.group()
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
        fail(f"folder {folder} does not exist; create it first (mkdir {folder})")
    secret: bytes | None = None
    if passphrase:
        text = os.environ.get(PASSPHRASE_ENV)
        if not text and not stdin_is_terminal():
            fail(f"no terminal to ask for a passphrase: set ${PASSPHRASE_ENV}, or pass --no-passphrase")
        text = text or click.prompt("Passphrase", hide_input=True, confirmation_prompt=True)
        secret = text.encode()
    try:
        public_path, line = generate_key_pair(path, comment, secret)
    except SigningError as exc:
        fail(str(exc))
    click.echo(f"wrote {path} (private) and {public_path}")
    click.echo("add this line to catalog.approver_keys in the agent config:")
    click.echo(f"  {line}")
