"""The original protocol ("v0", ``[relay] protocol = "v0"``): the agent's messages as the seed's relay expects them.

Pure, no I/O. The agent works in protocol-1 messages throughout (core, outbox, ledger); in v0 mode
:class:`agent.session.wire.OriginalProtocol` passes each already redacted message through :func:`adapt`, which returns the
one v0 frame to send for it or ``None`` when v0 has no such message (AGENT_HELLO, TASK_ACCEPTED,
TASK_PENDING_APPROVAL, and REPORT unless ``relay.v0_reports`` is on). A v0 frame is exactly::

    {"event": "TASK_FINISHED", "room_id": …, "task_id": …, "payload": {"status": "SUCCESS"|"FAIL", "data": …}}

(``payload`` may carry more keys: the chat-ready ``text``, ``date``, ``duplicate``, ``code``). The stored form keeps
the outbox's ``msg_id`` beside those keys; :func:`wire` strips it when the frame goes out, since a v0 relay knows
nothing of msg_ids and cannot ACK. docs/protocol.md, "The original protocol (v0)", is the contract.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.session.protocol import ROOM_ID, Action, ErrorCode, Event, Inbound, Status, valid_identifier

#: What a v0 refusal of an unknown action says (the original agent's words).
NOT_ALLOWED = "허용되지 않은 action: "
#: The original words for a WAS that refused the connection / did not answer in time.
REFUSED = "연결 거부"
TIMEOUT = "타임아웃"
#: A v0 answer echoes at most this many characters of a refused action.
MAX_ECHO = 64
#: FETCH_MES_QC rows in v0 carry exactly these keys, in this order.
MES_QC_COLUMNS = ("work_date", "prc_code", "err_msg", "reg_date")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


#: A frame byte-identical to one received less than this many seconds earlier is the relay sending it again: it
#: is the same command (run once, answered once). Any other frame is a new command, whatever its ``task_id``.
RESEND_WINDOW = 60.0
#: At most this many recent frames are remembered for :data:`RESEND_WINDOW` (the oldest are forgotten first).
MAX_RECENT = 4096
#: The original's handlers that read ``params``; the others ignore it, whatever it is.
READS_PARAMS = frozenset({Action.FETCH_MES_QC.value})


@dataclass(frozen=True)
class Address:
    """Where a v0 answer goes: the command's ``task_id`` and ``room_id`` exactly as the relay sent them (any JSON
    value, ``None`` when absent: the original echoed ``packet.get(...)``)."""

    task_id: Any
    room_id: Any


class Addressing:
    """v0's ids are data, not keys: the original agent answered every command with whatever ``task_id`` and
    ``room_id`` it carried (a number, ``null``, a reused or any string), and a v0 relay does not promise them
    unique. So each v0 command gets a task key of the agent's own (``v0-`` and 24 hex digits), under which the core,
    the ledger and the outbox know it, and its answer goes back with the relay's ids, as they came, by
    :meth:`address`. The one exception: a frame byte-identical to one received within :data:`RESEND_WINDOW` is a
    resend of it and gets the same key (the core answers it as a duplicate, never runs it twice).

    The translated packet keeps the relay's ids under ``reply_to``, so a task the ledger kept over a restart is
    answered to them too (:meth:`resume`).
    """

    def __init__(self, new_key: Callable[[], str] = lambda: "v0-" + secrets.token_hex(12)) -> None:
        self._new_key = new_key
        #: sha256 of a recent frame → (its key, when it first came).
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        #: A task's key → where its answer goes (until its final answer went).
        self._addresses: dict[str, Address] = {}

    def inbound(self, frame: str | bytes, now: float) -> Inbound:
        """The frame the core reads for one v0 frame: a JSON object gets the agent's keys; anything else is passed
        on as it came (the core refuses it, and with no ids to answer, v0 sends nothing)."""
        try:
            text = (
                frame.decode("utf-8") if isinstance(frame, bytes) else frame
            )  # the original read binary too
            packet = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return Inbound(frame)
        if not isinstance(packet, dict) or packet.get("event") == Event.ACK.value:
            return Inbound(frame)
        key = self._key(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), now)
        address = Address(packet.get("task_id"), packet.get("room_id"))
        self._addresses.setdefault(key, address)
        translated = {**packet, "task_id": key, "room_id": _room_key(address.room_id),
                      "reply_to": {"task_id": address.task_id, "room_id": address.room_id}}  # fmt: skip
        action = packet.get("action")
        if not isinstance(action, str):  # the original answered "허용되지 않은 action: None"
            translated["action"] = str(action)
        if not isinstance(packet.get("params", {}), dict) and translated["action"] not in READS_PARAMS:
            translated["params"] = {}
        user = packet.get("user_id")
        if user is not None and not valid_identifier(user, ROOM_ID):
            translated["user_id"] = (
                str(user) if isinstance(user, int) and not isinstance(user, bool) else None
            )
        return Inbound(json.dumps(translated, ensure_ascii=False), signed=packet)

    def _key(self, digest: str, now: float) -> str:
        while self._recent:
            oldest, (_, first) = next(iter(self._recent.items()))
            if now - first < RESEND_WINDOW and len(self._recent) < MAX_RECENT:
                break
            del self._recent[oldest]
        seen = self._recent.get(digest)
        if seen is not None:
            return seen[0]
        key = self._new_key()
        self._recent[digest] = (key, now)
        return key

    def address(self, task_key: Any, final: bool) -> Address | None:
        """Where the answer for ``task_key`` goes (forgotten once ``final``); None when the agent does not know."""
        if final:
            return self._addresses.pop(task_key, None) if isinstance(task_key, str) else None
        return self._addresses.get(task_key) if isinstance(task_key, str) else None

    def resume(self, packets: Iterable[tuple[str, str | None]]) -> None:
        """After a restart: remember where the answers of the tasks the ledger kept go (``(key, packet JSON)``)."""
        for key, raw in packets:
            try:
                reply = json.loads(raw)["reply_to"] if raw else None
            except (ValueError, KeyError, TypeError):
                reply = None
            if isinstance(reply, dict):
                self._addresses[key] = Address(reply.get("task_id"), reply.get("room_id"))


def _room_key(room: Any) -> str:
    """The room as the agent's rules know it: a room id that is a valid identifier as it is, a number as its digits
    (``[access]`` names rooms in text), anything else by a digest of its JSON."""
    if valid_identifier(room, ROOM_ID):
        return str(room)
    if isinstance(room, int) and not isinstance(room, bool):
        return str(room)
    return "v0-room-" + hashlib.sha256(json.dumps(room).encode()).hexdigest()[:16]


def echo_action(action: str) -> str:
    """A refused action as the v0 answer may show it: control characters as ``?``, at most 64 characters."""
    shown = _CONTROL.sub("?", action)
    return shown if len(shown) <= MAX_ECHO else shown[:MAX_ECHO] + "…"


def adapt(
    message: dict[str, Any],
    action: str | None = None,
    reports: bool = False,
    address: Address | None = None,
    redact: Callable[[Any], Any] = lambda value: value,
) -> dict[str, Any] | None:
    """The v0 frame (plus its outbox ``msg_id``) for one redacted protocol-1 message, or ``None`` to send nothing.

    Args:
        message: a redacted agent → relay message as :mod:`agent.session.protocol` builds it.
        action: the command's action as sent, for a TASK_FINISHED (``None`` when unknown: a final that is not a
            handler's answer, such as INTERRUPTED or SHUTTING_DOWN).
        reports: push REPORTs, in the TASK_FINISHED shape, with ``task_id`` ``report-<msg_id>``.
        address: where a TASK_FINISHED goes: the command's ids as the relay sent them (:class:`Addressing`).
        redact: applied to what the frame takes from elsewhere than ``message`` (the relay's ids, a refused action
            as sent): the frame is then as redacted as ``message`` was, with no second pass over all of it.

    Returns:
        A dict with exactly ``event``, ``room_id``, ``task_id``, ``payload`` and ``msg_id``; or ``None`` when v0
        has no such message, or when the answer has no ``address`` (a task the agent cannot trace to a command).
    """
    event = message.get("event")
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return None
    if event == Event.REPORT.value and reports and message.get("room_id"):
        status = Status.SUCCESS if payload.get("status") in ("OK", "WARN") else Status.FAIL
        data = {k: v for k, v in payload.items() if k != "text"}
        v0_payload = {"status": status.value, "data": data}
        if "text" in payload:
            v0_payload["text"] = payload["text"]
        return _frame(message["room_id"], f"report-{message['msg_id']}", v0_payload, message["msg_id"])
    if event != Event.TASK_FINISHED.value:
        return None
    if address is None:
        return None
    shown = redact(action) if action is not None else None
    return _frame(redact(address.room_id), redact(address.task_id), finished_payload(payload, shown),
                  message["msg_id"])  # fmt: skip


def _frame(room_id: Any, task_id: Any, payload: dict[str, Any], msg_id: str) -> dict[str, Any]:
    return {"event": Event.TASK_FINISHED.value, "room_id": room_id, "task_id": task_id, "payload": payload,
            "msg_id": msg_id}  # fmt: skip


def finished_payload(payload: dict[str, Any], action: str | None) -> dict[str, Any]:
    """A protocol-1 TASK_FINISHED payload in v0's shape (``status``, ``data``, and the extra keys kept)."""
    status = payload.get("status")
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    error = payload.get("error")
    extra: dict[str, Any] = {k: payload[k] for k in ("text", "duplicate") if k in payload}
    if isinstance(error, dict):
        code = error.get("code")
        if code == ErrorCode.ACTION_NOT_ALLOWED.value and action is not None:
            message = NOT_ALLOWED + echo_action(action)
        else:
            message = str(error.get("message", ""))
        return {"status": Status.FAIL.value, "data": {"error": message}, "code": code, **extra}
    if status == Status.SUCCESS.value and action == Action.FETCH_MES_QC.value:
        return {"status": status, "data": mes_qc_rows(data), "date": data.get("date"), **extra}
    if action == Action.CHECK_INTERNAL_WAS_STATUS.value:
        return {"status": Status.SUCCESS.value, "data": was_status(data), **extra}
    if action == Action.CHECK_DISK_SPACE.value:
        return {"status": Status.SUCCESS.value, "data": disk_space(data), **extra}
    return {"status": Status.SUCCESS.value if status == Status.SUCCESS.value else Status.FAIL.value,
            "data": data, **extra}  # fmt: skip


