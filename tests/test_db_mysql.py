"""DB checks on MySQL/MariaDB (``[db] kind = "mysql"``), against the real MariaDB on this machine.

The same typed results, thresholds, read-only sessions, timeouts and error words as the PostgreSQL driver
(tests/test_checks.py), plus a scheduled MariaDB check that reports to the room unprompted, through the agent.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.chat.i18n import Chat
from agent.checks import CheckStatus, db, db_mysql
from agent.checks.db_idle import IDLE
from agent.config.schema import AgentConfig, DbConfig, DbQuery
from agent.errors import InvalidArguments
from agent.reference.relay import Relay
from tests.conftest import Operator
from tests.mariadb_service import admin, mariadb_database
from tests.sshd import free_port
from tests.test_checks import run_checks, write_config
from tests.test_layers import MODULES, _imports, _top
from tests.test_scheduler import start, wait_reports

OK, WARN, DOWN, ERROR = CheckStatus.OK, CheckStatus.WARN, CheckStatus.DOWN, CheckStatus.ERROR

QUERIES = """
[db]
kind = "mysql"
statement_timeout = 0.5
max_rows = 5

[db.queries.errors_of_day]
sql = "SELECT prc_code, err_msg, reg_date, qty, blob_col FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s ORDER BY reg_date DESC"
params = { day = "date" }
count_sql = "SELECT count(*) FROM (SELECT 1 FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s LIMIT 10001) AS matched"

[db.queries.error_count]
sql = "SELECT count(*) AS n FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s"
params = { day = "date" }

[db.queries.sleepy]
sql = "SELECT SLEEP(5)"

[db.queries.writes]
sql = "DELETE FROM tb_mes_wrk_prc_i"

[db.queries.ddl]
sql = "DROP TABLE tb_mes_wrk_prc_i"

[db.queries.no_table]
sql = "SELECT * FROM no_such_table"

[db.queries.gauge]
sql = "SELECT n FROM gauge WHERE name = 'backlog'"

