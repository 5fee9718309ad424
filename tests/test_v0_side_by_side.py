"""Issue 25, side by side: the ORIGINAL agent (rebuilt from its design note, benchmarks/original_agent.py) and the
project's agent in ``[relay] protocol = "v0"`` mode, each a real process, both dialling one v0 relay on loopback,
reading one PostgreSQL table (a throwaway database) and checking one WAS stub (a real HTTP server on loopback).

Each case sends the same frames to both and compares the answers by the case's rule:

* ``same``: the same answers (as a multiset: the project answers in completion order) once the differences the
  contract allows are set aside: payload keys other than ``status`` and ``data`` (the project adds ``text``,
  ``date``, ``code``, ``duplicate``; a v0 relay ignores them), IPv4 addresses (the project masks them as ``[IP]``),
  keys that name a place in the WAS's JSON (the project removes them), and the order of FETCH_MES_QC rows with the
  same ``reg_date`` (SQL leaves it open). Ids are compared with their JSON type: ``4242`` is not ``"4242"``.
* ``project better``: the original answers badly or not at all (it drops the connection on any exception and
  reconnects 5 s later); the rule says what the project must do instead.
* ``silent``: frames the original does not answer (not a JSON object); the project may stay silent too, but keeps
  its connection.

The database session's time zone (``PGTZ``, for both agents) is one where the date differs from Korea's at the time
of the run, so that ``today`` evaluated by the database (the original: ``work_date = 'today'``) and ``today`` in the
agent's timezone (Asia/Seoul) are different days, and the rows show which one was used.

The project agent runs without a command key (the relay does not sign) and without a relay token.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import pytest
import pytest_asyncio
from websockets.exceptions import ConnectionClosed

from benchmarks.bench_v0 import Relay, Side, WasStub, agent_environ, project_home, start_original, stop
from tests.services import postgres_database
from tests.test_v0_relay import SECRET, V0_KEYS, _agent
from tests.waiting import eventually

pytestmark = [
    pytest.mark.external_service,
    pytest.mark.asyncio(loop_scope="module"),
    # Two agent processes, the Linux PostgreSQL and a relay, side by side: a comparison of behaviour, run on the
    # Linux side; the agent as a Windows process is proven by scripts/test-windows' own checks.
    pytest.mark.posix_only(reason="runs both agents as Linux processes against the Linux PostgreSQL"),
]

NOT_ALLOWED = "허용되지 않은 action: "
IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9.])")
#: Keys a WAS's JSON may carry that name a place: the project removes them (docs/protocol.md, "Check results").
PLACE_KEYS = {"url", "host", "hostname", "address", "ip", "location", "endpoint", "server", "jdbcUrl"}
DISK_KEYS = {"total", "used", "free", "percent"}
FENCES = itertools.count(1)


def database_zone() -> str:
    """A time zone whose date is not Korea's now, and will not be for at least an hour."""
    hour = dt.datetime.now(ZoneInfo("Asia/Seoul")).hour
    return "Etc/GMT+12" if hour < 20 else "Etc/GMT-14"  # UTC-12 (21 h behind Seoul), UTC+14 (5 h ahead)


DB_ZONE = database_zone()
DB_TODAY = dt.datetime.now(ZoneInfo(DB_ZONE)).date()
KST_TODAY = dt.datetime.now(ZoneInfo("Asia/Seoul")).date()  # the project's default [chat] timezone
DAY = dt.timedelta(days=1)

#: Rows beside tests/services.py's ROWS (2026-09-18: 15 rows with addresses in err_msg; 2026-09-17: one row).
EXTRA_ROWS = [
    ("2026-09-20", "N1", "no time", None),
    ("2026-09-20", "A1", "first", "2026-09-20 08:00:00"),
    ("2026-09-20", "B2", "second", "2026-09-20 09:30:00"),
    *[("2026-09-21", f"Z{i}", "no time", None) for i in range(1, 4)],
    *[("2026-09-21", f"R{i:02d}", f"run {i}", f"2026-09-21 08:{i:02d}:00") for i in range(10)],
    ("2026-09-22", "S1", f"login failed: password={SECRET}", "2026-09-22 10:00:00"),
    ("2026-09-22", "S2", "retry ok", "2026-09-22 10:05:00"),
    *[(day.isoformat(), f"T{day:%Y%m%d}", f"rows of {day}", f"{day} 07:00:00")
      for day in sorted({DB_TODAY, DB_TODAY - DAY, KST_TODAY, KST_TODAY - DAY})],
]  # fmt: skip


