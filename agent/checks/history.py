"""The check history: what the monthly report's incidents and availability are made of (``checks.jsonl``).

Kept beside the audit log and written by the same chained writer (:class:`agent.state.audit.AuditLog`), so
``agent audit verify --file checks.jsonl`` finds an edited line and ``agent report`` refuses it. Two kinds of entry,
so that a month stays small (a few thousand lines) however often the checks run:

* ``check_status``: a check's status changed (or was first seen since the agent started): ``check``, ``status``,
  ``previous``. A run of DOWN/ERROR entries up to the next OK/WARN one is an incident, to the second.
* ``check_tally``: one hour of one check: ``check``, ``hour`` (Unix time of the hour's start), ``runs`` and how many
  of them were ``ok``, ``warn``, ``down``, ``error``. Availability is the share of runs that were not DOWN/ERROR.

An hour's tally is written when the check's first run of a later hour comes, and at shutdown (:meth:`flush`). A
history that cannot be written is logged, never raised: the checks and their room reports go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.checks import CheckStatus
from agent.state.audit import AuditLog

logger = logging.getLogger(__name__)

#: The history's file name in the state folder.
HISTORY_NAME = "checks.jsonl"
HOUR = 3600


@dataclass
class _Tally:
    hour: int
    counts: dict[CheckStatus, int] = field(default_factory=dict)

    def fields(self) -> dict[str, int]:
        return {
            "hour": self.hour,
            "runs": sum(self.counts.values()),
            **{status.value.lower(): self.counts.get(status, 0) for status in CheckStatus},
        }


class CheckHistory:
    """Records each scheduled check result: status changes at once, counts per hour."""

    def __init__(self, path: Path, log: Callable[[Path], AuditLog] = AuditLog) -> None:
        self.path = path
        self._make_log = log
        self._log: AuditLog | None = None
        self._last: dict[str, CheckStatus] = {}
        self._tallies: dict[str, _Tally] = {}

    def record(self, check: str, status: CheckStatus, at: float | None = None) -> None:
        """One result of ``check`` at ``at`` (Unix time; now by default)."""
        at = time.time() if at is None else at
        hour = int(at // HOUR * HOUR)
        tally = self._tallies.get(check)
        if tally is not None and tally.hour != hour:
            self._write("check_tally", None, check=check, **tally.fields())
            tally = None
        if tally is None:
            tally = self._tallies[check] = _Tally(hour)
        tally.counts[status] = tally.counts.get(status, 0) + 1
        previous = self._last.get(check)
        if previous is not status:
            self._last[check] = status
            self._write(
                "check_status",
                at,
                check=check,
                status=status.value,
                previous=previous.value if previous else None,
            )

    def flush(self) -> None:
        """Write every hour still counting (at shutdown)."""
        tallies, self._tallies = self._tallies, {}
        for check, tally in tallies.items():
            self._write("check_tally", None, check=check, **tally.fields())
        if self._log is not None:
            self._log.close()

    def _write(self, kind: str, at: float | None, **fields: object) -> None:
        try:
            if self._log is None:
                self._log = self._make_log(self.path)
            # ``at``: when the result came (the entry's own ``ts`` is when it was written).
            self._log.append(kind, **({"at": round(at, 3)} if at is not None else {}), **fields)
        except Exception as exc:  # the key file, the disk: the checks go on without their history
            logger.warning("the check history %s cannot be written: %s", self.path, exc)
