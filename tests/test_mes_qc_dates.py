"""FETCH_MES_QC reads its date as the original agent's query did (issue 25): the text goes to PostgreSQL as sent,
``today`` is the database session's day, NULL ``reg_date`` rows come first (``ORDER BY reg_date DESC``), and what
PostgreSQL refuses is a clear INVALID_ARGUMENTS naming the SQLSTATE, never the value. Against a real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from agent.checks import db as dbcheck
from agent.checks.db_idle import IDLE
from agent.config.schema import MES_QC_SQL, AgentConfig
from agent.errors import InvalidArguments
from tests.services import ROWS, postgres_database

pytestmark = pytest.mark.external_service

DAY = "2026-09-21"


def connect(env: dict[str, str]) -> Any:
    return psycopg2.connect(host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"],
                            dbname=env["DB_NAME"])  # fmt: skip


@pytest.fixture(scope="module")
def mes() -> Iterator[dict[str, str]]:
    """A database of its own: a day with a row without reg_date, and rows dated by the database's own clock."""
    with postgres_database() as env:
        db = connect(env)
        with db, db.cursor() as cursor:
            rows = [(DAY, "A1", "first", f"{DAY} 08:00:00"), (DAY, "N1", "no time", None),
                    (DAY, "B2", "second", f"{DAY} 09:30:00")]  # fmt: skip
            cursor.executemany(
                "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) VALUES (%s, %s, %s, %s)",
                rows,
            )
            cursor.execute(
                "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) VALUES "
                "(current_date, 'T1', 'today', now()), (current_date - 1, 'Y1', 'yesterday', now() - interval '1 day')"
            )
        db.close()
        yield env


async def fetch(
    env: dict[str, str], date: Any, seen: list[dict[str, str]] | None = None
) -> dbcheck.QueryResult:
    config = AgentConfig()
    query = config.db.query("mes_qc")
    assert query is not None
    return await dbcheck.query(query, dbcheck.bind(query, {"date": date}), config.db, env,
                               on_dates=None if seen is None else seen.append)  # fmt: skip


def db_today(env: dict[str, str]) -> dt.date:
    db = connect(env)
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT current_date")
            (today,) = cursor.fetchone()
    finally:
        db.close()
    assert isinstance(today, dt.date)
    return today


def test_the_built_in_query_is_the_original_agents() -> None:
    assert MES_QC_SQL == ("SELECT work_date, prc_code, err_msg, reg_date FROM tb_mes_wrk_prc_i "
                          "WHERE work_date = %(date)s ORDER BY reg_date DESC LIMIT 10")  # fmt: skip


@pytest.mark.parametrize("text", [DAY, "2026/09/21", "20260921", "Sep 21 2026", " 2026-09-21 ", "09/21/2026"])
async def test_postgresql_reads_the_date_text_as_sent(mes: dict[str, str], text: str) -> None:
    seen: list[dict[str, str]] = []
    result = await fetch(mes, text, seen)
    # data.date is the day the database queried, in its words; rows without reg_date first, as DESC puts them.
    assert result.dates == {"date": DAY} and seen == [{"date": DAY}]
    assert [r["prc_code"] for r in result.rows] == ["N1", "B2", "A1"]
    assert result.rows[0] == {"work_date": DAY, "prc_code": "N1", "err_msg": "no time", "reg_date": None}


async def test_today_and_yesterday_are_the_database_sessions_days(mes: dict[str, str]) -> None:
    today = db_today(mes)
    for text, code, day in [("today", "T1", today), ("yesterday", "Y1", today - dt.timedelta(days=1)),
                            ("TODAY", "T1", today)]:  # fmt: skip
        result = await fetch(mes, text)
        assert result.dates == {"date": day.isoformat()} and [r["prc_code"] for r in result.rows] == [code]
    assert (await fetch(mes, "tomorrow")).dates == {"date": (today + dt.timedelta(days=1)).isoformat()}


async def test_the_database_timezone_decides_what_today_is(mes: dict[str, str]) -> None:
    """UTC+14 and UTC-12 are 26 hours apart: their todays always differ. The agent's clock has no say."""
    admin = connect(mes)
    admin.autocommit = True
    days = {}
    try:
        for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
            with admin.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE \"{mes['DB_NAME']}\" SET timezone = '{zone}'")
            IDLE.close_all()  # new sessions get the zone; kept ones within db_idle.MAX_AGE
            days[zone] = (await fetch(mes, "today")).dates["date"]
            assert days[zone] == db_today(mes).isoformat()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{mes["DB_NAME"]}" RESET timezone')
        admin.close()
    assert days["Pacific/Kiritimati"] > days["Etc/GMT+12"]