# -- what each agent answered ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """An agent's answers to one case's frames (in arrival order), and whether it dropped its connection."""

    answers: list[Any]
    raw: list[str]
    dropped: bool

    def show(self) -> str:
        shown = [_show(a) for a in self.answers] or ["no answer"]
        return "; ".join(shown) + (" [connection dropped]" if self.dropped else "")


def _show(frame: Any) -> str:
    if not isinstance(frame, dict) or not isinstance(frame.get("payload"), dict):
        return json.dumps(frame, ensure_ascii=False)[:160]
    payload = frame["payload"]
    data = payload.get("data")
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        body = "rows " + ",".join(str(r.get("prc_code")) for r in data)
    else:
        body = json.dumps(data, ensure_ascii=False)[:140]
    extra = "".join(f" {k}={payload[k]!r}" for k in ("duplicate", "code") if k in payload)
    return f"task_id={frame.get('task_id')!r} room_id={frame.get('room_id')!r} {payload.get('status')} {body}{extra}"


def scrub(value: Any) -> Any:
    """Addresses as the project masks them; keys that name a place removed."""
    if isinstance(value, str):
        return IPV4.sub("[IP]", value)
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in PLACE_KEYS}
    return value


def tie_order(rows: list[Any]) -> list[Any]:
    """FETCH_MES_QC rows with rows of equal ``reg_date`` in a fixed order (ORDER BY leaves theirs open)."""
    if not all(isinstance(r, dict) and "reg_date" in r for r in rows):
        return rows
    ordered: list[Any] = []
    for _, group in itertools.groupby(rows, key=lambda r: r["reg_date"]):
        ordered.extend(sorted(group, key=lambda r: json.dumps(r, sort_keys=True)))
    return ordered


