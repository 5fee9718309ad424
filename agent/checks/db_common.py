"""What every DB driver shares: the rows a query fetched, the failure a driver raises, and the driver's shape.

:mod:`agent.checks.db` is the entry point (binding, the typed result, thresholds); a driver per database kind
(``[db] kind``) fetches: PostgreSQL in :mod:`agent.checks.db` (the only psycopg2 import), MySQL/MariaDB in
:mod:`agent.checks.db_mysql` (the only PyMySQL import). A driver turns its library's errors into
:class:`QueryFailed` (a status and a room-safe message: the condition in words, never the address) or
:class:`~agent.errors.InvalidArguments` (a date the database does not read), and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent.checks import CheckStatus
from agent.config.schema import DbConfig, DbQuery

#: Told each date parameter as the database read it, before the query itself runs.
OnDates = Callable[[dict[str, str]], None]


class QueryFailed(Exception):
    """A query that could not run or did not finish: ``status`` (DOWN: the database; ERROR: the check) and
    ``message`` (a :class:`agent.chat.i18n.Msg`, room-safe)."""

    def __init__(self, status: CheckStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Fetched:
    """What a driver read, before it is turned into JSON: at most ``max_rows + 1`` rows (one more says "cut")."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    #: The query's ``count_sql`` value (None: no count_sql).
    total: int | None
    #: Each ``date`` parameter as the database read it.
    dates: dict[str, str]


class Driver(Protocol):
    """One database kind. Both calls block (they run in a worker thread) and raise only QueryFailed or
    InvalidArguments."""

    def fetch(
        self,
        query: DbQuery,
        params: dict[str, Any],
        settings: DbConfig,
        env: Mapping[str, str],
        on_dates: OnDates,
    ) -> Fetched: ...

    def probe(
        self, query: DbQuery, params: dict[str, Any], settings: DbConfig, env: Mapping[str, str]
    ) -> None: ...
