"""Identifiers from the relay are data, never paths: validated whole at parse time, and never a file name."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.runs.outputs import OutputNotFound, OutputStore, key_of
from agent.runs.results import HostResult, Outcome, RunResult
from agent.session.protocol import (
    APPROVAL_CODE,
    HOST_ALIAS,
    MSG_ID,
    NONCE,
    ROOM_ID,
    TASK_ID,
    USER_ID,
    Ack,
    Command,
    InvalidPacket,
    parse_frame,
)
from agent.state.audit import verify_chain
from tests.conftest import Operator, RunningApp

Setter = Callable[[str], dict[str, Any]]


def command(action: str = "RUN_RUNBOOK", **fields: Any) -> dict[str, Any]:
    return {"action": action, "task_id": "t-1", "room_id": "ops", "user_id": "kim", "params": {}, **fields}


#: Every place a relay puts an identifier: field name (as InvalidPacket names it) → (pattern, packet with the value).
PLACES: dict[str, tuple[re.Pattern[str], Setter]] = {
    "task_id": (TASK_ID, lambda v: command(task_id=v)),
    "room_id": (ROOM_ID, lambda v: command(room_id=v)),
    "user_id": (USER_ID, lambda v: command(user_id=v)),
    "msg_id": (MSG_ID, lambda v: {"event": "ACK", "msg_id": v}),
    "auth.nonce": (NONCE, lambda v: command(auth={"ts": 1, "nonce": v, "sig": "0" * 64})),
    "params.code": (APPROVAL_CODE, lambda v: command("APPROVE", params={"code": v})),
    "params.task_id": (TASK_ID, lambda v: command("GET_OUTPUT", params={"task_id": v, "host": "h1"})),
    "params.host": (HOST_ALIAS, lambda v: command("GET_OUTPUT", params={"task_id": "t-0", "host": v})),
}
HOSTILE = ["/tmp/x", "../../x", "../audit.jsonl", "a" * 300, "C:\\x", "x:y", "t\n", "t-1\x00", "", " ", "..",
           "\u202eevil", "x\u2028y", "ＡＢＣＤＥＦ", "abc/def", "NUL", "a" * 129]  # fmt: skip


def check_place(place: str, value: str) -> None:
    pattern, make = PLACES[place]
    try:
        packet = parse_frame(json.dumps(make(value)))
    except InvalidPacket as exc:
        assert exc.field == place and place.rsplit(".", 1)[-1] in exc.message, (place, value, exc.message)
        assert pattern.fullmatch(value) is None or len(value) > 128
        if place in ("task_id", "room_id"):  # an unreadable id is never used to address the answer
            assert getattr(exc, place) is None
        return
    assert isinstance(packet, Command | Ack)
    assert pattern.fullmatch(value), (place, value)  # accepted only as a whole match
    if place in ("task_id", "room_id", "user_id", "msg_id"):
        assert getattr(packet, place) == value
    elif place.startswith("params."):
        assert isinstance(packet, Command) and packet.params[place.removeprefix("params.")] == value


@given(st.sampled_from(sorted(PLACES)), st.text(max_size=300))
def test_any_string_as_any_identifier_is_parsed_whole_or_refused_naming_the_field(
    place: str, value: str
) -> None:
    check_place(place, value)


@pytest.mark.parametrize("place", sorted(PLACES))
def test_path_like_long_and_control_identifiers_are_refused(place: str) -> None:
    for value in HOSTILE:
        check_place(place, value)  # a room or user name may contain a slash: then it parses, as data only
    # Room and user names are free text for chat systems (any script, spaces, slashes) and only ever data; the rest
    # are narrow ASCII ids. Control characters, emptiness and length are refused everywhere.
    path_like = [] if place in ("room_id", "user_id") else ["../../x", "/tmp/x", "C:\\x", "."]
    for value in [*path_like, "a" * 129, "t\n", "t-1\x00", "x\u2028y", ""]:
        with pytest.raises(InvalidPacket):
            parse_frame(json.dumps(PLACES[place][1](value)))


def test_the_issues_examples_are_refused_before_anything_runs() -> None:
    for task_id in ["/tmp/x", "../../x", "../audit.jsonl", "a" * 300]:
        with pytest.raises(InvalidPacket) as caught:
            parse_frame(json.dumps(command(task_id=task_id)))
        assert caught.value.field == "task_id" and caught.value.task_id is None


# -- the output store: any id is a safe key ---------------------------------------------------------------------


def run_of(host: str, text: str) -> RunResult:
    return RunResult("r", "0" * 64, [HostResult(host, Outcome.SUCCESS, 0, stdout_full=text, stderr_full="e")])


def snapshot(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in [*dirs, *files]
    }


@settings(
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=min(150, settings.default.max_examples),
    deadline=None,
)
@given(st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=200)), min_size=2, max_size=2))
def test_outputs_saved_and_paged_with_hostile_ids_stay_inside_the_state_folder(ids: list[str]) -> None:
    task_id, host = ids
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        (root / "outside").mkdir()
        (root / "outside" / "audit.jsonl").write_text("keep\n", encoding="utf-8", newline="\n")
        before = snapshot(root / "outside")
        store = OutputStore(root / "state" / "outputs", retention_days=1)
        old = Path.cwd()
        os.chdir(root / "outside")  # a relative name would land here
        try:
            store.save(task_id, run_of(host, "line 1\nline 2"))
            assert store.page(task_id, host, "stdout", 0) == ("line 1\nline 2", 0, 1)
            with pytest.raises(OutputNotFound):
                store.page(task_id + "x", host, "stdout", 0)
        finally:
            os.chdir(old)
        assert (
            snapshot(root / "outside") == before
            and (root / "outside" / "audit.jsonl").read_text(encoding="utf-8") == "keep\n"
        )
        assert {p.split(os.sep)[0] for p in snapshot(root)} == {"outside", "state"}
        for name in snapshot(root / "state"):  # every name on disk is ours: digests, fixed suffixes
            assert re.fullmatch(r"outputs(/[0-9a-f]{64}(/([0-9a-f]{32}\.(stdout|stderr)|meta\.json))?)?",
                                name.replace(os.sep, "/")), name  # fmt: skip
        assert (root / "state" / "outputs" / key_of(task_id)).is_dir()


# -- end to end: through the relay, against the running agent ------------------------------------------------------


async def test_hostile_ids_through_the_relay_are_refused_naming_the_field_and_touch_nothing(
    running_agent: RunningApp, operator: Operator, agent_home: Path
) -> None:
    state = running_agent.app.config.path(running_agent.app.config.state.dir)

    def outside() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in agent_home.rglob("*") if state not in [p, *p.parents]}

    before = outside()
    run = {"runbook": "echo_args", "hosts": ["h1"], "args": {"value": "x"}}
    for n, task_id in enumerate(["/tmp/x", "../../x", "../audit.jsonl", "a" * 300], start=1):
        await operator.send({"action": "RUN_RUNBOOK", "task_id": task_id, "room_id": "ops", "params": run})
        refused = await until_nulls(operator, n)
        answer = refused[-1]["payload"]
        assert answer["status"] == "FAIL" and answer["error"] == {
            "code": "MALFORMED",
            "message": "invalid or missing: task_id",
            "i18n": {"id": "invalid or missing: {fields}", "args": {"fields": "task_id"}},
        }
        assert answer["text"] == "❌ 잘못되었거나 빠진 항목: task_id (MALFORMED)"
    await operator.send({"action": "GET_OUTPUT", "task_id": "g-1", "room_id": "ops",
                         "params": {"task_id": "../audit.jsonl", "host": "h1"}})  # fmt: skip
    error = (await operator.finished("g-1"))["payload"]["error"]
    assert error["code"] == "INVALID_ARGUMENTS" and "params.task_id" in error["message"]
    await operator.command("RUN_RUNBOOK", "C:run@1", **run)  # valid, and not a name Windows would take
    assert (await operator.finished("C:run@1"))["payload"]["status"] == "SUCCESS"
    assert (state / "outputs" / key_of("C:run@1")).is_dir()
    assert not [e for e in operator.events if e.get("event") == "TASK_ACCEPTED" and e.get("task_id") is None]
    assert outside() == before and verify_chain(state / "audit.jsonl").ok


async def until_nulls(operator: Operator, n: int) -> list[dict[str, Any]]:
    """The TASK_FINISHED answers addressed to no task (a refused task_id), once there are ``n``."""

    def nulls() -> list[dict[str, Any]]:
        return [e for e in operator.events if e.get("event") == "TASK_FINISHED" and e.get("task_id") is None]

    await operator.wait_for(lambda _: len(nulls()) >= n)
    return nulls()
