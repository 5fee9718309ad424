"""The state database's schema and its versions: ``PRAGMA user_version`` records the schema, and opening an older
database migrates it, one step per version, each step in one transaction (version 0 is the unversioned schema of
releases before versions were recorded)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from agent.session.ledger import packet_digest

logger = logging.getLogger(__name__)

#: The schema this code writes; see :func:`migrate`.
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    droppable INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (droppable, seq);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    code TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    room_id TEXT,
    requester TEXT,
    request TEXT NOT NULL,
    packet_sha256 TEXT NOT NULL,
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


def migrate(db: sqlite3.Connection, redact: Callable[[Any], Any] | None) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one step per version, each step in one transaction.

    Raises:
        sqlite3.DatabaseError: a database written by a newer agent (its version is above this code's).
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"state database schema {version} is newer than this agent's ({SCHEMA_VERSION}); upgrade the agent"
        )
    if version == SCHEMA_VERSION:
        return
    fresh = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'outbox'").fetchone()[0] == 0
    db.execute("BEGIN IMMEDIATE")
    try:
        if fresh:
            for statement in _statements(SCHEMA):
                db.execute(statement)
        else:
            _migrate_0_to_1(db, redact)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    if not fresh:
        logger.info("state database migrated from schema %d to %d", version, SCHEMA_VERSION)


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _migrate_0_to_1(db: sqlite3.Connection, redact: Callable[[Any], Any] | None) -> None:
    """The unversioned schema: add message sizes and droppability; held requests lose their raw packet; tasks
    keep their packet while unfinished (restart semantics) and who approved them."""
    db.execute("ALTER TABLE tasks ADD COLUMN command TEXT")
    db.execute("ALTER TABLE tasks ADD COLUMN approved_by TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE outbox ADD COLUMN droppable INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE outbox SET size = length(CAST(body AS BLOB)), "
        "droppable = (json_extract(body, '$.event') IN ('REPORT', 'TASK_ACCEPTED'))"
    )  # DROPPABLE_EVENTS
    old = db.execute(
        "SELECT code, task_id, room_id, requester, command, summary, expires FROM approvals"
    ).fetchall()
    db.execute("DROP TABLE approvals")
    for statement in _statements(SCHEMA):
        db.execute(statement)  # CREATE ... IF NOT EXISTS: makes the new approvals table and the index
    for code, task_id, room_id, requester, command, summary, expires in old:
        packet = json.loads(command)
        request, view = (
            (redact(packet), redact(json.loads(summary))) if redact else _without_args(packet, summary)
        )
        db.execute(
            "INSERT INTO approvals (code, task_id, room_id, requester, request, packet_sha256, summary, expires) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (
                code,
                task_id,
                room_id,
                requester,
                json.dumps(request),
                packet_digest(packet),
                json.dumps(view),
                expires,
            ),
        )


def _without_args(packet: dict[str, Any], summary: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A held request's packet and summary with the arguments (where a typed secret would be) removed."""
    stripped = dict(packet)
    if isinstance(stripped.get("params"), dict):
        stripped["params"] = {k: v for k, v in stripped["params"].items() if k != "args"}
    view = json.loads(summary)
    if isinstance(view, dict):
        view.pop("args", None)
    return stripped, view if isinstance(view, dict) else {}
