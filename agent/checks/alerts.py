"""What operators said about a check's alerts: acknowledged (no more reminders until its state changes) and muted
(no reports until a time: a maintenance window). Kept in the agent's durable key-value state (the outbox database,
where the scheduler keeps the last statuses), so both survive a restart. Pure but for that ``state`` object.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol

#: The longest mute: a maintenance window longer than a week is a check to remove from the config.
MAX_MUTE = 7 * 86400.0
MIN_MUTE = 60.0
_DURATION = re.compile(r"(\d{1,5})(m|min|h|d|분|시간|일)")
_UNITS = {"m": 60, "min": 60, "분": 60, "h": 3600, "시간": 3600, "d": 86400, "일": 86400}


class State(Protocol):
    def get_state(self, key: str) -> str | None: ...
    def set_state(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class Ack:
    """Someone acknowledged the check's ``status``: no reminders while it stays so."""

    by: str | None
    status: str
    at: float


@dataclass(frozen=True)
class Mute:
    """No report about the check until ``until`` (Unix time)."""

    by: str | None
    until: float
    at: float


def parse_duration(text: str) -> float | None:
    """``30m``, ``2h``, ``1d``, ``90분``, ``2시간``, ``1일`` in seconds; None for anything else."""
    match = _DURATION.fullmatch(text.strip().lower())
    return float(int(match.group(1)) * _UNITS[match.group(2)]) if match else None


def _load(state: State, key: str) -> dict[str, Any] | None:
    raw = state.get_state(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def ack_of(state: State, check: str) -> Ack | None:
    value = _load(state, f"ack:{check}")
    try:
        return Ack(value["by"], str(value["status"]), float(value["at"])) if value else None
    except (KeyError, TypeError, ValueError):
        return None


def mute_of(state: State, check: str, now: float) -> Mute | None:
    """The check's mute if it still holds at ``now`` (an expired one is None)."""
    value = _load(state, f"mute:{check}")
    try:
        mute = Mute(value["by"], float(value["until"]), float(value["at"])) if value else None
    except (KeyError, TypeError, ValueError):
        return None
    return mute if mute is not None and mute.until > now else None


def set_ack(state: State, check: str, ack: Ack | None) -> None:
    state.set_state(f"ack:{check}", json.dumps(asdict(ack)) if ack else "")


def set_mute(state: State, check: str, mute: Mute | None) -> None:
    state.set_state(f"mute:{check}", json.dumps(asdict(mute)) if mute else "")


def view(state: State, check: str, now: float) -> dict[str, Any]:
    """What the room is shown of a check's ack and mute: ``acked_by``, ``muted_until``, ``muted_by`` (when set)."""
    shown: dict[str, Any] = {}
    if (ack := ack_of(state, check)) is not None:
        shown["acked_by"] = ack.by
    if (mute := mute_of(state, check, now)) is not None:
        shown["muted_until"], shown["muted_by"] = mute.until, mute.by
    return shown


def last_status(state: State, check: str, schedules: list[str]) -> str | None:
    """The check's last scheduled status: the first not-OK one over its schedules, else OK (None: never run)."""
    stored = [state.get_state(f"status:{name}:{check}") for name in schedules]
    known = [s for s in stored if s]
    return next((s for s in known if s != "OK"), known[0] if known else None)
