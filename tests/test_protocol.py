"""parse_frame: a Command, an Ack, or InvalidPacket — on any input whatsoever."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent.session.protocol import (
    Ack,
    Action,
    Command,
    ErrorCode,
    InvalidPacket,
    encode,
    finished_message,
    parse_frame,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(st.sampled_from([a.value for a in Action]), st.text(max_size=12), JSON),
        "task_id": st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True), JSON),
        "room_id": st.one_of(st.text(min_size=1, max_size=10), JSON),
        "params": JSON,
        "user_id": JSON,
        "event": st.one_of(st.just("ACK"), JSON),
        "msg_id": JSON,
    },
)


def check(frame: str | bytes) -> None:
    try:
        packet = parse_frame(frame)
    except InvalidPacket as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
        if exc.task_id is not None:
            exc.task_id.encode()  # an answer can always be addressed and stored
        return
    assert isinstance(packet, Command | Ack)


@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_text_or_bytes(frame: str | bytes) -> None:
    check(frame)


@given(JSON)
def test_arbitrary_json(value: object) -> None:
    check(json.dumps(value))


@given(FIELDS)
def test_packets_with_wrong_types_in_every_field(fields: dict[str, object]) -> None:
    check(json.dumps(fields))


def test_huge_and_deep_values_are_malformed_not_crashes() -> None:
    for frame in ["9" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a": ' * 10_000, '{"x": NaN}', '"\\ud800"']:
        check(frame)


def test_valid_command_and_ack() -> None:
    command = parse_frame(
        '{"action":"RUN_RUNBOOK","task_id":"t-1","room_id":"ops","params":{"runbook":"x"},"extra":1}'
    )
    assert isinstance(command, Command) and command.params == {"runbook": "x"} and command.user_id is None
    assert parse_frame('{"event":"ACK","msg_id":"abc"}') == Ack(event="ACK", msg_id="abc")  # type: ignore[arg-type]


def test_refusals_keep_what_addresses_the_answer() -> None:
    try:
        parse_frame('{"action":"DROP_TABLE","task_id":"t-9","room_id":"ops"}')
    except InvalidPacket as exc:
        assert (exc.code, exc.message, exc.task_id, exc.room_id) == (
            ErrorCode.ACTION_NOT_ALLOWED,
            "action not allowed",
            "t-9",
            "ops",
        )
    answer = json.loads(
        encode(
            finished_message(
                "t-9",
                "ops",
                status=__import__("agent.session.protocol").session.protocol.Status.FAIL,
                error=(ErrorCode.ACTION_NOT_ALLOWED, "action not allowed"),
            )
        )
    )
    assert answer["event"] == "TASK_FINISHED" and answer["payload"]["status"] == "FAIL"
    assert answer["payload"]["error"] == {"code": "ACTION_NOT_ALLOWED", "message": "action not allowed"}
