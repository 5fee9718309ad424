"""Durable delivery: the outbox of unacknowledged messages and the ledger of seen task ids (SQLite).

Every agent → relay message is written here before it is sent, and deleted only when the relay's ACK names its
``msg_id``; after a reconnect or a restart the rest is sent again, in the order it was written. A task's final
message and its ledger entry are written in one transaction, so an agent killed between finishing a task and
receiving the ACK resends the result after restart, and a repeated ``task_id`` gets the stored result instead of a
second run. Ledger entries are kept for ``task_retention`` seconds.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process being killed (not a power cut
before the next checkpoint), at a fraction of a millisecond per message.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.ledger import Approval, TaskRecord, TaskState

__all__ = ["Approval", "Outbox", "TaskRecord", "TaskState"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    code TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    room_id TEXT,
    requester TEXT,
    command TEXT NOT NULL,
    summary TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    room_id TEXT,
    result TEXT,
    updated REAL NOT NULL,
    command TEXT,
    approved_by TEXT
);
"""
#: Columns added after the first release, for databases created before them.
_ADDED_COLUMNS = {"tasks": [("command", "TEXT"), ("approved_by", "TEXT")]}


class Outbox:
    """The agent's durable state for delivery. One instance per process; not shared between processes."""

    def __init__(self, path: Path, task_retention: float = 30 * 86400) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.task_retention = task_retention
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    # -- messages -------------------------------------------------------------------------------------------------

    def put(self, message: dict[str, Any]) -> int:
        """Store a message (it must carry ``msg_id``) until acknowledged; return its sequence number."""
        cursor = self._db.execute(
            "INSERT INTO outbox (msg_id, body, created) VALUES (?, ?, ?)",
            (message["msg_id"], json.dumps(message, ensure_ascii=False, separators=(",", ":")), time.time()),
        )
        return int(cursor.lastrowid or 0)

    def pending(self, after: int = 0) -> list[tuple[int, str]]:
        """Unacknowledged messages with a sequence number above ``after``, oldest first: ``(seq, frame text)``."""
        return list(self._db.execute("SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq", (after,)))

    def ack(self, msg_id: str) -> bool:
        """Forget an acknowledged message; False if it was not (or no longer) pending."""
        return self._db.execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,)).rowcount > 0

    def ack_through(self, seq: int) -> int:
        """Forget every message up to sequence number ``seq`` (protocol v0: delivered without an ACK); how many."""
        return self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # -- tasks ----------------------------------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT state, room_id, result FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        if row is None:
            return None
        return TaskRecord(task_id, TaskState(row[0]), row[1], json.loads(row[2]) if row[2] else None)

    def begin_task(self, task_id: str, room_id: str | None, command: str | None = None) -> bool:
        """Record a new task as queued (with its packet); False if the id was already seen."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO tasks (task_id, state, room_id, updated, command) VALUES (?, ?, ?, ?, ?)",
            (task_id, TaskState.QUEUED.value, room_id, time.time(), command),
        )
        return cursor.rowcount > 0

    def finish_task(self, task_id: str | None, message: dict[str, Any]) -> int:
        """Queue a task's final message and record it as the task's result, in one transaction."""
        with self._transaction():
            seq = self.put(message)
            if task_id is not None:
                self._db.execute(
                    "INSERT INTO tasks (task_id, state, room_id, result, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(task_id) DO UPDATE SET state = excluded.state, result = excluded.result, "
                    "updated = excluded.updated",
                    (
                        task_id,
                        TaskState.FINISHED.value,
                        message.get("room_id"),
                        json.dumps(message),
                        time.time(),
                    ),
                )
        return seq

    def set_task_state(self, task_id: str, state: TaskState, approved_by: str | None = None) -> None:
        self._db.execute(
            "UPDATE tasks SET state = ?, updated = ?, approved_by = coalesce(?, approved_by) WHERE task_id = ?",
            (state.value, time.time(), approved_by, task_id),
        )

    # -- approvals and nonces ---------------------------------------------------------------------------------

    def add_approval(self, approval: Approval) -> None:
        self._db.execute(
            "INSERT INTO approvals (code, task_id, room_id, requester, command, summary, expires) VALUES (?,?,?,?,?,?,?)",
            (approval.code, approval.task_id, approval.room_id, approval.requester, approval.command,
             json.dumps(approval.summary), approval.expires),
        )  # fmt: skip

    def approvals(self) -> list[Approval]:
        rows = self._db.execute(
            "SELECT code, task_id, room_id, requester, command, summary, expires FROM approvals"
        )
        return [Approval(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    def approval(self, code: str) -> Approval | None:
        row = self._db.execute(
            "SELECT code, task_id, room_id, requester, command, summary, expires FROM approvals WHERE code = ?",
            (code,),
        ).fetchone()
        return (
            None
            if row is None
            else Approval(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])
        )

    def claim_approval(self, code: str) -> Approval | None:
        """Take a pending approval out, once: a second claim of the same code gets None."""
        with self._transaction():
            found = self.approval(code)
            if (
                found is None
                or self._db.execute("DELETE FROM approvals WHERE code = ?", (code,)).rowcount != 1
            ):
                return None
        return found

    def nonce_used(self, nonce: str, now: float, keep: float) -> bool:
        """Record a signed command's nonce; True if it was already recorded (a replay). Forgets ones past ``keep``."""
        self._db.execute("DELETE FROM nonces WHERE seen < ?", (now - keep,))
        return (
            self._db.execute(
                "INSERT OR IGNORE INTO nonces (nonce, seen) VALUES (?, ?)", (nonce, now)
            ).rowcount
            == 0
        )

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

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
