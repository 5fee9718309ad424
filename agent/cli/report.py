"""``agent report``: the SM monthly report from the audit log and the check history (thin: read, verify, write).

The tables are built by agent/state/monthly.py and written by agent/state/monthly_export.py; both are imported when
the command runs, so no other command loads them (or openpyxl).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from agent.cli.common import EXIT_FAILED, EXIT_OK, config_of, describe_os_error, fail

#: The entry kinds the report reads from the audit log (the rest is left unparsed).
AUDIT_KINDS = frozenset(
    {"run", "run_refused", "approval_requested", "approval_decided", "approval_cancelled", "approval_expired"}
)
#: Problems listed on the screen before "and N more".
SHOWN_PROBLEMS = 10


def read_records(
    path: Path, kinds: frozenset[str] | None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The file's entries of ``kinds`` (None: all) after verifying its chain; and what the verification found.

    A file that does not exist has no entries and no problem. Raises nothing: an unreadable file is a problem.
    """
    from agent.state.audit import verify_chain

    if not path.exists():
        return [], []
    problems: list[tuple[str, str]] = []
    try:
        report = verify_chain(path)
        problems += [(path.name, problem) for problem in report.problems]
    except Exception as exc:  # a key or head file that cannot be read: said, and the entries still read
        problems.append((path.name, f"검증할 수 없음 / cannot verify: {exc}"))
    entries: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except (ValueError, RecursionError):
                    continue  # named by verify_chain
                if isinstance(entry, dict) and (kinds is None or entry.get("kind") in kinds):
                    entries.append(entry)
    except OSError as exc:
        problems.append((path.name, f"읽을 수 없음 / cannot read: {describe_os_error(exc)}"))
    return entries, problems


@click.command("report")
@click.option("--month", required=True, metavar="YYYY-MM",
              help="The month to report, e.g. 2026-11, in the chat timezone ([chat] timezone, KST by default).")  # fmt: skip
@click.option("--format", "form", type=click.Choice(["xlsx", "csv", "html"]), default="xlsx", show_default=True,
              help="xlsx: one sheet per table. csv: ONE file with a section per table ([title] line, headings, "
                   "rows, empty line), UTF-8 with BOM for Excel. html: one page, tables and an inline SVG "
                   "availability chart per check, no script or external file.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (default: guardia-report-YYYY-MM.FORMAT in the current folder).")  # fmt: skip
@click.option("--audit-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The audit log (default: audit.jsonl in the config's state dir).")  # fmt: skip
@click.option("--history-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The check history (default: checks.jsonl in the config's state dir).")  # fmt: skip
@click.option("--unverified", is_flag=True,
              help="Write the report even when a file's chain does not verify; the problems get a table of "
                   "their own in it.")  # fmt: skip
@click.pass_context
def report(
    ctx: click.Context,
    month: str,
    form: str,
    out: Path | None,
    audit_file: Path | None,
    history_file: Path | None,
    unverified: bool,
) -> None:
    """The SM monthly report: runs per runbook and per server, failures, approvals (who approved what),
    incidents (a check DOWN until it was OK again) with durations, and availability per check.

    Built from the audit log and the check history (checks.jsonl, written by scheduled checks), after verifying
    both chains; headings in Korean, times in the chat timezone. A month with nothing recorded gives a report that
    says so. Exit 0: written; 1: a file does not verify (see --unverified) or the report cannot be written;
    2: not a month.
    """
    from zoneinfo import ZoneInfo

    from agent.state.monthly import InvalidMonth, build_report, parse_month
    from agent.state.monthly_export import write_report

    config = config_of(ctx)
    zone = config.chat.timezone
    now = dt.datetime.now(ZoneInfo(zone))
    try:
        chosen = parse_month(month, now)
    except InvalidMonth as exc:
        fail(str(exc))
    state = config.path(config.state.dir)
    audit_path = audit_file or state / "audit.jsonl"
    history_path = history_file or state / "checks.jsonl"
    if not audit_path.exists() and not history_path.exists():
        fail(f"감사 로그도 점검 기록도 없습니다: {audit_path}, {history_path} / "
             f"no audit log or check history at {audit_path}, {history_path}", EXIT_FAILED)  # fmt: skip
    audit, audit_problems = read_records(audit_path, AUDIT_KINDS)
    history, history_problems = read_records(history_path, None)
    problems = audit_problems + history_problems
    if problems and not unverified:
        shown = [f"  {file}: {what}" for file, what in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            shown.append(f"  … {len(problems) - SHOWN_PROBLEMS} more")
        fail("기록 파일의 검증에 실패해 보고서를 만들지 않았습니다 ('agent audit verify --file PATH'로 확인하고, "
             "그래도 만들려면 --unverified) / the records do not verify; no report written "
             "(check with 'agent audit verify --file PATH'; --unverified writes it anyway):\n" + "\n".join(shown),
             EXIT_FAILED)  # fmt: skip
    built = build_report(chosen, audit, history, now.timestamp(), zone, problems)
    target = out or Path(f"guardia-report-{chosen.label}.{form}")
    try:
        write_report(built, form, target)  # type: ignore[arg-type]
    except OSError as exc:
        fail(
            f"보고서를 쓸 수 없습니다 / cannot write the report: {target}: {describe_os_error(exc)}",
            EXIT_FAILED,
        )
    if built.empty:
        click.echo(f"{chosen.label}: 이 달에는 기록이 없어 빈 보고서를 만들었습니다 / nothing was recorded in "
                   f"that month; the report says so: {target}")  # fmt: skip
    else:
        click.echo(f"{chosen.label} 보고서를 만들었습니다 / report written: {target}")
    if problems:
        click.echo(f"검증 문제 {len(problems)}건이 보고서에 실렸습니다 / {len(problems)} problem(s) listed in it",
                   err=True)  # fmt: skip
    sys.exit(EXIT_OK)
