"""``db`` checks and FETCH_MES_QC: named, fixed SQL from the config, run read-only in a worker thread.

Values are converted to their declared type (:func:`bind`) and bound by psycopg2, never formatted into SQL. Each
query runs in its own read-only transaction with ``statement_timeout`` and ``connect_timeout``, returns at most
``max_rows`` rows, and turns dates, decimals and bytes into JSON. Where to connect comes from DB_HOST, DB_PORT,
DB_USER, DB_PASSWORD and DB_NAME; error messages never carry the address.

The database kind (``[db] kind``) chooses the driver (:data:`DRIVERS`): PostgreSQL here, MySQL/MariaDB in
:mod:`agent.checks.db_mysql`; binding, the typed result and the thresholds are the same for both.

A ``date`` parameter is the text as the request wrote it, read by PostgreSQL (:class:`DateText`): ``today`` is the
database session's day, not the agent's, and a text PostgreSQL does not read is refused with its SQLSTATE in words
(:func:`resolve_dates`) before the query runs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from agent.chat.i18n import Msg, nmsg
from agent.checks import CheckResult, CheckStatus
from agent.checks.db_common import Driver, Fetched, OnDates, QueryFailed
from agent.checks.db_idle import IDLE
from agent.checks.db_mysql import MysqlDriver
from agent.config.schema import COUNT_LIMIT, DbCheck, DbConfig, DbKind, DbQuery
from agent.errors import InvalidArguments
from agent.session.protocol import encodable

if TYPE_CHECKING:  # pragma: no cover
    import psycopg2
    import psycopg2.extensions

DB_ENV = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME")


#: The longest date text passed to PostgreSQL; a longer one is refused before any connection is made.
DATE_TEXT_MAX = 64


class DateText(str):
    """A ``date`` parameter as the request wrote it, bound as ``'<text>'::date``: PostgreSQL's own date input reads
    it (``2026-09-18``, ``2026/09/18``, ``20260918``, ``today``, ``yesterday``…, in the server's DateStyle order and
    the session's TimeZone), exactly what the original agent's ``work_date = %s`` with the text did to a date column.
    The cast keeps the parameter a date wherever a query uses it (``%(day)s + 1``)."""

    __slots__ = ()

    def __conform__(self, protocol: object) -> _DateLiteral | None:
        import psycopg2.extensions

        return _DateLiteral(str(self)) if protocol is psycopg2.extensions.ISQLQuote else None


class _DateLiteral:
    """psycopg2's adapter of :class:`DateText`: the quoted string (quoted by psycopg2 itself), then ``::date``."""

    def __init__(self, text: str) -> None:
        import psycopg2.extensions

        self._quoted = psycopg2.extensions.QuotedString(text)

    def prepare(self, connection: object) -> None:
        self._quoted.prepare(connection)

    def getquoted(self) -> bytes:
        return bytes(self._quoted.getquoted()) + b"::date"


def date_problem(value: object) -> str | None:
    """Why ``value`` cannot go to PostgreSQL as a date text (None: it can; PostgreSQL decides whether it reads it).

    Only what could never reach it is refused here: not a string, longer than :data:`DATE_TEXT_MAX`, or a character
    a PostgreSQL text cannot hold (NUL, a lone surrogate). The message never contains the value.
    """
    if not isinstance(value, str) or len(value) > DATE_TEXT_MAX:
        return Msg("must be a date written as text, at most {max} characters", max=DATE_TEXT_MAX)
    if "\x00" in value or not encodable(value):
        return Msg(
            "not a date PostgreSQL reads (SQLSTATE {code}: {condition})",
            code="22021",
            condition=Msg("character not in repertoire"),
        )
    return None


def bind(query: DbQuery, values: Mapping[str, Any]) -> dict[str, Any]:
    """Convert request values to the query's declared parameter types.

    A ``date`` becomes a :class:`DateText`: PostgreSQL reads it (see :func:`resolve_dates`), not the agent.

    Raises:
        InvalidArguments: a missing, unknown or ill-typed value (the value itself is not echoed).
    """
    problems: list[tuple[str, str]] = []
    bound: dict[str, Any] = {}
    for name in values:
        if name not in query.params:
            problems.append((name if re.fullmatch(r"[a-z][a-z0-9_]{0,31}", str(name)) else "(invalid name)",
                             Msg("unknown parameter")))  # fmt: skip
    for name, kind in query.params.items():
        value = values.get(name)
        if value is None:
            problems.append((name, Msg("required")))
        elif kind == "date":
            problem = date_problem(value)
            if problem is None:
                bound[name] = DateText(value)
            else:
                problems.append((name, problem))
        elif kind == "integer":
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
                bound[name] = value
            elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
                bound[name] = int(value)
            else:
                problems.append((name, Msg("must be an integer")))
        elif isinstance(value, str) and len(value) <= 256 and "\x00" not in value and encodable(value):
            bound[name] = value
        else:
            problems.append((name, Msg("must be a string of at most 256 characters")))
    if problems:
        raise InvalidArguments(problems)
    return bound


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[dict[str, Any]]
    #: More rows matched than ``rows`` holds (the query's own LIMIT aside: see ``total``).
    truncated: bool
    #: How many rows match in all, when the query has a ``count_sql`` (capped at COUNT_LIMIT: ``total_at_least``).
    total: int | None = None
    total_at_least: bool = False
    #: Each ``date`` parameter as the database read it, in its own words (``2026-09-18``; ``infinity``).
    dates: dict[str, str] = field(default_factory=dict)


__all__ = ["DRIVERS", "QueryFailed", "QueryResult", "bind", "probe", "query", "run"]


#: SQLSTATEs of PostgreSQL's date input, in words (others: psycopg2's name of the code).
DATE_CONDITIONS = {
    "22007": Msg("invalid datetime format"),
    "22008": Msg("datetime field out of range"),
    "22009": Msg("invalid time zone displacement"),
    "22021": Msg("character not in repertoire"),
    "22023": Msg("invalid parameter value"),
}


#: SQLSTATEs a DB check meets in an SM engineer's day, in words (others: psycopg2's name of the code).
SQLSTATE_WORDS = {
    "42P01": Msg("no such table"),
    "42703": Msg("no such column"),
    "42883": Msg("no such function"),
    "42501": Msg("no permission"),
    "3D000": Msg("no such database"),
    "53300": Msg("too many connections"),
    "55P03": Msg("a lock it needs is held"),
    "57P01": Msg("the database is shutting down"),
    "08006": Msg("the connection broke"),
    "22012": Msg("division by zero"),
    "42601": Msg("syntax error in the query"),
    **DATE_CONDITIONS,
}


def condition_of(code: str, fallback: str = "error") -> str:
    """SQLSTATE ``code`` in words: :data:`SQLSTATE_WORDS`, else psycopg2's name of it in lower case."""
    words: str | None = SQLSTATE_WORDS.get(code)
    if words is None:
        import psycopg2.errorcodes

        words = (psycopg2.errorcodes.lookup(code) or fallback).lower().replace("_", " ")
    return words


def date_refused(code: str) -> str:
    """The problem of a date text PostgreSQL refused with ``code``: it does not read it, and why, in words."""
    return Msg("not a date PostgreSQL reads (SQLSTATE {code}: {condition})", code=code,
               condition=condition_of(code, "data exception"))  # fmt: skip


def _classify(exc: psycopg2.Error, settings: DbConfig) -> QueryFailed:
    import psycopg2.errors

    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return QueryFailed(
            CheckStatus.DOWN,
            Msg("the query exceeded the {timeout:g} s statement timeout", timeout=settings.statement_timeout),
        )
    if isinstance(exc, psycopg2.errors.ReadOnlySqlTransaction):
        return QueryFailed(CheckStatus.ERROR, Msg("the query tried to write; DB checks are read-only"))
    if isinstance(exc, psycopg2.OperationalError) and exc.pgcode is None:
        text = str(exc).lower()
        if "timeout expired" in text:
            return QueryFailed(CheckStatus.DOWN, Msg("connect timed out"))
        if "refused" in text:
            return QueryFailed(CheckStatus.DOWN, Msg("connection refused"))
        if "password authentication failed" in text or "no pg_hba.conf entry" in text:
            return QueryFailed(CheckStatus.ERROR, Msg("login refused (check DB_USER and DB_PASSWORD)"))
        if "does not exist" in text:
            return QueryFailed(
                CheckStatus.ERROR, Msg("the database or user does not exist (check DB_NAME, DB_USER)")
            )
        return QueryFailed(CheckStatus.DOWN, Msg("database unreachable"))
    if exc.pgcode is None:
        return QueryFailed(CheckStatus.ERROR, Msg("the query failed ({error})", error=type(exc).__name__))
    return QueryFailed(CheckStatus.ERROR, Msg("the query failed (SQLSTATE {code}: {condition})", code=exc.pgcode,
                                              condition=condition_of(exc.pgcode)))  # fmt: skip


def _connect(settings: DbConfig, env: Mapping[str, str]) -> psycopg2.extensions.connection:
    """A read-only session under the DB timeouts, reading dates and timestamps leniently (:func:`_lenient_dates`)."""
    import psycopg2

    try:
        connection = psycopg2.connect(
            host=env.get("DB_HOST") or "127.0.0.1",
            port=int(env.get("DB_PORT") or 5432),
            user=env.get("DB_USER") or None,
            password=env.get("DB_PASSWORD") or None,
            dbname=env.get("DB_NAME") or None,
            connect_timeout=settings.connect_timeout,
            application_name="guardia-agent",
            options=f"-c statement_timeout={int(settings.statement_timeout * 1000)} "
            "-c default_transaction_read_only=on",
        )
    except psycopg2.Error as exc:
        raise _classify(exc, settings) from None
    try:
        connection.set_session(readonly=True, autocommit=False)
        _lenient_dates(connection)
    except psycopg2.Error as exc:
        connection.close()
        raise _classify(exc, settings) from None
    return connection


def _lenient_dates(connection: psycopg2.extensions.connection) -> None:
    """Dates and timestamps Python cannot hold (``infinity``, BC, year 10000 and later) come back as the database's
    own text instead of failing the whole answer."""
    import psycopg2.extensions as ext

    def lenient(base: Any) -> Any:
        def cast(value: str | None, cursor: Any) -> Any:
            if value is None or value.endswith("infinity"):
                return value
            try:
                return base(value, cursor)
            except ValueError:
                return value

        return cast

    for oid, base, name in ((1082, ext.DATE, "DATE"), (1114, ext.PYDATETIME, "TIMESTAMP"),
                            (1184, ext.PYDATETIMETZ, "TIMESTAMPTZ")):  # fmt: skip
        ext.register_type(ext.new_type((oid,), f"GUARDIA_{name}", lenient(base)), connection)


def resolve_dates(cursor: psycopg2.extensions.cursor, params: Mapping[str, Any]) -> dict[str, str]:
    """Each :class:`DateText` parameter as the database reads it (in its own words, under ``DateStyle`` ISO).

    Runs in the query's transaction, so ``today`` here is the ``today`` the query sees.

    Raises:
        InvalidArguments: PostgreSQL refused one (SQLSTATE class 22), with the code in words; never the value.
    """
    import psycopg2

    dates: dict[str, str] = {}
    for name, value in params.items():
        if not isinstance(value, DateText):
            continue
        try:
            cursor.execute("SELECT (%s)::text", (value,))
        except psycopg2.DataError as exc:
            raise InvalidArguments([(name, date_refused(exc.pgcode or "22000"))]) from None
        row = cursor.fetchone()
        dates[name] = str(row[0]) if row else str(value)
    return dates


def _database_key(settings: DbConfig, env: Mapping[str, str]) -> tuple[object, ...]:
    """What makes two connections interchangeable: where, as whom, and under which timeouts."""
    return (*(env.get(name) for name in DB_ENV), settings.connect_timeout, settings.statement_timeout)


def _query(
    connection: psycopg2.extensions.connection,
    query: DbQuery,
    params: dict[str, Any],
    settings: DbConfig,
    on_dates: Callable[[dict[str, str]], None],
) -> tuple[list[str], list[tuple[Any, ...]], int | None, dict[str, str]]:
    """Run ``query`` in one read-only transaction (left open: the caller ends it). Raises psycopg2.Error."""
    with connection.cursor() as cursor:
        dates = resolve_dates(cursor, params)
        on_dates(dates)
        cursor.execute(query.sql, params)
        columns = [c.name for c in cursor.description or []]
        fetched = cursor.fetchmany(settings.max_rows + 1) if cursor.description else []
        total = None
        if query.count_sql is not None:
            cursor.execute(query.count_sql, params)
            counted = cursor.fetchone()
            total = int(counted[0]) if counted and isinstance(counted[0], int) else None
    return columns, fetched, total, dates


def _fetch(
    query: DbQuery,
    params: dict[str, Any],
    settings: DbConfig,
    env: Mapping[str, str],
    on_dates: Callable[[dict[str, str]], None] | None = None,
) -> Fetched:
    # Imported on first use: an agent without DB checks never loads libpq (about 10 MiB).
    import psycopg2

    key = _database_key(settings, env)
    told: list[bool] = []

    def dates_read(dates: dict[str, str]) -> None:
        told.append(True)
        if on_dates is not None:
            on_dates(dates)

    kept = IDLE.take(key)
    connection, opened = (
        cast("psycopg2.extensions.connection", kept[0]) if kept else None,
        kept[1] if kept else 0.0,
    )
    try:
        if connection is not None:
            try:
                found = _query(connection, query, params, settings, dates_read)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if exc.pgcode is not None or told:
                    raise
                # Closed by the server while it was idle (a restart, idle_session_timeout): a new one. The query
                # is read-only and had not begun, so running it on the new connection is the first run.
                connection.close()
                connection = None
        if connection is None:
            connection, opened = _connect(settings, env), IDLE.now()
            found = _query(connection, query, params, settings, dates_read)
        connection.rollback()
    except psycopg2.Error as exc:
        if connection is not None:
            connection.close()
        raise _classify(exc, settings) from None
    except BaseException:
        if connection is not None:
            connection.close()
        raise
    IDLE.give(key, connection, opened)
    columns, fetched, total, dates = found
    return Fetched(columns, list(fetched), total, dates)


def _shaped(found: Fetched, settings: DbConfig) -> QueryResult:
    """What a driver fetched as the typed result: JSON values, cut to ``max_rows``, the count bounded."""
    columns, fetched, total, dates = found.columns, found.rows, found.total, found.dates
    rows = [dict(zip(columns, (_json(v) for v in row), strict=True)) for row in fetched[: settings.max_rows]]
    truncated = len(fetched) > settings.max_rows
    at_least = total is not None and total > COUNT_LIMIT
    if total is not None:
        total = max(
            min(total, COUNT_LIMIT), len(fetched)
        )  # what was fetched did match, whatever the count said
        truncated = truncated or total > len(rows)
    return QueryResult(columns, rows, truncated, total, at_least, dates)


def _probe(query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]) -> None:
    import psycopg2

    connection = _connect(settings, env)
    try:
        with connection.cursor() as cursor:
            resolve_dates(cursor, params)
            # The query as a subquery that returns no row: the tables, columns and rights it needs, nothing read. The
            # SQL is the config's own fixed text; the values stay bound.
            wrapped = f"SELECT * FROM (\n{query.sql.strip().rstrip(';')}\n) AS readiness LIMIT 0"  # noqa: S608
            cursor.execute(wrapped, params)
        connection.rollback()
    except psycopg2.Error as exc:
        raise _classify(exc, settings) from None  # the SQLSTATE in words
    finally:
        connection.close()


