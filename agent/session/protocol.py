"""The wire protocol between the agent and a relay (docs/protocol.md is the contract). Pure, no I/O.

:func:`parse_frame` turns one text frame into a :class:`Command` or an :class:`Ack`, or raises
:class:`InvalidPacket` — on any input whatsoever, nothing else. The ``*_message`` builders make the agent's outbound
messages as plain dicts; :func:`encode` turns one into a frame.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from agent.chat.i18n import Msg, i18n_json
from agent.errors import AgentError

PROTOCOL_VERSION = 1
#: The largest frame the agent accepts, in bytes; larger ones close the connection with 1009.
MAX_FRAME = 1024 * 1024
#: The deepest nesting of objects and lists a packet may have (every real packet is under 6).
MAX_DEPTH = 32

# -- identifiers ------------------------------------------------------------------------------------------------
# Every identifier a relay sends is checked as a whole value (``fullmatch``; a pydantic ``pattern`` only searches)
# with a bounded length, at parse time, before anything runs. They are data: nothing on disk is ever named after one
# (the output store keys by a digest). The patterns are documented in docs/protocol.md, "Identifiers".

#: ``task_id`` (also ``params.task_id`` of GET_OUTPUT): 1–128 characters, a letter or digit first.
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
#: ``room_id`` and ``user_id``: 1–128 characters, none a control character (C0, DEL, C1) or a line/paragraph
#: separator; chat systems name rooms and users in any script, so no narrower alphabet.
ROOM_ID = USER_ID = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,128}")
#: ``msg_id`` of an ACK.
MSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: ``auth.nonce`` of a signed command.
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: ``params.code`` of APPROVE and REJECT (case-insensitive; the agent hands out upper case).
APPROVAL_CODE = re.compile(r"[A-Za-z2-9]{6}")
#: ``params.host`` of GET_OUTPUT: a host alias of the inventory.
HOST_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _whole(pattern: re.Pattern[str]) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.fullmatch(value) is None:
            raise ValueError("not a valid identifier")
        return value

    return AfterValidator(check)


def valid_identifier(value: object, pattern: re.Pattern[str]) -> bool:
    """True when ``value`` is a string that ``pattern`` matches as a whole (and UTF-8 can carry)."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None and encodable(value)


TaskId = Annotated[str, _whole(TASK_ID)]
RoomId = Annotated[str, _whole(ROOM_ID)]
UserId = Annotated[str, _whole(USER_ID)]
MsgId = Annotated[str, _whole(MSG_ID)]


class Action(StrEnum):
    """Commands the agent accepts; anything else is ACTION_NOT_ALLOWED. Mirrors docs/protocol.md 1:1."""

    RUN_RUNBOOK = "RUN_RUNBOOK"
    LIST_RUNBOOKS = "LIST_RUNBOOKS"
    FETCH_MES_QC = "FETCH_MES_QC"
    CHECK_INTERNAL_WAS_STATUS = "CHECK_INTERNAL_WAS_STATUS"
    CHECK_DISK_SPACE = "CHECK_DISK_SPACE"
    RUN_CHECK = "RUN_CHECK"
    GET_OUTPUT = "GET_OUTPUT"
    APPROVE = "APPROVE"
    REJECT = "REJECT"
    HELP = "HELP"
    HISTORY = "HISTORY"
    PENDING = "PENDING"
    CANCEL = "CANCEL"
    HOSTS = "HOSTS"
    CHECKS = "CHECKS"
    STOP = "STOP"
    RERUN = "RERUN"
    ACK_CHECK = "ACK_CHECK"
    MUTE_CHECK = "MUTE_CHECK"
    UNMUTE_CHECK = "UNMUTE_CHECK"


class Event(StrEnum):
    AGENT_HELLO = "AGENT_HELLO"
    TASK_ACCEPTED = "TASK_ACCEPTED"
    TASK_PENDING_APPROVAL = "TASK_PENDING_APPROVAL"
    TASK_PROGRESS = "TASK_PROGRESS"
    TASK_FINISHED = "TASK_FINISHED"
    REPORT = "REPORT"
    ACK = "ACK"


class Status(StrEnum):
    """``payload.status`` of TASK_FINISHED: the existing two values."""

    SUCCESS = "SUCCESS"
    FAIL = "FAIL"


