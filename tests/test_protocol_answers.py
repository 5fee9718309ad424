"""What docs/protocol.md tells a relay writer, pinned against a running agent and scripted relays (real WebSockets).

Each test names the question of issue 13 it answers: HELLO needs no ACK; commands may come as soon as the
connection opens; HTTP 503 and a 1011 close are retried; a refusal close code (second connection) is logged at
ERROR and retried at the longest backoff; the LIST_RUNBOOKS and APPROVE data schemas are as documented; date words;
a signed command is re-signed for every resend.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from agent.config.schema import load_config
from agent.session.command_auth import sign
from agent.session.core import Send
from agent.session.protocol import parse_frame
from agent.shell.app import App
from agent.shell.link import refused_by_policy
from tests.conftest import Operator, RunningApp
from tests.test_core import NOW, MemoryLedger, driven

pytestmark = pytest.mark.external_service
DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")


class ScriptedRelay:
    """A protocol-1 relay whose behaviour per connection is a coroutine; records every frame and handshake."""

    def __init__(self, behaviour: Callable[[ScriptedRelay, ServerConnection, int], Awaitable[None]]) -> None:
        self.behaviour = behaviour
        self.frames: list[dict[str, Any]] = []
        self.connections = 0
        self.handshakes = 0
        self.answer_503 = 0
        self.changed = asyncio.Event()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        self.changed.set()
        if self.handshakes <= self.answer_503:
            return connection.respond(503, "busy\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.changed.set()
        await self.behaviour(self, ws, self.connections)

    async def read(self, ws: ServerConnection) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await ws.recv())
        self.frames.append(message)
        self.changed.set()
        return message

    async def wait(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def scripted(
    agent_home: Path,
) -> AsyncIterator[Callable[..., Awaitable[tuple[ScriptedRelay, RunningApp]]]]:
    started: list[RunningApp] = []
    servers: list[Any] = []

    async def start(behaviour: Any, answer_503: int = 0) -> tuple[ScriptedRelay, RunningApp]:
        relay = ScriptedRelay(behaviour)
        relay.answer_503 = answer_503
        server = await serve(relay.handler, "127.0.0.1", 0, process_request=relay.process_request)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        app = App(
            load_config(agent_home / "agent.toml"),
            environ={"EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent"},
        )
        running = RunningApp(app)
        started.append(running)
        return relay, running

    yield start
    for running in started:
        await running.stop()
    for server in servers:
        server.close()
        await server.wait_closed()


async def serve_forever(relay: ScriptedRelay, ws: ServerConnection, ack: bool = True) -> None:
    try:
        while True:
            message = await relay.read(ws)
            if ack and "msg_id" in message and message["event"] != "AGENT_HELLO":
                await ws.send(json.dumps({"event": "ACK", "msg_id": message["msg_id"]}))
    except Exception:
        return


async def test_hello_needs_no_ack_and_commands_may_come_before_it_is_read(scripted: Any) -> None:
    async def behaviour(relay: ScriptedRelay, ws: ServerConnection, n: int) -> None:
        # Send a command at once, before reading AGENT_HELLO; never ACK the HELLO.
        await ws.send(json.dumps({"action": "LIST_RUNBOOKS", "task_id": "early-1", "room_id": "ops"}))
        await serve_forever(relay, ws)

    relay, running = await scripted(behaviour)
    await relay.wait(
        lambda: any(f.get("task_id") == "early-1" and f["event"] == "TASK_FINISHED" for f in relay.frames)
    )
    assert relay.frames[0]["event"] == "AGENT_HELLO"
    assert await running.app.link.flush(30)  # HELLO is never kept waiting for an ACK


async def test_http_503_at_the_handshake_is_logged_and_retried(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="agent.shell.link")

    async def behaviour(relay: ScriptedRelay, ws: ServerConnection, n: int) -> None:
        await serve_forever(relay, ws)

    relay, _ = await scripted(behaviour, answer_503=2)
    await relay.wait(lambda: relay.connections == 1)
    assert relay.handshakes == 3
    errors = [r for r in caplog.records if "answered HTTP 503" in r.getMessage()]
    assert len(errors) == 2 and all(r.levelname == "ERROR" for r in errors)


async def test_a_1011_close_is_redialled_and_the_unacknowledged_answer_sent_again(scripted: Any) -> None:
    async def behaviour(relay: ScriptedRelay, ws: ServerConnection, n: int) -> None:
        if n == 1:
            await relay.read(ws)  # HELLO
            await ws.send(json.dumps({"action": "LIST_RUNBOOKS", "task_id": "c-1", "room_id": "ops"}))
            while (await relay.read(ws))["event"] != "TASK_FINISHED":
                pass
            await ws.close(1011, "relay failed")  # before any ACK
            return
        await serve_forever(relay, ws)

    relay, running = await scripted(behaviour)
    await relay.wait(lambda: relay.connections == 2)
    await relay.wait(lambda: len([f for f in relay.frames if f.get("task_id") == "c-1"
                                  and f["event"] == "TASK_FINISHED"]) == 2)  # fmt: skip
    first, again = [f for f in relay.frames if f.get("task_id") == "c-1" and f["event"] == "TASK_FINISHED"]
    assert first["msg_id"] == again["msg_id"]  # the same message: the relay dedupes by msg_id
    assert await running.app.link.flush(30)


async def test_a_refusal_close_code_is_logged_at_error_and_retried_slowly(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="agent.shell.link")

    async def behaviour(relay: ScriptedRelay, ws: ServerConnection, n: int) -> None:
        if n == 1:
            await ws.close(4409, "agent_id test-agent is already connected")
            return
        await serve_forever(relay, ws)

    relay, _ = await scripted(behaviour)
    await relay.wait(lambda: relay.connections == 2)
    errors = [r for r in caplog.records if "close code 4409" in r.getMessage()]
    assert (
        len(errors) == 1 and errors[0].levelname == "ERROR" and "already connected" in errors[0].getMessage()
    )
    assert re.search(
        r"reconnecting in 2\.0 s", caplog.text
    )  # relay.max_backoff of the test config: the longest
    assert [refused_by_policy(c) for c in (1000, 1001, 1008, 1011, 3999, 4000, 4409, 4999, 5000)] == [
        False, False, True, False, False, True, True, True, False]  # fmt: skip


def _doc_json(name: str) -> Any:
    match = re.search(rf"<!-- {name} -->\s*```json\n(.*?)```\s*<!-- /{name} -->", DOC, re.S)
    assert match, name
    return json.loads(match.group(1))


def _shape(value: Any) -> Any:
    """Keys and types, not values: what a schema promises."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


