"""Roles, four-eyes approval and signed commands, enforced by the agent over real WebSocket connections."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config.schema import load_config
from agent.reference.relay import Relay
from agent.session.command_auth import canonical, sign, signature
from agent.shell.app import App
from tests.conftest import Operator, RunningApp, agent_environ

pytestmark = pytest.mark.external_service
ROOT = Path(__file__).resolve().parent.parent
ACCESS = """
[access]
approval_window = {window}
[access.users]
kim = ["operator"]
lee = ["approver"]
choi = ["operator", "approver"]
park = ["viewer"]
"""


async def start(home: Path, relay: Relay, window: float = 600, **env: str) -> RunningApp:
    config = home / "agent.toml"
    if "[access]" not in config.read_text(encoding="utf-8"):
        config.write_text(
            config.read_text(encoding="utf-8") + ACCESS.format(window=window), encoding="utf-8", newline="\n"
        )
    app = RunningApp.of(config, agent_environ(relay, **env))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    return app


async def send(
    operator: Operator, task_id: str, action: str, user: str | None, **params: Any
) -> dict[str, Any]:
    packet: dict[str, Any] = {"action": action, "task_id": task_id, "room_id": "ops", "params": params}
    if user is not None:
        packet["user_id"] = user
    await operator.send(packet)
    return packet


def audit(home: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (home / "var" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    ]


async def pending(operator: Operator, task_id: str) -> dict[str, Any]:
    return await operator.wait_for(
        lambda e: e.get("event") == "TASK_PENDING_APPROVAL" and e.get("task_id") == task_id
    )


async def test_unknown_or_unauthorised_users_are_refused_and_audited(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = await start(agent_home, relay)
    try:
        cases = [("a1", "RUN_RUNBOOK", "mallory"), ("a2", "RUN_RUNBOOK", "park"), ("a3", "RUN_RUNBOOK", None),
                 ("a4", "APPROVE", "kim")]  # fmt: skip
        for task, action, user in cases:
            params = (
                {"runbook": "echo_args", "hosts": ["h1"], "args": {"value": "x"}}
                if action == "RUN_RUNBOOK"
                else {"code": "ABCDEF"}
            )
            await send(operator, task, action, user, **params)
            error = (await operator.finished(task))["payload"]["error"]
            assert error["code"] == "UNAUTHORIZED", (task, error)
        await send(operator, "a5", "LIST_RUNBOOKS", "park")  # a viewer may look
        assert (await operator.finished("a5"))["payload"]["status"] == "SUCCESS"
        # Identity is what the relay authenticated (top-level user_id): params never carry it, so a packet that
        # names an operator inside params is still the anonymous user's.
        await send(operator, "a6", "RUN_RUNBOOK", None, runbook="echo_args", hosts=["h1"], args={"value": "x"},
                   user_id="kim")  # fmt: skip
        error = (await operator.finished("a6"))["payload"]["error"]
        assert error["code"] == "UNAUTHORIZED"
        received = next(e for e in audit(agent_home) if e["kind"] == "command" and e["task_id"] == "a6")
        assert received["user_id"] is None
        refused = [e for e in audit(agent_home) if e["kind"] == "decision" and e.get("decision") == "refused"]
        assert {e["task_id"] for e in refused} >= {"a1", "a2", "a3", "a4", "a6"}
    finally:
        await app.stop()


async def test_four_eyes_release_exactly_once_by_another_approver(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = await start(agent_home, relay)
    try:
        await send(
            operator,
            "f1",
            "RUN_RUNBOOK",
            "choi",
            runbook="approved_change",
            hosts=["h1"],
            args={"note": "v2"},
        )
        held = await pending(operator, "f1")
        code = held["payload"]["code"]
        assert re.fullmatch(r"[A-Z2-9]{6}", code) and held["payload"]["hosts"] == ["h1"]
        assert held["payload"]["args"] == {"note": "v2"} and held["payload"]["requested_by"] == "choi"
        assert f"approve {code}" in held["payload"]["text"]
        assert operator.of("f1", "TASK_FINISHED") == [] and operator.of("f1", "TASK_ACCEPTED") == []

        await send(operator, "f2", "APPROVE", "choi", code=code)  # the requester, though an approver
        assert (await operator.finished("f2"))["payload"]["error"]["code"] == "UNAUTHORIZED"
        for task, verb in (
            ("f2a", "APPROVE"),
            ("f2b", "REJECT"),
        ):  # an approver in another room: unknown there
            await operator.send({"action": verb, "task_id": task, "room_id": "elsewhere", "user_id": "lee",
                                 "params": {"code": code}})  # fmt: skip
            refused = (await operator.finished(task))["payload"]
            assert refused["error"]["code"] == "APPROVAL_UNKNOWN" and "f1" not in str(refused["data"])
        await send(operator, "f3", "APPROVE", "lee", code=code.lower())
        released = (await operator.finished("f3"))["payload"]
        assert released["data"] == {"approved": "f1", "runbook": "approved_change", "hosts": ["h1"],
                                    "args": {"note": "v2"}, "requested_by": "choi"}  # fmt: skip
        assert "approved_change @ h1 (note=v2)" in released["text"] and "f1" in released["text"]
        result = await operator.finished("f1")
        assert (
            result["payload"]["status"] == "SUCCESS"
            and "changed: v2" in result["payload"]["data"]["hosts"][0]["stdout"]
        )
        accepted = operator.of("f1", "TASK_ACCEPTED")
        assert accepted[0]["payload"]["approved_by"] == "lee"

        await send(operator, "f4", "APPROVE", "lee", code=code)  # a duplicate approval does nothing more
        assert (await operator.finished("f4"))["payload"]["error"]["code"] == "APPROVAL_UNKNOWN"
        await send(operator, "f5", "LIST_RUNBOOKS", "lee")
        await operator.finished("f5")
        assert len(operator.of("f1", "TASK_FINISHED")) == 1
        entries = audit(agent_home)
        assert [e["kind"] for e in entries if e.get("task_id") == "f1"].count("run") == 1
        decided = next(e for e in entries if e["kind"] == "approval_decided")
        assert (decided["requester"], decided["approver"], decided["decision"]) == ("choi", "lee", "approved")
    finally:
        await app.stop()


async def test_reject_and_expiry(agent_home: Path, relay: Relay, operator: Operator) -> None:
    app = await start(agent_home, relay, window=1.0)
    try:
        await send(
            operator, "r1", "RUN_RUNBOOK", "kim", runbook="approved_change", hosts=["h1"], args={"note": "a"}
        )
        code = (await pending(operator, "r1"))["payload"]["code"]
        await send(operator, "r2", "REJECT", "lee", code=code)
        assert (await operator.finished("r2"))["payload"]["data"]["rejected"] == "r1"
        rejected = (await operator.finished("r1"))["payload"]
        assert {k: rejected["error"][k] for k in ("code", "message")} == {
            "code": "REJECTED",
            "message": "rejected by lee",
        }
        assert "lee님이 반려함" in rejected["text"]  # the room reads Korean by default

        await send(
            operator, "e1", "RUN_RUNBOOK", "kim", runbook="approved_change", hosts=["h1"], args={"note": "b"}
        )
        code = (await pending(operator, "e1"))["payload"]["code"]
        expired = await operator.finished("e1", timeout=10)
        assert expired["payload"]["error"]["code"] == "APPROVAL_EXPIRED"
        await send(operator, "e2", "APPROVE", "lee", code=code)
        assert (await operator.finished("e2"))["payload"]["error"]["code"] == "APPROVAL_UNKNOWN"
        assert [e["kind"] for e in audit(agent_home) if e.get("task_id") == "e1"].count("run") == 0
    finally:
        await app.stop()


async def test_a_held_request_survives_an_agent_restart(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = await start(agent_home, relay)
    await send(
        operator, "p1", "RUN_RUNBOOK", "kim", runbook="approved_change", hosts=["h2"], args={"note": "c"}
    )
    code = (await pending(operator, "p1"))["payload"]["code"]
    await app.stop()
    app = await start(agent_home, relay)
    try:
        await send(operator, "p2", "APPROVE", "lee", code=code)
        await operator.finished("p2")
        result = await operator.finished("p1")
        assert result["payload"]["status"] == "SUCCESS"
        assert not [
            e for e in operator.of("p1", "TASK_FINISHED") if e["payload"].get("error")
        ]  # not "interrupted"
    finally:
        await app.stop()


KEY = "command-key-for-tests-0123456789"


def signed(packet: dict[str, Any], ts: int | None = None, nonce: str | None = None) -> dict[str, Any]:
    return sign(
        KEY, packet, ts if ts is not None else int(time.time()), nonce or f"nonce-{time.monotonic_ns()}"
    )


async def test_signed_commands_refuse_tampered_unsigned_stale_and_replayed(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = RunningApp(
        App(load_config(agent_home / "agent.toml"), environ=agent_environ(relay, AGENT_COMMAND_KEY=KEY))
    )
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    try:

        def run(task: str) -> dict[str, Any]:
            return {"action": "RUN_RUNBOOK", "task_id": task, "room_id": "ops",
                    "params": {"runbook": "echo_args", "hosts": ["h1"], "args": {"value": "ok"}}}  # fmt: skip

        good = signed(run("s1"))
        await operator.send(good)
        assert (await operator.finished("s1"))["payload"]["status"] == "SUCCESS"
        await operator.send(good)  # the same signed packet again: the stored answer, never a second run
        again = await operator.wait_for(
            lambda e: e.get("task_id") == "s1" and e.get("payload", {}).get("duplicate")
        )
        assert again["payload"]["status"] == "SUCCESS"
        reused = dict(
            good, task_id="s1b"
        )  # the nonce of another command, for a task it does not know: refused
        await operator.send(reused)
        assert (await operator.finished("s1b"))["payload"]["error"]["code"] in ("REPLAYED", "BAD_SIGNATURE")

        tampered = signed(run("s2"))
        tampered["params"]["args"]["value"] = "$(reboot)"
        await operator.send(tampered)
        await operator.send(run("s3"))
        await operator.send(signed(run("s4"), ts=int(time.time()) - 3600))
        expected = {"s2": "BAD_SIGNATURE", "s3": "UNSIGNED", "s4": "STALE"}
        for task, code in expected.items():
            assert (await operator.finished(task))["payload"]["error"]["code"] == code
        assert not any(e["kind"] == "run" and e.get("task_id") in expected for e in audit(agent_home))
    finally:
        await app.stop()


async def test_the_reference_relay_signs_for_the_agent(agent_home: Path) -> None:
    relay = Relay(agent_token="relay-token-0123456789", command_key=KEY)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    from tests.conftest import connect_operator

    operator = await connect_operator(relay)
    app = RunningApp(
        App(load_config(agent_home / "agent.toml"), environ=agent_environ(relay, AGENT_COMMAND_KEY=KEY))
    )
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
        await operator.command("RUN_RUNBOOK", "rs1", runbook="echo_args", hosts=["h1"], args={"value": "x"})
        assert (await operator.finished("rs1"))["payload"]["status"] == "SUCCESS"
    finally:
        await app.stop()
        await operator.close()
        await relay.stop()


def test_the_documented_test_vector_verifies() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    packet = json.loads(doc.split("<!-- test-vector-packet -->")[1].split("```json")[1].split("```")[0])
    documented = doc.split("<!-- test-vector-sig -->`")[1].split("`")[0]
    assert signature("guardia-test-vector-key", packet, 1767225600, "n0nce-for-the-test-vector") == documented
    assert canonical(packet).decode() in doc
    with pytest.raises(ValueError, match="floating-point"):
        canonical({**packet, "params": {"x": 1.5}})


async def test_a_burst_of_held_requests_is_capped_per_requester_with_a_reason(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    """Issue 27: 1,000 held approval requests from one operator in 7 s were all kept (and PENDING answered 500 KB)."""
    app = await start(agent_home, relay)
    try:
        for i in range(8):
            await send(operator, f"h{i}", "RUN_RUNBOOK", "choi", runbook="approved_change", hosts=["h1"],
                       args={"note": f"n{i}"})  # fmt: skip
        for i in range(5):  # max_held_per_user's default
            await pending(operator, f"h{i}")
        for i in range(5, 8):
            error = (await operator.finished(f"h{i}"))["payload"]["error"]
            assert error["code"] == "NOT_AVAILABLE" and "5 of your requests already wait" in error["message"]
        assert len(app.app.outbox.held()) == 5
        await send(operator, "p1", "PENDING", "choi")
        assert len((await operator.finished("p1"))["payload"]["data"]["pending"]) == 5
    finally:
        await app.stop()