def mes_qc_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """FETCH_MES_QC: the rows, each with exactly work_date, prc_code, err_msg, reg_date (missing ones null)."""
    rows = data.get("rows")
    if not isinstance(rows, list):
        return []
    return [{c: row.get(c) for c in MES_QC_COLUMNS} for row in rows if isinstance(row, dict)]


def _only_check(data: dict[str, Any]) -> dict[str, Any]:
    checks = data.get("checks")
    if isinstance(checks, dict):
        for result in checks.values():
            if isinstance(result, dict):
                return result
    return {}


def was_status(data: dict[str, Any]) -> dict[str, Any]:
    """CHECK_INTERNAL_WAS_STATUS: the health JSON as the WAS gave it, or ``{"status": "DOWN", "error": …}``."""
    result = _only_check(data)
    details = result.get("data") if isinstance(result.get("data"), dict) else {}
    assert isinstance(details, dict)
    body = details.get("body")
    if isinstance(body, dict) and "status" in body:
        return body
    reason = details.get("reason")
    if reason == "CONNECTION_REFUSED":
        return {"status": "DOWN", "error": REFUSED}
    if reason == "TIMEOUT":
        return {"status": "DOWN", "error": TIMEOUT}
    return {"status": "DOWN", "error": str(result.get("message") or "unknown")}


