"""Protocol v0's adapter (pure), the v0 core rule for four eyes, identifiers, and the signing vector with a control
character (docs/protocol.md is read for the vector, so the document cannot drift from the code)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.checks.http import health_body
from agent.config.schema import HttpCheck
from agent.session import protocol_v0
from agent.session.command_auth import canonical, signature
from agent.session.core import Answer, FrameReceived, Hold, Send, StartRun, TaskEnded
from agent.session.ledger import BeginTask
from agent.session.protocol import (
    Command,
    ErrorCode,
    InvalidPacket,
    Status,
    accepted_message,
    finished_message,
    hello_message,
    parse_frame,
    pending_message,
    report_message,
)
from agent.session.wire import OriginalProtocol
from tests.test_core import NOW, MemoryLedger, driven

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
V0 = {"event", "room_id", "task_id", "payload", "msg_id"}
COMMAND = parse_frame(json.dumps({"action": "FETCH_MES_QC", "task_id": "t-1", "room_id": "ops"}))
assert not isinstance(COMMAND, InvalidPacket)
TO_T1 = protocol_v0.Address("t-1", "ops")


def finished(data: dict[str, Any], status: Status = Status.SUCCESS, **kw: Any) -> dict[str, Any]:
    return finished_message("t-1", "ops", status, data, **kw)


def was(result: dict[str, Any]) -> dict[str, Any]:
    return {"status": result.get("status", "DOWN"), "checks": {"was": result}}


@pytest.mark.parametrize(
    ("message", "action", "expected"),
    [
        # FETCH_MES_QC: exactly the four columns, missing ones null, extra ones dropped, in the stored order.
        (finished({"date": "2026-09-18", "rows": [{"work_date": "2026-09-18", "prc_code": "P1", "err_msg": "e",
                   "reg_date": "2026-09-18T10:00:00", "qty": "1.50"}, {"prc_code": "P2"}]}), "FETCH_MES_QC",
         {"status": "SUCCESS", "date": "2026-09-18", "data": [
             {"work_date": "2026-09-18", "prc_code": "P1", "err_msg": "e", "reg_date": "2026-09-18T10:00:00"},
             {"work_date": None, "prc_code": "P2", "err_msg": None, "reg_date": None}]}),
        # CHECK_INTERNAL_WAS_STATUS: the WAS's JSON as it said it, else DOWN with the original words.
        (finished(was({"status": "OK", "data": {"body": {"status": "UP", "components": {"db": {"status": "UP"}}}}})),
         "CHECK_INTERNAL_WAS_STATUS", {"status": "SUCCESS", "data": {"status": "UP", "components": {"db": {"status": "UP"}}}}),
        (finished(was({"status": "DOWN", "data": {"body": {"status": "OUT_OF_SERVICE"}}}), Status.FAIL),
         "CHECK_INTERNAL_WAS_STATUS", {"status": "SUCCESS", "data": {"status": "OUT_OF_SERVICE"}}),
        (finished(was({"data": {"reason": "CONNECTION_REFUSED"}}), Status.FAIL), "CHECK_INTERNAL_WAS_STATUS",
         {"status": "SUCCESS", "data": {"status": "DOWN", "error": "연결 거부"}}),
        (finished(was({"data": {"reason": "TIMEOUT"}}), Status.FAIL), "CHECK_INTERNAL_WAS_STATUS",
         {"status": "SUCCESS", "data": {"status": "DOWN", "error": "타임아웃"}}),
        (finished(was({"message": "HTTP 503", "data": {"http_status": 503}}), Status.FAIL),
         "CHECK_INTERNAL_WAS_STATUS", {"status": "SUCCESS", "data": {"status": "DOWN", "error": "HTTP 503"}}),
        # CHECK_DISK_SPACE: the fullest disk on top, every disk listed.
        (finished({"checks": {"c": {"status": "OK", "data": {"path": "/", "used_percent": 50.0, "free_bytes": 5,
                                                             "total_bytes": 10}},
                              "d": {"status": "WARN", "data": {"path": "/d", "used_percent": 85.0, "free_bytes": 3,
                                                               "total_bytes": 20}}}}), "CHECK_DISK_SPACE",
         {"status": "SUCCESS", "data": {"path": "/d", "total": 20, "used": 17, "free": 3, "percent": 85.0, "disks": [
             {"name": "c", "path": "/", "total": 10, "used": 5, "free": 5, "percent": 50.0, "status": "OK"},
             {"name": "d", "path": "/d", "total": 20, "used": 17, "free": 3, "percent": 85.0, "status": "WARN"}]}}),
        # Refusals: data.error; an unknown action is named as sent (control characters shown as ?).
        (finished({}, Status.FAIL, error=(ErrorCode.ACTION_NOT_ALLOWED, "action not allowed")), "drop\ntable",
         {"status": "FAIL", "data": {"error": "허용되지 않은 action: drop?table"}, "code": "ACTION_NOT_ALLOWED"}),
        (finished({}, Status.FAIL, error=(ErrorCode.UNSIGNED, "unsigned")), None,
         {"status": "FAIL", "data": {"error": "unsigned"}, "code": "UNSIGNED"}),
        # Other actions keep their protocol-1 data.
        (finished({"runbooks": []}), "LIST_RUNBOOKS", {"status": "SUCCESS", "data": {"runbooks": []}}),
    ],
)  # fmt: skip
def test_each_answer_in_the_original_shape(
    message: dict[str, Any], action: str | None, expected: Any
) -> None:
    frame = protocol_v0.adapt(message, action, address=TO_T1)
    assert frame is not None and set(frame) == V0
    assert (frame["event"], frame["room_id"], frame["task_id"]) == ("TASK_FINISHED", "ops", "t-1")
    assert frame["payload"] == expected
    assert json.loads(protocol_v0.wire(json.dumps(frame))) == {
        k: v for k, v in frame.items() if k != "msg_id"
    }


def test_v0_has_no_hello_accepted_pending_and_reports_only_when_configured() -> None:
    for message in (hello_message("a", "1", None, []), accepted_message(COMMAND),
                    pending_message(COMMAND, {"code": "ABCDEF"}), report_message("ops", {"status": "OK"})):  # fmt: skip
        assert protocol_v0.adapt(message, None) is None
    report = report_message("ops", {"kind": "check", "status": "WARN", "message": "m", "text": "t"})
    frame = protocol_v0.adapt(report, None, reports=True)
    assert frame is not None and frame["task_id"] == f"report-{report['msg_id']}"
    assert frame["payload"] == {"status": "SUCCESS", "data": {"kind": "check", "status": "WARN", "message": "m"},
                                "text": "t"}  # fmt: skip
    # An answer the agent cannot trace to a command's ids (a frame that was no JSON object) is not sent.
    assert (
        protocol_v0.adapt(finished_message(None, "ops", Status.FAIL, error=(ErrorCode.MALFORMED, "x")), None)
        is None
    )


@given(
    payload=st.dictionaries(st.text(max_size=8), st.recursive(st.none() | st.text() | st.integers(),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                            max_leaves=10), max_size=5),
    action=st.none() | st.text(max_size=300),
)  # fmt: skip
def test_any_finished_payload_gives_one_well_formed_v0_frame(
    payload: dict[str, Any], action: str | None
) -> None:
    message = {
        "event": "TASK_FINISHED",
        "room_id": "ops",
        "task_id": "t-1",
        "msg_id": "m",
        "payload": payload,
    }
    frame = protocol_v0.adapt(message, action, address=TO_T1)
    assert frame is not None and set(frame) == V0
    assert frame["payload"]["status"] in ("SUCCESS", "FAIL") and "data" in frame["payload"]


@given(st.text(max_size=500))
def test_an_echoed_action_is_short_and_has_no_control_characters(action: str) -> None:
    shown = protocol_v0.echo_action(action)
    assert len(shown) <= protocol_v0.MAX_ECHO + 1 and not re.search(
        r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", shown
    )


@given(st.one_of(st.text(max_size=140), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,130}", fullmatch=True)))
def test_a_task_id_is_accepted_exactly_when_it_matches_its_whole_pattern(task_id: str) -> None:
    frame = json.dumps({"action": "LIST_RUNBOOKS", "task_id": task_id, "room_id": "ops"})
    valid = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}", task_id) is not None
    try:
        command = parse_frame(frame)
    except InvalidPacket as exc:
        assert not valid and exc.code is ErrorCode.MALFORMED and exc.task_id is None
        assert exc.room_id == "ops"  # v1 answers it with "task_id": null in that room
    else:
        assert valid and command.task_id == task_id


@pytest.mark.parametrize("room", ["ops\n", "o\x00ps", "r" * 129, ""])
def test_a_room_id_with_control_characters_or_too_long_is_refused(room: str) -> None:
    with pytest.raises(InvalidPacket) as refused:
        parse_frame(json.dumps({"action": "LIST_RUNBOOKS", "task_id": "t-1", "room_id": room}))
    assert refused.value.code is ErrorCode.MALFORMED and refused.value.room_id is None


def test_in_v0_a_four_eyes_request_is_refused_not_held() -> None:
    ledger = MemoryLedger()
    core = driven(ledger, changes_state=lambda _: True, holds_approvals=False)
    request = parse_frame(json.dumps({"action": "RUN_RUNBOOK", "task_id": "r-1", "room_id": "ops"}))
    assert not isinstance(request, InvalidPacket)
    ledger.begin_task("r-1", "ops")
    effects = core.handle(TaskEnded(request, Hold({"runbook": "service_restart"}), NOW))
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].task_id == "r-1" and sends[0].action == "RUN_RUNBOOK"
    assert sends[0].message["payload"]["error"]["code"] == "NOT_AVAILABLE"
    assert "four-eyes" in sends[0].message["payload"]["error"]["message"]
    assert ledger.kept == {}


def test_health_body_keeps_status_and_details_but_no_address_keys() -> None:
    body = {"status": "UP", "components": {"db": {"status": "UP", "details": {
        "database": "PostgreSQL", "url": "jdbc:postgresql://x/y", "Host": "db01", "jdbc_url": "j"}}}}  # fmt: skip
    assert health_body(body) == {"status": "UP", "components": {"db": {"status": "UP",
                                                                      "details": {"database": "PostgreSQL"}}}}  # fmt: skip
    deep: dict[str, Any] = {}
    for _ in range(50):
        deep = {"a": deep}
    assert json.dumps(health_body(deep)).count("{") <= 7
    assert HttpCheck(kind="http", url="http://x/").timeout == 3.0  # "no answer in time": 3 s by default


def _doc_block(name: str) -> str:
    match = re.search(rf"<!-- {name} -->\s*(?:```json\n)?(.*?)(?:```\s*)?<!-- /{name} -->", DOC, re.S)
    assert match, name
    return match.group(1).strip().strip("`")


def test_the_documented_control_character_vector_verifies_against_command_auth() -> None:
    packet = json.loads(_doc_block("test-vector-control-packet"))
    assert "\n" in packet["params"]["args"]["value"] and "\x01" in packet["params"]["args"]["value"]
    expected_canonical = _doc_block("test-vector-control-canonical")
    assert canonical(packet).decode() == expected_canonical
    assert (
        "\\n" in expected_canonical
        and "\\u0001" in expected_canonical
        and "\\u000a" not in expected_canonical
    )
    sig = signature("guardia-test-vector-key", packet, 1767225600, "n0nce-for-the-test-vector")
    assert sig == _doc_block("test-vector-control-sig")
    # The other escape form gives another HMAC: a relay that writes \u000a is refused as BAD_SIGNATURE.
    other = expected_canonical.replace("\\n", "\\u000a").encode()
    import hashlib
    import hmac

    text = b"guardia-command/1\n1767225600\nn0nce-for-the-test-vector\n" + other
    assert hmac.new(b"guardia-test-vector-key", text, hashlib.sha256).hexdigest() != sig


# -- v0 ids are data, not keys (issue 25: the original answered every command with the ids it carried) ---------


class V0Agent:
    """The session as the runtime drives it in v0: each frame through the wire, the core, a handler answering
    SUCCESS with ``{"n": k}`` (k-th run), each answer through the wire as the relay would receive it."""

    def __init__(self, **core: Any) -> None:
        self.wire = OriginalProtocol()
        self.ledger = MemoryLedger()
        self.core = driven(self.ledger, changes_state=lambda _: False, holds_approvals=False, **core)
        self.runs: list[Command] = []

    def send(self, frame: str | bytes, now: float = NOW) -> list[dict[str, Any]]:
        inbound = self.wire.inbound(frame, now)
        answers: list[dict[str, Any]] = []
        effects = list(self.core.handle(FrameReceived(inbound.frame, now, inbound.signed)))
        while effects:
            effect = effects.pop(0)
            if isinstance(effect, StartRun):
                self.runs.append(effect.command)
                answer = Answer(Status.SUCCESS, {"n": len(self.runs)})
                effects += self.core.handle(TaskEnded(effect.command, answer, now))
            elif isinstance(effect, Send):
                shaped = (
                    effect.message
                    if effect.stored
                    else self.wire.outgoing(effect.message, effect.action, lambda v: v)
                )
                if shaped is not None:
                    if effect.task_id is not None and not effect.stored:
                        self.ledger.finish(effect.task_id, shaped)
                    answers.append(json.loads(protocol_v0.wire(json.dumps(shaped))))
        return answers


JSON_IDS = (
    st.none() | st.integers() | st.text(max_size=40) | st.booleans() | st.lists(st.integers(), max_size=2)
)


@given(task_id=JSON_IDS, room_id=JSON_IDS, binary=st.booleans(), present=st.booleans())
def test_every_command_is_answered_once_with_its_ids_as_they_came(
    task_id: Any, room_id: Any, binary: bool, present: bool
) -> None:
    agent = V0Agent()
    packet = {
        "action": "LIST_RUNBOOKS",
        "params": {},
        **({"task_id": task_id, "room_id": room_id} if present else {}),
    }
    text = json.dumps(packet, ensure_ascii=False)
    answers = agent.send(text.encode() if binary else text)
    assert len(answers) == 1 and set(answers[0]) == {"event", "task_id", "room_id", "payload"}
    echoed, sent = (
        (answers[0]["task_id"], answers[0]["room_id"]),
        (task_id, room_id) if present else (None, None),
    )
    assert echoed == sent and [type(v) for v in echoed] == [type(v) for v in sent]  # 1 is not "1", nor True
    assert answers[0]["payload"]["status"] == "SUCCESS" and len(agent.runs) == 1


def test_a_reused_task_id_runs_the_new_command_and_two_at_once_both_answer() -> None:
    agent = V0Agent()
    first = agent.send(json.dumps({"action": "FETCH_MES_QC", "task_id": "t/1", "room_id": 7}))
    second = agent.send(json.dumps({"action": "CHECK_DISK_SPACE", "task_id": "t/1", "room_id": 7}))
    assert [a["task_id"] for a in first + second] == ["t/1", "t/1"] and len(agent.runs) == 2
    assert [c.action.value for c in agent.runs] == ["FETCH_MES_QC", "CHECK_DISK_SPACE"]
    assert "duplicate" not in second[0]["payload"]


def test_a_verbatim_resend_within_the_window_is_the_same_command_after_it_a_new_one() -> None:
    agent = V0Agent()
    frame = json.dumps({"action": "LIST_RUNBOOKS", "task_id": 12, "room_id": "ops"})
    first = agent.send(frame)
    again = agent.send(frame, NOW + protocol_v0.RESEND_WINDOW - 1)
    assert len(agent.runs) == 1 and again[0]["payload"]["duplicate"] is True
    assert {k: v for k, v in again[0].items() if k != "payload"} == {
        k: v for k, v in first[0].items() if k != "payload"
    }
    later = agent.send(frame, NOW + protocol_v0.RESEND_WINDOW + 1)
    assert len(agent.runs) == 2 and "duplicate" not in later[0]["payload"] and later[0]["task_id"] == 12


def test_a_signed_v0_command_verifies_over_the_packet_the_relay_signed() -> None:
    key = "v0-command-key"
    packet = {"action": "LIST_RUNBOOKS", "task_id": 5, "room_id": None, "params": {}}
    nonce = "n" * 24
    signed = {
        **packet,
        "auth": {"ts": int(NOW), "nonce": nonce, "sig": signature(key, packet, int(NOW), nonce)},
    }
    agent = V0Agent(command_key=key)
    answers = agent.send(json.dumps(signed))
    assert answers[0]["payload"]["status"] == "SUCCESS" and answers[0]["task_id"] == 5
    tampered = {**signed, "task_id": 6, "auth": {**signed["auth"], "nonce": "m" * 24}}
    refused = agent.send(json.dumps(tampered))
    assert refused[0]["payload"]["code"] == "BAD_SIGNATURE" and refused[0]["task_id"] == 6
    assert len(agent.runs) == 1


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        ({"task_id": "a", "room_id": "r"}, "허용되지 않은 action: None"),
        ({"action": 42, "task_id": "a", "room_id": "r"}, "허용되지 않은 action: 42"),
        ({"action": "fetch_mes_qc", "task_id": "a", "room_id": "r"}, "허용되지 않은 action: fetch_mes_qc"),
    ],
)
def test_a_refused_action_is_named_as_the_original_named_it(packet: dict[str, Any], error: str) -> None:
    answers = V0Agent().send(json.dumps(packet))
    assert answers[0]["payload"]["data"] == {"error": error} and answers[0]["task_id"] == "a"


def test_params_the_original_ignored_are_ignored_and_frames_that_are_no_object_get_nothing() -> None:
    agent = V0Agent()
    assert agent.send(json.dumps({"action": "CHECK_DISK_SPACE", "params": "x", "task_id": 1, "room_id": 2}))[0][
        "payload"]["status"] == "SUCCESS"  # fmt: skip
    assert agent.send(json.dumps({"action": "FETCH_MES_QC", "params": "x", "task_id": 1, "room_id": 2}))[0][
        "payload"]["code"] == "MALFORMED"  # fmt: skip
    for frame in ("not json", "[1, 2]", b"\xff\xfe", "null"):
        assert agent.send(frame) == []


def test_after_a_restart_a_kept_task_is_answered_to_the_relay_ids() -> None:
    before = V0Agent()
    inbound = before.wire.inbound(json.dumps({"action": "LIST_RUNBOOKS", "task_id": 99, "room_id": [1]}), NOW)
    effects = before.core.handle(FrameReceived(inbound.frame, NOW))
    begun = next(e for e in effects if isinstance(e, BeginTask))
    after = OriginalProtocol()
    after.resume([(begun.task_id, begun.command)])
    message = finished_message(begun.task_id, "x", Status.SUCCESS, {"runbooks": []})
    frame = after.outgoing({**message, "msg_id": "m"}, "LIST_RUNBOOKS", lambda v: v)
    assert frame is not None and (frame["task_id"], frame["room_id"]) == (99, [1])