async def test_list_runbooks_approve_and_reject_data_are_as_documented(
    agent_home: Path, relay: Any, operator: Operator
) -> None:
    from tests.test_access import pending, send, start

    app = await start(agent_home, relay)
    try:
        await send(operator, "doc-1", "LIST_RUNBOOKS", "kim")
        listed = (await operator.finished("doc-1"))["payload"]["data"]
        echo = next(r for r in listed["runbooks"] if r["name"] == "echo_args")
        assert _shape({"runbooks": [echo]}) == _shape(_doc_json("schema-list-runbooks"))
        for task, verb, schema in (
            ("doc-2", "APPROVE", "schema-approve"),
            ("doc-4", "REJECT", "schema-reject"),
        ):
            await send(operator, task, "RUN_RUNBOOK", "kim", runbook="approved_change", hosts=["h1"],
                       args={"note": "x"})  # fmt: skip
            code = (await pending(operator, task))["payload"]["code"]
            await send(operator, task + "d", verb, "lee", code=code)
            decided = (await operator.finished(task + "d"))["payload"]["data"]
            documented = _doc_json(schema)  # args: the runbook's own parameters, whatever their names
            assert isinstance(decided["args"], dict) and decided["args"] == {"note": "x"}
            assert (
                _shape({**decided, "args": {}}) == _shape({**documented, "args": {}})
                and task in decided.values()
            )
            await operator.finished(task)
    finally:
        await app.stop()


