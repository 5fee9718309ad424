"""Health and DB checks: each kind is ``async def run(spec, …) -> CheckResult`` and never raises.

This module holds the pure parts: the result record, how statuses rank, and when a scheduled result is worth a
message (:func:`notify_decision`). The kinds live in ``http``, ``disk``, ``db``, ``tcp`` and ``runbook``;
:mod:`agent.checks.runner` runs a configured check by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from agent.chat.i18n import i18n_json


class CheckStatus(StrEnum):
    OK = "OK"
    WARN = "WARN"  # working, but past a warning threshold
    DOWN = "DOWN"  # the thing checked is not healthy or not answering
    ERROR = "ERROR"  # the check itself could not run (configuration, permissions, a bug)


_RANK = {CheckStatus.OK: 0, CheckStatus.WARN: 1, CheckStatus.DOWN: 2, CheckStatus.ERROR: 3}


def worst(statuses: list[CheckStatus]) -> CheckStatus:
    return max(statuses, key=_RANK.__getitem__, default=CheckStatus.OK)


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    #: Short, address-free, for the room: a :class:`agent.chat.i18n.Msg` (English; ``i18n`` in the JSON).
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = {"status": self.status.value, "message": str(self.message), "data": self.data,
                "duration": round(self.duration, 3)}  # fmt: skip
        if (i18n := i18n_json(self.message)) is not None:
            data["i18n"] = i18n
        return data


NotifyMode = Literal["always", "on_change", "on_failure"]


def notify_decision(mode: NotifyMode, previous: CheckStatus | None, current: CheckStatus) -> str | None:
    """Whether a scheduled result goes to the room: ``"report"``, ``"recovery"`` (back to OK), or ``None``.

    ``on_change`` stays quiet on a first OK (nothing changed that anyone needs to hear about) and reports a first
    non-OK; ``on_failure`` reports every non-OK; ``always`` reports everything.
    """
    recovered = previous is not None and previous is not CheckStatus.OK and current is CheckStatus.OK
    if mode == "always":
        return "recovery" if recovered else "report"
    if mode == "on_failure":
        return None if current is CheckStatus.OK else "report"
    if recovered:
        return "recovery"
    if current is not previous and (previous is not None or current is not CheckStatus.OK):
        return "report"
    return None