def canonical(frame: Any) -> str:
    """An answer as a v0 relay reads it, with the allowed differences set aside (see the module's docstring)."""
    if not isinstance(frame, dict):
        return json.dumps(frame)
    payload = frame.get("payload") if isinstance(frame.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    data = scrub(payload.get("data"))
    if isinstance(data, list):
        data = tie_order(data)
    shown = {"event": frame.get("event"), "room_id": frame.get("room_id"), "task_id": frame.get("task_id"),
             "status": payload.get("status"), "data": data}  # fmt: skip
    return json.dumps(shown, sort_keys=True, ensure_ascii=False)


def v0_shaped(frame: Any) -> bool:
    return (
        isinstance(frame, dict)
        and set(frame) == V0_KEYS
        and frame["event"] == "TASK_FINISHED"
        and isinstance(frame["payload"], dict)
        and frame["payload"].get("status") in ("SUCCESS", "FAIL")
        and "data" in frame["payload"]
    )


# -- the cases ---------------------------------------------------------------------------------------------------

Rule = Callable[["Case", Outcome, Outcome], None]
MISSING = object()


def packet(
    action: Any, task_id: Any = MISSING, room_id: Any = "ops", params: Any = MISSING, **named: Any
) -> Any:
    """A v0 command; MISSING leaves the key out; ``named`` are params (when ``params`` is not given)."""
    sent: dict[str, Any] = {"action": action}
    if params is MISSING:
        params = named
    for key, value in (("params", params), ("task_id", task_id), ("room_id", room_id)):
        if value is not MISSING:
            sent[key] = value
    return sent


@dataclass(frozen=True)
class Case:
    name: str
    #: Sent back to back to each agent: a dict as JSON text, a str or bytes as they are.
    frames: tuple[Any, ...]
    rule: Rule
    #: How many answers the original gives (0: it drops the connection) and the project should give.
    original: int = 1
    project: int = 1
    #: The WAS stub's mode during the case.
    was: str | None = None
    #: Sent first, each answered before ``frames`` go.
    before: tuple[Any, ...] = ()
    #: How long to wait for the project's answers once it has answered a later command.
    grace: float = 1.5

    def sent(self) -> dict[str, Any]:
        first = self.frames[0]
        parsed = json.loads(first) if isinstance(first, bytes | str) else first
        assert isinstance(parsed, dict)
        return parsed

    def ids(self) -> tuple[Any, Any]:
        """The (task_id, room_id) the original echoes for the first frame: as sent, or null."""
        return self.sent().get("task_id"), self.sent().get("room_id")


def _project_answered(case: Case, p: Outcome, status: str | None = None) -> dict[str, Any]:
    """The project's one answer, in the v0 shape, with the ids as sent (and ``status``)."""
    assert not p.dropped, f"the project dropped its connection: {p.show()}"
    assert len(p.answers) == 1, f"project: {p.show()}; expected one answer with ids {case.ids()!r}"
    (answer,) = p.answers
    assert v0_shaped(answer), f"not the v0 shape: {answer!r}"
    ids = (answer["task_id"], answer["room_id"])
    assert json.dumps(ids) == json.dumps(case.ids()), f"ids {ids!r}, sent {case.ids()!r}"
    if status is not None:
        assert answer["payload"]["status"] == status, f"project: {p.show()}; expected {status}"
    return dict(answer["payload"])


def same(case: Case, o: Outcome, p: Outcome) -> None:
    """The same answers, after setting aside what the contract lets differ."""
    assert len(o.answers) == case.original and not o.dropped, f"the original (the reference): {o.show()}"
    assert not p.dropped, f"the project dropped its connection: {p.show()}"
    assert all(v0_shaped(a) for a in p.answers), f"not the v0 shape: {p.answers!r}"
    got, want = sorted(map(canonical, p.answers)), sorted(map(canonical, o.answers))
    assert got == want, f"project: {p.show()}  |  original: {o.show()}"


def same_at_least_once(case: Case, o: Outcome, p: Outcome) -> None:
    """A verbatim resend: the original runs it twice; the project may answer the copy again (``duplicate``) or not at
    all (a v0 relay delivers an answer once per task_id), but what it answers is the original's answer."""
    assert len(o.answers) == case.original and not o.dropped, f"the original (the reference): {o.show()}"
    assert not p.dropped and p.answers, f"project: {p.show()}"
    assert all(v0_shaped(a) for a in p.answers), f"not the v0 shape: {p.answers!r}"
    got, want = set(map(canonical, p.answers)), set(map(canonical, o.answers))
    assert got == want, f"project: {p.show()}  |  original: {o.show()}"


def silent(case: Case, o: Outcome, p: Outcome) -> None:
    """The original drops the connection and answers nothing; the project answers nothing and stays connected."""
    assert o.dropped and not o.answers, f"the original (the reference): {o.show()}"
    assert not p.dropped and not p.answers, f"project: {p.show()}; expected silence, connection kept"


def fails_clearly(case: Case, o: Outcome, p: Outcome) -> None:
    """The original drops the connection (no answer, 5 s offline); the project answers FAIL with a reason."""
    assert o.dropped and not o.answers, f"the original (the reference): {o.show()}"
    payload = _project_answered(case, p, "FAIL")
    error = payload["data"].get("error") if isinstance(payload["data"], dict) else None
    assert isinstance(error, str) and error, f"FAIL without data.error: {p.show()}"


def refused_too(case: Case, o: Outcome, p: Outcome) -> None:
    """The original answers FAIL with an odd text (the action as Python prints it); the project FAILs too."""
    assert [a["payload"]["status"] for a in o.answers] == ["FAIL"], f"the original: {o.show()}"
    payload = _project_answered(case, p, "FAIL")
    assert isinstance(payload["data"], dict) and isinstance(payload["data"].get("error"), str), p.show()


def disk(case: Case, o: Outcome, p: Outcome) -> None:
    """The original's four keys, the same disk, percent as df counts it (used / (used + free)); more keys."""
    assert len(o.answers) == 1 and o.answers[0]["payload"]["status"] == "SUCCESS", f"the original: {o.show()}"
    theirs = o.answers[0]["payload"]["data"]
    assert set(theirs) == DISK_KEYS
    payload = _project_answered(case, p, "SUCCESS")
    ours = payload["data"]
    assert isinstance(ours, dict) and set(ours) >= DISK_KEYS, (
        f"project: {p.show()}; expected the disk's figures"
    )
    assert not payload.get("duplicate"), f"a stored answer, not the disk check: {p.show()}"
    assert ours["total"] == theirs["total"]
    assert abs(ours["used"] - theirs["used"]) <= max(theirs["total"] // 100, 512 << 20)
    assert ours["percent"] == round(100 * ours["used"] / (ours["used"] + ours["free"]), 1)


def todays_rows(case: Case, o: Outcome, p: Outcome) -> None:
    """No date: the original binds NULL (``work_date = NULL``: always ``[]``); the project answers today's rows."""
    assert [a["payload"]["data"] for a in o.answers] == [[]], f"the original: {o.show()}"
    payload = _project_answered(case, p, "SUCCESS")
    days = {r.get("work_date") for r in payload["data"]}
    assert len(days) == 1 and days <= {DB_TODAY.isoformat(), KST_TODAY.isoformat()}, f"project: {p.show()}"
    assert payload.get("date", days.copy().pop()) in days


def secret_masked(case: Case, o: Outcome, p: Outcome) -> None:
    """The original returns a password found in a row; the project the same rows with it masked."""
    assert any(SECRET in r for r in o.raw), f"the original: {o.show()}"
    _project_answered(case, p, "SUCCESS")
    assert not any(SECRET in r for r in p.raw), f"the project leaked the password: {p.raw}"

    def without_messages(frame: dict[str, Any]) -> str:
        rows = [{k: v for k, v in r.items() if k != "err_msg"} for r in frame["payload"]["data"]]
        return canonical({**frame, "payload": {**frame["payload"], "data": rows}})

    assert without_messages(p.answers[0]) == without_messages(o.answers[0]), f"{p.show()} | {o.show()}"


def was_not_json(case: Case, o: Outcome, p: Outcome) -> None:
    """An HTML page with HTTP 200: the original's ``r.json()`` raises (connection dropped, no answer); the project
    says DOWN with a reason, and its room text agrees (no ✅)."""
    assert o.dropped and not o.answers, f"the original (the reference): {o.show()}"
    payload = _project_answered(case, p, "SUCCESS")
    data = payload["data"]
    assert data.get("status") == "DOWN" and isinstance(data.get("error"), str), f"project: {p.show()}"
    assert "✅" not in str(payload.get("text", "")), f"data says DOWN, the text says: {payload.get('text')!r}"


def action_masked(case: Case, o: Outcome, p: Outcome) -> None:
    """An unknown action carrying a password: the original echoes it; the project refuses it masked."""
    assert any(SECRET in r for r in o.raw), f"the original: {o.show()}"
    payload = _project_answered(case, p, "FAIL")
    assert payload["data"]["error"].startswith(NOT_ALLOWED + "RESET"), f"project: {p.show()}"
    assert not any(SECRET in r for r in p.raw), f"the project leaked the password: {p.raw}"


def qc(task_id: Any, date: Any = "2026-09-17", room_id: Any = "ops") -> Any:
    return packet("FETCH_MES_QC", task_id, room_id, date=date)


def binary(sent: Any) -> bytes:
    return json.dumps(sent, ensure_ascii=False).encode("utf-8")


# fmt: off
CASES = [
    # FETCH_MES_QC: the date as the original's query reads it (PostgreSQL parses it), its ORDER BY, its masking.
    Case("fetch-date-iso", (qc("sbs-qc-iso", "2026-09-18"),), same),
    Case("fetch-date-slashes", (qc("sbs-qc-slashes", "2026/09/18"),), same),
    Case("fetch-date-compact", (qc("sbs-qc-compact", "20260918"),), same),
    Case("fetch-date-today", (qc("sbs-qc-today", "today"),), same),
    Case("fetch-date-yesterday", (qc("sbs-qc-yesterday", "yesterday"),), same),
    Case("fetch-date-absent", (packet("FETCH_MES_QC", "sbs-qc-absent"),), todays_rows),
    Case("fetch-params-absent", ({"action": "FETCH_MES_QC", "task_id": "sbs-qc-noparams", "room_id": "ops"},),
         todays_rows),
    Case("fetch-date-refused-by-postgresql", (qc("sbs-qc-feb30", "2026-02-30"),), fails_clearly, original=0),
    Case("fetch-date-a-number", (qc("sbs-qc-number", 20260918),), fails_clearly, original=0),
    Case("fetch-params-not-an-object", (packet("FETCH_MES_QC", "sbs-qc-str", params="2026-09-18"),),
         fails_clearly, original=0),
    Case("fetch-null-reg-date-first", (qc("sbs-qc-nulls", "2026-09-20"),), same),
    Case("fetch-null-reg-dates-within-the-limit", (qc("sbs-qc-limit", "2026-09-21"),), same),
    Case("fetch-no-rows", (qc("sbs-qc-empty", "2026-01-01"),), same),
    Case("fetch-extra-param", (packet("FETCH_MES_QC", "sbs-qc-extra", date="2026-09-17", limit=5),), same),
    Case("fetch-password-in-a-row", (qc("sbs-qc-secret", "2026-09-22"),), secret_masked),
    # CHECK_INTERNAL_WAS_STATUS: the WAS's JSON whatever its HTTP status; the original's words when it is away.
    Case("was-up", (packet("CHECK_INTERNAL_WAS_STATUS", "sbs-was-up"),), same, was="up"),
    Case("was-503-with-json", (packet("CHECK_INTERNAL_WAS_STATUS", "sbs-was-503"),), same, was="503"),
    Case("was-200-html-page", (packet("CHECK_INTERNAL_WAS_STATUS", "sbs-was-html"),), was_not_json,
         original=0, was="html"),
    Case("was-down", (packet("CHECK_INTERNAL_WAS_STATUS", "sbs-was-down"),), same, was="down"),
    Case("was-hanging", (packet("CHECK_INTERNAL_WAS_STATUS", "sbs-was-hang"),), same, was="hang", grace=5),
    # CHECK_DISK_SPACE: the original's four keys and more.
    Case("disk", (packet("CHECK_DISK_SPACE", "sbs-disk"),), disk),
    Case("disk-params-null", (packet("CHECK_DISK_SPACE", "sbs-disk-null", params=None),), disk),
    # Ids: data, echoed with their JSON type, whatever their characters.
    Case("task-id-missing", (qc(MISSING, room_id="ops-a"),), same),
    Case("task-id-null", (qc(None, room_id="ops-b"),), same),
    Case("room-id-missing", (qc("sbs-noroom", room_id=MISSING),), same),
    Case("ids-missing", (packet("PING", room_id=MISSING),), same),
    Case("task-id-integer", (qc(4242),), same),
    Case("room-id-integer", (qc("sbs-int-room", room_id=7),), same),
    Case("task-id-float", (qc(12.5, room_id="ops-f"),), same),
    Case("task-id-with-slashes", (qc("ops/2026-09-17/../qc 1"),), same),
    Case("task-id-korean", (qc("작업 #1 (재시도)"),), same),
    Case("command-in-a-binary-frame", (binary(qc("sbs-binary", room_id="운영실")),), same),
    Case("reused-task-id-another-action", (packet("CHECK_DISK_SPACE", "sbs-reuse-1"),), disk,
         before=(qc("sbs-reuse-1"),)),
    Case("reused-task-id-another-date", (qc("sbs-reuse-2", "2026-09-18"),), same, before=(qc("sbs-reuse-2"),)),
    Case("one-task-id-two-commands-at-once", (qc("sbs-twin"), packet("CHECK_INTERNAL_WAS_STATUS", "sbs-twin")),
         same, original=2, project=2, was="up"),
    Case("one-task-id-a-command-and-a-refusal", (qc("sbs-twin-2"), packet("DROP_TABLE", "sbs-twin-2")), same,
         original=2, project=2),
    Case("verbatim-resend", (qc("sbs-again"), qc("sbs-again")), same_at_least_once, original=2, project=2,
         grace=0.5),
    # Actions: exactly the three, case-sensitive.
    Case("unknown-action", (packet("DROP_TABLE", "sbs-drop"),), same),
    Case("lower-case-action", (packet("fetch_mes_qc", "sbs-lower", date="2026-09-17"),), same),
    Case("action-missing", ({"params": {}, "task_id": "sbs-noaction", "room_id": "ops"},), refused_too),
    Case("action-not-a-string", (packet(42, "sbs-action-42"),), refused_too),
    Case("action-with-a-password", (packet(f"RESET password={SECRET}", "sbs-reset"),), action_masked),
    # Frames the original cannot read: it drops the connection; the project may stay silent.
    Case("not-json", ("garbage",), silent, original=0, project=0),
    Case("json-list", ("[1, 2]",), silent, original=0, project=0),
]
# fmt: on


# -- the harness -------------------------------------------------------------------------------------------------


@dataclass
class Pair:
    relay: Relay
    was: WasStub
    home: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    """Both agents connected to one relay, one database, one WAS stub; started once for all the cases."""
    home = tmp_path_factory.mktemp("v0-side-by-side")
    with postgres_database() as db_env:
        db = psycopg2.connect(host=db_env["DB_HOST"], port=int(db_env["DB_PORT"]), user=db_env["DB_USER"],
                              dbname=db_env["DB_NAME"])  # fmt: skip
        with db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) VALUES (%s, %s, %s, %s)",
                EXTRA_ROWS,
            )
        db.close()
        relay, was = Relay(), WasStub()
        await relay.start()
        await was.set("up")
        env = agent_environ({**db_env, "DB_PASSWORD": SECRET, "PGTZ": DB_ZONE, "ORIGINAL_WAS_URL": was.url})
        original = start_original(relay, env, home / "original.log")
        project = _agent(project_home(home, was.url), {**env, "EXTERNAL_WS_URL": relay.url("project")}, home)
        try:
            await eventually(
                lambda: all(s.ws is not None for s in relay.sides.values()), 30, "both connected"
            )
            yield Pair(relay, was, home)
        finally:
            await asyncio.gather(asyncio.to_thread(stop, original), asyncio.to_thread(stop, project))
            await relay.stop()
            await was.stop()


