"""What the agent tells the operations room on its own (start, stop, catalog problems, a cap that dropped something),
composed as REPORT payloads. Pure: the runtime sends them through the outbox like everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.chat.i18n import i18n_json, nmsg

if TYPE_CHECKING:
    from agent.catalog.store import VerifyReport


def outbox_cap(dropped: int) -> dict[str, Any]:
    """The outbox cap dropped ``dropped`` older reports or acceptance notices (never a result)."""
    return {
        "kind": "outbox_cap", "status": "WARN", "dropped": dropped,
        "message": f"the relay was away long: {dropped} older report(s) or acceptance notice(s) were dropped to stay "
                   "under state.max_outbox_bytes; no result was dropped",
    }  # fmt: skip


def outputs_cap(evicted: Sequence[str]) -> dict[str, Any]:
    """Kept outputs of these tasks were removed to stay under the ``[outputs]`` caps."""
    return {
        "kind": "outputs_cap", "status": "WARN", "evicted": list(evicted),
        "message": f"{len(evicted)} oldest kept output(s) removed to stay under [outputs] max_bytes/max_runs",
    }  # fmt: skip


def agent_state(state: str, agent_id: str, version: str, report: VerifyReport) -> dict[str, Any]:
    """The agent ``started`` (version, short catalog digest, how many runbooks run) or is ``stopping``."""
    digest = report.lock.catalog_sha256[:12] if report.lock and report.lock.catalog_sha256 else None
    return {
        "kind": "agent", "state": state, "status": "OK" if state == "started" else "WARN",
        "agent_id": agent_id, "version": version, "catalog": digest, "runnable": len(report.runnable),
    }  # fmt: skip


def catalog_problems(report: VerifyReport, now: float) -> dict[str, Any]:
    """The catalog failed verification at start: every problem, and how many runbooks still run."""
    message = nmsg(
        "{n} catalog problem; {runnable} of {total} runbooks runnable",
        "{n} catalog problems; {runnable} of {total} runbooks runnable",
        len(report.problems), runnable=len(report.runnable), total=len(report.runbooks),
    )  # fmt: skip
    return {
        "kind": "catalog",
        "status": "ERROR",
        "message": message,
        "i18n": i18n_json(message),
        "at": now,
        "problems": [
            {"runbook": p.runbook, "kind": p.kind.value, "detail": p.detail} for p in report.problems
        ],
    }
