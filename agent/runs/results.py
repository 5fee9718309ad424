"""Result records of runs: one :class:`HostResult` per host, gathered in a :class:`RunResult`. Pure, no I/O.

A host's failure is a result, never an exception: the executor turns every way a run can go wrong on one host into
a row with an :class:`Outcome` and a short, address-free message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from agent.chat.i18n import i18n_json


class Outcome(StrEnum):
    """How a run ended on one host; the values are the wire names (docs/protocol.md)."""

    SUCCESS = "SUCCESS"  # exit status 0
    FAIL = "FAIL"  # the script ran and exited non-zero
    TIMEOUT = "TIMEOUT"  # killed at the runbook's time limit
    UNREACHABLE = "UNREACHABLE"  # could not connect (refused, timed out, no route)
    REFUSED = "REFUSED"  # not run: host key not trusted, login refused, busy, script no longer verified
    ERROR = "ERROR"  # anything else; the log has the details
    STOPPED = "STOPPED"  # ended by a STOP (the host-side kill of a timeout), or not started after it


@dataclass(frozen=True)
class HostResult:
    host: str
    status: Outcome
    exit_code: int | None = None
    duration: float = 0.0
    stdout: str = ""
    stderr: str = ""
    #: Either stream was cut to its cap (``stdout_cut``/``stderr_cut`` bytes were dropped from the middle).
    truncated: bool = False
    stdout_cut: int = 0
    stderr_cut: int = 0
    #: Short reason for anything but SUCCESS, safe for the room (a :class:`agent.chat.i18n.Msg`: ``i18n`` in the JSON).
    message: str = ""
    #: sha256 of the kept output (``stdout_full + NUL + stderr_full``, UTF-8): what the audit log records.
    output_sha256: str = ""
    #: The whole redacted output up to the agent's ceiling, kept on the agent PC (not sent; see GET_OUTPUT).
    stdout_full: str = field(default="", repr=False, compare=False)
    stderr_full: str = field(default="", repr=False, compare=False)
    #: How the run's processes were contained on the host (agent.runs.remote.Containment: ``namespace``,
    #: ``subreaper``, ``sweep``, ``none``); empty when nothing ran there.
    containment: str = ""
    #: The persistence points of the run's user that changed during the run (agent.runs.remote.PERSISTENCE_POINTS:
    #: ``crontab``, ``at``, ``~/.ssh/rc`` ...), as the wrapper found them; ``None`` when nothing ran there or the
    #: wrapper could not say (the connection was lost before its trailer).
    persistence: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["stdout_full"], data["stderr_full"]
        data["status"] = self.status.value
        data["duration"] = round(self.duration, 3)
        data["message"] = str(self.message)
        if self.persistence is not None:
            data["persistence"] = list(self.persistence)
        if (i18n := i18n_json(self.message)) is not None:
            data["i18n"] = i18n
        return data


@dataclass(frozen=True)
class RunResult:
    runbook: str
    script_sha256: str
    hosts: list[HostResult] = field(default_factory=list)

    @property
    def status(self) -> Outcome:
        """SUCCESS only when every host succeeded; otherwise the first non-success outcome by host order."""
        for result in self.hosts:
            if result.status is not Outcome.SUCCESS:
                return result.status
        return Outcome.SUCCESS

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and self.status is Outcome.SUCCESS

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "script_sha256": self.script_sha256,
            "status": self.status.value,
            "hosts": [h.to_json() for h in self.hosts],
        }
