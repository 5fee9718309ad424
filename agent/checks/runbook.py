"""``runbook`` checks: an approved runbook through the executor; status from the hosts' outcomes.

Every host exit 0 → OK; an exit 1 (what the bundled runbooks use for "over a threshold") → WARN; any other
failure (exit status, timeout, unreachable) → DOWN; refused or an error → ERROR.
"""

from __future__ import annotations

import time
from typing import Any

from agent.catalog import Catalog
from agent.checks import CheckResult, CheckStatus, worst
from agent.config import InventoryConfig, RunbookCheck
from agent.errors import InvalidArguments, RequestRefused, RunbookNotRunnable
from agent.executor import Executor
from agent.plan import plan_run
from agent.redaction import Redactor
from agent.results import Outcome


def _status(outcome: Outcome, exit_code: int | None) -> CheckStatus:
    if outcome is Outcome.SUCCESS:
        return CheckStatus.OK
    if outcome is Outcome.FAIL and exit_code == 1:
        return CheckStatus.WARN
    if outcome in (Outcome.REFUSED, Outcome.ERROR):
        return CheckStatus.ERROR
    return CheckStatus.DOWN


async def run(
    spec: RunbookCheck, catalog: Catalog, inventory: InventoryConfig, executor: Executor, redactor: Redactor
) -> CheckResult:
    started = time.monotonic()
    try:
        plan = plan_run(catalog.load(spec.runbook), inventory, spec.hosts, spec.args, room=None)
    except (RunbookNotRunnable, RequestRefused, InvalidArguments) as exc:
        return CheckResult(CheckStatus.ERROR, str(exc), duration=time.monotonic() - started)
    result = await executor.run(plan, redactor)
    statuses = [_status(h.status, h.exit_code) for h in result.hosts]
    status = worst(statuses)
    data: dict[str, Any] = {"runbook": spec.runbook, "hosts": [h.to_json() for h in result.hosts]}
    bad = [
        f"{h.host}: {h.status.value}"
        for h, s in zip(result.hosts, statuses, strict=True)
        if s is not CheckStatus.OK
    ]
    message = "all hosts OK" if not bad else "; ".join(bad)
    return CheckResult(status, message, data, time.monotonic() - started)
