"""The agent's session logic, sans I/O: events in, effects out.

:meth:`AgentCore.handle` takes one event — the agent started, a frame arrived, a task ended, a timer fired, the
agent is closing — and returns the effects to carry out, in order. It opens no socket, starts no task, arms no
timer and writes no log line itself: :mod:`agent.shell.runtime` does, and feeds what happens back as events (the shape of
websockets' ``protocol.py`` and h11's ``Connection``). Its one collaborator is the :class:`Ledger` (the durable task
ledger, SQLite in production, a dict in the core's table tests), because whether a ``task_id`` was seen before is
part of the session's state and must survive a restart. The core only reads it: every write it needs is a
:data:`agent.session.ledger.Store` effect in the list it returns (begin a task, set its state, keep or drop a held
request, record a nonce), which the runtime applies in order and makes durable with the group commit of the message
that depends on it. So ``handle`` itself never waits on a disk.

Events: :class:`Started`, :class:`FrameReceived`, :class:`TaskEnded`, :class:`TimerFired`, :class:`Closing`.
Effects: :class:`Send`, :class:`Acked`, :class:`StartRun`, :class:`Audit`, :class:`ArmTimer`, :class:`CancelTimer`,
:class:`Log`, and the ledger writes (:data:`agent.session.ledger.Store`).

Restart semantics (docs/protocol.md, "After a restart"): a command that was queued but never started runs as if
nothing happened; one that had started runs again when it cannot change anything (every action but
``RUN_RUNBOOK`` of a runbook with ``changes_state``); one that had started and changes state is answered
``INTERRUPTED`` saying it may have run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from agent.chat.i18n import Msg, nmsg
from agent.session.answers import Refused, Rejected, Released, Withdrawn
from agent.session.command_auth import verify as verify_signature
from agent.session.ledger import (
    BeginTask,
    DropHeld,
    HeldRequest,
    KeepHeld,
    Ledger,
    RecordNonce,
    SetTaskState,
    Store,
    TaskState,
)
from agent.session.protocol import (
    Ack,
    Action,
    Command,
    ErrorCode,
    InvalidPacket,
    Status,
    accepted_message,
    finished_message,
    new_msg_id,
    parse_frame,
    pending_message,
)
from agent.session.scoping import RoomScopes

# -- events -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The agent starts: settle what a previous run left unfinished."""

    now: float


@dataclass(frozen=True)
class FrameReceived:
    frame: str | bytes
    now: float
    #: The packet as the relay signed it, when ``frame`` is not that (protocol v0 gives each command the agent's own
    #: task key: :class:`agent.session.protocol_v0.Addressing`); None: the signature covers ``frame``'s packet.
    signed: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskEnded:
    """A command's handler returned ``answer`` (cancelled: ``answer`` is None)."""

    command: Command
    answer: Outcome | None
    now: float


@dataclass(frozen=True)
class TimerFired:
    key: str
    now: float


@dataclass(frozen=True)
class Closing:
    """Stop taking commands (SIGTERM): new ones are refused as SHUTTING_DOWN."""


Event = Started | FrameReceived | TaskEnded | TimerFired | Closing

# -- effects ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Redact, store in the outbox, send. With ``task_id``, it is that task's final answer (kept for repeats)."""

    message: dict[str, Any]
    task_id: str | None = None
    #: The command's action as sent (protocol v0 shapes a final answer by it; None when unknown).
    action: str | None = None
    #: A stored final sent again (already redacted and in the wire's shape).
    stored: bool = False


@dataclass(frozen=True)
class Acked:
    msg_id: str


@dataclass(frozen=True)
class StartRun:
    command: Command
    approved_by: str | None = None


@dataclass(frozen=True)
class Audit:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArmTimer:
    key: str
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    key: str


@dataclass(frozen=True)
class Log:
    level: int
    message: str


Effect = Send | Acked | StartRun | Audit | ArmTimer | CancelTimer | Log | Store

# -- answers of handlers ----------------------------------------------------------------------------------------


#: The type of an answer's data: one of agent/session/answers.py's, the action's own.
D = TypeVar("D", bound=Mapping[str, object], covariant=True)


