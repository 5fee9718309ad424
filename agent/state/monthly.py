"""The SM monthly report's tables, built from parsed records: the audit log's entries and the check history's.

Pure: no file, no clock (the caller passes ``now``). ``agent report`` (agent/cli/report.py) reads and verifies the
files and writes the tables out (agent/state/monthly_export.py: xlsx, csv, html). Headings, titles and words are
Korean, from the tables below (the report is a document, not room text: it does not go through the chat catalogs);
times are in the chat's timezone (KST by default), without seconds.

What each table counts:

* runs: the audit's ``run`` entries (one per runbook run, every host in it); a run failed when a host did not
  succeed; ``run_refused`` entries are counted beside them as refused.
* approvals: ``approval_requested`` and what became of it (``approval_decided``, ``approval_cancelled``,
  ``approval_expired``), by task id.
* incidents: the check history's ``check_status`` entries (agent/checks/history.py): a DOWN or ERROR status up to
  the next OK or WARN one; one still open at the month's end is cut there and marked so.
* availability: the history's hourly ``check_tally`` entries: the share of runs that were not DOWN or ERROR.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

Cell = str | int | float | None

#: Every table: its key (sheet and CSV section), its Korean title, and its Korean column headings.
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "summary": ("요약", ("항목", "값")),
    "runbooks": (
        "점검 스크립트별 실행",
        ("점검 스크립트", "실행", "성공", "실패", "거부", "대상 서버 수", "평균 소요(초)"),
    ),
    "servers": ("서버별 실행", ("서버", "실행", "성공", "실패", "시간 초과", "접속 불가", "기타")),
    "failures": (
        "실패 목록",
        ("일시", "점검 스크립트", "서버", "결과", "종료 코드", "요청자", "승인자", "작업 ID"),
    ),
    "approvals": (
        "승인 내역",
        ("요청 일시", "점검 스크립트", "대상 서버", "요청자", "결정", "결정자", "결정 일시", "작업 ID"),
    ),
    "incidents": ("장애 내역", ("점검", "상태", "시작", "복구", "지속 시간", "지속(분)")),
    "availability": (
        "점검별 가용률",
        ("점검", "실행", "정상", "경고", "장애", "오류", "가용률(%)", "장애 건수", "장애 시간"),
    ),
    "problems": ("기록 검증 문제", ("파일", "내용")),
}
#: Columns holding a percentage (0-100, two decimals): shown with ``%`` and formatted as one in xlsx.
PERCENT_COLUMNS = {"가용률(%)"}

#: A host's outcome in words (agent/runs/results.py Outcome).
OUTCOME_WORDS = {
    "SUCCESS": "성공",
    "FAIL": "실패",
    "TIMEOUT": "시간 초과",
    "UNREACHABLE": "접속 불가",
    "REFUSED": "거부됨",
    "ERROR": "오류",
    "STOPPED": "중지됨",
}
#: What became of an approval request.
DECISION_WORDS = {
    "approved": "승인",
    "rejected": "반려",
    "cancelled": "취소",
    "expired": "만료",
    None: "대기 중",
}
STATUS_WORDS = {"OK": "정상", "WARN": "경고", "DOWN": "장애", "ERROR": "오류"}
#: Statuses that make an incident (and count against availability).
FAILING = frozenset({"DOWN", "ERROR"})

#: The summary's lines and the notes, in Korean.
WORDS = {
    "period": "기간",
    "runs": "실행",
    "failed_runs": "실패한 실행",
    "refused_runs": "거부된 실행",
    "approval_requests": "승인 요청",
    "approved": "승인",
    "rejected": "반려",
    "incidents": "장애",
    "availability": "점검 평균 가용률",
    "generated": "작성 시각",
    "empty": "이 기간에 기록된 실행, 승인, 점검 결과가 없습니다.",
    "no_rows": "이 기간에 해당하는 기록이 없습니다.",
    "no_data": "자료 없음",
    "open_at_end": "월말까지 복구되지 않음",
    "ongoing": "진행 중",
    "count": "{n}건",
    "title": "GUARDiA 월간 운영 보고서 {month}",
    "chart_title": "{check} 일별 가용률",
    "charts": "점검별 일별 가용률",
}
MONTH_PATTERN = re.compile(r"(\d{4})-(\d{2})")


class InvalidMonth(ValueError):
    """Not a month written YYYY-MM (2026-11), or a month that has not begun."""


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def bounds(self, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
        """The month's first instant and the next month's, in ``zone``."""
        start = dt.datetime(self.year, self.month, 1, tzinfo=zone)
        following = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return start, dt.datetime(*following, 1, tzinfo=zone)

    def days(self) -> list[dt.date]:
        first = dt.date(self.year, self.month, 1)
        following = (
            dt.date(self.year + 1, 1, 1) if self.month == 12 else dt.date(self.year, self.month + 1, 1)
        )
        return [first + dt.timedelta(days=n) for n in range((following - first).days)]


def parse_month(text: str, now: dt.datetime | None = None) -> Month:
    """``2026-11`` as a :class:`Month`.

    Raises:
        InvalidMonth: not YYYY-MM with a month 01-12 and a year 2000-9999, or (given ``now``) a month not begun yet.
    """
    found = MONTH_PATTERN.fullmatch(text.strip())
    if found is None or not (1 <= int(found[2]) <= 12) or not (2000 <= int(found[1]) <= 9999):
        raise InvalidMonth(
            f"잘못된 달입니다: {text!r} (YYYY-MM 형식, 예: 2026-11) / not a month: {text!r} (YYYY-MM)"
        )
    month = Month(int(found[1]), int(found[2]))
    if now is not None and (month.year, month.month) > (now.year, now.month):
        raise InvalidMonth(
            f"아직 시작되지 않은 달입니다: {month.label} / that month has not begun yet: {month.label}"
        )
    return month


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    #: Said where the table is empty (or beside it).
    note: str = ""


@dataclass(frozen=True)
class DailyAvailability:
    """One check's availability per day of the month (None: no run that day)."""

    check: str
    days: list[tuple[dt.date, float | None]]