class ErrorCode(StrEnum):
    """``payload.error.code`` of a FAIL that was not a run's own failure."""

    MALFORMED = "MALFORMED"
    ACTION_NOT_ALLOWED = "ACTION_NOT_ALLOWED"
    INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
    RUNBOOK_NOT_RUNNABLE = "RUNBOOK_NOT_RUNNABLE"
    UNKNOWN_HOST = "UNKNOWN_HOST"
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"
    ROOM_NOT_ALLOWED = "ROOM_NOT_ALLOWED"
    NOT_AVAILABLE = "NOT_AVAILABLE"
    CHECK_FAILED = "CHECK_FAILED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERRUPTED = "INTERRUPTED"
    INTERNAL = "INTERNAL"
    UNAUTHORIZED = "UNAUTHORIZED"
    APPROVAL_UNKNOWN = "APPROVAL_UNKNOWN"
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    UNSIGNED = "UNSIGNED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    STALE = "STALE"
    REPLAYED = "REPLAYED"
    WRONG_AGENT = "WRONG_AGENT"


class InvalidPacket(AgentError, ValueError):
    """A frame that is not a valid command. Carries what could be salvaged to address the FAIL answer."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        task_id: str | None = None,
        room_id: str | None = None,
        field: str | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        #: The refused action as sent (ACTION_NOT_ALLOWED), for protocol v0's answer, which names it.
        self.action = action
        self.message = message
        self.task_id = task_id
        self.room_id = room_id
        #: The field at fault when one identifier was refused (``task_id``, ``params.code``, ``auth.nonce``, …).
        self.field = field


class Command(BaseModel):
    """A relay → agent command."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: Action
    task_id: TaskId
    room_id: RoomId
    params: dict[str, Any] = Field(default_factory=dict)
    #: The chat user who typed it, as the relay authenticated them (top level only).
    user_id: UserId | None = None
    #: The packet as it arrived (for the signature check).
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    @property
    def user(self) -> str | None:
        """Who asked: only what the relay authenticated, the top-level ``user_id``; ``params`` never carries it."""
        return self.user_id


@dataclass(frozen=True)
class Inbound:
    """A frame from the relay as the core is to read it (what :meth:`agent.session.wire.WireProtocol.inbound`
    makes of it)."""

    #: A protocol-1 frame (in v0: the v0 packet with the agent's own task and room keys,
    #: :class:`agent.session.protocol_v0.Addressing`).
    frame: str | bytes
    #: The packet exactly as the relay sent it, when that is what a signature covers (v0); None: ``frame`` is.
    signed: dict[str, Any] | None = None