REFUSED = [("not-a-date", "22007", "invalid datetime format"), ("2026-02-30", "22008", "datetime field out of range"),
           ("", "22007", "invalid datetime format"), ("2026-09-21'; DELETE FROM tb_mes_wrk_prc_i;--", "22007", None),
           ("2026-09-21 Foo/Bar", "22023", "invalid parameter value")]  # fmt: skip


@pytest.mark.parametrize(("text", "code", "words"), REFUSED)
async def test_what_postgresql_refuses_is_invalid_arguments_with_the_sqlstate(
    mes: dict[str, str], text: str, code: str, words: str | None
) -> None:
    seen: list[dict[str, str]] = []
    with pytest.raises(InvalidArguments) as refused:
        await fetch(mes, text, seen)
    message = str(refused.value)
    assert message.startswith("date: not a date PostgreSQL reads") and f"SQLSTATE {code}" in message
    assert words is None or words in message
    assert (text.strip() and text not in message) or not text
    assert seen == []  # not accepted: the query never ran
    db = connect(mes)
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM tb_mes_wrk_prc_i")
            assert cursor.fetchone() == (len(ROWS) + 5,)
    finally:
        db.close()


async def test_days_python_cannot_hold_come_back_in_the_databases_words(mes: dict[str, str]) -> None:
    assert (await fetch(mes, "infinity")).dates == {"date": "infinity"}
    assert (await fetch(mes, "2026-09-21 BC")).dates == {"date": "2026-09-21 BC"}
    assert (await fetch(mes, "epoch")).dates == {"date": "1970-01-01"}


# -- connections are kept for the next query (agent/checks/db_idle.py) -----------------------------------------


def backends(env: dict[str, str]) -> set[int]:
    """The server processes serving the agent's connections to this database now."""
    db = connect(env)
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                           (env["DB_NAME"], "guardia-agent"))  # fmt: skip
            return {row[0] for row in cursor.fetchall()}
    finally:
        db.close()


async def test_a_second_query_reuses_the_connection_and_one_the_server_closed_is_replaced(
    mes: dict[str, str],
) -> None:
    first = await fetch(mes, DAY)
    kept = backends(mes)
    assert len(kept) == 1  # the connection outlived its query
    second = await fetch(mes, DAY)
    assert backends(mes) == kept and second.rows == first.rows  # and served the next one
    db = connect(mes)
    with db, db.cursor() as cursor:  # the server drops it while idle (a restart, idle_session_timeout)
        cursor.execute("SELECT pg_terminate_backend(%s)", (kept.pop(),))
    db.close()
    third = await fetch(mes, DAY)
    assert third.rows == first.rows and len(backends(mes)) == 1  # answered on a new one, not failed


async def test_a_query_that_failed_leaves_no_connection_behind(mes: dict[str, str]) -> None:
    IDLE.close_all()
    with pytest.raises(InvalidArguments):
        await fetch(mes, "2026-02-30")  # its transaction failed: closed, not kept in that state
    assert backends(mes) == set()
    await fetch(mes, DAY)
    assert len(backends(mes)) == 1


def test_idle_connections_are_taken_newest_first_and_closed_once_too_old() -> None:
    from agent.checks.db_idle import IdleConnections

    class Connection:
        def __init__(self) -> None:
            self.closed = 0

        def close(self) -> None:
            self.closed = 1

    now = [0.0]
    shelf = IdleConnections(idle_seconds=30, keep=2, max_age=100, clock=lambda: now[0])
    a, b, c, d = Connection(), Connection(), Connection(), Connection()
    for connection in (a, b, c):
        shelf.give("db", connection, opened=0)
    assert a.closed and not (b.closed or c.closed)  # at most two kept: the oldest closed
    assert shelf.take("db") == (c, 0) and shelf.take("other") is None
    now[0] = 31
    assert shelf.take("db") is None and b.closed  # idle too long: closed, never handed out
    now[0] = 101
    shelf.give("db", d, opened=0)  # older than max_age: closed, not kept
    assert d.closed and shelf.take("db") is None
