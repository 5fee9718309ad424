"""Group commit: the outbox writes made within one event-loop iteration, committed as one transaction (one fsync)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from agent.state.outbox import Outbox

T = TypeVar("T")


class GroupCommit:
    """Group the outbox writes made within one event-loop iteration into one transaction (one fsync).

    Each write is a function of the outbox (``lambda box: box.finish_task(task_id, message)``); :meth:`submit` returns
    a future that completes once the write is committed, so the caller sends the message only after it is durable.
    Writes submitted while the loop runs other callbacks are committed together on the next iteration; each write runs
    in a savepoint, so one that raises fails alone (its future gets the exception) and the rest commit.

    Usage (the link/runtime side): ``seq = await group.put(message)`` then send; or ``await group.submit(write)``.
    """

    def __init__(self, outbox: Outbox, on_commit: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        #: Called as soon as a commit carrying at least one write is done, before the writes' futures run their
        #: callbacks (a loop iteration later): the link's writer is woken without waiting for them.
        self._on_commit = on_commit
        self._queue: list[tuple[Callable[[Outbox], Any], asyncio.Future[Any]]] = []
        #: Commits made and writes they carried (benchmarks read these).
        self.commits = 0
        self.writes = 0

    def submit(self, write: Callable[[Outbox], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queue:
            loop.call_soon(self.flush)
        self._queue.append((write, future))
        return future

    async def put(self, message: dict[str, Any]) -> int:
        return await self.submit(lambda box: box.put(message))

    async def finish_task(self, task_id: str | None, message: dict[str, Any]) -> int:
        return await self.submit(lambda box: box.finish_task(task_id, message))

    def flush(self) -> None:
        """Commit everything queued now (called by the loop; callable directly, e.g. before closing)."""
        queue, self._queue = self._queue, []
        if not queue:
            return
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self.outbox.batch():
                for write, future in queue:
                    try:
                        with self.outbox.batch():
                            results.append((future, write(self.outbox), None))
                    except Exception as exc:  # that write alone failed; it was rolled back to its savepoint
                        results.append((future, None, exc))
        except Exception as exc:  # the commit itself failed: every write of the group failed
            for _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(queue)
        if self._on_commit is not None and any(error is None for _, _, error in results):
            self._on_commit()
        for future, value, error in results:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