@dataclass(frozen=True)
class MonthlyReport:
    month: Month
    title: str
    #: The timezone's short name as the report shows it (KST).
    zone_name: str
    tables: list[Table]
    charts: list[DailyAvailability]
    #: Nothing at all was recorded in the month.
    empty: bool
    problems: list[tuple[str, str]] = field(default_factory=list)

    def table(self, key: str) -> Table:
        return next(t for t in self.tables if t.key == key)


# -- reading the records ---------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _when(entry: Mapping[str, Any]) -> float | None:
    """When an entry happened: its ``at`` (check history) or ``ts`` (when it was written)."""
    at = _number(entry.get("at"))
    return at if at is not None else _number(entry.get("ts"))


class _Clock:
    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def show(self, moment: float | None) -> str:
        if moment is None:
            return ""
        return dt.datetime.fromtimestamp(moment, self.zone).strftime("%Y-%m-%d %H:%M")

    def day(self, moment: float) -> dt.date:
        return dt.datetime.fromtimestamp(moment, self.zone).date()


def duration_words(seconds: float) -> str:
    """``3725`` → ``1시간 2분``; under a minute in seconds; days for two days and more."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}초"
    minutes = seconds // 60
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [f"{days}일"] if days else []
    parts += [f"{hours}시간"] if hours else []
    parts += [f"{minutes}분"] if minutes or not parts else []
    return " ".join(parts)


# -- the tables ------------------------------------------------------------------------------------------------


def _table(key: str, rows: list[tuple[Cell, ...]], note: str = "") -> Table:
    title, columns = TABLES[key]
    return Table(key, title, columns, rows, note or ("" if rows else WORDS["no_rows"]))


def _hosts(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    hosts = entry.get("hosts")
    return [h for h in hosts if isinstance(h, Mapping)] if isinstance(hosts, list) else []


def _run_tables(
    runs: list[Mapping[str, Any]], refused: list[Mapping[str, Any]], clock: _Clock
) -> list[Table]:
    by_runbook: dict[str, dict[str, Any]] = {}
    by_server: dict[str, dict[str, int]] = {}
    failures: list[tuple[Cell, ...]] = []
    for entry in runs:
        name = _text(entry.get("runbook")) or "-"
        hosts = _hosts(entry)
        ok = bool(hosts) and all(h.get("status") == "SUCCESS" for h in hosts)
        row = by_runbook.setdefault(
            name, {"runs": 0, "ok": 0, "failed": 0, "refused": 0, "hosts": set(), "time": []}
        )
        row["runs"] += 1
        row["ok" if ok else "failed"] += 1
        row["hosts"].update(_text(h.get("host")) for h in hosts)
        row["time"].append(max((_number(h.get("duration")) or 0.0 for h in hosts), default=0.0))
        for host in hosts:
            status = _text(host.get("status"))
            counts = by_server.setdefault(_text(host.get("host")) or "-", dict.fromkeys(
                ("runs", "SUCCESS", "FAIL", "TIMEOUT", "UNREACHABLE", "other"), 0))  # fmt: skip
            counts["runs"] += 1
            counts[status if status in counts and status != "runs" else "other"] += 1
            if status != "SUCCESS":
                code = host.get("exit_code")
                failures.append((
                    clock.show(_when(entry)), name, _text(host.get("host")), OUTCOME_WORDS.get(status, status),
                    code if isinstance(code, int) else None, _text(entry.get("user_id")),
                    _text(entry.get("approved_by")), _text(entry.get("task_id")),
                ))  # fmt: skip
    for entry in refused:
        name = _text(entry.get("runbook")) or "-"
        row = by_runbook.setdefault(
            name, {"runs": 0, "ok": 0, "failed": 0, "refused": 0, "hosts": set(), "time": []}
        )
        row["refused"] += 1
    runbook_rows: list[tuple[Cell, ...]] = [
        (name, r["runs"], r["ok"], r["failed"], r["refused"], len(r["hosts"] - {""}),
         round(sum(r["time"]) / len(r["time"]), 1) if r["time"] else None)
        for name, r in sorted(by_runbook.items())
    ]  # fmt: skip
    server_rows: list[tuple[Cell, ...]] = [
        (host, c["runs"], c["SUCCESS"], c["FAIL"], c["TIMEOUT"], c["UNREACHABLE"], c["other"])
        for host, c in sorted(by_server.items())
    ]
    return [_table("runbooks", runbook_rows), _table("servers", server_rows), _table("failures", failures)]


def _approval_rows(
    entries: list[Mapping[str, Any]], start: float, end: float, clock: _Clock
) -> list[tuple[Cell, ...]]:
    requests: dict[str, dict[str, Any]] = {}
    for entry in entries:
        task, kind = _text(entry.get("task_id")), entry.get("kind")
        if not task:
            continue
        if kind == "approval_requested":
            request = entry.get("request") if isinstance(entry.get("request"), Mapping) else {}
            requests[task] = {"at": _when(entry), "request": request, "requester": _text(entry.get("requester")),
                              "decision": None, "by": "", "decided": None}  # fmt: skip
        elif task in requests:
            decision = {"approval_decided": entry.get("decision"), "approval_cancelled": "cancelled",
                        "approval_expired": "expired"}.get(str(kind))  # fmt: skip
            if decision is not None:
                requests[task].update(decision=decision, decided=_when(entry),
                                      by=_text(entry.get("approver")) or (requests[task]["requester"]
                                                                          if decision == "cancelled" else ""))  # fmt: skip
    rows: list[tuple[Cell, ...]] = []
    for task, r in sorted(requests.items(), key=lambda item: item[1]["at"] or 0.0):
        inside = [t for t in (r["at"], r["decided"]) if t is not None and start <= t < end]
        if not inside:
            continue
        hosts = r["request"].get("hosts")
        rows.append((
            clock.show(r["at"]), _text(r["request"].get("runbook")),
            ", ".join(h for h in hosts if isinstance(h, str)) if isinstance(hosts, list) else "",
            r["requester"], DECISION_WORDS.get(r["decision"], str(r["decision"])), r["by"], clock.show(r["decided"]),
            task,
        ))  # fmt: skip
    return rows


@dataclass
class _Incident:
    check: str
    status: str
    start: float
    end: float | None


def _incidents(entries: list[Mapping[str, Any]], start: float, end: float) -> list[_Incident]:
    """Every stretch of DOWN/ERROR that overlaps [start, end), cut to it."""
    found: list[_Incident] = []
    open_: dict[str, _Incident] = {}
    statuses = sorted(
        (e for e in entries if e.get("kind") == "check_status" and _when(e) is not None),
        key=lambda e: _when(e) or 0,
    )
    for entry in statuses:
        check, status, at = _text(entry.get("check")), _text(entry.get("status")), _when(entry) or 0.0
        current = open_.get(check)
        if status in FAILING:
            if current is None:
                open_[check] = _Incident(check, status, at, None)
            elif status == "DOWN":
                current.status = "DOWN"  # the worst it was
        elif current is not None:
            current.end = at
            found.append(open_.pop(check))
    found += open_.values()
    cut = []
    for incident in found:
        if incident.start >= end or (incident.end is not None and incident.end <= start):
            continue
        cut.append(_Incident(incident.check, incident.status, max(incident.start, start),
                             incident.end if incident.end is not None and incident.end <= end else None))  # fmt: skip
    return sorted(cut, key=lambda i: (i.start, i.check))


def _incident_rows(
    incidents: list[_Incident], end: float, now: float, clock: _Clock
) -> list[tuple[Cell, ...]]:
    rows: list[tuple[Cell, ...]] = []
    for i in incidents:
        until = i.end if i.end is not None else max(i.start, min(end, now))
        shown_end = (
            clock.show(i.end) if i.end is not None else WORDS["ongoing" if now < end else "open_at_end"]
        )
        rows.append((i.check, STATUS_WORDS.get(i.status, i.status), clock.show(i.start), shown_end,
                     duration_words(until - i.start), round((until - i.start) / 60, 1)))  # fmt: skip
    return rows


def _tallies(entries: list[Mapping[str, Any]], start: float, end: float) -> list[Mapping[str, Any]]:
    return [
        e
        for e in entries
        if e.get("kind") == "check_tally"
        and (hour := _number(e.get("hour"))) is not None
        and start <= hour < end
    ]


def _count(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _availability(
    tallies: list[Mapping[str, Any]],
    incidents: list[_Incident],
    checks: Iterable[str],
    end: float,
    now: float,
) -> tuple[list[tuple[Cell, ...]], float | None]:
    counts: dict[str, list[int]] = {check: [0, 0, 0, 0, 0] for check in checks}
    for entry in tallies:
        row = counts.setdefault(_text(entry.get("check")), [0, 0, 0, 0, 0])
        for index, name in enumerate(("runs", "ok", "warn", "down", "error")):
            row[index] += _count(entry, name)
    rows: list[tuple[Cell, ...]] = []
    shares = []
    for check, (runs, ok, warn, down, error) in sorted(counts.items()):
        share = round(100.0 * (runs - down - error) / runs, 2) if runs else None
        if share is not None:
            shares.append(share)
        own = [i for i in incidents if i.check == check]
        downtime = sum((i.end if i.end is not None else max(i.start, min(end, now))) - i.start for i in own)
        rows.append(
            (check, runs, ok, warn, down, error, share, len(own), duration_words(downtime) if own else "-")
        )
    return rows, (round(sum(shares) / len(shares), 2) if shares else None)


def _daily(
    tallies: list[Mapping[str, Any]], checks: Iterable[str], month: Month, clock: _Clock
) -> list[DailyAvailability]:
    per: dict[str, dict[dt.date, list[int]]] = {check: {} for check in checks}
    for entry in tallies:
        day = clock.day(_number(entry.get("hour")) or 0.0)
        runs, bad = _count(entry, "runs"), _count(entry, "down") + _count(entry, "error")
        slot = per.setdefault(_text(entry.get("check")), {}).setdefault(day, [0, 0])
        slot[0] += runs
        slot[1] += bad
    charts = []
    for check, days in sorted(per.items()):
        points: list[tuple[dt.date, float | None]] = []
        for day in month.days():
            runs, bad = days.get(day, [0, 0])
            points.append((day, round(100.0 * (runs - bad) / runs, 2) if runs else None))
        charts.append(DailyAvailability(check, points))
    return charts


def build_report(
    month: Month,
    audit: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    now: float,
    timezone: str = "Asia/Seoul",
    problems: Sequence[tuple[str, str]] = (),
) -> MonthlyReport:
    """The month's tables from the audit log's entries and the check history's (each a parsed JSON object).

    ``problems``: what verifying the files found (file, what): listed in a table of their own, never dropped.
    """
    zone = ZoneInfo(timezone)
    clock = _Clock(zone)
    first, following = month.bounds(zone)
    start, end = first.timestamp(), following.timestamp()

    def inside(entry: Mapping[str, Any]) -> bool:
        moment = _when(entry)
        return moment is not None and start <= moment < end

    runs = [e for e in audit if e.get("kind") == "run" and inside(e)]
    refused = [e for e in audit if e.get("kind") == "run_refused" and inside(e)]
    approvals = _approval_rows(
        [e for e in audit if str(e.get("kind", "")).startswith("approval_")], start, end, clock
    )
    incidents = _incidents(list(history), start, end)
    tallies = _tallies(list(history), start, end)
    checks = sorted(
        {_text(e.get("check")) for e in history if inside(e) and _text(e.get("check"))}
        | {i.check for i in incidents}
    )
    availability, average = _availability(tallies, incidents, checks, end, now)
    run_tables = _run_tables(runs, refused, clock)
    failed_runs = sum(
        1 for e in runs if not (_hosts(e) and all(h.get("status") == "SUCCESS" for h in _hosts(e)))
    )
    empty = not (runs or refused or approvals or incidents or tallies)
    zone_name = first.strftime("%Z") or timezone
    decided = [row[4] for row in approvals]
    summary: list[tuple[Cell, ...]] = [
        (WORDS["period"], f"{month.days()[0]} ~ {month.days()[-1]} ({zone_name})"),
        (WORDS["runs"], WORDS["count"].format(n=len(runs))),
        (WORDS["failed_runs"], WORDS["count"].format(n=failed_runs)),
        (WORDS["refused_runs"], WORDS["count"].format(n=len(refused))),
        (WORDS["approval_requests"], WORDS["count"].format(n=len(approvals))
         + f" ({WORDS['approved']} {decided.count(DECISION_WORDS['approved'])}, "
           f"{WORDS['rejected']} {decided.count(DECISION_WORDS['rejected'])})"),
        (WORDS["incidents"], WORDS["count"].format(n=len(incidents))),
        (WORDS["availability"], f"{average:.2f}%" if average is not None else WORDS["no_data"]),
        (WORDS["generated"], f"{clock.show(now)} ({zone_name})"),
    ]  # fmt: skip
    tables = [
        _table("summary", summary, WORDS["empty"] if empty else ""),
        *run_tables,
        _table("approvals", approvals),
        _table("incidents", _incident_rows(incidents, end, now, clock)),
        _table("availability", availability),
    ]
    if problems:
        tables.append(_table("problems", [(file, what) for file, what in problems]))
    return MonthlyReport(
        month=month,
        title=WORDS["title"].format(month=month.label),
        zone_name=zone_name,
        tables=tables,
        charts=_daily(tallies, checks, month, clock),
        empty=empty,
        problems=list(problems),
    )
