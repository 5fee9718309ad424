"""Checks against real servers: PostgreSQL, an HTTP health server, the local disk, sshd; and the notify rules."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from agent.catalog.store import Catalog
from agent.checks import CheckStatus, notify_decision
from agent.checks import db as dbcheck
from agent.checks.runner import CheckRunner
from agent.cli import main
from agent.config.environment import Environment
from agent.config.schema import AgentConfig, load_config
from agent.errors import InvalidArguments
from agent.runs.executor import Executor
from agent.runs.gate import RunGate
from agent.state.audit import AuditLog
from tests.services import HealthServer
from tests.sshd import free_port

pytestmark = pytest.mark.external_service
OK, WARN, DOWN, ERROR = CheckStatus.OK, CheckStatus.WARN, CheckStatus.DOWN, CheckStatus.ERROR


@pytest.mark.parametrize(
    ("mode", "sequence", "expected"),
    [
        ("on_change", [OK, OK, DOWN, DOWN, OK, OK], [None, None, "report", None, "recovery", None]),
        ("on_change", [DOWN, WARN, DOWN, ERROR], ["report", "report", "report", "report"]),
        ("on_change", [WARN, OK], ["report", "recovery"]),
        ("on_failure", [OK, DOWN, DOWN, OK, WARN], [None, "report", "report", None, "report"]),
        ("always", [OK, DOWN, OK], ["report", "report", "recovery"]),
    ],
)
def test_notify_decisions_over_a_status_sequence(
    mode: Any, sequence: list[CheckStatus], expected: list[str | None]
) -> None:
    previous, decisions = None, []
    for status in sequence:
        decisions.append(notify_decision(mode, previous, status))
        previous = status
    assert decisions == expected


def write_config(home: Path, checks: str, extra: str = "") -> AgentConfig:
    base = (home / "agent.toml").read_text(encoding="utf-8") if (home / "agent.toml").exists() else ""
    (home / "agent.toml").write_text(base + "\n" + checks + "\n" + extra, encoding="utf-8", newline="\n")
    return load_config(home / "agent.toml")


async def run_checks(config: AgentConfig, env: dict[str, str], *names: str) -> dict[str, Any]:
    catalog = Catalog(config.path(config.catalog.dir), config.path(config.catalog.lock))
    catalog.verify()
    environment = Environment(config, env)
    executor = Executor(config.inventory, config.executor, config.base_dir, env)
    redactor = environment.redactor()
    audit = AuditLog(config.path(config.state.dir) / "audit.jsonl", redact=redactor.redact_json)
    gate = RunGate(environment, catalog, executor, audit, redactor)
    try:
        runner = CheckRunner(config, gate, env)
        return {name: await runner.run(name) for name in names}
    finally:
        await gate.close()


async def test_http_checks(health: HealthServer, tmp_path: Path) -> None:
    closed = free_port()
    config = write_config(
        tmp_path,
        f"""
[checks.up]
kind = "http"
url = "{health.url("/up")}"
[checks.down]
kind = "http"
url = "{health.url("/down")}"
[checks.unavailable]
kind = "http"
url = "{health.url("/503")}"
[checks.slow]
kind = "http"
url = "{health.url("/slow")}"
timeout = 0.5
[checks.refused]
kind = "http"
url = "http://127.0.0.1:{closed}/actuator/health"
[checks.plain]
kind = "http"
url = "{health.url("/text")}"
""",
    )
    results = await run_checks(config, {}, "up", "down", "unavailable", "slow", "refused", "plain")
    summary = {name: (r.status, r.message) for name, r in results.items()}
    assert summary == {
        "up": (OK, "HTTP 200, UP"), "down": (DOWN, "HTTP 503, status DOWN"), "unavailable": (DOWN, "HTTP 503"),
        "slow": (DOWN, "timeout (no answer within 0.5 s)"), "refused": (DOWN, "connection refused"),
        "plain": (DOWN, "HTTP 200, not a health answer (no JSON status)"),
    }  # fmt: skip
    assert results["up"].data["health"] == {"status": "UP", "components": {"db": "UP", "disk": "UP"}}
    assert all("127.0.0.1" not in r.message for r in results.values())


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [("/html", DOWN, "HTTP 200, not a health answer (no JSON status)"),
     ("/text", DOWN, "HTTP 200, not a health answer (no JSON status)"),
     ("/up-as-text", OK, "HTTP 200, UP"), ("/up", OK, "HTTP 200, UP")],
)  # fmt: skip
async def test_one_verdict_on_a_health_answer_in_data_room_text_and_v0(
    health: HealthServer, tmp_path: Path, path: str, status: CheckStatus, message: str
) -> None:
    """Issue 25: a WAS answering 200 with an HTML page had data DOWN (v0) and the room text ✅ 정상. The check
    decides once (agent/checks/http.py, judge); the text and the v0 data follow it."""
    from agent.actions.dispatch import _check_answer
    from agent.chat.i18n import Chat
    from agent.chat.render import render_finished
    from agent.session.protocol import finished_message
    from agent.session.protocol_v0 import finished_payload

    config = write_config(tmp_path, f'[checks.was]\nkind = "http"\nurl = "{health.url(path)}"\n')
    result = (await run_checks(config, {}, "was"))["was"]
    assert (result.status, result.message) == (status, message)
    assert (result.data.get("reason") == "NOT_HEALTH_JSON") == (status is DOWN)
    answer = _check_answer({"was": result})
    payload = json.loads(json.dumps(finished_message("t", "ops", answer.status, data=answer.data)["payload"]))
    text = render_finished(Chat("ko"), payload, "CHECK_INTERNAL_WAS_STATUS")
    v0 = finished_payload({**payload, "text": text}, "CHECK_INTERNAL_WAS_STATUS")
    if status is DOWN:
        assert payload["status"] == "FAIL" and payload["data"]["status"] == "DOWN"
        assert "장애" in text and "정상" not in text and "✅" not in text
        assert v0["data"] == {"status": "DOWN", "error": message}
    else:
        assert payload["status"] == "SUCCESS" and "✅" in text and "정상" in text
        assert v0["data"]["status"] == "UP"


async def test_disk_thresholds_on_a_real_path(tmp_path: Path) -> None:
    usage = shutil.disk_usage(tmp_path)
    used = 100 * usage.used / usage.total
    config = write_config(
        tmp_path,
        f"""