class Ack(BaseModel):
    """A relay → agent acknowledgement of one agent message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: Event
    msg_id: MsgId


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encodable(text: str) -> bool:
    """Whether UTF-8 can carry ``text`` (no lone surrogates, which JSON escapes can spell and UTF-8 cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _salvage(raw: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and pattern.fullmatch(value) and encodable(value) else None


def _too_deep(value: Any) -> bool:
    """True when ``value`` nests objects/lists deeper than :data:`MAX_DEPTH` (iterative: no recursion to overflow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_frame(frame: str | bytes) -> Command | Ack:
    """Parse one frame from the relay.

    Returns:
        A :class:`Command` or an :class:`Ack`.

    Raises:
        InvalidPacket: for anything else, with a short reason that echoes none of the input, and the task and
            room ids when they could be read, so the FAIL answer can be addressed.
    """
    if isinstance(frame, bytes):
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("binary frames are not accepted; send JSON text"))
    try:
        raw = json.loads(frame, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("not valid JSON")) from None
    if not isinstance(raw, dict):
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("a packet must be a JSON object"))
    task_id, room_id = _salvage(raw, "task_id", TASK_ID), _salvage(raw, "room_id", ROOM_ID)
    if _too_deep(raw):
        raise InvalidPacket(
            ErrorCode.MALFORMED, Msg("nested more than {n} levels deep", n=MAX_DEPTH), task_id, room_id
        )
    if not encodable(frame) or not encodable(json.dumps(raw, ensure_ascii=False)):
        # JSON escapes can smuggle in lone surrogates, which no UTF-8 store or frame can carry.
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("invalid Unicode (lone surrogate)"), task_id, room_id)
    if raw.get("event") == Event.ACK:
        try:
            return Ack.model_validate(raw)
        except ValidationError:
            raise InvalidPacket(
                ErrorCode.MALFORMED, Msg("an ACK needs a valid msg_id"), field="msg_id"
            ) from None
    action = raw.get("action")
    if not isinstance(action, str):
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("missing 'action'"), task_id, room_id)
    if action not in Action.__members__:
        raise InvalidPacket(
            ErrorCode.ACTION_NOT_ALLOWED, Msg("action not allowed"), task_id, room_id, action=action
        )
    try:
        command = Command.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False) if e["loc"]})
        raise InvalidPacket(
            ErrorCode.MALFORMED,
            Msg("invalid or missing: {fields}", fields=", ".join(fields or ["packet"])),
            task_id,
            room_id,
            field=fields[0] if len(fields) == 1 else None,
        ) from None
    _check_nested_identifiers(command, raw, task_id, room_id)
    command._raw = raw
    return command


#: Identifiers inside ``params``, per action: ``(key, pattern, required)``. Checked at parse time like the top-level
#: ones, so a hostile value is refused naming the field before any handler sees it.
_PARAM_IDENTIFIERS: dict[Action, tuple[tuple[str, re.Pattern[str], bool], ...]] = {
    Action.GET_OUTPUT: (("task_id", TASK_ID, True), ("host", HOST_ALIAS, True)),
    Action.APPROVE: (("code", APPROVAL_CODE, True),),
    Action.REJECT: (("code", APPROVAL_CODE, True),),
    Action.STOP: (("task_id", TASK_ID, True),),
    Action.RERUN: (("task_id", TASK_ID, True),),
}


def _check_nested_identifiers(
    command: Command, raw: dict[str, Any], task_id: str | None, room_id: str | None
) -> None:
    for key, pattern, required in _PARAM_IDENTIFIERS.get(command.action, ()):
        value = command.params.get(key)
        if (value is not None or required) and not valid_identifier(value, pattern):
            raise InvalidPacket(
                ErrorCode.INVALID_ARGUMENTS,
                Msg("params.{key}: missing or not a valid identifier", key=key),
                task_id,
                room_id,
                field=f"params.{key}",
            )
    auth = raw.get("auth")
    if isinstance(auth, dict) and "nonce" in auth and not valid_identifier(auth["nonce"], NONCE):
        raise InvalidPacket(
            ErrorCode.BAD_SIGNATURE, Msg("invalid: auth.nonce"), task_id, room_id, field="auth.nonce"
        )


# -- outbound ---------------------------------------------------------------------------------------------------


def new_msg_id() -> str:
    return uuid.uuid4().hex


#: ``payload.audit_head`` of AGENT_HELLO and TASK_FINISHED (protocol 1, optional): ``{"seq": N, "hash": "…"}``, the
#: head of the agent's audit chain when the message was made; the relay keeps the last one per agent and tells the
#: rooms when a head goes backwards or forks (docs/protocol.md, "The audit head"). Added after redaction.
AUDIT_HEAD = "audit_head"
#: The events that carry :data:`AUDIT_HEAD`.
ANCHORED_EVENTS = frozenset({"AGENT_HELLO", "TASK_FINISHED"})


def hello_message(
    agent_id: str,
    version: str,
    catalog_sha256: str | None,
    runbooks: list[str],
    approver_keys: list[str] | None = None,
) -> dict[str, Any]:
    """``approver_keys``: fingerprints of the catalog approvers' public keys (the relay watches them change)."""
    return {
        "event": Event.AGENT_HELLO.value,
        "msg_id": new_msg_id(),
        "payload": {
            "agent_id": agent_id,
            "version": version,
            "protocol": PROTOCOL_VERSION,
            "max_frame": MAX_FRAME,
            "catalog_sha256": catalog_sha256,
            "runbooks": runbooks,
            "approver_keys": sorted(approver_keys or []),
            "actions": [a.value for a in Action],
        },
    }


def pending_message(command: Command, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": Event.TASK_PENDING_APPROVAL.value,
        "room_id": command.room_id,
        "task_id": command.task_id,
        "msg_id": new_msg_id(),
        "payload": payload,
    }


def accepted_message(command: Command, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "event": Event.TASK_ACCEPTED.value,
        "room_id": command.room_id,
        "task_id": command.task_id,
        "msg_id": new_msg_id(),
        "payload": {"action": command.action.value, **(payload or {})},
    }


def progress_message(command: Command, payload: dict[str, Any]) -> dict[str, Any]:
    """TASK_PROGRESS: a line about a run that is still going (not kept as the task's answer)."""
    return {
        "event": Event.TASK_PROGRESS.value,
        "room_id": command.room_id,
        "task_id": command.task_id,
        "msg_id": new_msg_id(),
        "payload": payload,
    }


def finished_message(
    task_id: str | None,
    room_id: str | None,
    status: Status,
    data: Mapping[str, Any] | None = None,
    error: tuple[ErrorCode, str] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": status.value, "data": dict(data or {})}
    if error is not None:
        payload["error"] = {"code": error[0].value, "message": str(error[1])}
        if (i18n := i18n_json(error[1])) is not None:
            payload["error"]["i18n"] = (
                i18n  # the message's template and values: payload.text is rendered from it
            )
    return {
        "event": Event.TASK_FINISHED.value,
        "room_id": room_id,
        "task_id": task_id,
        "msg_id": new_msg_id(),
        "payload": payload,
    }


def report_message(room_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event": Event.REPORT.value, "room_id": room_id, "msg_id": new_msg_id(), "payload": payload}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