def disk_space(data: dict[str, Any]) -> dict[str, Any]:
    """CHECK_DISK_SPACE: the fullest disk's total, used, free (bytes) and percent at the top, every disk in ``disks``."""
    disks = []
    checks = data.get("checks")
    for name, result in checks.items() if isinstance(checks, dict) else []:
        details = result.get("data") if isinstance(result, dict) else None
        if not isinstance(details, dict) or "total_bytes" not in details:
            disks.append({"name": name, "status": "ERROR",
                          "error": str(result.get("message") if isinstance(result, dict) else "")})  # fmt: skip
            continue
        total, free = details.get("total_bytes", 0), details.get("free_bytes", 0)
        used = details.get("used_bytes", total - free)
        disks.append({"name": name, "path": details.get("path"), "total": total, "used": used,
                      "free": free, "percent": details.get("used_percent"), "status": result.get("status")})  # fmt: skip
    readable = [d for d in disks if "total" in d]
    top = max(readable, key=lambda d: d.get("percent") or 0, default=None)
    head = {k: top[k] for k in ("path", "total", "used", "free", "percent")} if top else {"error": "no disk"}
    return {**head, "disks": disks}


def wire(body: str) -> str:
    """The frame to send for a stored v0 message: the same JSON without the agent's internal ``msg_id``."""
    message = json.loads(body)
    message.pop("msg_id", None)
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
