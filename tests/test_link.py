"""The agent's main loop over real WebSocket connections to the reference relay, with real sshd hosts."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import urllib.parse
from pathlib import Path

import pytest

from agent.actions.dispatch import HANDLERS
from agent.config.schema import load_config
from agent.reference.relay import Relay
from agent.session.protocol import Action
from agent.shell.app import App
from agent.shell.link import backoff
from tests.conftest import Operator, RunningApp, agent_environ, connect_operator
from tests.waiting import eventually

pytestmark = pytest.mark.external_service
ROOT = Path(__file__).resolve().parent.parent


def test_dispatch_table_is_the_documented_allowlist() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = doc.split("<!-- actions -->")[1].split("<!-- /actions -->")[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.M))
    assert documented == {a.value for a in Action} == {a.value for a in HANDLERS}


async def test_hello_on_connect(running_agent: RunningApp, relay: Relay) -> None:
    hello = relay.hello
    assert hello is not None and hello["event"] == "AGENT_HELLO"
    payload = hello["payload"]
    assert payload["agent_id"] == "test-agent" and payload["protocol"] == 1
    assert "echo_args" in payload["runbooks"] and len(payload["catalog_sha256"]) == 64


async def test_run_runbook_round_trip(running_agent: RunningApp, operator: Operator) -> None:
    await operator.command("RUN_RUNBOOK", "t-1", runbook="echo_args", hosts=["web"], args={"value": "$(id)"})
    accepted = await operator.wait_for(
        lambda e: e.get("event") == "TASK_ACCEPTED" and e.get("task_id") == "t-1"
    )
    assert accepted["payload"] == {"action": "RUN_RUNBOOK", "runbook": "echo_args", "hosts": ["h1", "h2"]}
    finished = await operator.finished("t-1")
    assert finished["room_id"] == "ops" and finished["payload"]["status"] == "SUCCESS"
    data = finished["payload"]["data"]
    assert [h["host"] for h in data["hosts"]] == ["h1", "h2"]
    assert base64.b64decode(data["hosts"][0]["stdout"].splitlines()[1]).decode() == "$(id)"
    assert operator.events.index(accepted) < operator.events.index(finished)


async def test_a_failing_host_makes_the_task_fail_with_per_host_rows(
    running_agent: RunningApp, operator: Operator
) -> None:
    await operator.command("RUN_RUNBOOK", "t-2", runbook="fail_exit", hosts=["h1", "down"], args={"code": 0})
    payload = (await operator.finished("t-2"))["payload"]
    assert payload["status"] == "FAIL" and payload["data"]["status"] == "UNREACHABLE"
    assert [(h["host"], h["status"]) for h in payload["data"]["hosts"]] == [
        ("h1", "SUCCESS"),
        ("down", "UNREACHABLE"),
    ]


async def test_list_runbooks_shows_what_this_room_may_run(
    running_agent: RunningApp, operator: Operator
) -> None:
    await operator.command("LIST_RUNBOOKS", "t-3")
    listed = (await operator.finished("t-3"))["payload"]["data"]["runbooks"]
    assert {r["name"] for r in listed} >= {"echo_args", "fail_exit"}
    await operator.command("LIST_RUNBOOKS", "t-4", room_id="other-room")
    assert (await operator.finished("t-4"))["payload"]["data"]["runbooks"] == []


@pytest.mark.parametrize(
    ("packet", "code", "message"),
    [
        (
            {"action": "rm -rf /", "task_id": "r1", "room_id": "ops"},
            "ACTION_NOT_ALLOWED",
            "action not allowed",
        ),
        (
            {
                "action": "RUN_RUNBOOK",
                "task_id": "r2",
                "room_id": "ops",
                "params": {
                    "runbook": "echo_args",
                    "hosts": ["h1"],
                    "args": {"value": "x", "evil": "$(reboot)"},
                },
            },
            "INVALID_ARGUMENTS",
            "evil: unknown argument",
        ),
        (
            {
                "action": "RUN_RUNBOOK",
                "task_id": "r3",
                "room_id": "ops",
                "params": {"runbook": "echo_args", "hosts": ["nowhere"], "args": {"value": "x"}},
            },
            "UNKNOWN_HOST",
            "unknown host or group: nowhere",
        ),
        (
            {
                "action": "RUN_RUNBOOK",
                "task_id": "r4",
                "room_id": "lobby",
                "params": {"runbook": "echo_args", "hosts": ["h1"], "args": {"value": "x"}},
            },
            "ROOM_NOT_ALLOWED",
            "may not be run from this room",
        ),
        (
            {
                "action": "RUN_RUNBOOK",
                "task_id": "r5",
                "room_id": "ops",
                "params": {"runbook": "../../etc/passwd", "hosts": ["h1"]},
            },
            "RUNBOOK_NOT_RUNNABLE",
            "no such runbook",
        ),
        (
            {"action": "RUN_RUNBOOK", "task_id": "r6", "room_id": "ops", "params": {"runbook": 7}},
            "INVALID_ARGUMENTS",
            "params.runbook must name a runbook",
        ),
        ({"action": "RUN_RUNBOOK", "task_id": "r7"}, "MALFORMED", "invalid or missing: room_id"),
        (
            {
                "action": "FETCH_MES_QC",
                "task_id": "r8",
                "room_id": "ops",
                "params": {"date": "2026-09-18'; DROP TABLE tb_mes_wrk_prc_i;--" + " " * 64},
            },
            "INVALID_ARGUMENTS",
            "date: must be a date written as text, at most 64 characters",
        ),
        (
            {"action": "CHECK_INTERNAL_WAS_STATUS", "task_id": "r9", "room_id": "ops"},
            "NOT_AVAILABLE",
            "no WAS health check is configured",
        ),
        (
            {"action": "RUN_CHECK", "task_id": "r10", "room_id": "ops", "params": {"check": "$(reboot)"}},
            "INVALID_ARGUMENTS",
            "params.check must name a configured check",
        ),
    ],
)
async def test_each_refusal_is_a_clear_fail_and_the_agent_keeps_serving(
    running_agent: RunningApp, operator: Operator, packet: dict[str, object], code: str, message: str
) -> None:
    await operator.send(packet)
    answer = await operator.finished(str(packet["task_id"]))
    assert answer["payload"]["status"] == "FAIL"
    assert answer["payload"]["error"]["code"] == code and message in answer["payload"]["error"]["message"]
    assert "$(reboot)" not in json.dumps(answer) and "DROP TABLE" not in json.dumps(answer)
    await operator.command("LIST_RUNBOOKS", "after")
    assert (await operator.finished("after"))["payload"]["status"] == "SUCCESS"


async def test_an_unverified_runbook_is_refused_naming_the_reason(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    (agent_home / "runbooks" / "echo_args.sh").write_text("echo tampered\n", encoding="utf-8", newline="\n")
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    try:
        report = await operator.wait_for(lambda e: e.get("event") == "REPORT")
        assert report["room_id"] == "ops" and report["payload"]["kind"] == "catalog"
        assert {"runbook": "echo_args", "kind": "modified_script"}.items() <= report["payload"]["problems"][
            0
        ].items()
        await operator.command("RUN_RUNBOOK", "u1", runbook="echo_args", hosts=["h1"], args={"value": "x"})
        error = (await operator.finished("u1"))["payload"]["error"]
        assert {k: error[k] for k in ("code", "message")} == {
            "code": "RUNBOOK_NOT_RUNNABLE",
            "message": "runbook 'echo_args' is not runnable: script changed since it was locked",
        }
        await operator.command("RUN_RUNBOOK", "u2", runbook="fail_exit", hosts=["h1"], args={"code": 0})
        assert (await operator.finished("u2"))["payload"]["status"] == "SUCCESS"  # the others still run
    finally:
        await app.stop()


async def test_same_task_id_twice_runs_once(
    running_agent: RunningApp, operator: Operator, agent_home: Path
) -> None:
    command = {
        "action": "RUN_RUNBOOK",
        "task_id": "dup-1",
        "room_id": "ops",
        "params": {"runbook": "state_change", "hosts": ["h3"], "args": {"seconds": 1}},
    }
    await operator.send(command)
    await operator.send(command)  # while it runs
    first = await operator.finished("dup-1")
    in_progress = [e for e in operator.of("dup-1", "TASK_ACCEPTED") if e["payload"].get("in_progress")]
    assert len(in_progress) == 1
    await operator.send(command)  # after it finished
    again = await operator.wait_for(
        lambda e: (
            e.get("task_id") == "dup-1"
            and e["payload"].get("duplicate")
            and e.get("event") == "TASK_FINISHED"
        )
    )
    assert again["payload"]["data"] == first["payload"]["data"] and again["msg_id"] != first["msg_id"]
    runs = [
        json.loads(line)
        for line in (agent_home / "var" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [e["kind"] for e in runs if e.get("task_id") == "dup-1"].count("run") == 1


async def test_relay_killed_mid_task_result_arrives_after_reconnect_exactly_once(
    running_agent: RunningApp, relay: Relay, operator: Operator
) -> None:
    await operator.command("RUN_RUNBOOK", "k-1", runbook="state_change", hosts=["h2"], args={"seconds": 2})
    await operator.wait_for(lambda e: e.get("event") == "TASK_ACCEPTED" and e.get("task_id") == "k-1")
    port = relay.port  # type: ignore[attr-defined]
    await operator.close()
    await relay.stop()  # the relay dies while the task runs
    app = running_agent.app
    await eventually(
        lambda: any(json.loads(body).get("task_id") == "k-1" for _, body in app.outbox.pending()),
        20,
        what="the result waiting in the outbox",
    )
    await relay.start("127.0.0.1", port)
    back = await connect_operator(relay)
    try:
        result = await back.finished("k-1")
        assert result["payload"]["status"] == "SUCCESS"
        await back.command("LIST_RUNBOOKS", "k-2")  # everything sent before this has arrived by its answer
        await back.finished("k-2")
        assert len(back.of("k-1", "TASK_FINISHED")) == 1
        assert app.outbox.count() == 0
    finally:
        await back.close()


async def test_a_thousand_hostile_frames_leave_the_agent_alive(
    running_agent: RunningApp, operator: Operator
) -> None:
    rng = random.Random(20261125)
    samples: list[str | bytes] = [
        "",
        "null",
        "[]",
        "1e999999",
        "9" * 5000,
        "[" * 50_000,
        '{"action": null}',
        '{"action": ["RUN_RUNBOOK"]}',
        '{"action": "RUN_RUNBOOK", "task_id": {"$ne": 1}, "room_id": "ops"}',
        '{"event": "ACK"}',
        '{"action": "RUN_RUNBOOK", "task_id": "\\u0000", "room_id": "ops"}',
        r'{"action": "LIST_RUNBOOKS", "task_id": "s", "room_id": "\ud800\udfff\ud800"}',
        '{"action": "RUN_RUNBOOK", "task_id": "x", "room_id": "ops", "params": {"runbook": "echo_args", "hosts": "h1"}}',
        '{"action": "LIST_RUNBOOKS", "task_id": "' + "a" * 300 + '", "room_id": "ops"}',
        b"\x00\xff\xfe",
    ]
    frames: list[str | bytes] = []
    for i in range(1000):
        kind = i % 4
        if kind == 0:
            frames.append(rng.choice(samples))
        elif kind == 1:
            frames.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64))))
        elif kind == 2:
            frames.append("".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 80))))
        else:
            frames.append(
                json.dumps(
                    {
                        "action": rng.choice(["RUN_RUNBOOK", "X", 5, None]),
                        "task_id": f"h-{i}",
                        "room_id": rng.choice(["ops", "", 3]),
                        "params": rng.choice([{}, [], "x"]),
                    }
                )
            )
    for frame in frames:
        await operator.send(frame)
    await operator.command("LIST_RUNBOOKS", "alive")
    assert (await operator.finished("alive", timeout=60))["payload"]["status"] == "SUCCESS"
    fails = [
        e for e in operator.events if e.get("event") == "TASK_FINISHED" and e["payload"]["status"] == "FAIL"
    ]
    assert len(fails) >= 900  # every frame that could not run got an answer (the rest: duplicate task ids)


async def test_a_frame_over_the_agents_limit_is_refused_at_the_relay_and_the_room_told(
    running_agent: RunningApp, operator: Operator, relay: Relay
) -> None:
    """The agent's limit comes in its HELLO (max_frame): the relay answers the room, never sends or queues it."""
    assert relay.hello is not None and relay.hello["payload"]["max_frame"] == 1024 * 1024
    connects = running_agent.app.link.connects
    big = {"action": "LIST_RUNBOOKS", "task_id": "big", "room_id": "ops", "params": {"pad": "x" * (2 << 20)}}
    await operator.send(json.dumps(big))
    refused = (await operator.finished("big"))["payload"]
    assert refused["error"]["code"] == "TOO_LARGE" and "big" not in relay.pending
    await operator.command("LIST_RUNBOOKS", "small")
    assert (await operator.finished("small"))["payload"]["status"] == "SUCCESS"
    assert running_agent.app.link.connects == connects  # never sent: the agent was not cut off