@dataclass(frozen=True)
class Answer(Generic[D]):
    """A final answer: the command's status, its data (``Answer[RunData]``: the action's own type, from
    agent/session/answers.py), and the error when it failed."""

    status: Status
    data: D
    error: tuple[ErrorCode, str] | None = None

    @staticmethod
    def fail(code: ErrorCode, message: str, data: Refused | None = None) -> Answer[Refused]:
        return Answer(Status.FAIL, data or Refused(), (code, message))


@dataclass(frozen=True)
class Hold:
    """The request waits for a second person's approval instead of running now."""

    #: What would run (runbook, hosts, args), redacted: shown to the room with the approval code.
    summary: dict[str, Any]


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Decided:
    """A decision on a held request (an approver's approve or reject, the requester's cancel), and the answer to
    the one who decided. The core runs the request (approved) or answers it (rejected, cancelled)."""

    held: HeldRequest
    decision: Decision
    answer: Answer[Released] | Answer[Rejected] | Answer[Withdrawn]


#: What a handler returns: exactly one of these (a tagged union; the core dispatches on the type).
Outcome = Answer[Any] | Hold | Decided


def approval_timer(code: str) -> str:
    return f"approval:{code}"


def new_approval_code() -> str:
    """Six characters from an alphabet without look-alikes (no 0/O, 1/I)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(6))


APPROVAL_CODE = re.compile(r"[A-Za-z2-9]{6}")


class AgentCore:
    """The session state machine. Not thread-safe; one per agent."""

    def __init__(
        self,
        ledger: Ledger,
        changes_state: Callable[[str], bool],
        command_key: str | None = None,
        clock_skew: float = 300.0,
        approval_window: float = 600.0,
        new_code: Callable[[], str] = new_approval_code,
        redact: Callable[[Any], Any] = lambda value: value,
        holds_approvals: bool = True,
        max_held_per_user: int = 5,
        max_held_per_room: int = 20,
        agent_id: str | None = None,
    ) -> None:
        self.ledger = ledger
        #: This agent's id: a signed command addressed to another (its ``agent_id``) is refused.
        self.agent_id = agent_id
        #: Whether the named runbook changes state on its hosts (from the verified catalog).
        self.changes_state = changes_state
        self.command_key = command_key
        self.clock_skew = clock_skew
        self.approval_window = approval_window
        self.new_code = new_code
        #: What the agent sends (and keeps on disk) instead of a value: nothing raw is written to disk when
        #: redaction would change it.
        self.redact = redact
        #: Held requests' original packets, by code, in memory only (they may carry a typed secret).
        self._held_packets: dict[str, Command] = {}
        #: False (protocol v0, which cannot show an approval code): a four-eyes request is refused, not held.
        self.holds_approvals = holds_approvals
        #: At most this many requests wait for approval per requester and per room (1,000 were all kept).
        self.max_held_per_user = max_held_per_user
        self.max_held_per_room = max_held_per_room
        self.closing = False
        #: Task ids per room: another room's id is run under a key of its own and answered under the id as sent.
        self.scopes = RoomScopes()

    def handle(self, event: Event) -> list[Effect]:
        """The effects of one event, in the order to carry them out. Never raises for bad input."""
        if isinstance(event, FrameReceived):
            return self._frame(event)
        if isinstance(event, TaskEnded):
            return self._ended(event)
        if isinstance(event, TimerFired):
            return self._timer(event)
        if isinstance(event, Started):
            return self._started(event)
        self.closing = True
        return []

    # -- start ----------------------------------------------------------------------------------------------

    def _started(self, event: Started) -> list[Effect]:
        effects: list[Effect] = []
        for record in self.ledger.unfinished_tasks():
            command = _command_of(record.command)
            if command is None:  # not kept on disk: it carried a value that redaction masks
                effects += self._interrupted(record.task_id, record.room_id, started=None)
                continue
            self.scopes.remember(command)
            started = record.state is TaskState.RUNNING
            if started and self.may_change_state(command):
                effects.append(Log(logging.WARNING, f"task {record.task_id} was running when the agent "
                                                    "stopped and changes state; answered as interrupted"))  # fmt: skip
                effects += self._interrupted(record.task_id, record.room_id, started=True)
            else:
                what = "started" if started else "queued"
                effects.append(Log(logging.INFO, f"task {record.task_id} was {what} when the agent stopped; "
                                                 "running it now"))  # fmt: skip
                effects.append(Audit("resumed", {"task_id": record.task_id, "state": record.state.value}))
                effects.append(StartRun(command, record.approved_by))
        for held in self.ledger.held():
            if (kept := _command_of(json.dumps(held.request))) is not None:
                self.scopes.remember(kept)
            effects.append(ArmTimer(approval_timer(held.code), max(0.0, held.expires - event.now)))
        return effects

    def may_change_state(self, command: Command) -> bool:
        """True when running ``command`` may change a host's state (a ``changes_state`` runbook, or one unknown now)."""
        if command.action is Action.RERUN:  # its runbook is read from the audit log: assume the worst
            return True
        if command.action is not Action.RUN_RUNBOOK:
            return False
        name = command.params.get("runbook")
        # Unknown now (removed, tampered): assume the worst.
        return not isinstance(name, str) or self.changes_state(name)

    def _interrupted(self, task_id: str, room_id: str | None, started: bool | None) -> list[Effect]:
        if started is None:
            why = Msg("the agent restarted, and this request carried a value it never keeps on disk (a masked "
                      "argument); if it had started it may have run in part: check, then send it again")  # fmt: skip
        elif started:
            why = Msg(
                "the agent stopped while this task was running; it may have run in part: check before you run it again"
            )
        else:
            why = Msg("the agent stopped before this task started; run it again")
        return [
            Audit("interrupted", {"task_id": task_id}),
            Send(
                finished_message(task_id, room_id, Status.FAIL, error=(ErrorCode.INTERRUPTED, why)), task_id
            ),
        ]

    # -- frames ---------------------------------------------------------------------------------------------

    def _frame(self, event: FrameReceived) -> list[Effect]:
        try:
            packet = parse_frame(event.frame)
        except InvalidPacket as exc:
            return self._refuse(exc)
        if isinstance(packet, Ack):
            return [Acked(packet.msg_id)]
        if self.command_key is None:
            return self._command(packet)
        keep = 2 * self.clock_skew
        try:
            signed = event.signed if event.signed is not None else packet.raw
            nonce = verify_signature(self.command_key, signed, event.now, self.clock_skew,
                                     lambda nonce: self.ledger.nonce_seen(nonce, event.now, keep))  # fmt: skip
        except InvalidPacket as exc:
            # Answered to the command's own keys (in v0, ``signed`` carries the relay's ids, not the agent's).
            exc.task_id, exc.room_id = packet.task_id, packet.room_id
            scoped = self.scopes.inbound(packet, self.ledger.task)
            if exc.code is ErrorCode.REPLAYED and self.ledger.task(scoped.task_id) is not None:
                # Authentic (signed, fresh), only sent again: a duplicate of a known task, answered as one,
                # never a second, contradicting answer for it.
                return [Audit("replayed", {"task_id": scoped.task_id}), *self._repeat(scoped)]
            return self._refuse(exc)
        to = signed.get("agent_id")
        if to is not None and self.agent_id is not None and to != self.agent_id:
            # Signed for another agent that shares the key: replayed here, it must not run.
            why = Msg("this command was signed for another agent ({agent})", agent=str(to)[:64])
            return [RecordNonce(nonce, event.now, keep),
                    *self._refuse(InvalidPacket(ErrorCode.WRONG_AGENT, why, packet.task_id, packet.room_id))]  # fmt: skip
        return [RecordNonce(nonce, event.now, keep), *self._command(packet)]

    def _refuse(self, exc: InvalidPacket) -> list[Effect]:
        """A packet refused before it became a task: log, audit, one FAIL (not recorded as a task)."""
        return [
            Log(logging.WARNING, f"refused a packet: {exc.message}"),
            Audit("refused", {"task_id": exc.task_id, "reason": exc.code.value}),
            Send(
                finished_message(exc.task_id, exc.room_id, Status.FAIL, error=(exc.code, exc.message)),
                action=exc.action,
            ),
        ]

    def _command(self, command: Command) -> list[Effect]:
        # Under its room's key: another room's task_id runs as a fresh one would (no cross-room oracle).
        command = self.scopes.inbound(command, self.ledger.task)
        effects: list[Effect] = [
            Audit("command", {"task_id": command.task_id, "room_id": command.room_id,
                              "action": command.action.value, "user_id": command.user,
                              "params": audit_view(command.params),
                              **({"relay_ids": audit_view(command.raw["reply_to"])}
                                 if "reply_to" in command.raw else {})})
        ]  # fmt: skip
        if self.closing:
            error = (ErrorCode.SHUTTING_DOWN, Msg("the agent is shutting down; send it again later"))
            effects.append(Send(finished_message(command.task_id, command.room_id, Status.FAIL, error=error),
                                action=command.action.value))  # fmt: skip
            return effects
        if self.ledger.task(command.task_id) is not None:
            return effects + self._repeat(command)
        return [
            *effects,
            BeginTask(command.task_id, command.room_id, self._keepable(command.raw)),
            StartRun(command),
        ]

    def _keepable(self, packet: dict[str, Any]) -> str | None:
        """The packet as JSON to keep on disk, or None when redaction would change it (a secret in it)."""
        return json.dumps(packet) if self.redact(packet) == packet else None

    def _repeat(self, command: Command) -> list[Effect]:
        """A task_id seen before: never run it again; resend its result, or say it is still running."""
        record = self.ledger.task(command.task_id)
        effects: list[Effect] = [
            Audit("duplicate", {"task_id": command.task_id, "state": record.state.value if record else None})
        ]
        # (Always this room's own task: another room's id was given a key of this room's by RoomScopes.)
        if record is not None and record.state is TaskState.PENDING:
            effects.append(Send(accepted_message(command, {"duplicate": True, "pending_approval": True})))
        elif record is not None and record.state is TaskState.FINISHED and record.result is not None:
            again = dict(record.result, msg_id=new_msg_id())
            again["payload"] = {**again.get("payload", {}), "duplicate": True}
            effects.append(Send(again, stored=True))
        else:
            effects.append(Send(accepted_message(command, {"duplicate": True, "in_progress": True})))
        return effects

    # -- tasks ----------------------------------------------------------------------------------------------

    def _ended(self, event: TaskEnded) -> list[Effect]:
        command, answer = event.command, event.answer
        if answer is None:  # cancelled at shutdown
            started = self.may_change_state(command)
            if started:
                return self._interrupted(command.task_id, command.room_id, started=True)
            # Safe to run again: leave it in the ledger as queued; the next start runs it.
            return [Audit("deferred", {"task_id": command.task_id})]
        if isinstance(answer, Hold) and not self.holds_approvals:
            answer = Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("this runbook needs four-eyes approval, which "
                                 "protocol v0 cannot carry; run it through a protocol-1 relay"))  # fmt: skip
        if isinstance(answer, Hold):
            answer = self._over_held(command) or answer
        if isinstance(answer, Hold):
            return self._hold(command, answer.summary, event.now)
        effects: list[Effect] = []
        if isinstance(answer, Decided):
            if answer.decision is Decision.APPROVED:
                effects += self._release(answer.held, command.user)
            elif answer.decision is Decision.REJECTED:
                effects += self._close(
                    answer.held, ErrorCode.REJECTED, Msg("rejected by {user}", user=command.user)
                )
            else:
                effects += self._close(
                    answer.held, ErrorCode.CANCELLED, Msg("cancelled by {user}", user=command.user)
                )
            answer = answer.answer
        if answer.error is not None:
            effects.append(Audit("decision", {"task_id": command.task_id, "decision": "refused",
                                              "reason": answer.error[1]}))  # fmt: skip
        final = finished_message(command.task_id, command.room_id, answer.status, answer.data, answer.error)
        effects.append(Send(final, command.task_id, action=command.action.value))
        effects.append(Audit("finished", {"task_id": command.task_id, "status": answer.status.value}))
        return effects

    # -- four eyes ------------------------------------------------------------------------------------------

    def _over_held(self, command: Command) -> Answer[Refused] | None:
        """The refusal when the requester or the room already has as many requests waiting as they may."""
        held = self.ledger.held()
        mine = sum(1 for h in held if h.requester == command.user)
        room = sum(1 for h in held if h.room_id == command.room_id)
        if mine >= self.max_held_per_user:
            why = nmsg("{n} of your requests already waits for approval; let it be decided or cancel it "
                       "('pending' lists it)", "{n} of your requests already wait for approval; let them be "
                       "decided or cancel one ('pending' lists them)", mine)  # fmt: skip
        elif room >= self.max_held_per_room:
            why = nmsg("{n} request of this room already waits for approval; let it be decided first",
                       "{n} requests of this room already wait for approval; let them be decided first", room)  # fmt: skip
        else:
            return None
        return Answer.fail(ErrorCode.NOT_AVAILABLE, why)

    def _hold(self, command: Command, summary: dict[str, Any], now: float) -> list[Effect]:
        """Keep a request until a second person approves it; tell the room what would run and the code.

        On disk: a redacted view and a digest (:class:`HeldRequest`); the packet itself stays in memory.
        """
        held = HeldRequest.of(self.new_code(), command.raw, summary, now + self.approval_window, self.redact,
                              requester=command.user)  # fmt: skip
        self._held_packets[held.code] = command
        payload = {"code": held.code, **summary, "requested_by": command.user,
                   "expires_in": round(self.approval_window), "expires_at": round(held.expires)}  # fmt: skip
        return [
            KeepHeld(held),
            SetTaskState(command.task_id, TaskState.PENDING),
            Audit("approval_requested", {"task_id": command.task_id, "requester": command.user,
                                         "request": held.summary}),
            Send(pending_message(command, payload)),
            ArmTimer(approval_timer(held.code), self.approval_window),
        ]  # fmt: skip

    def _release(self, held: HeldRequest, approver: str | None) -> list[Effect]:
        original = self._held_packets.pop(held.code, None)
        if (
            original is None
        ):  # the agent restarted since: the stored view runs only if nothing was masked in it
            stored = held.replayable()
            original = _command_of(json.dumps(stored)) if stored is not None else None
        if original is not None:
            self.scopes.remember(original)
        if original is None or not held.matches(original.raw):
            return self._close(held, ErrorCode.INTERRUPTED, Msg("the agent restarted since this request was made, "
                               "and it carried a masked value the agent does not keep; request it again"))  # fmt: skip
        return [
            SetTaskState(held.task_id, TaskState.QUEUED, approved_by=approver),
            CancelTimer(approval_timer(held.code)),
            StartRun(original, approved_by=approver),
        ]

    def _close(self, held: HeldRequest, code: ErrorCode, message: str) -> list[Effect]:
        """The held request's one TASK_FINISHED, when it will not run."""
        self._held_packets.pop(held.code, None)
        data = {"runbook": held.summary.get("runbook")}
        final = finished_message(held.task_id, held.room_id, Status.FAIL, data=data, error=(code, message))
        return [CancelTimer(approval_timer(held.code)), Send(final, held.task_id)]

    def _timer(self, event: TimerFired) -> list[Effect]:
        kind, _, code = event.key.partition(":")
        if kind != "approval":
            return [Log(logging.WARNING, f"unknown timer {event.key!r}")]
        held = self.ledger.held_request(code)
        if held is None:  # decided already
            return []
        minutes = self.approval_window / 60
        return [
            DropHeld(code),
            Audit("approval_expired", {"task_id": held.task_id, "requester": held.requester}),
            *self._close(held, ErrorCode.APPROVAL_EXPIRED,
                         Msg("nobody approved it within {minutes:g} min; request it again", minutes=minutes)),
        ]  # fmt: skip


#: The longest text the audit log keeps of a command's parameter; a longer one is kept as its digest and length.
MAX_AUDIT_TEXT = 1024


def audit_view(value: Any) -> Any:
    """``value`` as the audit log keeps it: every text over :data:`MAX_AUDIT_TEXT` characters (and any container
    that would still be over it as JSON) replaced by ``{"sha256": …, "length": …}``, so an operator cannot grow the
    log by a megabyte a frame, and what was sent can still be matched."""
    if isinstance(value, str):
        return value if len(value) <= MAX_AUDIT_TEXT else _digest(value)
    if isinstance(value, dict):
        value = {str(k)[:MAX_AUDIT_TEXT]: audit_view(v) for k, v in value.items()}
    elif isinstance(value, list):
        value = [audit_view(v) for v in value]
    else:
        return value
    text = json.dumps(value, ensure_ascii=False)
    return value if len(text) <= 16 * MAX_AUDIT_TEXT else _digest(text)


def _digest(text: str) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), "length": len(text)}


def _command_of(raw: str | None) -> Command | None:
    if not raw:
        return None
    try:
        packet = parse_frame(raw)
    except InvalidPacket:
        return None
    return packet if isinstance(packet, Command) else None
