"""The task ledger's records and interface: what the core reads and writes about tasks and held requests. Pure.

:class:`agent.outbox.Outbox` implements :class:`Ledger` on SQLite; the core's table tests use a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class TaskState(StrEnum):
    #: Accepted for a slot but not started: run after a restart as if nothing happened.
    QUEUED = "queued"
    #: Started: after a restart, run again unless it changes state (then answered INTERRUPTED).
    RUNNING = "running"
    #: Waiting for a second person's approval; not interrupted by a restart.
    PENDING = "pending"
    FINISHED = "finished"


@dataclass(frozen=True)
class Approval:
    code: str
    task_id: str
    room_id: str | None
    requester: str | None
    #: The original command packet (JSON), run as is once approved.
    command: str
    summary: dict[str, Any]
    expires: float


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    state: TaskState
    room_id: str | None
    #: The TASK_FINISHED message sent for it (once finished).
    result: dict[str, Any] | None
    #: The command packet (JSON) while it is queued or running, to run it again after a restart.
    command: str | None = None
    approved_by: str | None = None


class Ledger(Protocol):
    """The durable part of the session state (:class:`agent.outbox.Outbox`)."""

    def begin_task(self, task_id: str, room_id: str | None, command: str | None = None) -> bool: ...
    def task(self, task_id: str) -> TaskRecord | None: ...
    def set_task_state(self, task_id: str, state: TaskState, approved_by: str | None = None) -> None: ...
    def unfinished_tasks(self) -> list[TaskRecord]: ...
    def nonce_used(self, nonce: str, now: float, keep: float) -> bool: ...
    def add_approval(self, approval: Approval) -> None: ...
    def approvals(self) -> list[Approval]: ...
    def claim_approval(self, code: str) -> Approval | None: ...