class PostgresDriver:
    """PostgreSQL through psycopg2 (see the module's text)."""

    def fetch(
        self,
        query: DbQuery,
        params: dict[str, Any],
        settings: DbConfig,
        env: Mapping[str, str],
        on_dates: OnDates,
    ) -> Fetched:
        return _fetch(query, params, settings, env, on_dates)

    def probe(
        self, query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]
    ) -> None:
        _probe(query, params, settings, env)


#: The driver of each database kind (``[db] kind``).
DRIVERS: dict[DbKind, Driver] = {"postgresql": PostgresDriver(), "mysql": MysqlDriver()}


def _execute(
    query: DbQuery,
    params: dict[str, Any],
    settings: DbConfig,
    env: Mapping[str, str],
    on_dates: OnDates | None = None,
) -> QueryResult:
    found = DRIVERS[settings.kind].fetch(query, params, settings, env, on_dates or (lambda dates: None))
    return _shaped(found, settings)


async def probe(query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]) -> None:
    """Whether ``query`` can run: connect under the DB timeouts and run it with ``LIMIT 0`` (reads no row).

    Raises:
        QueryFailed: it cannot (the SQLSTATE's name appended in words); InvalidArguments: a date it does not read.
    """
    await asyncio.to_thread(DRIVERS[settings.kind].probe, query, params, settings, env)


