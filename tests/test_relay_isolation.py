"""The reference relay under hostile and slow peers (issue 26): a client that never reads is dropped, never allowed
to hold up another room; every room sees only its own frames; a token is one agent or one operator's rooms; queues
are bounded, with an answer to the room when full. Real relay, real agents (in-process), real WebSocket clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from agent.reference.chat import parse_chat
from agent.reference.relay import AgentRoute, OperatorCredential, Relay, RelaySettings
from tests.conftest import Operator, RunningApp
from tests.waiting import eventually

pytestmark = pytest.mark.external_service
#: Commands whose answers flood room ops: more than the socket buffers hold for a client that never reads.
FLOOD = 300

TOKENS = {"TOKEN_A": "agent-a-token-0123456789", "TOKEN_B": "agent-b-token-0123456789",
          "OP_A": "operator-a-token-012345", "OP_B": "operator-b-token-012345",
          "OP_SLOW": "operator-slow-token-0123"}  # fmt: skip


def settings(**more: Any) -> RelaySettings:
    return RelaySettings(
        agents={"test-agent": AgentRoute(rooms=["ops"], token_env="TOKEN_A"),
                "site-b": AgentRoute(rooms=["ops-b"], token_env="TOKEN_B")},
        operators={"a": OperatorCredential(token_env="OP_A", rooms=["ops"]),
                   "b": OperatorCredential(token_env="OP_B", rooms=["ops-b"], users=["lee"]),
                   "slow": OperatorCredential(token_env="OP_SLOW", rooms=["ops"])},
        **more,
    )  # fmt: skip


@pytest.fixture
async def scoped() -> AsyncIterator[Relay]:
    relay = Relay(settings=settings(peer_queue_frames=20), environ=TOKENS)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    yield relay
    await relay.stop()


async def operator(relay: Relay, token: str, rcvbuf: int | None = None, reads: bool = True) -> Operator:
    """An operator client with ``token``; ``reads=False``: one that never reads (websockets stops taking data from
    the socket once 16 messages wait, and the kernel's buffers fill up behind it)."""
    sock = None
    if rcvbuf is not None:  # a client that reads little: its kernel buffer fills sooner
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf
        )  # before connecting: the window it offers
        sock.connect(("127.0.0.1", relay.port))  # type: ignore[attr-defined]
    ws = await connect(f"ws://127.0.0.1:{relay.port}/operator", max_size=None, sock=sock,  # type: ignore[attr-defined]
                       additional_headers={"Authorization": f"Bearer {TOKENS[token]}"})  # fmt: skip
    return Operator(ws) if reads else _NeverReads(ws)


class _NeverReads(Operator):
    def __init__(self, ws: Any) -> None:
        self.ws, self.events = ws, []

    async def close(self) -> None:
        self.ws.transport.abort()


def site(home: Path, agent_id: str, room: str, tmp: Path) -> Path:
    """A copy of ``home`` as agent ``agent_id`` whose operations room is ``room``."""
    import shutil

    shutil.copytree(home / "runbooks", tmp / "runbooks")
    shutil.copy(home / "runbooks.lock", tmp / "runbooks.lock")
    text = (home / "agent.toml").read_text(encoding="utf-8")
    text = text.replace('agent_id = "test-agent"', f'agent_id = "{agent_id}"\noperations_room = "{room}"')
    (tmp / "agent.toml").write_text(text, encoding="utf-8", newline="\n")
    return tmp


def agent_env(relay: Relay, token: str) -> dict[str, str]:
    return {"EXTERNAL_WS_URL": f"ws://127.0.0.1:{relay.port}/agent", "AGENT_RELAY_TOKEN": TOKENS[token]}  # type: ignore[attr-defined]


async def ask(client: Operator, line: str, task_id: str, room: str, user: str = "kim") -> dict[str, Any]:
    await client.send(parse_chat(line, task_id, room, user))
    return await client.finished(task_id, timeout=30)


