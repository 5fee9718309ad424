"""What the agent tells the operations room on its own (agent/session/notices.py): each notice says what happened and how much."""

from __future__ import annotations

from pathlib import Path

from agent.catalog.store import Catalog
from agent.session import notices


def test_a_cap_notice_says_how_much_was_dropped_and_that_no_result_was() -> None:
    dropped = notices.outbox_cap(7)
    assert (dropped["kind"], dropped["status"], dropped["dropped"]) == ("outbox_cap", "WARN", 7)
    assert "no result was dropped" in dropped["message"]
    evicted = notices.outputs_cap(["t-1", "t-2"])
    assert evicted["evicted"] == ["t-1", "t-2"] and evicted["message"].startswith("2 oldest")


def test_start_and_catalog_notices_name_the_catalog_and_each_problem(catalog_dir: Path) -> None:
    catalog = Catalog(catalog_dir / "runbooks", catalog_dir / "runbooks.lock")
    started = notices.agent_state("started", "agent-07", "1.2.3", catalog.verify())
    assert (started["status"], started["runnable"], len(started["catalog"])) == ("OK", 8, 12)
    assert notices.agent_state("stopping", "agent-07", "1.2.3", catalog.report)["status"] == "WARN"
    script = catalog_dir / "runbooks" / "tail_log.sh"
    script.write_bytes(script.read_bytes() + b"\necho tampered\n")
    report = catalog.verify()
    problems = notices.catalog_problems(report, 1000.0)
    assert problems["status"] == "ERROR" and problems["at"] == 1000.0
    assert [(p["runbook"], p["kind"]) for p in problems["problems"]] == [("tail_log", "modified_script")]
    assert problems["message"] == "1 catalog problem; 7 of 8 runbooks runnable"