async def query(
    query: DbQuery,
    params: dict[str, Any],
    settings: DbConfig,
    env: Mapping[str, str],
    on_dates: Callable[[dict[str, str]], None] | None = None,
) -> QueryResult:
    """Run a bound query. Raises QueryFailed (status and a room-safe message), or InvalidArguments when PostgreSQL
    does not read a date parameter.

    ``on_dates``: called on the event loop with :attr:`QueryResult.dates` once the database has read the dates,
    before the query itself runs (FETCH_MES_QC's TASK_ACCEPTED names the day); never after this call was cancelled.
    """
    if on_dates is None:
        return await asyncio.to_thread(_execute, query, params, settings, env)
    loop = asyncio.get_running_loop()
    callback = on_dates
    waiting = True

    def deliver(dates: dict[str, str]) -> None:
        if waiting:  # queued before the thread's result, so it runs first unless the caller was cancelled
            callback(dates)

    def hook(dates: dict[str, str]) -> None:
        loop.call_soon_threadsafe(deliver, dates)

    try:
        return await asyncio.to_thread(_execute, query, params, settings, env, hook)
    finally:
        waiting = False


async def run(spec: DbCheck, settings: DbConfig, env: Mapping[str, str]) -> CheckResult:
    started = time.monotonic()
    definition = settings.query(spec.query)
    if definition is None:  # pragma: no cover - the config refuses this
        return CheckResult(CheckStatus.ERROR, f"no query {spec.query!r}")
    try:
        result = await query(definition, bind(definition, spec.args), settings, env)
    except InvalidArguments as exc:
        return CheckResult(
            CheckStatus.ERROR,
            Msg("bad check arguments: {problems}", problems=exc.msg),
            duration=time.monotonic() - started,
        )
    except QueryFailed as exc:
        return CheckResult(exc.status, exc.message, duration=time.monotonic() - started)
    duration = time.monotonic() - started
    count = len(result.rows)
    data: dict[str, Any] = {"row_count": count, "truncated": result.truncated, "rows": result.rows}
    message: str = (
        nmsg("at least {n} row", "at least {n} rows", count)
        if result.truncated
        else nmsg("{n} row", "{n} rows", count)
    )
    status = CheckStatus.OK
    if spec.value_column is not None:
        value = result.rows[0].get(spec.value_column) if result.rows else None
        try:
            number = float(value) if value is not None else None
        except (TypeError, ValueError):
            return CheckResult(
                CheckStatus.ERROR,
                Msg("column {column!r} is not a number", column=spec.value_column),
                data,
                duration,
            )
        data["value"] = number
        shown = {"column": spec.value_column, "value": str(value)}
        message = Msg("{column} = {value}", **shown)
        if number is not None and spec.critical_above is not None and number > spec.critical_above:
            status = CheckStatus.DOWN
            message = Msg(
                "{column} = {value}, over the critical {limit:g}", limit=spec.critical_above, **shown
            )
        elif number is not None and spec.warn_above is not None and number > spec.warn_above:
            status = CheckStatus.WARN
            message = Msg("{column} = {value}, over the warning {limit:g}", limit=spec.warn_above, **shown)
    if spec.critical_rows is not None and count >= spec.critical_rows:
        status = CheckStatus.DOWN
        message = Msg("{n} row(s), at or over the critical {limit}", n=count, limit=spec.critical_rows)
    elif spec.warn_rows is not None and count >= spec.warn_rows and status is CheckStatus.OK:
        status = CheckStatus.WARN
        message = Msg("{n} row(s), at or over the warning {limit}", n=count, limit=spec.warn_rows)
    return CheckResult(status, message, data, duration)
