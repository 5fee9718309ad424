"""The MySQL/MariaDB driver of DB checks (``[db] kind = "mysql"``): the only PyMySQL import.

PyMySQL is pure Python (one py3-none-any wheel), so the same driver runs on the Linux and the Windows agent. Each
session is read-only (``SET SESSION TRANSACTION READ ONLY``: a write fails with error 1792), has a statement timeout
on the server (MariaDB's ``max_statement_time``, else MySQL's ``max_execution_time``) and the same on the client as
a backstop, and a connect timeout; each query runs in its own transaction, rolled back after. Connections a query
left in good order are kept as the PostgreSQL ones are (:mod:`agent.checks.db_idle`), and checked with a ping before
they are used again.

MySQL's error numbers become words through :data:`MYSQL_ERRORS` (the MySQL counterpart of ``SQLSTATE_WORDS``),
with the error's SQLSTATE as MySQL itself gives it (``ERROR 1146 (42S02)``). A ``date`` parameter is read by the
database: ``today``, ``yesterday`` and ``tomorrow`` are its ``CURDATE()``, any other text goes through
``CAST(… AS DATE)``, and the query gets the date the database read.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from agent.chat.i18n import Msg
from agent.checks import CheckStatus
from agent.checks.db_common import Fetched, OnDates, QueryFailed
from agent.checks.db_idle import IDLE
from agent.config.schema import DbConfig, DbQuery
from agent.errors import InvalidArguments

#: MySQL's error numbers a DB check meets, as (SQLSTATE, words); others: PyMySQL's name of the number, in words.
MYSQL_ERRORS: dict[int, tuple[str, str]] = {
    1146: ("42S02", Msg("no such table")),
    1054: ("42S22", Msg("no such column")),
    1305: ("42000", Msg("no such function")),
    1630: ("42000", Msg("no such function")),
    1044: ("42000", Msg("no permission")),
    1142: ("42000", Msg("no permission")),
    1143: ("42000", Msg("no permission")),
    1227: ("42000", Msg("no permission")),
    1049: ("42000", Msg("no such database")),
    1040: ("08004", Msg("too many connections")),
    1203: ("42000", Msg("too many connections")),
    1205: ("HY000", Msg("a lock it needs is held")),
    1213: ("40001", Msg("a lock it needs is held")),
    1053: ("08S01", Msg("the database is shutting down")),
    1927: ("70100", Msg("the connection broke")),
    2006: ("HY000", Msg("the connection broke")),
    2013: ("HY000", Msg("the connection broke")),
    1365: ("22012", Msg("division by zero")),
    1064: ("42000", Msg("syntax error in the query")),
    1149: ("42000", Msg("syntax error in the query")),
    1292: ("22007", Msg("invalid datetime format")),
}
#: Errors of a statement stopped by the server's statement timeout (MariaDB's max_statement_time; MySQL's
#: max_execution_time).
TIMEOUT_ERRORS = frozenset({1969, 3024})
#: A write in the read-only session.
READ_ONLY_ERRORS = frozenset({1792, 1290})
#: Login refused (wrong password, or a user that may log in only another way).
LOGIN_ERRORS = frozenset({1045, 1698, 1251})
#: The date words the database reads itself, as SQL (the agent's clock is never used for them).
DATE_WORDS = {
    "today": "CURDATE()",
    "yesterday": "CURDATE() - INTERVAL 1 DAY",
    "tomorrow": "CURDATE() + INTERVAL 1 DAY",
}
#: The client waits this much longer than the server's statement timeout before it gives up on an answer.
CLIENT_MARGIN = 5.0
DEFAULT_PORT = 3306


@functools.cache
def _error_names() -> dict[int, str]:
    from pymysql.constants import ER

    return {value: name for name, value in vars(ER).items() if name.isupper() and isinstance(value, int)}


def condition_of(errno: int) -> str:
    """MySQL error ``errno`` in words: :data:`MYSQL_ERRORS`, else PyMySQL's name of it in lower case."""
    known = MYSQL_ERRORS.get(errno)
    if known is not None:
        return known[1]
    return _error_names().get(errno, "error").lower().replace("_", " ")


