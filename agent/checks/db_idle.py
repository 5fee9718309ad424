"""Database connections a query finished with, kept a while for the next query to the same database.

Opening a PostgreSQL connection costs more than the queries the agent runs on it: on loopback, 4.5 ms to connect
and close against 0.13 ms for FETCH_MES_QC's query on an open one (benchmarks/bench_v0.py measures the round trip
beside the original agent, which connected for every query). So each connection a query leaves in good order is kept
for :data:`IDLE_SECONDS`, at most :data:`KEEP` per database, and the next query to the same database (same address,
user, password, name and timeouts) takes the newest one. A connection idle longer, or older than :data:`MAX_AGE`, is
closed, never used; an empty shelf just means a new connection. So what a DBA changes for new sessions (``ALTER
DATABASE … SET timezone``) reaches the agent's queries within :data:`MAX_AGE` at the latest. psycopg2's own pools
keep connections forever and raise when full, which is why this is not one of them.

The MySQL/MariaDB driver (agent/checks/db_mysql.py) keeps its connections on the same shelf, under keys of its own,
and pings one before it uses it again.

Thread-safe: the queries run in worker threads (``asyncio.to_thread``); each connection is used by one at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from typing import Protocol


class Closable(Protocol):
    @property
    def closed(self) -> int: ...

    def close(self) -> None: ...


#: How long an idle connection is kept for the next query, in seconds.
IDLE_SECONDS = 30.0
#: At most this many idle connections per database.
KEEP = 4
#: A connection older than this (seconds since it was opened) is closed instead of kept.
MAX_AGE = 300.0


class IdleConnections:
    """Idle connections by database key, newest last."""

    def __init__(
        self,
        idle_seconds: float = IDLE_SECONDS,
        keep: int = KEEP,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.keep = keep
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        #: Per database key: (connection, when it was opened, since when it is idle), newest last.
        self._shelves: dict[Hashable, list[tuple[Closable, float, float]]] = {}

    def now(self) -> float:
        """The clock :meth:`give` reads ``opened`` on."""
        return self._clock()

    def take(self, key: Hashable) -> tuple[Closable, float] | None:
        """The newest idle connection to ``key`` still within its idle time, and when it was opened (None: connect
        anew)."""
        now = self._clock()
        with self._lock:
            shelf = self._shelves.get(key, [])
            fresh = [kept for kept in shelf if now - kept[2] <= self.idle_seconds and not kept[0].closed]
            stale = [kept[0] for kept in shelf if kept not in fresh]
            taken = fresh.pop() if fresh else None
            self._shelves[key] = fresh
        _close(stale)
        return (taken[0], taken[1]) if taken else None

    def give(self, key: Hashable, connection: Closable, opened: float) -> None:
        """Keep ``connection`` (in good order: its transaction ended), opened at ``opened``, for the next query to
        ``key``; closed instead when it is older than :attr:`max_age`."""
        now = self._clock()
        if connection.closed or now - opened > self.max_age:
            _close([connection])
            return
        with self._lock:
            shelf = self._shelves.setdefault(key, [])
            shelf.append((connection, opened, now))
            surplus = [kept[0] for kept in shelf[: -self.keep]]
            del shelf[: -self.keep]
        _close(surplus)

    def close_all(self) -> None:
        """Close every idle connection (at exit; and where a test changes what new sessions get)."""
        with self._lock:
            every = [kept[0] for shelf in self._shelves.values() for kept in shelf]
            self._shelves.clear()
        _close(every)


def _close(connections: list[Closable]) -> None:
    for connection in connections:
        with contextlib.suppress(Exception):  # closing a connection the server already dropped
            connection.close()


#: The agent's one shelf (closed when the process exits, so the server sees a clean goodbye).
IDLE = IdleConnections()
atexit.register(IDLE.close_all)
