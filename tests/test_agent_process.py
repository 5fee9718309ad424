"""`agent run` as a real process: killed before an ACK, restarted, and stopped gracefully."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.reference.relay import Relay
from tests.conftest import Operator, RunningApp, agent_environ
from tests.waiting import eventually

pytestmark = pytest.mark.external_service


SECRET = "Db-Passw0rd-xyz"


def start_agent(home: Path, relay: Relay) -> subprocess.Popen[bytes]:
    env = {**os.environ, **agent_environ(relay), "DB_PASSWORD": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "-c", str(home / "agent.toml"), "run", "--log-level", "DEBUG"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(home / "agent.log", "ab"),
    )  # fmt: skip


def pending_ids(home: Path) -> list[str]:
    with sqlite3.connect(home / "var" / "outbox.sqlite3") as db:
        return [json.loads(body)["msg_id"] for (body,) in db.execute("SELECT body FROM outbox ORDER BY seq")]


async def wait_until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    await eventually(condition, timeout, what="another process's state")


async def test_killed_after_finishing_but_before_the_ack_resends_after_restart(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    relay.hold_acks = True  # as if the relay died before acknowledging
    process = start_agent(agent_home, relay)
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 20)
        await operator.command("RUN_RUNBOOK", "kill-1", runbook="fail_exit", hosts=["h1"], args={"code": 0})
        result = await operator.finished("kill-1")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert result["msg_id"] in pending_ids(agent_home)

        relay.hold_acks = False
        process = start_agent(agent_home, relay)
        await wait_until(lambda: relay.received[result["msg_id"]] == 2)
        await wait_until(lambda: result["msg_id"] not in pending_ids(agent_home))
        await operator.command("LIST_RUNBOOKS", "kill-2")
        await operator.finished("kill-2")
        assert len(operator.of("kill-1", "TASK_FINISHED")) == 1  # the relay delivered it to the room once
        audit = [
            json.loads(line)
            for line in (agent_home / "var" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        assert [e["kind"] for e in audit if e.get("task_id") == "kill-1"].count("run") == 1  # and it ran once

        await operator.command(
            "RUN_RUNBOOK", "kill-3", runbook="echo_args", hosts=["h1"], args={"value": SECRET}
        )
        await operator.finished("kill-3")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0  # a graceful stop
    finally:
        if process.poll() is None:
            process.kill()
    log = (agent_home / "agent.log").read_text(encoding="utf-8")
    assert "stopped" in log and "< {" in log  # frames were logged at DEBUG…
    assert SECRET not in log and "[SECRET]" in log  # …through the redacting filter


async def _agent_with_grace(agent_home: Path, relay: Relay, grace: float) -> RunningApp:
    config = (
        (agent_home / "agent.toml")
        .read_text(encoding="utf-8")
        .replace("shutdown_grace = 5.0", f"shutdown_grace = {grace}")
    )
    (agent_home / "agent.toml").write_text(config, encoding="utf-8", newline="\n")
    running = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    return running


async def test_shutdown_lets_a_task_finish_within_the_grace_and_refuses_new_ones(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    running = await _agent_with_grace(agent_home, relay, 10.0)
    await operator.command("RUN_RUNBOOK", "g-1", runbook="state_change", hosts=["h1"], args={"seconds": 1})
    await operator.wait_for(lambda e: e.get("event") == "TASK_ACCEPTED" and e.get("task_id") == "g-1")
    running.app.stopping.set()
    await operator.command("LIST_RUNBOOKS", "g-2")
    assert (await operator.finished("g-2"))["payload"]["error"]["code"] == "SHUTTING_DOWN"
    assert (await operator.finished("g-1"))["payload"]["status"] == "SUCCESS"
    await asyncio.wait_for(running.task, 30)
    assert pending_ids(agent_home) == []  # everything it said was acknowledged before it stopped


async def test_a_task_past_the_grace_is_answered_as_interrupted(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    running = await _agent_with_grace(agent_home, relay, 0.5)
    await operator.command("RUN_RUNBOOK", "i-1", runbook="state_change", hosts=["h2"], args={"seconds": 5})
    await operator.wait_for(lambda e: e.get("event") == "TASK_ACCEPTED" and e.get("task_id") == "i-1")
    running.app.stopping.set()
    answer = await operator.finished("i-1")
    assert answer["payload"]["error"]["code"] == "INTERRUPTED"
    await asyncio.wait_for(running.task, 30)