async def test_a_client_that_never_reads_is_dropped_and_no_other_room_waits(
    scoped: Relay, agent_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "agent.reference.relay")
    a = RunningApp.of(
        site(agent_home, "test-agent", "ops", tmp_path / "a") / "agent.toml", agent_env(scoped, "TOKEN_A")
    )
    b = RunningApp.of(
        site(agent_home, "site-b", "ops-b", tmp_path / "b") / "agent.toml", agent_env(scoped, "TOKEN_B")
    )
    op_a, op_b = await operator(scoped, "OP_A"), await operator(scoped, "OP_B")
    slow = await operator(scoped, "OP_SLOW", rcvbuf=4096, reads=False)
    try:
        await eventually(lambda: all(scoped.agents.get(x) and scoped.agents[x].connection
                                     for x in ("test-agent", "site-b")), 15, what="both agents connected")  # fmt: skip
        # The kernel would hold megabytes for it before the relay's own queue grows: keep its buffer small.
        server_side = next(o.peer.ws for o in scoped.operators.values() if o.peer.name == "operator 'slow'")
        server_side.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for i in range(FLOOD):  # a flood of answers in room ops, which the slow client also sees
            await op_a.send(parse_chat("list", f"flood-{i}", "ops", "kim"))
        # Room ops-b keeps getting its answers while room ops floods.
        assert (await ask(op_b, "list", "b-1", "ops-b", user="lee"))["payload"]["status"] == "SUCCESS"
        await op_a.finished(f"flood-{FLOOD - 1}", timeout=120)
        await eventually(lambda: "dropped operator 'slow'" in caplog.text, 30, what="the slow client dropped")
        assert (await ask(op_b, "list", "b-2", "ops-b", user="lee"))["payload"]["status"] == "SUCCESS"
        # Each room saw only its own frames.
        assert {e.get("room_id") for e in op_b.events} <= {"ops-b", None} and op_b.of(
            "flood-1", "TASK_FINISHED"
        ) == []
        assert {e.get("room_id") for e in op_a.events} <= {"ops", None}
        # The slow client, back, is told why it was dropped.
        again = await operator(scoped, "OP_SLOW")
        told = await again.wait_for(lambda e: e.get("payload", {}).get("kind") == "dropped_before", 10)
        assert "does not read" in told["payload"]["reason"] and told["room_id"] == "ops"  # its room is told
        assert "읽지 않아" in told["payload"]["text"]  # in the relay's language
        await again.close()
    finally:
        for client in (op_a, op_b, slow):
            await client.close()
        await a.stop()
        await b.stop()


async def test_an_operator_speaks_only_in_its_rooms_and_as_its_users(
    scoped: Relay, agent_home: Path, tmp_path: Path
) -> None:
    a = RunningApp.of(
        site(agent_home, "test-agent", "ops", tmp_path / "a") / "agent.toml", agent_env(scoped, "TOKEN_A")
    )
    op_a, op_b = await operator(scoped, "OP_A"), await operator(scoped, "OP_B")
    try:
        await eventually(lambda: scoped.agents.get("test-agent") is not None
                         and scoped.agents["test-agent"].connection is not None, 15, what="agent a")  # fmt: skip
        into_a = await ask(op_b, "list", "x-1", "ops", user="lee")  # room ops is not b's
        assert into_a["payload"]["error"]["code"] == "NOT_ALLOWED" and op_a.of("x-1", "TASK_FINISHED") == []
        as_kim = await ask(op_b, "list", "x-2", "ops-b", user="kim")  # b speaks as lee only
        assert as_kim["payload"]["error"]["code"] == "NOT_ALLOWED"
        audit = (tmp_path / "a" / "var" / "audit.jsonl").read_text(encoding="utf-8")
        assert '"x-1"' not in audit and '"x-2"' not in audit  # never reached an agent
    finally:
        await op_a.close()
        await op_b.close()
        await a.stop()