def encode(frame: Any) -> str | bytes:
    return frame if isinstance(frame, str | bytes) else json.dumps(frame, ensure_ascii=False)


def is_fence(frame: Any) -> bool:
    task_id = frame.get("task_id") if isinstance(frame, dict) else None
    return isinstance(task_id, str) and task_id.startswith("sbs-fence-")


async def exchange(side: Side, frames: tuple[Any, ...], expected: int, grace: float) -> Outcome:
    """Send ``frames`` and then a fence (an unknown action, answered at once); the answers that came before the
    fence's (and, for an agent that answers in completion order, up to ``expected`` within ``grace`` after it)."""
    await eventually(lambda: side.ws is not None, 15, f"the {side.name} agent connected")
    start, connection = len(side.frames), side.connections
    fence = f"sbs-fence-{next(FENCES)}"

    def dropped() -> bool:
        return side.ws is None or side.connections != connection

    def answers() -> list[tuple[Any, str]]:
        got = zip(side.frames[start:], side.raw[start:], strict=True)
        return [(f, r) for f, r in got if not is_fence(f)]

    def fenced() -> bool:
        return any(isinstance(f, dict) and f.get("task_id") == fence for f in side.frames[start:])

    with contextlib.suppress(ConnectionClosed, ConnectionError):
        for frame in (*frames, packet("SBS_FENCE", fence, "fence")):
            await side.send(encode(frame))
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: dropped() or fenced(), 20, f"the {side.name} agent answered the fence")
        await eventually(lambda: dropped() or len(answers()) >= expected, grace, "the answers")
    got = answers()
    return Outcome([f for f, _ in got], [r for _, r in got], dropped())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_the_project_answers_as_the_original_or_better(pair: Pair, case: Case) -> None:
    original, project = pair.relay.sides["original"], pair.relay.sides["project"]
    if case.was is not None:
        await pair.was.set(case.was)
    if case.before:
        first = await asyncio.gather(
            exchange(original, case.before, len(case.before), 5),
            exchange(project, case.before, len(case.before), 5),
        )
        assert all(len(o.answers) == len(case.before) for o in first), [o.show() for o in first]
    o, p = await asyncio.gather(
        exchange(original, case.frames, case.original, 0.5),
        exchange(project, case.frames, case.project, case.grace),
    )
    case.rule(case, o, p)