[checks.fine]
kind = "disk"
path = "."
warn_percent = 100
critical_percent = 100
[checks.warn]
kind = "disk"
path = "."
warn_percent = {used / 2}
critical_percent = 100
[checks.critical]
kind = "disk"
path = {json.dumps(str(tmp_path))}
warn_percent = {used / 3}
critical_percent = {used / 2}
[checks.missing]
kind = "disk"
path = "no/such/folder"
""",
    )
    results = await run_checks(config, {}, "fine", "warn", "critical", "missing")
    assert [results[n].status for n in ("fine", "warn", "critical", "missing")] == [OK, WARN, DOWN, ERROR]
    assert "over the warning" in results["warn"].message and "GiB free" in results["fine"].message


async def test_tcp_check(health: HealthServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"""
[checks.open]
kind = "tcp"
host = "127.0.0.1"
port = {health.port}
[checks.closed]
kind = "tcp"
host = "127.0.0.1"
port = {free_port()}
""",
    )
    results = await run_checks(config, {}, "open", "closed")
    assert (results["open"].status, results["closed"].status) == (OK, DOWN)
    assert results["closed"].message == "connection refused"


DB_QUERIES = """
[db]
statement_timeout = 0.5
max_rows = 5

[db.queries.errors_of_day]
sql = "SELECT prc_code, err_msg, reg_date, qty, blob FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s ORDER BY reg_date DESC"
params = { day = "date" }

[db.queries.error_count]
sql = "SELECT count(*) AS n FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s"
params = { day = "date" }

[db.queries.sleepy]
sql = "SELECT pg_sleep(5)"

[db.queries.writes]
sql = "DELETE FROM tb_mes_wrk_prc_i"
"""


async def test_db_checks_against_real_postgres(postgres: dict[str, str], tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
[checks.rows]
kind = "db"
query = "errors_of_day"
args = { day = "2026-09-18" }
warn_rows = 3
[checks.count]
kind = "db"
query = "error_count"
args = { day = "2026-09-18" }
value_column = "n"
warn_above = 5
critical_above = 10
[checks.quiet_day]
kind = "db"
query = "error_count"
args = { day = "2026-01-01" }
value_column = "n"
critical_above = 0
[checks.sleepy]
kind = "db"
query = "sleepy"
[checks.writes]
kind = "db"
query = "writes"
""",
        DB_QUERIES,
    )
    results = await run_checks(config, postgres, "rows", "count", "quiet_day", "sleepy", "writes")
    rows = results["rows"]
    assert rows.status is WARN and rows.data["row_count"] == 5 and rows.data["truncated"] is True
    first = rows.data["rows"][0]
    assert first["reg_date"] == "2026-09-18T11:38:00" and first["qty"] == "1.50" and first["blob"] == "AP8="
    assert (results["count"].status, results["count"].data["value"]) == (DOWN, 15.0)
    assert results["quiet_day"].status is OK
    assert (results["sleepy"].status, results["sleepy"].message) == (
        DOWN,
        "the query exceeded the 0.5 s statement timeout",
    )
    assert results["writes"].status is ERROR and "read-only" in results["writes"].message
    unreachable = await run_checks(config, {**postgres, "DB_PORT": str(free_port())}, "count")
    assert (unreachable["count"].status, unreachable["count"].message) == (DOWN, "connection refused")