def _connect_failure(errno: int, text: str) -> QueryFailed:
    """A connection that could not be made: refused, timed out, a login or a database the server refused."""
    if errno in LOGIN_ERRORS:
        return QueryFailed(CheckStatus.ERROR, Msg("login refused (check DB_USER and DB_PASSWORD)"))
    if errno == 1049:
        return QueryFailed(
            CheckStatus.ERROR, Msg("the database or user does not exist (check DB_NAME, DB_USER)")
        )
    if "timed out" in text:
        return QueryFailed(CheckStatus.DOWN, Msg("connect timed out"))
    if "refused" in text:
        return QueryFailed(CheckStatus.DOWN, Msg("connection refused"))
    return QueryFailed(CheckStatus.DOWN, Msg("database unreachable"))


def classify(exc: BaseException, settings: DbConfig, connecting: bool = False) -> QueryFailed:
    """A PyMySQL error as a room-safe failure (the error in words; never the address or the server's text)."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else 0
    text = str(args[1] if len(args) > 1 else "").lower()
    if errno in TIMEOUT_ERRORS or (errno == 2013 and "timed out" in text and not connecting):
        return QueryFailed(
            CheckStatus.DOWN,
            Msg("the query exceeded the {timeout:g} s statement timeout", timeout=settings.statement_timeout),
        )
    if errno in READ_ONLY_ERRORS:
        return QueryFailed(CheckStatus.ERROR, Msg("the query tried to write; DB checks are read-only"))
    if connecting or errno in (2003, 2005) or errno == 0:
        return _connect_failure(errno, text)
    if errno in (2006, 2013, 1053, 1927):
        return QueryFailed(CheckStatus.DOWN, Msg("database unreachable"))
    known = MYSQL_ERRORS.get(errno)
    if known is None:
        return QueryFailed(
            CheckStatus.ERROR,
            Msg("the query failed ({error})", error=f"MySQL {errno}: {condition_of(errno)}"),
        )
    return QueryFailed(
        CheckStatus.ERROR,
        Msg("the query failed (SQLSTATE {code}: {condition})", code=known[0], condition=known[1]),
    )


class _Kept:
    """A PyMySQL connection as the idle shelf sees one (``closed``, ``close()``)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @property
    def closed(self) -> int:
        return 0 if self.connection.open else 1

    def close(self) -> None:
        self.connection.close()


def _key(settings: DbConfig, env: Mapping[str, str]) -> tuple[object, ...]:
    names = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME")
    return ("mysql", *(env.get(name) for name in names), settings.connect_timeout, settings.statement_timeout)


def _session_timeout(cursor: Any, seconds: float) -> None:
    """The server's statement timeout: MariaDB's ``max_statement_time`` (seconds), else MySQL's
    ``max_execution_time`` (milliseconds, SELECT only)."""
    import pymysql

    try:
        cursor.execute("SET SESSION max_statement_time = %s", (seconds,))
    except pymysql.err.Error as exc:
        if not exc.args or exc.args[0] != 1193:  # 1193: unknown system variable (MySQL)
            raise
        cursor.execute("SET SESSION max_execution_time = %s", (max(1, round(seconds * 1000)),))


def connect(settings: DbConfig, env: Mapping[str, str]) -> Any:
    """A read-only session under the DB timeouts, in UTF-8 (utf8mb4).

    Raises:
        QueryFailed: the server cannot be reached, or refused the login or the database.
    """
    import pymysql

    try:
        connection = pymysql.connect(
            host=env.get("DB_HOST") or "127.0.0.1",
            port=int(env.get("DB_PORT") or DEFAULT_PORT),
            user=env.get("DB_USER") or None,
            password=env.get("DB_PASSWORD") or "",
            database=env.get("DB_NAME") or None,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.statement_timeout + CLIENT_MARGIN,
            write_timeout=settings.statement_timeout + CLIENT_MARGIN,
            charset="utf8mb4",
            autocommit=False,
            program_name="guardia-agent",
        )
    except (pymysql.err.Error, OSError) as exc:
        raise classify(exc, settings, connecting=True) from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            _session_timeout(cursor, settings.statement_timeout)
        connection.commit()
    except pymysql.err.Error as exc:
        connection.close()
        raise classify(exc, settings) from None
    return connection


