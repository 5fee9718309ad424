"""Issue 27: a ``task_id`` of another room is answered exactly as a fresh one (no existence oracle across rooms).

It was answered ``MALFORMED`` where a fresh one runs. Now it runs under a task key of its own room's
(:mod:`agent.session.scoping`), and every message about it names the id as sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.catalog.store import Catalog
from agent.reference.relay import Relay
from agent.session.core import Audit, BeginTask, FrameReceived, Send, StartRun, TaskEnded
from agent.session.ledger import TaskRecord, TaskState
from agent.session.protocol import ROOM_ID, TASK_ID, Command, Status, finished_message
from agent.session.scoping import RoomScopes, scoped_key
from tests.conftest import Operator, RunningApp, agent_environ
from tests.test_core import NOW, make_core, sent

ids = st.from_regex(TASK_ID, fullmatch=True)
rooms = st.from_regex(ROOM_ID, fullmatch=True)


def frame(task: str, room: str, action: str = "LIST_RUNBOOKS", **params: Any) -> str:
    return json.dumps(
        {"action": action, "task_id": task, "room_id": room, "user_id": "kim", "params": params}
    )


def encoded(value: str) -> str:
    """How echo_args prints an argument."""
    return base64.b64encode(value.encode()).decode()


def shape(effects: list[Any]) -> list[tuple[str, Any]]:
    """What a room could observe of the effects, ids left out: their kinds, in order, and what each carries."""
    out: list[tuple[str, Any]] = []
    for effect in effects:
        if isinstance(effect, StartRun):
            out.append(("run", (effect.command.action, effect.command.room_id, effect.command.params)))
        elif isinstance(effect, Send):
            out.append(("send", {k: v for k, v in effect.message.items() if k not in ("task_id", "msg_id")}))
        else:
            out.append((type(effect).__name__, None))
    return out


def test_another_room_s_task_id_takes_the_path_of_a_fresh_one() -> None:
    core, ledger = make_core()
    core.handle(FrameReceived(frame("t-1", "ops"), NOW))
    reused = core.handle(FrameReceived(frame("t-1", "lobby"), NOW))
    fresh = core.handle(FrameReceived(frame("t-2", "lobby"), NOW))
    assert shape(reused) == shape(fresh) and [type(e) for e in fresh] == [Audit, BeginTask, StartRun]
    (run,) = [e for e in reused if isinstance(e, StartRun)]
    key = run.command.task_id
    assert key == scoped_key("t-1", "lobby") and ledger.tasks[key].room_id == "lobby"
    assert ledger.tasks["t-1"].room_id == "ops" and ledger.tasks["t-1"].state is TaskState.QUEUED  # untouched
    # Its answer names the id as sent; a repeat in lobby is lobby's own duplicate, never ops's task.
    final = core.handle(TaskEnded(run.command, _success(), NOW))
    (answer,) = [e for e in final if isinstance(e, Send)]
    assert answer.task_id == key and core.scopes.reply(answer.message)["task_id"] == "t-1"
    for effect in final:
        if isinstance(effect, Send):
            ledger.finish(effect.task_id or "", effect.message)
    again = core.handle(FrameReceived(frame("t-1", "lobby"), NOW))
    (resent,) = sent(again)
    assert resent["payload"]["duplicate"] is True and core.scopes.reply(resent)["task_id"] == "t-1"
    assert ledger.tasks["t-1"].state is TaskState.QUEUED  # ops's task: never answered to lobby


def _success() -> Any:
    from agent.session.core import Answer

    return Answer(Status.SUCCESS, {"runbooks": []})


def test_params_task_id_reaches_the_room_s_own_task_and_never_another_s() -> None:
    scopes = RoomScopes()
    tasks = {
        "t-1": TaskRecord("t-1", TaskState.FINISHED, "ops", None),
        scoped_key("t-1", "lobby"): TaskRecord(scoped_key("t-1", "lobby"), TaskState.FINISHED, "lobby", None),
    }

    def ask(room: str, about: str) -> Command:
        command = Command.model_validate({"action": "GET_OUTPUT", "task_id": "g-1", "room_id": room,
                                          "params": {"task_id": about, "host": "h1"}})  # fmt: skip
        return scopes.inbound(command, tasks.get)

    assert ask("lobby", "t-1").params["task_id"] == scoped_key("t-1", "lobby")
    assert ask("ops", "t-1").params["task_id"] == "t-1"
    assert ask("other", "t-1").params["task_id"] == "t-1"  # ops's record: answered as unknown by GET_OUTPUT


@given(ids, rooms, rooms)
def test_a_scoped_key_is_a_task_id_and_every_answer_names_the_id_as_sent(
    task_id: str, room: str, other: str
) -> None:
    key = scoped_key(task_id, room)
    assert TASK_ID.fullmatch(key) and (key != scoped_key(task_id, other)) == (room != other)
    scopes = RoomScopes()
    tasks = {task_id: TaskRecord(task_id, TaskState.FINISHED, f"{room}-x", None)}
    command = Command.model_validate({"action": "HELP", "task_id": task_id, "room_id": room})
    scoped = scopes.inbound(command, tasks.get)
    assert scoped.task_id == key and scoped.raw["reply_to"] == {"task_id": task_id, "room_id": room}
    message = finished_message(key, room, Status.SUCCESS, {"output_ref": key, "text": f"run {key} ended"})
    back = scopes.reply(message)
    assert back["task_id"] == task_id and back["payload"]["data"] == {"output_ref": task_id,
                                                                      "text": f"run {task_id} ended"}  # fmt: skip
    restarted = RoomScopes()  # a task kept over a restart: remembered from its packet
    restarted.remember(scoped)
    assert restarted.reply(message) == back


async def test_through_the_real_agent_a_reused_id_is_answered_as_a_fresh_one(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)

        async def answer(task_id: str, room: str) -> dict[str, Any]:
            await operator.send(json.loads(frame(task_id, room, "HELP")))
            return await operator.wait_for(
                lambda e: (
                    e.get("event") == "TASK_FINISHED"
                    and e.get("task_id") == task_id
                    and e.get("room_id") == room
                )
            )

        await answer("x-1", "ops")
        reused, fresh = await answer("x-1", "lobby"), await answer("x-2", "lobby")

        def seen(final: dict[str, Any]) -> dict[str, Any]:
            payload = {k: v for k, v in final["payload"].items() if k != "audit_head"}
            return {k: v for k, v in final.items() if k not in ("task_id", "msg_id")} | {"payload": payload}

        assert seen(reused) == seen(fresh) and reused["payload"]["status"] == "SUCCESS"
        # Sent again, each is its own room's duplicate, in the same words.
        before = len(operator.of("x-1", "TASK_FINISHED"))
        await operator.send(json.loads(frame("x-1", "lobby", "HELP")))
        await operator.wait_for(lambda e: len(operator.of("x-1", "TASK_FINISHED")) > before)
        again = operator.of("x-1", "TASK_FINISHED")[-1]
        assert again["room_id"] == "lobby" and again["payload"].get("duplicate") is True
    finally:
        await app.stop()


async def test_a_reused_run_id_keeps_each_room_s_output_apart(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    """Run under its own key, the second room's run neither reads nor overwrites the first room's kept output."""
    manifest = agent_home / "runbooks" / "echo_args.toml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('rooms = ["ops"]', 'rooms = ["ops", "lobby"]'),
                        encoding="utf-8", newline="\n")  # fmt: skip
    Catalog(agent_home / "runbooks", agent_home / "runbooks.lock").relock()
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)

        async def finished(task: str, room: str, action: str, **params: Any) -> dict[str, Any]:
            await operator.send(json.loads(frame(task, room, action, **params)))
            return await operator.wait_for(
                lambda e: (
                    e.get("event") == "TASK_FINISHED"
                    and e.get("task_id") == task
                    and e.get("room_id") == room
                )
            )

        for room, value in (("ops", "from-ops"), ("lobby", "from-lobby")):
            run = await finished(
                "r-1", room, "RUN_RUNBOOK", runbook="echo_args", hosts=["h1"], args={"value": value}
            )
            assert (
                run["payload"]["status"] == "SUCCESS"
                and run["payload"]["data"].get("output_ref", "r-1") == "r-1"
            )
        for room, value, other in (("ops", "from-ops", "from-lobby"), ("lobby", "from-lobby", "from-ops")):
            page = await finished(f"g-{room}", room, "GET_OUTPUT", task_id="r-1", host="h1")
            text = json.dumps(page["payload"]["data"])
            assert (
                page["payload"]["status"] == "SUCCESS"
                and encoded(value) in text
                and encoded(other) not in text
            )
    finally:
        await app.stop()


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,95}", fullmatch=True), rooms, rooms)
def test_after_a_restart_a_room_s_own_keys_are_still_answered_under_their_ids(
    task_id: str, room: str, other: str
) -> None:
    """A history row of a run made before the restart names its key; a new process recognises it, for its room only."""
    key = scoped_key(task_id, room)
    row = {"event": "TASK_FINISHED", "room_id": room, "payload": {"data": {"history": [{"task_id": key}]}}}
    assert RoomScopes().reply(row)["payload"]["data"]["history"] == [{"task_id": task_id}]
    if other != room:
        elsewhere = {**row, "room_id": other}
        assert RoomScopes().reply(elsewhere) == elsewhere