async def test_an_oversized_frame_that_reaches_the_agent_closes_1009_and_is_not_resent(
    running_agent: RunningApp, operator: Operator, relay: Relay
) -> None:
    """A relay that does not know the agent's limit (here: told a larger one) sends it anyway: the agent closes with
    1009 and dials again, and the relay does not send it again."""
    for state in relay.agents.values():
        state.max_frame = 64 << 20
    connects = running_agent.app.link.connects
    big = {"action": "LIST_RUNBOOKS", "task_id": "big2", "room_id": "ops", "params": {"pad": "x" * (2 << 20)}}
    await operator.send(json.dumps(big))
    await eventually(
        lambda: running_agent.app.link.connects != connects and relay.agent_connected.is_set(),
        15,
        what="the agent dropping the connection and dialling again",
    )
    assert "big2" not in relay.pending  # the relay does not resend what the agent refused as too large
    await operator.command("LIST_RUNBOOKS", "small2")
    assert (await operator.finished("small2"))["payload"]["status"] == "SUCCESS"


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    delays = backoff(initial=0.5, cap=8, rng=random.Random(1))
    first = [next(delays) for _ in range(8)]
    assert 0.25 <= first[0] <= 0.5
    bounds = [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert all(b / 2 <= d <= b for d, b in zip(first, bounds, strict=True))


async def test_a_refused_token_is_logged_as_error_and_retried_slowly(
    agent_home: Path, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    env = agent_environ(relay)
    env["AGENT_RELAY_TOKEN"] = "wrong-token-000000"
    caplog.set_level("INFO", logger="agent")
    app = RunningApp.of(agent_home / "agent.toml", env)
    try:
        await eventually(lambda: "refused the agent's credentials (HTTP 401)" in caplog.text, 10)
        # The decision to wait is logged before the wait: no need to sit through it to see a tight loop.
        await eventually(
            lambda: "reconnecting in" in caplog.text, 10, what="the agent's next-attempt decision"
        )
    finally:
        await app.stop()
    errors = [r for r in caplog.records if "credentials" in r.getMessage()]
    assert errors and all(r.levelname == "ERROR" for r in errors)
    waits = [float(w) for w in re.findall(r"reconnecting in ([0-9.]+) s", caplog.text)]
    assert waits and all(
        w == 2.0 for w in waits
    )  # max_backoff (2 s in this config) at once, not a fast retry
    assert not relay.agent_connected.is_set()


async def test_relay_down_for_a_while_backs_off_then_reconnects(
    agent_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay(agent_token=None)
    port = await relay.start("127.0.0.1", 0)
    await relay.stop()
    relay.port = port  # type: ignore[attr-defined]
    caplog.set_level("INFO", logger="agent.shell.link")
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    try:
        await eventually(lambda: caplog.text.count("reconnecting in") >= 3, 10)
        waits = [float(m) for m in re.findall(r"reconnecting in ([0-9.]+) s", caplog.text)]
        assert waits[0] <= 0.5 and all(w <= 2.0 for w in waits) and sum(waits[:3]) >= 0.6
        await relay.start("127.0.0.1", port)
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
    finally:
        await app.stop()
        await relay.stop()


SECRET = "Db-Passw0rd-xyz"


async def test_secrets_planted_everywhere_never_reach_the_relay(
    running_agent: RunningApp, operator: Operator, relay: Relay, agent_home: Path
) -> None:
    await operator.command("RUN_RUNBOOK", "s-1", runbook="echo_args", hosts=["h1"], args={"value": SECRET})
    await operator.command("RUN_RUNBOOK", "s-2", runbook="fail_exit", hosts=["h1"], args={"code": 1})
    await operator.command("RUN_RUNBOOK", "s-3", runbook="echo_args", hosts=[SECRET], args={"value": "x"})
    await operator.command("RUN_RUNBOOK", "s-4", runbook=SECRET, hosts=["h1"])
    await operator.command("RUN_RUNBOOK", "s-5", runbook="echo_args", hosts=["h1"], args={SECRET: "x"})
    for task in ("s-1", "s-2", "s-3", "s-4", "s-5"):
        await operator.finished(task)
    sent = "\n".join(relay.log)
    forms = [
        SECRET,
        base64.b64encode(SECRET.encode()).decode()[:16],
        urllib.parse.quote(SECRET),
        "hunter22",
        "10.1.2.3",
    ]
    for form in forms:
        assert form not in sent, form
    assert "[SECRET]" in sent and "password=[REDACTED]" in sent
    audit = (agent_home / "var" / "audit.jsonl").read_text(encoding="utf-8")
    assert SECRET not in audit


async def test_a_report_carrying_a_secret_is_redacted(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    (agent_home / "runbooks" / f"{SECRET}.sh").write_text(
        "echo\n", encoding="utf-8", newline="\n"
    )  # a bad file name lands in the catalog report
    app = RunningApp(
        App(load_config(agent_home / "agent.toml"), environ=agent_environ(relay, DB_PASSWORD=SECRET))
    )
    try:
        report = await operator.wait_for(lambda e: e.get("event") == "REPORT")
        assert "[SECRET].sh" in report["payload"]["problems"][0]["detail"]
        assert SECRET not in "\n".join(relay.log) and relay.hello is not None
    finally:
        await app.stop()