async def test_fetch_mes_qc_dates_are_read_by_the_database_and_echoed_as_it_read_them(
    agent_home: Path, postgres: dict[str, str], operator: Operator, relay: Any
) -> None:
    import psycopg2

    from tests.conftest import agent_environ

    db = psycopg2.connect(host=postgres["DB_HOST"], port=int(postgres["DB_PORT"]), user=postgres["DB_USER"],
                          dbname=postgres["DB_NAME"])  # fmt: skip
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT current_date::text, (current_date + 1)::text")
            today, tomorrow = cursor.fetchone()
    finally:
        db.close()
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay, **postgres))
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
        await operator.command("FETCH_MES_QC", "d-1", date="today")
        await operator.command("FETCH_MES_QC", "d-2", date="2026/09/18")
        await operator.command("FETCH_MES_QC", "d-3")
        await operator.command("FETCH_MES_QC", "d-4", date="tomorrow")
        await operator.command("FETCH_MES_QC", "d-5", date="20260918")
        await operator.command("FETCH_MES_QC", "d-6", date="the day after")
        assert (await operator.finished("d-1"))["payload"]["data"][
            "date"
        ] == today  # the database's current_date
        assert (await operator.finished("d-2"))["payload"]["data"]["date"] == "2026-09-18"
        assert (await operator.finished("d-3"))["payload"]["data"]["date"] == today
        assert (await operator.finished("d-4"))["payload"]["data"]["date"] == tomorrow
        compact = (await operator.finished("d-5"))["payload"]["data"]
        assert (compact["date"], compact["row_count"], compact["total"]) == ("2026-09-18", 10, 15)
        refused = (await operator.finished("d-6"))["payload"]
        assert refused["error"]["code"] == "INVALID_ARGUMENTS" and "day after" not in json.dumps(refused)
        assert refused["error"]["message"] == (
            "date: not a date PostgreSQL reads (SQLSTATE 22007: invalid datetime format)"
        )
        assert (
            "PostgreSQL이 날짜로 인식하지 못하는 값 (SQLSTATE 22007: 날짜/시간 형식 오류)" in refused["text"]
        )
        # TASK_ACCEPTED, sent once the database read the date, names the day; none for the refused one.
        accepted = {e["task_id"]: e["payload"] for e in operator.events if e.get("event") == "TASK_ACCEPTED"}
        assert accepted["d-2"]["date"] == "2026-09-18" and accepted["d-3"]["date"] == today
        assert "d-6" not in accepted
        await operator.command("LIST_RUNBOOKS", "after")
        assert (await operator.finished("after"))["payload"]["status"] == "SUCCESS"
    finally:
        await app.stop()


def test_a_resent_signed_command_is_a_duplicate_and_an_unknown_replay_is_refused() -> None:
    ledger = MemoryLedger()
    core = driven(ledger, changes_state=lambda _: False, command_key="k" * 32)
    packet = {"action": "LIST_RUNBOOKS", "task_id": "s-1", "room_id": "ops"}
    first = json.dumps(sign("k" * 32, packet, int(NOW), "nonce-0123456789abcdef"))
    core.handle(_frame(first))
    ledger.finish(
        "s-1",
        {"event": "TASK_FINISHED", "task_id": "s-1", "room_id": "ops", "payload": {"status": "SUCCESS"}},
    )
    verbatim = [e for e in core.handle(_frame(first)) if isinstance(e, Send)]
    assert (
        verbatim[0].message["payload"]["duplicate"] is True and verbatim[0].stored
    )  # never a contradicting FAIL
    forged = json.dumps(sign("k" * 32, {**packet, "task_id": "s-2"}, int(NOW), "nonce-0123456789abcdef"))
    refused = [e for e in core.handle(_frame(forged)) if isinstance(e, Send)]
    assert refused[0].message["payload"]["error"]["code"] == "REPLAYED"
    resigned = json.dumps(sign("k" * 32, packet, int(NOW), "nonce-fedcba9876543210"))
    again = [e for e in core.handle(_frame(resigned)) if isinstance(e, Send)]
    assert again[0].message["payload"]["duplicate"] is True and again[0].stored


def _frame(text: str) -> Any:
    from agent.session.core import FrameReceived

    assert parse_frame(text)
    return FrameReceived(text, NOW)
