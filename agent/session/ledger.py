"""The task ledger's records, what the core reads of it, and the writes it asks for as data. Pure.

The core reads through :class:`Ledger` and never writes: a write it needs (a task begun, a state changed, a request
held or dropped, a nonce recorded) is a :data:`Store` effect in the list it returns. The runtime applies each, in
order, as it carries out the effects, without an fsync of its own: the group commit of the message that depends on
it makes it durable. :class:`agent.state.outbox.Outbox` implements both sides on SQLite; the core's table tests use
a dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


def packet_digest(packet: dict[str, Any]) -> str:
    """sha256 of a packet's canonical JSON (keys sorted, no whitespace, UTF-8): what a held request records."""
    canonical = json.dumps(packet, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class TaskState(StrEnum):
    #: Accepted for a slot but not started: run after a restart as if nothing happened.
    QUEUED = "queued"
    #: Started: after a restart, run again unless it changes state (then answered INTERRUPTED).
    RUNNING = "running"
    #: Waiting for a second person's approval; not interrupted by a restart.
    PENDING = "pending"
    FINISHED = "finished"


#: Every legal change of a task's state, listed once (as h11 keeps its state machine in one table). ``None``: no
#: record yet. Checked by :func:`check_transition` wherever a state is written (the outbox, and the core's
#: in-memory ledger in the tests); anything else is refused and logged, never written.
TASK_TRANSITIONS: dict[TaskState | None, frozenset[TaskState]] = {
    # begun; or answered without ever being begun (a held request closed after its task was purged)
    None: frozenset({TaskState.QUEUED, TaskState.FINISHED}),
    # a slot is free; the run gate holds it for approval; answered (refused, interrupted) before it ran
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.PENDING, TaskState.FINISHED}),
    # RUNNING again: resumed after a restart; PENDING: the run gate asked for a second person
    TaskState.RUNNING: frozenset({TaskState.RUNNING, TaskState.PENDING, TaskState.FINISHED}),
    # approved (back to the queue); rejected, cancelled, expired
    TaskState.PENDING: frozenset({TaskState.QUEUED, TaskState.FINISHED}),
    # final: its result is kept and sent again for a repeat, never replaced
    TaskState.FINISHED: frozenset(),
}


class IllegalTransition(ValueError):
    """A task state change that :data:`TASK_TRANSITIONS` does not list."""

    def __init__(self, task_id: str, old: TaskState | None, new: TaskState) -> None:
        self.task_id, self.old, self.new = task_id, old, new
        before = old.value if old is not None else "(none)"
        super().__init__(f"task {task_id}: {before} -> {new.value} is not a legal transition; refused")


def check_transition(task_id: str, old: TaskState | None, new: TaskState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in :data:`TASK_TRANSITIONS`."""
    if new not in TASK_TRANSITIONS[old]:
        raise IllegalTransition(task_id, old, new)


@dataclass(frozen=True)
class HeldRequest:
    """A request waiting for approval, as kept on disk: a redacted view and a digest, never the raw packet.

    The raw packet (which may carry a secret typed as an argument) lives only in the memory of the process that
    received it. After a restart, :meth:`replayable` gives the stored view back when redaction left it unchanged
    (its digest is the original's); otherwise the request cannot run again and should be answered as such.
    """

    code: str
    task_id: str
    room_id: str | None
    requester: str | None
    #: The command packet as redaction left it.
    request: dict[str, Any]
    #: sha256 of the original packet (:func:`packet_digest`).
    packet_sha256: str
    #: What would run (runbook, hosts, args), redacted.
    summary: dict[str, Any]
    expires: float

    @classmethod
    def of(
        cls,
        code: str,
        packet: dict[str, Any],
        summary: dict[str, Any],
        expires: float,
        redact: Callable[[Any], Any],
        requester: str | None = None,
    ) -> HeldRequest:
        """Build one from the raw packet: digest it, keep only ``redact(packet)`` and ``redact(summary)``."""
        return cls(
            code=code,
            task_id=str(packet.get("task_id")),
            room_id=packet.get("room_id") if isinstance(packet.get("room_id"), str) else None,
            requester=requester,
            request=redact(packet),
            packet_sha256=packet_digest(packet),
            summary=redact(summary),
            expires=expires,
        )

    def matches(self, packet: dict[str, Any]) -> bool:
        """True when ``packet`` is the original this request was made from."""
        return packet_digest(packet) == self.packet_sha256

    def replayable(self) -> dict[str, Any] | None:
        """The original packet when the stored view is it (nothing was redacted), else None."""
        return self.request if self.matches(self.request) else None


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
    """What the core reads of the durable session state (:class:`agent.state.outbox.Outbox`). Read only."""

    def task(self, task_id: str) -> TaskRecord | None: ...
    def unfinished_tasks(self) -> list[TaskRecord]: ...
    def nonce_seen(self, nonce: str, now: float, keep: float) -> bool: ...
    def held(self) -> list[HeldRequest]: ...
    def held_request(self, code: str) -> HeldRequest | None: ...


# -- writes, as data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BeginTask:
    """Record a new task as queued, with its packet as JSON (None: not kept, it carried a masked value)."""

    task_id: str
    room_id: str | None
    command: str | None = None


@dataclass(frozen=True)
class SetTaskState:
    """Move a task to ``state``; refused and logged unless :data:`TASK_TRANSITIONS` lists the change."""

    task_id: str
    state: TaskState
    approved_by: str | None = None


@dataclass(frozen=True)
class KeepHeld:
    """Keep a request that waits for a second person's approval (its redacted view and digest)."""

    request: HeldRequest


@dataclass(frozen=True)
class DropHeld:
    """Forget a held request: it expired (an approver's decision claims it in the action itself)."""

    code: str


@dataclass(frozen=True)
class RecordNonce:
    """Remember a signed command's nonce until ``now + keep``, so that the same packet is refused as a replay."""

    nonce: str
    now: float
    keep: float


#: A write to the ledger, returned by the core as an effect and applied by the runtime in order.
Store = BeginTask | SetTaskState | KeepHeld | DropHeld | RecordNonce
