"""Bounded, never self-feeding (issue 27): what the agent says about dropping something never drops something else.

The attack: results alone over ``state.max_outbox_bytes`` and a relay that is away. Each "reports dropped" notice was
itself a droppable REPORT over the cap, dropped and re-reported: 37,299 notices in 40 s, the audit log growing
~390 KB/s, for as long as the relay stayed away.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.config.schema import load_config
from agent.session.core import MAX_AUDIT_TEXT, Audit, FrameReceived, audit_view
from agent.session.protocol import Status, finished_message, report_message
from agent.shell.app import App
from agent.state.outbox import Outbox
from tests.conftest import RunningApp
from tests.sshd import free_port
from tests.test_core import NOW, make_core


def _reports(box: Outbox, kind: str) -> list[dict[str, object]]:
    bodies = [json.loads(body) for _, body in box.pending()]
    return [b["payload"] for b in bodies if b.get("event") == "REPORT" and b["payload"].get("kind") == kind]


async def test_a_dropped_report_is_told_once_and_the_notice_never_drops_another(tmp_path: Path) -> None:
    home = tmp_path
    (home / "runbooks").mkdir()
    (home / "agent.toml").write_text(
        'agent_id = "a"\n[state]\nmax_outbox_bytes = 1048576\n', encoding="utf-8"
    )
    away = {"EXTERNAL_WS_URL": f"ws://127.0.0.1:{free_port()}/agent"}  # nothing listens: the relay is away
    running = RunningApp(App(load_config(home / "agent.toml"), environ=away))
    runtime = running.app.runtime
    try:
        for i in range(12):  # results (never dropped) alone over the 1 MiB cap
            message = finished_message(f"t{i}", "ops", Status.SUCCESS, {"lines": f"{i}" * 100_000})
            runtime.send(message, f"t{i}", "GET_OUTPUT")
        for i in range(5):  # scheduled reports keep coming; each is dropped to stay under the cap
            runtime.report("ops", {"kind": "check", "status": "DOWN", "message": f"was: HTTP 503 ({i})"})
            runtime.flush_writes()  # each its own commit, so each drops the one before
        # No event marks "nothing more happened": the loop gets a second to run what would loop (every notice
        # dropping the one before, thousands of times a second); the assertions count what it left.
        await asyncio.sleep(1.0)
        box = running.app.outbox
        notices = _reports(box, "outbox_cap")
        assert len(notices) == 1, f"{len(notices)} cap notices pending"
        # Every dropped report is counted (on disk); the one notice tells what was known when it went, and the
        # rest is told by the next, at most one a minute, or after the relay acknowledges this one.
        assert box.dropped >= 4 and 1 <= notices[0]["dropped"] <= box.dropped
        assert [p["kind"] for p in _reports(box, "check")] in (
            [],
            ["check"],
        )  # the reports were dropped, not kept
        audit = (home / "var" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
        assert sum('"report_kind":"outbox_cap"' in line.replace(" ", "") for line in audit) <= 1
    finally:
        await running.stop()


def test_a_notice_replaces_the_unsent_one_of_its_kind_and_is_outside_the_cap(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=2000)
    first = box.put_notice(report_message("ops", {"kind": "outbox_cap", "dropped": 3}), 3)
    size = box.size
    second = box.put_notice(report_message("ops", {"kind": "outbox_cap", "dropped": 5}), 5)
    assert second != first and [p["dropped"] for p in _reports(box, "outbox_cap")] == [5]
    assert box.size == size == 0  # not counted against the cap it reports
    box.close()


def test_what_a_notice_told_is_taken_off_only_when_the_relay_acknowledges_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=2000)
    for i in range(10):  # results alone over the cap: every report before them is dropped
        box.put(report_message("ops", {"kind": "check", "n": i}))
        box.finish_task(f"t{i}", finished_message(f"t{i}", "ops", Status.SUCCESS, {"x": "y" * 300}))
    dropped = box.untold_drops()
    assert dropped is not None and dropped == box.dropped > 0
    notice = report_message("ops", {"kind": "outbox_cap", "dropped": dropped})
    box.put_notice(notice, dropped)
    assert box.untold_drops() is None  # the pending notice says it all
    box.put(report_message("ops", {"kind": "check", "n": 99}))
    box.finish_task("t99", finished_message("t99", "ops", Status.SUCCESS, {"x": "y" * 300}))
    assert box.untold_drops() == dropped + 1  # a new drop: the next notice carries both
    assert box.ack(notice["msg_id"]) and box.dropped == 1 and box.untold_drops() == 1
    box.close()
    assert Outbox(tmp_path / "o.sqlite3", max_bytes=2000).untold_drops() == 1  # durable


def test_v0_delivery_without_acks_frees_the_cap_it_delivered(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=1_000_000)
    seqs = [box.put(report_message("ops", {"kind": "check", "n": i})) for i in range(5)]
    assert box.size > 0 and box.ack_through(seqs[-1]) == 5 and box.size == 0 == box.count()


def test_a_refused_huge_argument_is_audited_as_its_digest_and_length_not_itself() -> None:
    """Issue 27: a refused 900 KB argument was stored verbatim in audit.jsonl (any operator: ~1 MB a frame)."""
    huge = "A" * 900_000
    core, _ = make_core()
    frame = json.dumps({"action": "RUN_RUNBOOK", "task_id": "t-huge", "room_id": "ops", "user_id": "kim",
                        "params": {"runbook": "disk_usage", "hosts": ["was01"], "args": {"path": huge}}})  # fmt: skip
    (audited,) = [
        e for e in core.handle(FrameReceived(frame, NOW)) if isinstance(e, Audit) and e.kind == "command"
    ]
    kept = json.dumps(audited.fields)
    assert huge not in kept and len(kept) < 4096
    digest = hashlib.sha256(huge.encode()).hexdigest()
    assert audited.fields["params"]["args"]["path"] == {"sha256": digest, "length": 900_000}
    assert audited.fields["params"]["runbook"] == "disk_usage"  # what fits is kept as it was


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3000),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=40), inner, max_size=8),
    max_leaves=40,
)


@given(value=json_values)
def test_the_audit_view_of_any_parameters_is_bounded_and_keeps_what_fits(value: object) -> None:
    view = audit_view(value)
    assert len(json.dumps(view, ensure_ascii=False)) <= 16 * MAX_AUDIT_TEXT + 200
    if len(json.dumps(value, ensure_ascii=False)) <= MAX_AUDIT_TEXT:
        assert view == value
