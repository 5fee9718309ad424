"""``db`` checks and FETCH_MES_QC: named, fixed SQL from the config, run read-only in a worker thread.

Values are converted to their declared type (:func:`bind`) and bound by psycopg2, never formatted into SQL. Each
query runs in its own read-only transaction with ``statement_timeout`` and ``connect_timeout``, returns at most
``max_rows`` rows, and turns dates, decimals and bytes into JSON. Where to connect comes from DB_HOST, DB_PORT,
DB_USER, DB_PASSWORD and DB_NAME; error messages never carry the address.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.chat.i18n import Msg, nmsg
from agent.checks import CheckResult, CheckStatus
from agent.config.schema import COUNT_LIMIT, DbCheck, DbConfig, DbQuery
from agent.errors import InvalidArguments

if TYPE_CHECKING:  # pragma: no cover
    import psycopg2

DB_ENV = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME")


def bind(query: DbQuery, values: Mapping[str, Any], today: dt.date | None = None) -> dict[str, Any]:
    """Convert request values to the query's declared parameter types.

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
            day = today or dt.date.today()
            if value in ("today", "yesterday"):
                bound[name] = day if value == "today" else day - dt.timedelta(days=1)
            elif isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
                try:
                    bound[name] = dt.date.fromisoformat(value)
                except ValueError:
                    problems.append((name, Msg("must be a real calendar date (YYYY-MM-DD)")))
            else:
                problems.append((name, Msg("must be a date written YYYY-MM-DD")))
        elif kind == "integer":
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
                bound[name] = value
            elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
                bound[name] = int(value)
            else:
                problems.append((name, Msg("must be an integer")))
        elif isinstance(value, str) and len(value) <= 256 and "\x00" not in value:
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


class QueryFailed(Exception):
    def __init__(self, status: CheckStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    code = exc.pgcode or type(exc).__name__
    return QueryFailed(CheckStatus.ERROR, Msg("the query failed (SQLSTATE {code})", code=code))


def _execute(
    query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]
) -> QueryResult:
    # Imported on first use: an agent without DB checks never loads libpq (about 10 MiB).
    import psycopg2
    import psycopg2.extensions

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
        with connection.cursor() as cursor:
            cursor.execute(query.sql, params)
            columns = [c.name for c in cursor.description or []]
            fetched = cursor.fetchmany(settings.max_rows + 1) if cursor.description else []
            total = None
            if query.count_sql is not None:
                cursor.execute(query.count_sql, params)
                counted = cursor.fetchone()
                total = int(counted[0]) if counted and isinstance(counted[0], int) else None
        connection.rollback()
    except psycopg2.Error as exc:
        raise _classify(exc, settings) from None
    finally:
        connection.close()
    rows = [dict(zip(columns, (_json(v) for v in row), strict=True)) for row in fetched[: settings.max_rows]]
    truncated = len(fetched) > settings.max_rows
    at_least = total is not None and total > COUNT_LIMIT
    if total is not None:
        total = max(
            min(total, COUNT_LIMIT), len(fetched)
        )  # what was fetched did match, whatever the count said
        truncated = truncated or total > len(rows)
    return QueryResult(columns, rows, truncated, total, at_least)


async def query(
    query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]
) -> QueryResult:
    """Run a bound query. Raises QueryFailed (status and a room-safe message)."""
    return await asyncio.to_thread(_execute, query, params, settings, env)


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
