"""``agent report``: the SM monthly report from a month of audit log and check history written by the agent's own
writers (AuditLog, CheckHistory), in all three formats, read back and checked figure by figure."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import types
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

import agent.state.audit as audit_module
from agent.checks import CheckStatus
from agent.checks.history import CheckHistory
from agent.cli import main
from agent.state.audit import AuditLog
from agent.state.monthly import (
    TABLES,
    InvalidMonth,
    Month,
    build_report,
    duration_words,
    parse_month,
)
from agent.state.monthly_export import chart_svg, to_csv, to_html
from tests.test_layers import IO_LIBRARIES, MODULES, _closure, _imports, _top

KST = ZoneInfo("Asia/Seoul")
INJECTED = '=HYPERLINK("http://example.invalid","x")'


def kst(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> float:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=KST).timestamp()


class FakeClock:
    """The audit writer's clock (``time.time``), set by the test: entries land in November 2026."""

    def __init__(self) -> None:
        self.now = kst(1)

    def module(self) -> types.SimpleNamespace:
        import time

        return types.SimpleNamespace(time=lambda: self.now, sleep=time.sleep, monotonic=time.monotonic)


def _host(host: str, status: str = "SUCCESS", code: int | None = 0, duration: float = 1.5) -> dict[str, Any]:
    return {
        "host": host,
        "status": status,
        "exit_code": code,
        "duration": duration,
        "output_sha256": "0" * 64,
    }


def _run(
    log: AuditLog, task: str, runbook: str, hosts: list[dict[str, Any]], user: str = "kim", **extra: Any
) -> None:
    """A ``run`` entry as the run gate writes it (agent/runs/gate.py)."""
    log.append("run", task_id=task, runbook=runbook, via="chat", user_id=user, room_id="ops", **extra,
               script_sha256="a" * 64, argv_count=2, args={}, hosts=hosts)  # fmt: skip