[db.queries.connection]
sql = "SELECT CONNECTION_ID() AS id, @@session.tx_read_only AS ro"
"""

CHECKS = """
[checks.rows]
kind = "db"
query = "errors_of_day"
args = { day = "2026-09-18" }
warn_rows = 3
[checks.count]
kind = "db"
query = "error_count"
args = { day = "2026/09/18" }
value_column = "n"
warn_above = 5
critical_above = 10
[checks.quiet_day]
kind = "db"
query = "error_count"
args = { day = "20260101" }
value_column = "n"
critical_above = 0
[checks.sleepy]
kind = "db"
query = "sleepy"
[checks.writes]
kind = "db"
query = "writes"
[checks.ddl]
kind = "db"
query = "ddl"
[checks.no_table]
kind = "db"
query = "no_table"
[checks.bad_day]
kind = "db"
query = "error_count"
args = { day = "2026-02-30" }
"""


@pytest.fixture(scope="module")
def mariadb() -> Iterator[dict[str, str]]:
    with mariadb_database() as env:
        yield env
    IDLE.close_all()


def _config(tmp_path: Path, checks: str = CHECKS) -> AgentConfig:
    return write_config(tmp_path, checks, QUERIES)


def test_the_database_kind_defaults_to_postgresql_and_refuses_others() -> None:
    assert DbConfig().kind == "postgresql"
    assert DbConfig(kind="mysql").kind == "mysql"
    with pytest.raises(ValueError, match="kind"):
        DbConfig(kind="oracle")  # type: ignore[arg-type]
    assert set(db.DRIVERS) == {"postgresql", "mysql"}


def test_only_the_mysql_driver_imports_pymysql() -> None:
    importers = sorted(
        name for name, path in MODULES.items() if "pymysql" in {_top(i) for i in _imports(path)}
    )
    assert importers == ["agent.checks.db_mysql"]


@pytest.mark.external_service
@pytest.mark.skipif(sys.platform == "win32", reason="Windows run: needs MariaDB on this machine")
async def test_db_checks_against_real_mariadb(mariadb: dict[str, str], tmp_path: Path) -> None:
    config = _config(tmp_path)
    names = ("rows", "count", "quiet_day", "sleepy", "writes", "ddl", "no_table", "bad_day")
    results = await run_checks(config, mariadb, *names)
    rows = results["rows"]
    assert rows.status is WARN and rows.data["row_count"] == 5 and rows.data["truncated"] is True
    first = rows.data["rows"][0]
    assert first == {"prc_code": "P014", "err_msg": "err 14 at 10.20.30.14", "reg_date": "2026-09-18T11:38:00",
                     "qty": "1.50", "blob_col": "AP8="}  # fmt: skip
    assert (results["count"].status, results["count"].data["value"]) == (DOWN, 15.0)
    assert results["quiet_day"].status is OK and results["quiet_day"].data["value"] == 0.0
    assert (results["sleepy"].status, results["sleepy"].message) == (
        DOWN,
        "the query exceeded the 0.5 s statement timeout",
    )
    for writer in ("writes", "ddl"):
        assert results[writer].status is ERROR
        assert results[writer].message == "the query tried to write; DB checks are read-only"
    assert (results["no_table"].status, results["no_table"].message) == (
        ERROR,
        "the query failed (SQLSTATE 42S02: no such table)",
    )
    korean = Chat("ko").text(results["no_table"].message)
    assert "42S02" in korean and "no such table" not in korean and "테이블" in korean
    assert results["bad_day"].status is ERROR and "day" in results["bad_day"].message
    with admin(mariadb["DB_NAME"]) as root, root.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM tb_mes_wrk_prc_i")
        assert cursor.fetchone() == (16,)  # the writes above changed nothing


@pytest.mark.external_service
@pytest.mark.skipif(sys.platform == "win32", reason="Windows run: needs MariaDB on this machine")
async def test_unreachable_and_refused_logins_are_said_in_words(
    mariadb: dict[str, str], tmp_path: Path
) -> None:
    config = _config(tmp_path)
    refused = await run_checks(config, {**mariadb, "DB_PORT": str(free_port())}, "count")
    assert (refused["count"].status, refused["count"].message) == (DOWN, "connection refused")
    login = await run_checks(config, {**mariadb, "DB_PASSWORD": "not-the-password"}, "count")
    assert (login["count"].status, login["count"].message) == (
        ERROR,
        "login refused (check DB_USER and DB_PASSWORD)",
    )
    assert "not-the-password" not in str(login["count"].to_json())
    missing = await run_checks(config, {**mariadb, "DB_NAME": "guardia_no_such_db"}, "count")
    assert missing["count"].status is ERROR and "DB_NAME" in missing["count"].message


@pytest.mark.external_service
@pytest.mark.skipif(sys.platform == "win32", reason="Windows run: needs MariaDB on this machine")
async def test_dates_are_read_by_the_database_and_counted(mariadb: dict[str, str]) -> None:
    settings = DbConfig(kind="mysql", max_rows=5)
    query = DbQuery(
        sql="SELECT prc_code FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s ORDER BY prc_code",
        params={"day": "date"},
        count_sql="SELECT count(*) FROM tb_mes_wrk_prc_i WHERE work_date = %(day)s",
    )
    told: list[dict[str, str]] = []
    result = await db.query(
        query, db.bind(query, {"day": "20260918"}), settings, mariadb, on_dates=told.append
    )
    assert result.dates == {"day": "2026-09-18"} and told == [{"day": "2026-09-18"}]
    assert (len(result.rows), result.total, result.truncated) == (5, 15, True)
    with admin() as root, root.cursor() as cursor:
        cursor.execute("SELECT CURDATE(), CURDATE() - INTERVAL 1 DAY")
        today, yesterday = cursor.fetchone()
    for word, day in (("today", today), ("Yesterday", yesterday)):
        read = await db.query(query, db.bind(query, {"day": word}), settings, mariadb)
        assert read.dates == {"day": day.isoformat()}
    for unread in ("2026-02-30", "not a day", "2026-09-18'; DROP TABLE gauge; --"):
        with pytest.raises(InvalidArguments) as refused:
            await db.query(query, db.bind(query, {"day": unread}), settings, mariadb)
        assert unread not in str(refused.value)
    await db.probe(query, db.bind(query, {"day": "today"}), settings, mariadb)
    broken = DbQuery(sql="SELECT nope FROM tb_mes_wrk_prc_i")
    with pytest.raises(db.QueryFailed, match="42S22: no such column"):
        await db.probe(broken, {}, settings, mariadb)


@pytest.mark.external_service
@pytest.mark.skipif(sys.platform == "win32", reason="Windows run: needs MariaDB on this machine")
async def test_a_kept_connection_is_reused_read_only_and_replaced_when_the_server_dropped_it(
    mariadb: dict[str, str],
) -> None:
    IDLE.close_all()
    settings = DbConfig(kind="mysql")
    query = DbQuery(sql="SELECT CONNECTION_ID() AS id, @@session.tx_read_only AS ro")
    first = (await db.query(query, {}, settings, mariadb)).rows[0]
    second = (await db.query(query, {}, settings, mariadb)).rows[0]
    assert first["id"] == second["id"] and first["ro"] == 1
    switch = DbQuery(
        sql="SET SESSION TRANSACTION READ WRITE"
    )  # the config's own SQL: still no write after it
    await db.query(switch, {}, settings, mariadb)
    writes = DbQuery(sql="UPDATE gauge SET n = n + 1")
    with pytest.raises(db.QueryFailed, match="read-only"):
        await db.query(writes, {}, settings, mariadb)
    kept = (await db.query(query, {}, settings, mariadb)).rows[0]["id"]
    with admin() as root, root.cursor() as cursor:
        cursor.execute(f"KILL {int(kept)}")
    again = (await db.query(query, {}, settings, mariadb)).rows[0]
    assert again["id"] != kept and again["ro"] == 1


#: Every text the agent says in English (the catalog's message ids).
OWN_WORDS = re.findall(
    r'^msgid "(.+)"$',
    (Path(db_mysql.__file__).parents[1] / "chat/locale/en/LC_MESSAGES/guardia.po").read_text(
        encoding="utf-8"
    ),
    re.MULTILINE,
)


@given(errno=st.integers(min_value=-1, max_value=70000), text=st.text(max_size=80), connecting=st.booleans())
def test_every_mysql_error_becomes_words_without_the_servers_text(
    errno: int, text: str, connecting: bool
) -> None:
    failure = db_mysql.classify(
        Exception(errno, f"host 10.9.8.7: {text}"), DbConfig(kind="mysql"), connecting
    )
    assert failure.status in (DOWN, ERROR)
    assert "10.9.8.7" not in failure.message
    # The server's text never comes through, unless it is part of the agent's own words ("timed out" is in
    # "connect timed out", which a timeout is rightly called).
    if len(text) > 6 and not any(text in words for words in OWN_WORDS):
        assert text not in failure.message
    assert Chat("ko").text(failure.message)  # renders in Korean, never raises


def test_the_error_words_table_names_the_sqlstate_and_is_translated() -> None:
    korean = Chat("ko")
    for errno, (sqlstate, words) in db_mysql.MYSQL_ERRORS.items():
        assert len(sqlstate) == 5, errno
        assert korean.text(words) != str(words), f"{errno}: {words!r} has no Korean"
    assert db_mysql.condition_of(1146) == "no such table"
    assert (
        db_mysql.condition_of(1062) == "dup entry"
    )  # PyMySQL's name, in words, for the ones not in the table


@pytest.mark.external_service
@pytest.mark.skipif(sys.platform == "win32", reason="Windows run: needs MariaDB on this machine")
async def test_a_scheduled_mariadb_check_reports_unprompted_and_its_recovery(
    agent_home: Path, relay: Relay, operator: Operator, mariadb: dict[str, str]
) -> None:
    with admin(mariadb["DB_NAME"]) as root, root.cursor() as cursor:
        cursor.execute("UPDATE gauge SET n = 50 WHERE name = 'backlog'")
    app = await start(
        agent_home,
        relay,
        QUERIES
        + """