def resolve_dates(cursor: Any, query: DbQuery, params: dict[str, Any]) -> dict[str, str]:
    """Each ``date`` parameter as the database reads it (``2026-09-18``); ``params`` get that date.

    Raises:
        InvalidArguments: the database does not read one as a date (never the value in the message).
    """
    dates: dict[str, str] = {}
    for name, kind in query.params.items():
        if kind != "date" or name not in params:
            continue
        text = str(params[name])
        word = DATE_WORDS.get(text.strip().lower())
        if word is not None:
            cursor.execute(f"SELECT {word}")  # a fixed expression from DATE_WORDS
            row = cursor.fetchone()
        else:
            cursor.execute("SELECT CAST(%s AS DATE)", (text,))
            row = cursor.fetchone()
            # MySQL reads what it can and warns about the rest ('2026-09-18 junk'): only a clean read is a date.
            cursor.execute("SHOW COUNT(*) WARNINGS")
            warned = cursor.fetchone()
            row = None if warned and warned[0] else row
        if not row or row[0] is None:
            raise InvalidArguments([(name, Msg("must be a real calendar date (YYYY-MM-DD)"))])
        dates[name] = params[name] = row[0].isoformat() if hasattr(row[0], "isoformat") else str(row[0])
    return dates


def _run(
    connection: Any, query: DbQuery, params: dict[str, Any], settings: DbConfig, on_dates: OnDates
) -> Fetched:
    """The query in the session's read-only transaction (left open: the caller ends it)."""
    with connection.cursor() as cursor:
        # Read-only per transaction as well as per session: a query that switched the session back to READ WRITE
        # (the config's own SQL, but a kept connection outlives it) changes no later query.
        cursor.execute("START TRANSACTION READ ONLY")
        dates = resolve_dates(cursor, query, params)
        on_dates(dates)
        cursor.execute(query.sql, params)
        columns = [column[0] for column in cursor.description or []]
        rows = list(cursor.fetchmany(settings.max_rows + 1)) if cursor.description else []
        total = None
        if query.count_sql is not None:
            cursor.execute(query.count_sql, params)
            counted = cursor.fetchone()
            total = int(counted[0]) if counted and isinstance(counted[0], int) else None
    return Fetched(columns, rows, total, dates)


def _kept_connection(key: tuple[object, ...]) -> tuple[Any, float] | None:
    """A kept connection to ``key`` that still answers a ping (None: connect anew)."""
    import pymysql

    while (kept := IDLE.take(key)) is not None:
        wrapper, opened = kept
        connection = wrapper.connection  # type: ignore[attr-defined]
        try:
            connection.ping(reconnect=False)
        except (pymysql.err.Error, OSError):
            wrapper.close()
            continue
        return connection, opened
    return None


class MysqlDriver:
    """MySQL and MariaDB through PyMySQL (see the module's text)."""

    def fetch(
        self,
        query: DbQuery,
        params: dict[str, Any],
        settings: DbConfig,
        env: Mapping[str, str],
        on_dates: OnDates,
    ) -> Fetched:
        import pymysql

        key = _key(settings, env)
        params = dict(params)
        kept = _kept_connection(key)
        connection, opened = kept if kept else (connect(settings, env), IDLE.now())
        try:
            found = _run(connection, query, params, settings, on_dates)
            connection.rollback()
        except (pymysql.err.Error, OSError) as exc:
            _close(connection)
            raise classify(exc, settings) from None
        except BaseException:
            _close(connection)
            raise
        IDLE.give(key, _Kept(connection), opened)
        return found

    def probe(
        self, query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]
    ) -> None:
        import pymysql

        connection = connect(settings, env)
        params = dict(params)
        try:
            with connection.cursor() as cursor:
                cursor.execute("START TRANSACTION READ ONLY")
                resolve_dates(cursor, query, params)
                # The tables, columns and rights it needs, nothing read; the SQL is the config's own fixed text.
                wrapped = f"SELECT * FROM (\n{query.sql.strip().rstrip(';')}\n) AS readiness LIMIT 0"  # noqa: S608
                cursor.execute(wrapped, params)
            connection.rollback()
        except (pymysql.err.Error, OSError) as exc:
            raise classify(exc, settings) from None
        finally:
            _close(connection)


def _close(connection: Any) -> None:
    import contextlib

    with contextlib.suppress(Exception):  # closing a connection the server already dropped
        connection.close()
