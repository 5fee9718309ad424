"""Durable delivery: the outbox of unacknowledged messages and the ledger of seen task ids (SQLite).

Every agent → relay message is written here before it is sent, and deleted only when the relay's ACK names its
``msg_id``; after a reconnect or a restart the rest is sent again, in the order it was written. A task's final
message and its ledger entry are written in one transaction, so an agent killed between finishing a task and
receiving the ACK resends the result after restart, and a repeated ``task_id`` gets the stored result instead of a
second run. Ledger entries are kept for ``task_retention`` seconds.

**Durability.** SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk (the WAL fsynced) before the call
returns, so a result survives a power cut, not only a killed process. An fsync costs milliseconds, so writes are
grouped: :meth:`Outbox.batch` makes everything inside it one transaction (one fsync), :meth:`Outbox.put_many`
stores several messages at once, and :class:`GroupCommit` gathers the writes made within one event-loop iteration
into one commit that the caller awaits before sending. Deleting an acknowledged message is committed without its
own fsync (``synchronous=NORMAL`` for that statement): losing one to a power cut only means a resend, which the relay
dedupes by ``msg_id``, and the next durable commit fsyncs it along (the WAL is ordered).

**Bounded.** Messages are capped at ``max_bytes`` in total. Over the cap, the oldest *droppable* messages go first
(REPORT and TASK_ACCEPTED: a REPORT is repeated by its schedule, a TASK_FINISHED follows every TASK_ACCEPTED), and
:meth:`Outbox.untold_drops` tells the caller how many, to say so in a notice. A TASK_FINISHED, a pending-approval
notice or any other message is never dropped; :attr:`Outbox.over_cap` says when those alone exceed the cap.

**Never self-feeding.** A notice about dropping (:meth:`Outbox.put_notice`) is outside the cap: neither counted
nor dropped, and at most one per kind is pending: a new one replaces the unsent one before it, carrying the whole
count. The count goes down only when the relay acknowledges the notice that carried it.

**Private.** The database and its ``-wal``/``-shm`` files are created 0600 in a 0700 folder whatever the umask
(SQLite gives the companions the database file's mode). A held approval request keeps only a redacted view of the
packet and the sha256 of the original (:class:`HeldRequest`).

**Versioned.** ``PRAGMA user_version`` records the schema; :data:`agent.state.schema.SCHEMA_VERSION` is current, and opening an older
database (version 0 is the unversioned schema of releases before it) migrates it in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from agent.session.ledger import (
    BeginTask,
    DropHeld,
    HeldRequest,
    IllegalTransition,
    KeepHeld,
    RecordNonce,
    SetTaskState,
    Store,
    TaskRecord,
    TaskState,
    check_transition,
    packet_digest,
)
from agent.state.files import private_dir, private_file
from agent.state.schema import migrate

logger = logging.getLogger(__name__)

Synchronous = Literal["FULL", "NORMAL"]

#: Events the cap may drop (oldest first); everything else is kept until acknowledged.
DROPPABLE_EVENTS = ("REPORT", "TASK_ACCEPTED")
#: The ``droppable`` column: 0 kept until acknowledged, 1 the cap may drop it, NOTICE a coalesced notice (one per
#: kind, outside the cap).
NOTICE = 2
#: The notice kind of messages the cap dropped.
CAP_NOTICE = "outbox_cap"
#: Default cap on the outbox's messages, in bytes of their frames.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

__all__ = ["HeldRequest", "Outbox", "TaskRecord", "TaskState", "packet_digest"]


class Outbox:
    """The agent's durable state for delivery. One instance per process; not shared between processes."""

    def __init__(
        self,
        path: Path,
        task_retention: float = 30 * 86400,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        synchronous: Synchronous = "FULL",
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        """Open (creating or migrating) the state database.

        Args:
            path: the database file; its folder is created 0700, the file and its companions 0600.
            task_retention: seconds a finished task's result is kept to answer a repeated ``task_id``.
            max_bytes: cap on the unacknowledged messages (see the module docstring).
            synchronous: ``FULL`` (survives power loss; the default) or ``NORMAL`` (survives a killed process).
            redact: used once, to migrate held requests of the unversioned schema (which kept the raw packet); without
                it their arguments are dropped from the stored view.
        """
        private_dir(path.parent)
        private_file(path)
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            if os.path.lexists(companion):  # a link, even dangling, is refused by private_file
                private_file(companion)
        self.path = path
        self.task_retention = task_retention
        self.max_bytes = max_bytes
        self._depth = 0
        self._over_logged = False
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Deleted rows (a migrated held request's raw packet, an acknowledged answer) are overwritten with zeros, not
        # left readable in free pages. Debian builds SQLite with this on; python.org's Windows build does not.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self.synchronous = synchronous
        self.set_synchronous(synchronous)
        self._db.execute("PRAGMA busy_timeout=5000")
        migrate(self._db, redact)
        self._bytes = self._sum_bytes()
        self._dropped = int(self.get_state("outbox.dropped") or 0)

    def set_synchronous(self, synchronous: Synchronous) -> None:
        """``FULL`` or ``NORMAL`` from now on (benchmarks compare the two)."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.synchronous = synchronous
        self._db.execute(f"PRAGMA synchronous={synchronous}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Everything inside is one transaction: one commit, one fsync. Nests (inner ones are savepoints).

        An exception rolls back what was written inside the block it left, and propagates.
        """
        depth = self._depth
        self._db.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT s{depth}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth = depth
            if depth == 0:
                self._db.execute("ROLLBACK")
            else:
                self._db.execute(f"ROLLBACK TO s{depth}")
                self._db.execute(f"RELEASE s{depth}")
            self._bytes = self._sum_bytes()
            self._dropped = int(self.get_state("outbox.dropped") or 0)
            raise
        self._depth = depth
        self._db.execute("COMMIT" if depth == 0 else f"RELEASE s{depth}")

    # -- messages -------------------------------------------------------------------------------------------------

    def put(self, message: dict[str, Any]) -> int:
        """Store a message (it must carry ``msg_id``) until acknowledged; return its sequence number.

        Committed durably before it returns (unless inside :meth:`batch`, then with the batch). May drop the oldest
        droppable messages to stay under the cap (see :meth:`take_dropped`).
        """
        return self.put_many([message])[0]

    def put_many(self, messages: Iterable[dict[str, Any]]) -> list[int]:
        """Store several messages in one transaction (one fsync); their sequence numbers, in order."""
        seqs = []
        with self.batch():
            for message in messages:
                body = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
                size = len(body.encode("utf-8", "surrogatepass"))
                cursor = self._db.execute(
                    "INSERT INTO outbox (msg_id, body, created, size, droppable) VALUES (?, ?, ?, ?, ?)",
                    (
                        message["msg_id"],
                        body,
                        time.time(),
                        size,
                        int(message.get("event") in DROPPABLE_EVENTS),
                    ),
                )
                self._bytes += size
                seqs.append(int(cursor.lastrowid or 0))
            if self._bytes > self.max_bytes:
                self._shed(keep_from=min(seqs, default=0))
        return seqs

    def _shed(self, keep_from: int) -> None:
        """Drop the oldest droppable messages (never the ones being stored) until under the cap."""
        dropped = 0
        while self._bytes > self.max_bytes:
            rows = self._db.execute(
                "SELECT seq, size FROM outbox WHERE droppable = 1 AND seq < ? ORDER BY seq LIMIT 64",
                (keep_from,),
            ).fetchall()
            if not rows:
                break
            for seq, size in rows:
                if self._bytes <= self.max_bytes:
                    break
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                self._bytes -= size
                dropped += 1
        if dropped:
            self._dropped += dropped
            self.set_state("outbox.dropped", str(self._dropped))
            logger.warning(
                "outbox over its cap of %d bytes: dropped the %d oldest report(s)", self.max_bytes, dropped
            )
        if self._bytes > self.max_bytes and not self._over_logged:
            logger.error(
                "outbox over its cap of %d bytes with results that are never dropped", self.max_bytes
            )
        self._over_logged = self._bytes > self.max_bytes

    @property
    def dropped(self) -> int:
        """Messages the cap dropped that no acknowledged notice has told yet (durable across restarts)."""
        return self._dropped

    def untold_drops(self) -> int | None:
        """The drop count to tell now: None when nothing was dropped, or the pending notice already says it."""
        if not self._dropped or self.get_state(f"notice.{CAP_NOTICE}.count") == str(self._dropped):
            return None
        return self._dropped

    def put_notice(self, message: dict[str, Any], count: int) -> int:
        """Store the notice that the cap dropped ``count`` messages, outside the cap and in place of its unsent
        predecessor; its sequence number. ``count`` is taken off :attr:`dropped` once the relay acknowledges it."""
        kind = CAP_NOTICE
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        with self.batch():
            previous = self.get_state(f"notice.{kind}")
            if previous is not None:
                self._db.execute("DELETE FROM outbox WHERE msg_id = ?", (previous,))
            cursor = self._db.execute(
                "INSERT INTO outbox (msg_id, body, created, size, droppable) VALUES (?, ?, ?, ?, ?)",
                (message["msg_id"], body, time.time(), len(body.encode("utf-8", "surrogatepass")), NOTICE),
            )
            self.set_state(f"notice.{kind}", message["msg_id"])
            self.set_state(f"notice.{kind}.count", str(count))
        return int(cursor.lastrowid or 0)

    def _told(self, msg_id: str) -> None:
        """An acknowledged notice: what it carried is told."""
        if self.get_state(f"notice.{CAP_NOTICE}") != msg_id:
            return
        carried = int(self.get_state(f"notice.{CAP_NOTICE}.count") or 0)
        self._dropped = max(0, self._dropped - carried)
        self.set_state("outbox.dropped", str(self._dropped))
        self._db.execute(
            "DELETE FROM state WHERE key IN (?, ?)", (f"notice.{CAP_NOTICE}", f"notice.{CAP_NOTICE}.count")
        )

    @property
    def over_cap(self) -> bool:
        """True when the messages that are never dropped alone exceed the cap (the relay has been away long)."""
        return self._bytes > self.max_bytes

    @property
    def size(self) -> int:
        """Bytes of the unacknowledged messages."""
        return self._bytes

    def _sum_bytes(self) -> int:
        return int(
            self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM outbox WHERE droppable != ?", (NOTICE,)
            ).fetchone()[0]
        )

    def pending(self, after: int = 0) -> list[tuple[int, str]]:
        """Unacknowledged messages with a sequence number above ``after``, oldest first: ``(seq, frame text)``."""
        return list(self._db.execute("SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq", (after,)))

    def ack(self, msg_id: str) -> bool:
        """Forget an acknowledged message; False if it was not (or no longer) pending."""
        return self.ack_many([msg_id]) == 1

    def ack_many(self, msg_ids: Iterable[str]) -> int:
        """Forget acknowledged messages in one transaction, without an fsync of its own; how many were pending."""
        removed = 0
        with self.relaxed(), self.batch():
            for msg_id in msg_ids:
                row = self._db.execute(
                    "DELETE FROM outbox WHERE msg_id = ? RETURNING size, droppable", (msg_id,)
                ).fetchone()
                if row is None:
                    continue
                removed += 1
                if row[1] == NOTICE:
                    self._told(msg_id)
                else:
                    self._bytes -= int(row[0])
        return removed

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        """Commit every write inside without an fsync of its own (``synchronous=NORMAL``): it survives a crash at
        once, and a power cut from the next durable commit on (the WAL is written in order, and a FULL commit
        fsyncs everything before it). The runtime runs the core's ledger writes so, and makes them durable with the
        group commit that carries the message or the start of the run depending on them."""
        relax = self._depth == 0 and self.synchronous == "FULL"
        if relax:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            if relax:
                self._db.execute("PRAGMA synchronous=FULL")

    def ack_through(self, seq: int) -> int:
        """Forget every message up to sequence number ``seq`` (protocol v0: delivered without an ACK); how many."""
        delivered = [row[0] for row in self._db.execute("SELECT msg_id FROM outbox WHERE seq <= ?", (seq,))]
        return self.ack_many(delivered)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # -- tasks ----------------------------------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT state, room_id, result, command, approved_by FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        if row is None:
            return None
        return TaskRecord(
            task_id, TaskState(row[0]), row[1], json.loads(row[2]) if row[2] else None, row[3], row[4]
        )

    def begin_task(
        self, task_id: str, room_id: str | None, command: str | None = None, *, fsync: bool = True
    ) -> bool:
        """Record a new task as queued, with its packet (to run it after a restart); False if the id was seen.

        Args:
            fsync: False commits without an fsync of its own. Only for a caller that makes a durable commit (e.g.
                its TASK_ACCEPTED) before the task has any effect: that commit makes this one durable too. Better
                still, write both in one :meth:`batch`.
        """
        with contextlib.nullcontext() if fsync else self.relaxed():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, state, room_id, updated, command) VALUES (?, ?, ?, ?, ?)",
                (task_id, TaskState.QUEUED.value, room_id, time.time(), command),
            )
        return cursor.rowcount > 0

    def finish_task(self, task_id: str | None, message: dict[str, Any]) -> int:
        """Queue a task's final message and record it as the task's result, in one transaction.

        A task already finished keeps its first result (the one a repeat gets); the message is still queued, so
        nothing the agent said is lost, and the illegal transition is logged as the bug it is.
        """
        with self.batch():
            seq = self.put(message)
            if task_id is not None and not self._allowed(task_id, TaskState.FINISHED):
                return seq
            if task_id is not None:
                self._db.execute(
                    "INSERT INTO tasks (task_id, state, room_id, result, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(task_id) DO UPDATE SET state = excluded.state, result = excluded.result, "
                    "updated = excluded.updated, command = NULL",
                    (
                        task_id,
                        TaskState.FINISHED.value,
                        message.get("room_id"),
                        json.dumps(message),
                        time.time(),
                    ),
                )
        return seq

    def set_task_state(self, task_id: str, state: TaskState, approved_by: str | None = None) -> bool:
        """Move a recorded task to ``state`` if :data:`agent.session.ledger.TASK_TRANSITIONS` allows it; False (logged) if
        not, or if there is no such task (a task is recorded by :meth:`begin_task` or :meth:`finish_task`)."""
        with self.batch():
            if not self._allowed(task_id, state, existing=True):
                return False
            self._db.execute(
                "UPDATE tasks SET state = ?, updated = ?, approved_by = coalesce(?, approved_by) WHERE task_id = ?",
                (state.value, time.time(), approved_by, task_id),
            )
        return True

    def _allowed(self, task_id: str, new: TaskState, existing: bool = False) -> bool:
        row = self._db.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None and existing:
            logger.error("task %s: no such task; its state was not set to %s", task_id, new.value)
            return False
        try:
            check_transition(task_id, TaskState(row[0]) if row else None, new)
        except IllegalTransition as exc:
            logger.error("%s", exc)
            return False
        return True

    # -- held requests (four eyes) ------------------------------------------------------------------------------

    def hold(self, request: HeldRequest) -> None:
        """Keep a request that waits for approval (only its redacted view and digest; see :class:`HeldRequest`)."""
        self._db.execute(
            "INSERT INTO approvals (code, task_id, room_id, requester, request, packet_sha256, summary, expires) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (request.code, request.task_id, request.room_id, request.requester, json.dumps(request.request),
             request.packet_sha256, json.dumps(request.summary), request.expires),
        )  # fmt: skip

    def held(self) -> list[HeldRequest]:
        """Every held request (to re-arm their expiry timers after a restart)."""
        return [
            _held(row)
            for row in self._db.execute(
                "SELECT code, task_id, room_id, requester, request, packet_sha256, summary, expires FROM approvals"
            )
        ]

    def held_request(self, code: str) -> HeldRequest | None:
        row = self._db.execute(
            "SELECT code, task_id, room_id, requester, request, packet_sha256, summary, expires FROM approvals "
            "WHERE code = ?",
            (code,),
        ).fetchone()
        return None if row is None else _held(row)

    def claim(self, code: str) -> HeldRequest | None:
        """Take a held request out, once: a second claim of the same code gets None."""
        with self.batch():
            found = self.held_request(code)
            if (
                found is None
                or self._db.execute("DELETE FROM approvals WHERE code = ?", (code,)).rowcount != 1
            ):
                return None
        return found

    def nonce_seen(self, nonce: str, now: float, keep: float) -> bool:
        """True when a signed command's nonce was recorded within ``keep`` seconds before ``now`` (a replay)."""
        row = self._db.execute(
            "SELECT 1 FROM nonces WHERE nonce = ? AND seen >= ?", (nonce, now - keep)
        ).fetchone()
        return row is not None

    def record_nonce(self, nonce: str, now: float, keep: float) -> None:
        """Remember a nonce; forget the ones past ``keep``."""
        self._db.execute("DELETE FROM nonces WHERE seen < ?", (now - keep,))
        self._db.execute("INSERT OR REPLACE INTO nonces (nonce, seen) VALUES (?, ?)", (nonce, now))

    def apply(self, write: Store) -> None:
        """Carry out one of the core's ledger writes (:data:`agent.session.ledger.Store`). An illegal state change
        is refused and logged (:meth:`set_task_state`), never written."""
        match write:
            case BeginTask(task_id, room_id, command):
                if not self.begin_task(task_id, room_id, command):
                    logger.error("task %s: already recorded; not begun again", task_id)
            case SetTaskState(task_id, state, approved_by):
                self.set_task_state(task_id, state, approved_by)
            case KeepHeld(request):
                self.hold(request)
            case DropHeld(code):
                self._db.execute("DELETE FROM approvals WHERE code = ?", (code,))
            case RecordNonce(nonce, now, keep):
                self.record_nonce(nonce, now, keep)

    def unfinished_tasks(self) -> list[TaskRecord]:
        """Tasks a previous run left queued or running, oldest first, with their packets."""
        rows = self._db.execute(
            "SELECT task_id, state, room_id, command, approved_by FROM tasks WHERE state IN (?, ?) ORDER BY updated",
            (TaskState.QUEUED.value, TaskState.RUNNING.value),
        )
        return [TaskRecord(r[0], TaskState(r[1]), r[2], None, r[3], r[4]) for r in rows]

    def purge(self, now: float | None = None) -> int:
        """Forget finished tasks older than the retention; return how many."""
        cutoff = (time.time() if now is None else now) - self.task_retention
        return self._db.execute(
            "DELETE FROM tasks WHERE state = ? AND updated < ?", (TaskState.FINISHED.value, cutoff)
        ).rowcount

    # -- small durable state (scheduler) ------------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))  # fmt: skip


def _held(row: tuple[Any, ...]) -> HeldRequest:
    return HeldRequest(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], json.loads(row[6]), row[7])