def write_month(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """November 2026 (KST), with a little of October and December around it."""
    clock = FakeClock()
    monkeypatch.setattr(audit_module, "time", clock.module())
    log = AuditLog(state / "audit.jsonl")

    def at(moment: float) -> AuditLog:
        clock.now = moment
        return log

    _run(at(kst(31, 23, 30, month=10)), "t-oct", "disk_usage", [_host("was01")])
    for task, day in (("t-1", 2), ("t-2", 5), ("t-3", 10)):
        _run(at(kst(day, 9)), task, "disk_usage", [_host("was01"), _host("was02", duration=2.5)])
    at(kst(12, 10)).append("approval_requested", task_id="t-4", requester="park",
                           request={"runbook": "restart_was", "hosts": ["was01"], "args": {"mode": "graceful"}})  # fmt: skip
    at(kst(12, 10, 5)).append(
        "approval_decided", task_id="t-4", requester="park", approver="lee", decision="approved"
    )
    _run(
        at(kst(12, 10, 6)),
        "t-4",
        "restart_was",
        [_host("was01", "FAIL", 1, 30.0)],
        user="park",
        approved_by="lee",
    )
    at(kst(13, 11)).append("approval_requested", task_id="t-5", requester=INJECTED,
                           request={"runbook": "restart_was", "hosts": ["was01", "was02"], "args": {}})  # fmt: skip
    at(kst(13, 11, 2)).append(
        "approval_decided", task_id="t-5", requester=INJECTED, approver="lee", decision="rejected"
    )
    _run(at(kst(15, 16)), "t-6", "tail_log", [_host("was02", "TIMEOUT", None, 60.0)])
    at(kst(16, 8)).append("run_refused", task_id="t-7", runbook="disk_usage", via="chat", user_id="kim",
                          room_id="ops", reason="not allowed in this room")  # fmt: skip
    _run(at(kst(1, 0, 10, month=12)), "t-dec", "disk_usage", [_host("was01")])
    log.close()

    history = CheckHistory(state / "checks.jsonl")
    moment = kst(1)
    while moment < kst(1, 0, 30, month=12):
        was = CheckStatus.DOWN if kst(3, 14) <= moment < kst(3, 15, 30) else CheckStatus.OK
        was = CheckStatus.WARN if kst(7, 1) <= moment < kst(7, 2) else was
        db = CheckStatus.ERROR if kst(20, 9) <= moment < kst(20, 9, 20) else CheckStatus.OK
        db = CheckStatus.DOWN if moment >= kst(30, 23, 50) else db
        clock.now = moment
        history.record("was", was, moment)
        history.record("db", db, moment)
        moment += 600
    history.flush()


@pytest.fixture
def month_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "var"
    write_month(state, monkeypatch)
    monkeypatch.undo()
    (tmp_path / "agent.toml").write_text('[state]\ndir = "var"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENT_CONFIG", raising=False)
    return tmp_path


def agent(home: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["--config", str(home / "agent.toml"), "report", *args], catch_exceptions=False
    )


# -- expected figures (write_month) --------------------------------------------------------------------------

RUNBOOKS = [
    ("disk_usage", 3, 3, 0, 1, 2, 2.5),
    ("restart_was", 1, 0, 1, 0, 1, 30.0),
    ("tail_log", 1, 0, 1, 0, 1, 60.0),
]
SERVERS = [("was01", 4, 3, 1, 0, 0, 0), ("was02", 4, 3, 0, 1, 0, 0)]
FAILURES = [
    ("2026-11-12 10:06", "restart_was", "was01", "실패", 1, "park", "lee", "t-4"),
    ("2026-11-15 16:00", "tail_log", "was02", "시간 초과", None, "kim", "", "t-6"),
]
APPROVALS = [
    ("2026-11-12 10:00", "restart_was", "was01", "park", "승인", "lee", "2026-11-12 10:05", "t-4"),
    ("2026-11-13 11:00", "restart_was", "was01, was02", INJECTED, "반려", "lee", "2026-11-13 11:02", "t-5"),
]
INCIDENTS = [
    ("was", "장애", "2026-11-03 14:00", "2026-11-03 15:30", "1시간 30분", 90.0),
    ("db", "오류", "2026-11-20 09:00", "2026-11-20 09:20", "20분", 20.0),
    ("db", "장애", "2026-11-30 23:50", "월말까지 복구되지 않음", "10분", 10.0),
]
#: 30 days of a run every 10 minutes: 4320 runs per check.
AVAILABILITY = [
    ("db", 4320, 4317, 0, 1, 2, round(100 * 4317 / 4320, 2), 2, "30분"),
    ("was", 4320, 4305, 6, 9, 0, round(100 * 4311 / 4320, 2), 1, "1시간 30분"),
]


def _cells(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in rows]


def test_the_month_builds_the_tables_an_sm_report_needs(month_home: Path) -> None:
    from agent.cli.report import AUDIT_KINDS, read_records

    audit, problems = read_records(month_home / "var" / "audit.jsonl", AUDIT_KINDS)
    history, more = read_records(month_home / "var" / "checks.jsonl", None)
    assert problems == more == []
    report = build_report(parse_month("2026-11"), audit, history, kst(8, month=12))
    assert [t.key for t in report.tables] == [k for k in TABLES if k != "problems"]
    assert _cells(report.table("runbooks").rows) == RUNBOOKS
    assert _cells(report.table("servers").rows) == SERVERS
    assert _cells(report.table("failures").rows) == FAILURES
    assert _cells(report.table("approvals").rows) == APPROVALS
    assert _cells(report.table("incidents").rows) == INCIDENTS
    assert _cells(report.table("availability").rows) == AVAILABILITY
    summary = dict(report.table("summary").rows)
    assert summary["기간"] == "2026-11-01 ~ 2026-11-30 (KST)"
    assert (summary["실행"], summary["실패한 실행"], summary["장애"]) == ("5건", "2건", "3건")
    assert summary["승인 요청"] == "2건 (승인 1, 반려 1)"
    assert not report.empty
    was = next(c for c in report.charts if c.check == "was")
    assert len(was.days) == 30 and dict(was.days)[dt.date(2026, 11, 3)] == round(100 * 135 / 144, 2)
    assert dict(was.days)[dt.date(2026, 11, 4)] == 100.0


def test_xlsx_has_a_sheet_per_table_with_the_figures(month_home: Path) -> None:
    result = agent(month_home, "--month", "2026-11", "--format", "xlsx", "--out", "nov.xlsx")
    assert result.exit_code == 0, result.output
    assert "report written: nov.xlsx" in result.output
    book = openpyxl.load_workbook(month_home / "nov.xlsx")
    titles = [TABLES[k][0] for k in TABLES if k != "problems"]
    assert book.sheetnames == titles

    def rows(key: str) -> list[tuple[Any, ...]]:
        sheet = book[TABLES[key][0]]
        got = list(sheet.iter_rows(values_only=True))
        assert got[0] == TABLES[key][1]
        return [tuple(r) for r in got[1:] if any(v is not None for v in r)]

    assert rows("runbooks") == RUNBOOKS
    assert rows("servers") == SERVERS
    assert rows("failures") == [tuple("" if v == "" else v for v in r) for r in _xl(FAILURES)]
    assert rows("approvals") == _xl(APPROVALS)
    assert rows("incidents") == INCIDENTS
    assert rows("availability") == AVAILABILITY
    injected = book[TABLES["approvals"][0]]["D3"]
    assert injected.value == INJECTED and injected.data_type == "s"  # text, never a formula


def _xl(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """openpyxl reads an empty string cell back as None."""
    return [tuple(None if v == "" else v for v in row) for row in rows]


def _csv_sections(data: bytes) -> dict[str, list[list[str]]]:
    assert data.startswith(b"\xef\xbb\xbf")
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for row in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")):
        if len(row) == 1 and row[0].startswith("[") and row[0].endswith("]"):
            current = sections.setdefault(row[0][1:-1], [])
        elif row and current is not None:
            current.append(row)
        elif not row:
            current = None
    return sections


def test_csv_is_one_utf8_bom_file_with_a_section_per_table(month_home: Path) -> None:
    result = agent(month_home, "--month", "2026-11", "--format", "csv")
    assert result.exit_code == 0, result.output
    data = (month_home / "guardia-report-2026-11.csv").read_bytes()
    assert b"\r\n" in data
    sections = _csv_sections(data)
    assert list(sections) == [TABLES[k][0] for k in TABLES if k != "problems"]

    def rows(key: str) -> list[list[str]]:
        got = sections[TABLES[key][0]]
        assert tuple(got[0]) == TABLES[key][1]
        return got[1:]

    text = [[("" if v is None else f"{v:.2f}" if isinstance(v, float) and i == 6 else str(v))
             for i, v in enumerate(row)] for row in AVAILABILITY]  # fmt: skip
    assert rows("availability") == text
    assert rows("runbooks")[0] == ["disk_usage", "3", "3", "0", "1", "2", "2.5"]
    assert rows("approvals")[1][3] == "'" + INJECTED  # quoted: Excel shows it, never runs it
    assert [r[3] for r in rows("incidents")] == [
        "2026-11-03 15:30",
        "2026-11-20 09:20",
        "월말까지 복구되지 않음",
    ]


class _Page(HTMLParser):
    """Tables by section id, the SVG bars per chart, and anything that would load or run something."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.bars: dict[str, list[tuple[str, float]]] = {}
        self.loads: list[str] = []
        self._section = ""
        self._chart = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "link", "img", "iframe", "object") or "src" in found or "href" in found:
            self.loads.append(tag)
        if tag == "section":
            self._section = found.get("id") or ""
        elif tag == "figure":
            self._chart = found.get("data-check") or ""
            self.bars[self._chart] = []
        elif tag == "rect" and found.get("class") == "day":
            self.bars[self._chart].append((found["data-day"] or "", float(found["data-share"] or 0)))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_is_one_page_with_the_tables_and_a_chart_per_check(month_home: Path) -> None:
    result = agent(month_home, "--month", "2026-11", "--format", "html", "--out", "nov.html")
    assert result.exit_code == 0, result.output
    page = _Page()
    page.feed((month_home / "nov.html").read_text(encoding="utf-8"))
    assert page.loads == []  # no script, no external asset
    assert page.tables["runbooks"][0] == list(TABLES["runbooks"][1])
    assert page.tables["runbooks"][1:] == [[str(v) for v in row] for row in RUNBOOKS]
    assert page.tables["incidents"][1][4] == "1시간 30분"
    assert page.tables["approvals"][2][3] == INJECTED  # escaped text in HTML
    assert set(page.bars) == {"db", "was"}
    was = dict(page.bars["was"])
    assert len(was) == 30 and was["2026-11-03"] == round(100 * 135 / 144, 2) and was["2026-11-04"] == 100.0


def test_a_month_with_nothing_gives_a_report_that_says_so(month_home: Path) -> None:
    result = agent(month_home, "--month", "2026-06", "--format", "csv", "--out", "june.csv")
    assert result.exit_code == 0, result.output
    assert "nothing was recorded" in result.output and "기록이 없어" in result.output
    sections = _csv_sections((month_home / "june.csv").read_bytes())
    assert ["이 기간에 기록된 실행, 승인, 점검 결과가 없습니다."] in sections["요약"]
    assert sections["실패 목록"][1:] == [["이 기간에 해당하는 기록이 없습니다."]]


@pytest.mark.parametrize(
    ("month", "words"),
    [
        ("2026-13", "not a month"),
        ("26-11", "not a month"),
        ("november", "not a month"),
        ("2999-01", "not begun"),
    ],
)
def test_a_bad_month_is_a_clear_error_not_a_traceback(month_home: Path, month: str, words: str) -> None:
    result = agent(month_home, "--month", month)
    assert result.exit_code == 2
    assert words in result.output and ("잘못된 달" in result.output or "시작되지 않은" in result.output)
    assert "Traceback" not in result.output and not list(month_home.glob("guardia-report-*"))


@pytest.mark.parametrize("damage", ["edit", "garbage"])
def test_a_tampered_or_unreadable_line_stops_the_report_unless_asked(month_home: Path, damage: str) -> None:
    path = month_home / "var" / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "edit":
        lines[3] = lines[3].replace(b'"user_id":"kim"', b'"user_id":"someone-else"')
        assert b"someone-else" in lines[3]
    else:
        lines.insert(5, b"{not json\n")
    path.write_bytes(b"".join(lines))
    refused = agent(month_home, "--month", "2026-11", "--format", "csv")
    assert refused.exit_code == 1
    assert (
        "do not verify" in refused.output
        and "검증에 실패" in refused.output
        and "audit.jsonl" in refused.output
    )
    assert "Traceback" not in refused.output and not (month_home / "guardia-report-2026-11.csv").exists()
    forced = agent(month_home, "--month", "2026-11", "--format", "csv", "--unverified")
    assert forced.exit_code == 0, forced.output
    sections = _csv_sections((month_home / "guardia-report-2026-11.csv").read_bytes())
    problems = sections["기록 검증 문제"][1:]
    assert problems and all(row[0] == "audit.jsonl" for row in problems)


def test_no_records_at_all_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "agent.toml").write_text('[state]\ndir = "var"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = agent(tmp_path, "--month", "2026-11")
    assert result.exit_code == 1 and "no audit log or check history" in result.output


def test_the_report_modules_are_pure_and_only_the_report_loads_openpyxl() -> None:
    for module in ("agent.state.monthly", "agent.state.monthly_export"):
        reached = {module, *_closure(module)}
        libraries = {name: {_top(i) for i in _imports(MODULES[name])} & IO_LIBRARIES for name in reached}
        assert {name: libs for name, libs in libraries.items() if libs} == {}
    importers = sorted(
        name for name, path in MODULES.items() if "openpyxl" in {_top(i) for i in _imports(path)}
    )
    assert importers == ["agent.state.monthly_export"]
    root = (MODULES["agent.cli.root"]).read_text(encoding="utf-8")
    assert "monthly" not in root  # the command imports the report modules when it runs


@given(st.text(max_size=12))
def test_parse_month_gives_a_month_or_the_documented_error(text: str) -> None:
    try:
        month = parse_month(text)
    except InvalidMonth as exc:
        assert "YYYY-MM" in str(exc)
    else:
        assert isinstance(month, Month) and 1 <= month.month <= 12 and month.label == text.strip()


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
KINDS = st.sampled_from(["run", "run_refused", "approval_requested", "approval_decided", "approval_cancelled",
                         "approval_expired", "check_status", "check_tally", "other"])  # fmt: skip
ENTRY = st.fixed_dictionaries(
    {"kind": KINDS, "ts": st.floats(kst(1) - 86400, kst(1, month=12) + 86400)},
    optional={
        k: JUNK
        for k in (
            "task_id",
            "runbook",
            "hosts",
            "check",
            "status",
            "hour",
            "runs",
            "down",
            "decision",
            "request",
            "at",
            "approver",
        )
    },
)


@given(st.lists(ENTRY, max_size=12), st.lists(ENTRY, max_size=12))
def test_any_records_give_a_report_never_an_exception(
    audit: list[dict[str, Any]], history: list[dict[str, Any]]
) -> None:
    report = build_report(Month(2026, 11), audit, history, kst(8, month=12))
    assert all(isinstance(row[5], float) and row[5] >= 0 for row in report.table("incidents").rows)
    for writer in (to_csv, to_html):
        assert writer(report)
    for chart in report.charts:
        assert chart_svg(chart).startswith("<svg")


@pytest.mark.parametrize(("seconds", "words"), [(0, "0초"), (59, "59초"), (60, "1분"), (3600, "1시간"),
                                                 (5400, "1시간 30분"), (2 * 86400 + 61, "2일 1분")])  # fmt: skip
def test_durations_in_korean_words(seconds: float, words: str) -> None:
    assert duration_words(seconds) == words


def test_the_history_keeps_changes_at_once_and_counts_per_hour(tmp_path: Path) -> None:
    written: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def __init__(self, path: Path) -> None:
            pass

        def append(self, kind: str, **fields: Any) -> dict[str, Any]:
            written.append((kind, fields))
            return fields

        def close(self) -> None:
            pass

    make: Callable[[Path], Any] = Log
    history = CheckHistory(tmp_path / "checks.jsonl", log=make)
    for minute, status in ((0, "OK"), (10, "OK"), (20, "DOWN"), (30, "DOWN"), (70, "OK")):
        history.record("was", CheckStatus(status), kst(1) + minute * 60)
    history.flush()
    assert [(k, f.get("status")) for k, f in written if k == "check_status"] == [
        ("check_status", "OK"), ("check_status", "DOWN"), ("check_status", "OK")]  # fmt: skip
    tallies = [f for k, f in written if k == "check_tally"]
    assert [(t["hour"], t["runs"], t["ok"], t["down"]) for t in tallies] == [
        (int(kst(1)), 4, 2, 2), (int(kst(1, 1)), 1, 1, 0)]  # fmt: skip
    json.dumps(written)  # what the log gets is plain JSON


def test_an_incident_still_open_now_is_ongoing_and_never_negative(month_home: Path) -> None:
    from agent.cli.report import read_records

    history, _ = read_records(month_home / "var" / "checks.jsonl", None)
    during = build_report(Month(2026, 11), [], history, kst(30, 23, 55))
    assert during.table("incidents").rows[-1] == ("db", "장애", "2026-11-30 23:50", "진행 중", "5분", 5.0)
    before = build_report(Month(2026, 11), [], history, kst(30, 12))  # a clock behind the records
    assert all(isinstance(row[5], float) and row[5] >= 0 for row in before.table("incidents").rows)