[checks.backlog]
kind = "db"
query = "gauge"
value_column = "n"
critical_above = 10

[[schedules]]
name = "db-often"
checks = ["backlog"]
interval = 0.3
room = "ops-db"
notify = "on_change"
""",
        env=mariadb,
    )
    try:
        [down] = await wait_reports(operator, 1)
        assert (down["check"], down["status"], down["message"]) == (
            "backlog",
            "DOWN",
            "backlog: n = 50, over the critical 10",
        )
        with admin(mariadb["DB_NAME"]) as root, root.cursor() as cursor:
            cursor.execute("UPDATE gauge SET n = 3 WHERE name = 'backlog'")
        _, recovery = await wait_reports(operator, 2)
        assert recovery["status"] == "OK" and recovery["recovered"] is True
        event = next(
            e for e in operator.events if e.get("event") == "REPORT" and e["payload"]["kind"] == "schedule"
        )
        assert event["room_id"] == "ops-db"
        # …and the check history (what `agent report` reads) has the incident, to the run.
        history = app.app.config.path(app.app.config.state.dir) / "checks.jsonl"
        changes = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines()]
        assert [(e["check"], e["status"]) for e in changes if e["kind"] == "check_status"][:2] == [
            ("backlog", "DOWN"),
            ("backlog", "OK"),
        ]
    finally:
        await app.stop()
