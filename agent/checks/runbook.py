"""``runbook`` checks: an approved runbook through the executor; status from the hosts' outcomes.

Every host exit 0 → OK; an exit 1 (what the bundled runbooks use for "over a threshold") → WARN; any other
failure (exit status, timeout, unreachable) → DOWN; refused or an error → ERROR.
"""

from __future__ import annotations

import time
from typing import Any

from agent.chat.i18n import Msg
from agent.checks import CheckResult, CheckStatus, worst
from agent.config.schema import RunbookCheck
from agent.errors import InvalidArguments, RequestRefused, RunbookNotRunnable
from agent.runs.gate import Held, RunGate, RunRequest, Via
from agent.runs.results import Outcome


def _status(outcome: Outcome, exit_code: int | None) -> CheckStatus:
    if outcome is Outcome.SUCCESS:
        return CheckStatus.OK
    if outcome is Outcome.FAIL and exit_code == 1:
        return CheckStatus.WARN
    if outcome in (Outcome.REFUSED, Outcome.ERROR):
        return CheckStatus.ERROR
    return CheckStatus.DOWN


async def run(
    spec: RunbookCheck,
    gate: RunGate,
    via: Via = Via.SCHEDULE,
    room: str | None = None,
    user: str | None = None,
) -> CheckResult:
    """Run the check's runbook through the run gate as ``via`` (from ``room``, by ``user``)."""
    started = time.monotonic()
    request = RunRequest(spec.runbook, spec.hosts, spec.args, via=via, user=user, room=room)
    try:
        result = await gate.run(request)
    except (RunbookNotRunnable, RequestRefused, InvalidArguments) as exc:
        return CheckResult(CheckStatus.ERROR, exc.msg, duration=time.monotonic() - started)
    if isinstance(result, Held):  # pragma: no cover - the gate refuses approval runbooks for checks
        return CheckResult(CheckStatus.ERROR, Msg("needs approval"), duration=time.monotonic() - started)
    statuses = [_status(h.status, h.exit_code) for h in result.hosts]
    status = worst(statuses)
    data: dict[str, Any] = {"runbook": spec.runbook, "hosts": [h.to_json() for h in result.hosts]}
    bad = [
        Msg("{host}: {status}", host=h.host, status=h.status.value)
        for h, s in zip(result.hosts, statuses, strict=True)
        if s is not CheckStatus.OK
    ]
    message = Msg("all hosts OK") if not bad else Msg("{problems}", problems=bad)
    return CheckResult(status, message, data, time.monotonic() - started)
