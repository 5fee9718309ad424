"""Signed commands: HMAC-SHA256 over a canonical form of the packet, a timestamp and a nonce. Pure, no I/O.

When a command key is configured (``$AGENT_COMMAND_KEY``), every command must carry::

    "auth": {"ts": <unix seconds, integer>, "nonce": "<16-64 chars [A-Za-z0-9_-]>", "sig": "<64 hex digits>"}

``sig`` is HMAC-SHA256 with the key (its UTF-8 bytes) over the UTF-8 bytes of::

    "guardia-command/1\\n" + str(ts) + "\\n" + nonce + "\\n" + canonical(packet without "auth")

``canonical`` is JSON with object keys sorted by Unicode code point, no whitespace, strings as UTF-8 (no ``\\u``
escapes except the ones JSON requires: ``\\"``, ``\\\\`` and control characters as ``\\u00XX`` except ``\\b \\f \\n \\r
\\t``), integers in decimal, ``true``/``false``/``null``. Floating-point numbers are refused in signed packets, so every
implementation produces the same bytes. A command is refused when the signature is missing or wrong, when ``ts`` is
further from the agent's clock than the allowed skew, or when its nonce was already used within that window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from agent.chat.i18n import Msg, message_of
from agent.session.protocol import ErrorCode, InvalidPacket

DOMAIN = "guardia-command/1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIG = re.compile(r"[0-9a-f]{64}")


def _no_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError(Msg("floating-point numbers are not allowed in signed commands"))
    if isinstance(value, dict):
        for item in value.values():
            _no_floats(item)
    elif isinstance(value, list):
        for item in value:
            _no_floats(item)


def canonical(packet: dict[str, Any]) -> bytes:
    """The canonical bytes of a packet (without its ``auth``). Raises ValueError for floats."""
    body = {k: v for k, v in packet.items() if k != "auth"}
    _no_floats(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signing_input(packet: dict[str, Any], ts: int, nonce: str) -> bytes:
    return f"{DOMAIN}\n{ts}\n{nonce}\n".encode() + canonical(packet)


def signature(key: str, packet: dict[str, Any], ts: int, nonce: str) -> str:
    return hmac.new(key.encode(), signing_input(packet, ts, nonce), hashlib.sha256).hexdigest()


def sign(key: str, packet: dict[str, Any], ts: int, nonce: str) -> dict[str, Any]:
    """The packet with its ``auth`` added (what a relay does before sending a command)."""
    return {**packet, "auth": {"ts": ts, "nonce": nonce, "sig": signature(key, packet, ts, nonce)}}


def verify(key: str, packet: dict[str, Any], now: float, skew: float, nonce_seen: Any) -> str:
    """Check a command's signature; return its nonce (for the caller to remember).

    Args:
        nonce_seen: ``callable(nonce) -> bool``, True when the nonce was used within the skew window.

    Raises:
        InvalidPacket: UNSIGNED, BAD_SIGNATURE, STALE or REPLAYED, with the task and room ids for the answer.
    """
    task_id = packet.get("task_id") if isinstance(packet.get("task_id"), str) else None
    room_id = packet.get("room_id") if isinstance(packet.get("room_id"), str) else None
    auth = packet.get("auth")
    if not isinstance(auth, dict):
        raise InvalidPacket(
            ErrorCode.UNSIGNED, Msg("this agent accepts signed commands only"), task_id, room_id
        )
    ts, nonce, sig = auth.get("ts"), auth.get("nonce"), auth.get("sig")
    if not (isinstance(ts, int) and not isinstance(ts, bool) and isinstance(nonce, str) and _NONCE.fullmatch(nonce)
            and isinstance(sig, str) and _SIG.fullmatch(sig)):  # fmt: skip
        raise InvalidPacket(ErrorCode.BAD_SIGNATURE, Msg("malformed signature fields"), task_id, room_id)
    try:
        expected = signature(key, packet, ts, nonce)
    except ValueError as exc:
        raise InvalidPacket(ErrorCode.BAD_SIGNATURE, message_of(exc), task_id, room_id) from None
    if not hmac.compare_digest(expected, sig):
        raise InvalidPacket(
            ErrorCode.BAD_SIGNATURE, Msg("the signature does not match the command"), task_id, room_id
        )
    if abs(now - ts) > skew:
        raise InvalidPacket(
            ErrorCode.STALE,
            Msg("the command is older (or newer) than {skew:g} s", skew=skew),
            task_id,
            room_id,
        )
    if nonce_seen(nonce):
        raise InvalidPacket(
            ErrorCode.REPLAYED, Msg("this command was already received (replayed nonce)"), task_id, room_id
        )
    return nonce