def test_db_values_are_typed_and_never_formatted_into_sql() -> None:
    query = AgentConfig().db.query("mes_qc")
    assert query is not None and "%(date)s" in query.sql
    # A date is the text as sent, for PostgreSQL to read (agent/checks/db.py, DateText): bound, never formatted in.
    for text in [
        "2026-09-18",
        "2026/09/18",
        "20260918",
        "today",
        "2026-09-18'; DROP TABLE x;--",
        "2026-13-01",
    ]:
        bound = dbcheck.bind(query, {"date": text})["date"]
        assert isinstance(bound, dbcheck.DateText) and bound == text
    for hostile in [20260918, None, True, ["2026-09-18"], "x" * 65, "2026-09-18\x00", "\ud800"]:
        with pytest.raises(InvalidArguments) as refused:
            dbcheck.bind(query, {"date": hostile})
        assert "x" * 65 not in str(refused.value) and "\ud800" not in str(refused.value)
    with pytest.raises(InvalidArguments, match="unknown parameter"):
        dbcheck.bind(query, {"date": "2026-09-18", "extra": 1})


@given(st.one_of(st.text(max_size=100), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False)))
def test_a_date_text_is_refused_before_the_database_only_when_postgresql_could_never_get_it(
    value: Any,
) -> None:
    """What goes to PostgreSQL: every string of at most 64 characters it can hold; the rest is refused, unechoed."""
    problem = dbcheck.date_problem(value)
    sendable = isinstance(value, str) and len(value) <= dbcheck.DATE_TEXT_MAX and "\x00" not in value
    sendable = sendable and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    assert (problem is None) == sendable
    if problem is not None and isinstance(value, str) and len(value) > 3:
        assert value not in str(problem)


async def test_runbook_check_status_from_exit_codes(agent_home: Path) -> None:
    config = write_config(
        agent_home,
        """
[checks.good]
kind = "runbook"
runbook = "fail_exit"
hosts = ["h1"]
args = { code = 0 }
[checks.over_threshold]
kind = "runbook"
runbook = "fail_exit"
hosts = ["h1", "h2"]
args = { code = 1 }
[checks.host_down]
kind = "runbook"
runbook = "fail_exit"
hosts = ["h1", "down"]
args = { code = 0 }
[checks.unknown]
kind = "runbook"
runbook = "nope"
hosts = ["h1"]
""",
    )
    results = await run_checks(config, {}, "good", "over_threshold", "host_down", "unknown")
    assert [results[n].status for n in ("good", "over_threshold", "host_down", "unknown")] == [
        OK,
        WARN,
        DOWN,
        ERROR,
    ]
    assert results["host_down"].message == "down: UNREACHABLE"


def test_checks_cli(health: HealthServer, tmp_path: Path) -> None:
    write_config(
        tmp_path,
        f"""
[checks.was]
kind = "http"
url = "{health.url("/up")}"
[checks.broken]
kind = "http"
url = "{health.url("/down")}"
[[schedules]]
name = "every-minute"
checks = ["was"]
interval = 60
""",
    )
    runner = CliRunner()
    listed = runner.invoke(main, ["-c", str(tmp_path / "agent.toml"), "checks", "list"])
    assert "was" in listed.output and "every-minute (every 60 s, on_change)" in listed.output
    assert "on demand only" in listed.output
    ok = runner.invoke(main, ["-c", str(tmp_path / "agent.toml"), "checks", "run", "was"])
    assert ok.exit_code == 0 and ok.output.startswith("was: OK  HTTP 200, UP")
    bad = runner.invoke(main, ["-c", str(tmp_path / "agent.toml"), "checks", "run", "broken", "--json"])
    assert bad.exit_code == 1 and '"status": "DOWN"' in bad.output


def test_bad_check_config_is_refused_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        """
[checks.x]
kind = "db"
query = "missing_query"
[[schedules]]
name = "s"
checks = ["nope"]
interval = 5
cron = "* * * * *"
[[schedules]]
name = "t"
checks = ["x"]
""",
        encoding="utf-8",
        newline="\n",
    )
    result = CliRunner().invoke(main, ["-c", str(tmp_path / "agent.toml"), "config", "check"])
    assert result.exit_code == 2
    assert "give exactly one of interval or cron" in result.output


def _listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock, sock.getsockname()[1]


def _accepted(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def test_fetch_mes_qc_refuses_only_an_unsendable_date_without_touching_the_database(
    tmp_path: Path,
) -> None:
    sock, port = _listener()  # stands in for the database: counts every connection attempt
    try:
        config = write_config(tmp_path, "[db]\nconnect_timeout = 1\n")
        query = config.db.query("mes_qc")
        assert query is not None
        for unsendable in ["2026-09-18" + " " * 60, "2026-09-18\x00", 20260918]:
            with pytest.raises(InvalidArguments):
                dbcheck.bind(query, {"date": unsendable})
        assert _accepted(sock) == 0
        # Anything else is PostgreSQL's to read or refuse, bound as a parameter.
        bound = dbcheck.bind(query, {"date": "2026-09-18' OR '1'='1"})
        with pytest.raises(dbcheck.QueryFailed):
            await dbcheck.query(query, bound, config.db, {"DB_HOST": "127.0.0.1", "DB_PORT": str(port)})
        assert _accepted(sock) == 1
    finally:
        sock.close()


async def test_statuses_do_not_leak_addresses(health: HealthServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[checks.a]\nkind = "http"\nurl = "{health.url("/down")}"\n')
    result = (await run_checks(config, {}, "a"))["a"]
    assert str(health.port) not in result.message and "127.0.0.1" not in str(result.to_json())
