"""The wire protocol between the agent and a relay (docs/protocol.md is the contract). Pure, no I/O.

:func:`parse_frame` turns one text frame into a :class:`Command` or an :class:`Ack`, or raises
:class:`InvalidPacket` — on any input whatsoever, nothing else. The ``*_message`` builders make the agent's outbound
messages as plain dicts; :func:`encode` turns one into a frame.
"""

from __future__ import annotations

import json
import re
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from agent.errors import AgentError
from agent.i18n import Msg, i18n_json

PROTOCOL_VERSION = 1
#: The largest frame the agent accepts, in bytes; larger ones close the connection with 1009.
MAX_FRAME = 1024 * 1024
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_ROOM_ID = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_MSG_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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


class Event(StrEnum):
    AGENT_HELLO = "AGENT_HELLO"
    TASK_ACCEPTED = "TASK_ACCEPTED"
    TASK_PENDING_APPROVAL = "TASK_PENDING_APPROVAL"
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
    UNSIGNED = "UNSIGNED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    STALE = "STALE"
    REPLAYED = "REPLAYED"


class InvalidPacket(AgentError, ValueError):
    """A frame that is not a valid command. Carries what could be salvaged to address the FAIL answer."""

    def __init__(
        self, code: ErrorCode, message: str, task_id: str | None = None, room_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task_id = task_id
        self.room_id = room_id


class Command(BaseModel):
    """A relay → agent command."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: Action
    task_id: str = Field(pattern=_TASK_ID.pattern)
    room_id: str = Field(pattern=_ROOM_ID.pattern)
    params: dict[str, Any] = Field(default_factory=dict)
    #: The chat user who typed it, as the relay authenticated them (top level only).
    user_id: str | None = Field(default=None, max_length=128)
    #: The packet as it arrived (for the signature check).
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    @property
    def user(self) -> str | None:
        """Who asked: only what the relay authenticated, the top-level ``user_id``; ``params`` never carries it."""
        return self.user_id


class Ack(BaseModel):
    """A relay → agent acknowledgement of one agent message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: Event
    msg_id: str = Field(pattern=_MSG_ID.pattern)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _salvage(raw: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and pattern.fullmatch(value) and _encodable(value) else None


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
    task_id, room_id = _salvage(raw, "task_id", _TASK_ID), _salvage(raw, "room_id", _ROOM_ID)
    if not _encodable(frame) or not _encodable(json.dumps(raw, ensure_ascii=False)):
        # JSON escapes can smuggle in lone surrogates, which no UTF-8 store or frame can carry.
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("invalid Unicode (lone surrogate)"), task_id, room_id)
    if raw.get("event") == Event.ACK:
        try:
            return Ack.model_validate(raw)
        except ValidationError:
            raise InvalidPacket(ErrorCode.MALFORMED, Msg("an ACK needs a valid msg_id")) from None
    action = raw.get("action")
    if not isinstance(action, str):
        raise InvalidPacket(ErrorCode.MALFORMED, Msg("missing 'action'"), task_id, room_id)
    if action not in Action.__members__:
        raise InvalidPacket(ErrorCode.ACTION_NOT_ALLOWED, Msg("action not allowed"), task_id, room_id)
    try:
        command = Command.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False) if e["loc"]})
        raise InvalidPacket(
            ErrorCode.MALFORMED,
            Msg("invalid or missing: {fields}", fields=", ".join(fields or ["packet"])),
            task_id,
            room_id,
        ) from None
    command._raw = raw
    return command


# -- outbound ---------------------------------------------------------------------------------------------------


def new_msg_id() -> str:
    return uuid.uuid4().hex


def hello_message(
    agent_id: str, version: str, catalog_sha256: str | None, runbooks: list[str]
) -> dict[str, Any]:
    return {
        "event": Event.AGENT_HELLO.value,
        "msg_id": new_msg_id(),
        "payload": {
            "agent_id": agent_id,
            "version": version,
            "protocol": PROTOCOL_VERSION,
            "catalog_sha256": catalog_sha256,
            "runbooks": runbooks,
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


def finished_message(
    task_id: str | None,
    room_id: str | None,
    status: Status,
    data: dict[str, Any] | None = None,
    error: tuple[ErrorCode, str] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": status.value, "data": data or {}}
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