async def test_a_token_is_one_agent_and_an_agent_speaks_only_for_its_rooms(
    scoped: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "agent.reference.relay")
    url = f"ws://127.0.0.1:{scoped.port}/agent"  # type: ignore[attr-defined]
    hello = {"event": "AGENT_HELLO", "msg_id": "h-1", "payload": {"agent_id": "test-agent", "protocol": 1}}
    # site-b's token, claiming to be test-agent: refused.
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKENS['TOKEN_B']}"}) as forged:
        await forged.send(json.dumps(hello))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(forged.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "its token belongs to agent 'site-b'" in caplog.text
    # site-b, as itself, sends a result into room ops (test-agent's): dropped, no operator of ops sees it.
    op_a = await operator(scoped, "OP_A")
    try:
        async with connect(url, additional_headers={"Authorization": f"Bearer {TOKENS['TOKEN_B']}"}) as b:
            await b.send(json.dumps({**hello, "payload": {"agent_id": "site-b", "protocol": 1}}))
            forged_result = {"event": "TASK_FINISHED", "msg_id": "m-1", "task_id": "t-forged", "room_id": "ops",
                             "payload": {"status": "SUCCESS", "data": {}, "text": "✅ forged"}}  # fmt: skip
            await b.send(json.dumps(forged_result))
            await eventually(lambda: "not routed to it" in caplog.text, 10, what="the forged frame dropped")
        assert op_a.of("t-forged", "TASK_FINISHED") == []
    finally:
        await op_a.close()


async def test_commands_waiting_for_an_offline_agent_are_bounded_and_the_room_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = Relay(settings=settings(pending_bytes_per_agent=64 * 1024, offline_wait=300), environ=TOKENS)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    op_a = await operator(relay, "OP_A")
    try:
        for i in range(6):  # 20 KB each; the agent is offline: they queue up to 64 KB
            await op_a.send({"action": "LIST_RUNBOOKS", "task_id": f"q-{i}", "room_id": "ops", "user_id": "kim",
                             "params": {"pad": "x" * 20_000}})  # fmt: skip
        full = await op_a.finished("q-3", timeout=10)
        assert full["payload"]["error"]["code"] == "RELAY_FULL"
        assert sum(len(frame) for frame in relay.pending.values()) <= 64 * 1024
        assert set(relay.pending) == {"q-0", "q-1", "q-2"}
    finally:
        await op_a.close()
        await relay.stop()


async def test_a_command_is_signed_for_its_agent_and_another_agent_sharing_the_key_refuses_it() -> None:
    from agent.session.command_auth import verify
    from agent.session.core import AgentCore, FrameReceived, Send
    from tests.test_core import MemoryLedger

    key = "shared-command-key-0123456789"
    relay = Relay(command_key=key, settings=settings(), environ=TOKENS)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    op_a = await operator(relay, "OP_A")
    url = f"ws://127.0.0.1:{relay.port}/agent"  # type: ignore[attr-defined]
    try:
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {TOKENS['TOKEN_A']}"}
        ) as agent_a:
            await agent_a.send(json.dumps({"event": "AGENT_HELLO", "msg_id": "h",
                                           "payload": {"agent_id": "test-agent", "protocol": 1}}))  # fmt: skip
            await op_a.send({"action": "LIST_RUNBOOKS", "task_id": "s-1", "room_id": "ops", "user_id": "kim"})
            frame = await asyncio.wait_for(agent_a.recv(), 10)
            while json.loads(frame).get("event") == "ACK":
                frame = await asyncio.wait_for(agent_a.recv(), 10)
        signed = json.loads(frame)
        assert signed["agent_id"] == "test-agent"
        assert verify(key, signed, signed["auth"]["ts"], 300, lambda _: False)  # the relay signed it as sent
    finally:
        await op_a.close()
        await relay.stop()
    # Replayed to site-b, which shares the key: refused, never run.
    core = AgentCore(MemoryLedger(), changes_state=lambda _: False, command_key=key, agent_id="site-b")
    effects = core.handle(FrameReceived(frame, signed["auth"]["ts"]))
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].message["payload"]["error"]["code"] == "WRONG_AGENT"
    assert not any(type(e).__name__ == "StartRun" for e in effects)
    # The agent it was signed for runs it.
    mine = AgentCore(MemoryLedger(), changes_state=lambda _: False, command_key=key, agent_id="test-agent")
    assert any(
        type(e).__name__ == "StartRun" for e in mine.handle(FrameReceived(frame, signed["auth"]["ts"]))
    )


def test_relay_check_lists_every_problem_of_its_config_and_environment(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = tmp_path / "relay.toml"
    config.write_text('[agents.site-a]\nrooms = ["ops"]\ntoken_env = "SITE_A_TOKEN"\n\n[operators.bridge]\n'
                      'token_env = "BRIDGE_TOKEN"\nrooms = ["ops", "nowhere"]\n', encoding="utf-8")  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SITE_", "BRIDGE_"))}

    def check(
        env: dict[str, str], host: str = "192.0.2.10"
    ) -> subprocess.CompletedProcess[str]:  # never bound
        return subprocess.run([sys.executable, "-m", "agent", "relay", "--check", "--config", str(config),
                               "--host", host], env={**base, **env}, capture_output=True, text=True,
                              encoding="utf-8", timeout=60, check=False)  # fmt: skip

    bad = check({})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    for expected in ("$SITE_A_TOKEN is not set", "$BRIDGE_TOKEN is not set", "no agent serves nowhere",
                     "NOT OK: 3 problem(s): "):  # fmt: skip
        assert expected in bad.stderr, bad.stderr
    config.write_text(config.read_text(encoding="utf-8").replace(', "nowhere"', ""), encoding="utf-8")
    good = check({"SITE_A_TOKEN": "a" * 24, "BRIDGE_TOKEN": "b" * 24})
    assert good.returncode == 0 and good.stdout.startswith("OK: relay config: 1 routed agent(s)"), good.stderr
