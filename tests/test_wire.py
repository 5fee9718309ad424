"""The protocol object chosen once at start (agent/session/wire.py): what each variant sends, frames and can do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.config.schema import load_config
from agent.session.wire import OriginalProtocol, WireProtocol, wire_protocol

HELLO = {"event": "AGENT_HELLO", "msg_id": "h1", "payload": {"agent_id": "a"}}
REPORT = {"event": "REPORT", "msg_id": "r1", "room_id": "ops", "payload": {"kind": "check", "status": "DOWN"}}
FINISHED = {"event": "TASK_FINISHED", "msg_id": "f1", "room_id": "ops", "task_id": "t1",
            "payload": {"status": "SUCCESS", "data": {"x": 1}}}  # fmt: skip
ANONYMOUS = {**FINISHED, "task_id": None}


def same(value: object) -> object:
    return value


def test_protocol_1_sends_every_message_as_made_and_frames_it_unchanged() -> None:
    wire = WireProtocol()
    assert (wire.says_hello, wire.acknowledged, wire.holds_approvals, wire.stores_wire_shape) == (
        True,
    ) * 3 + (False,)
    for message in (HELLO, REPORT, FINISHED):
        assert wire.carries(message) and wire.outgoing(message, None, same) is message
    assert wire.frame('{"a":1}') == '{"a":1}'


@pytest.mark.parametrize(
    ("message", "level", "says"),
    [
        (HELLO, logging.DEBUG, "has no AGENT_HELLO"),
        (REPORT, logging.INFO, "sends no reports"),
        (ANONYMOUS, logging.WARNING, "cannot be addressed"),
    ],
)
def test_the_original_protocol_sends_only_finished_answers_and_says_why_not(
    message: dict[str, object], level: int, says: str
) -> None:
    wire = OriginalProtocol()
    assert not (wire.says_hello or wire.acknowledged or wire.holds_approvals) and wire.stores_wire_shape
    assert wire.outgoing(message, None, same) is None
    assert wire.carries(message) is (message["event"] == "TASK_FINISHED")
    assert wire.why_not_sent(message)[0] == level and says in wire.why_not_sent(message)[1]


def test_the_original_protocol_frames_a_finished_answer_without_the_agents_msg_id() -> None:
    wire = OriginalProtocol()
    inbound = json.loads(
        wire.inbound(json.dumps({"action": "RUN_RUNBOOK", "task_id": 1, "room_id": "10.0.0.1"}), 0).frame
    )
    key = inbound["task_id"]
    stored = wire.outgoing(
        {**FINISHED, "task_id": key}, "RUN_RUNBOOK", lambda v: "[IP]" if v == "10.0.0.1" else v
    )
    assert stored is not None and stored["msg_id"] == "f1"
    sent = json.loads(wire.frame(json.dumps(stored)))
    assert set(sent) == {"event", "room_id", "task_id", "payload"} and sent["payload"]["status"] == "SUCCESS"
    assert (sent["task_id"], sent["room_id"]) == (1, "[IP]")  # the relay's ids, through the redactor
    assert (
        wire.outgoing({**FINISHED, "task_id": key}, "RUN_RUNBOOK", same) is None
    )  # answered once: forgotten
    reporting = OriginalProtocol(reports=True)
    assert (
        reporting.carries(REPORT) and reporting.outgoing(REPORT, None, same) is not None
    )  # [relay] v0_reports


def test_the_protocol_is_chosen_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[relay]\nprotocol = "v0"\nv0_reports = true\n', encoding="utf-8")
    assert wire_protocol(load_config(config)) == OriginalProtocol(reports=True)
    config.write_text("", encoding="utf-8")
    assert wire_protocol(load_config(config)) == WireProtocol()
