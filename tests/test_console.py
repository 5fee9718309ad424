"""The room as an operator's console, against the real relay and real sshd: help, history, pending and cancel,
progress lines, liveness, several agents on one relay, what changed about an agent, and `agent chat`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.catalog.signing import generate_key_pair
from agent.catalog.store import Catalog
from agent.chat.i18n import Chat, message_of
from agent.checks import CheckResult, CheckStatus
from agent.checks.scheduler import CheckScheduler, in_quiet_hours
from agent.config.schema import load_config
from agent.reference.chat import parse_chat
from agent.reference.relay import CLOSE_DUPLICATE_AGENT, AgentRoute, Relay, RelaySettings
from agent.state.outbox import Outbox
from tests.conftest import RELAY_TOKEN, Operator, RunningApp, agent_environ, connect_operator
from tests.waiting import eventually

pytestmark = pytest.mark.external_service
ROOT = Path(__file__).resolve().parent.parent

PICK_SH = '#!/usr/bin/env bash\necho "picked $1"\n'
PICK_TOML = """description = "Test: pick one of three"
targets = ["all"]
rooms = ["ops"]

[[params]]
name = "color"
type = "enum"
choices = ["red", "green", "blue"]
help = "which color"

[[params]]
name = "times"
type = "integer"
min = 1
max = 9
default = 1
flag = "--times"
"""
OTHER_TOML = 'description = "Test: only for the other room"\ntargets = ["all"]\nrooms = ["other"]\n'
ACCESS = '\n[access]\n[access.users]\nkim = ["operator"]\nlee = ["approver"]\npark = ["operator"]\n'


def add_runbooks(home: Path) -> None:
    (home / "runbooks" / "pick.sh").write_text(PICK_SH, encoding="utf-8", newline="\n")
    (home / "runbooks" / "pick.toml").write_text(PICK_TOML, encoding="utf-8", newline="\n")
    (home / "runbooks" / "other_room.sh").write_text(
        "#!/usr/bin/env bash\necho other\n", encoding="utf-8", newline="\n"
    )
    (home / "runbooks" / "other_room.toml").write_text(OTHER_TOML, encoding="utf-8", newline="\n")
    Catalog(home / "runbooks", home / "runbooks.lock").relock()


def configure(home: Path, extra: str = "") -> None:
    config = home / "agent.toml"
    config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8", newline="\n")


async def start(home: Path, relay: Relay, **env: str) -> RunningApp:
    app = RunningApp.of(home / "agent.toml", agent_environ(relay, **env))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    return app


async def ask(
    operator: Operator, line: str, task_id: str, user: str = "kim", room: str = "ops"
) -> dict[str, Any]:
    await operator.send(parse_chat(line, task_id, room, user))
    return await operator.finished(task_id)


async def test_help_lists_the_rooms_runbooks_and_shows_usage_and_choices(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    add_runbooks(agent_home)
    app = await start(agent_home, relay)
    try:
        listing = (await ask(operator, "help", "h1"))["payload"]
        names = [r["name"] for r in listing["data"]["help"]["runbooks"]]
        assert "pick" in names and "other_room" not in names  # only what this room may run
        assert (
            "output TASK HOST [stderr] [PAGE]" in listing["text"]
            and "history [RUNBOOK] [N]" in listing["text"]
        )
        one = (await ask(operator, "help pick", "h2"))["payload"]
        assert one["data"]["help"]["runbook"]["usage"] == "run pick host=H color=red|green|blue [times=1..9]"
        assert one["data"]["help"]["runbook"]["params"][0]["choices"] == ["red", "green", "blue"]
        assert (
            "run pick host=H color=red|green|blue [times=1..9]" in one["text"]
            and "which color" in one["text"]
        )
        # Another room's runbook is answered exactly as an unknown one: nothing leaks across rooms.
        hidden = (await ask(operator, "help other_room", "h3"))["payload"]
        unknown = (await ask(operator, "help no_such", "h4"))["payload"]
        assert hidden["error"] == unknown["error"] and hidden["error"]["code"] == "RUNBOOK_NOT_RUNNABLE"
        refused = (await ask(operator, "run pick host=h1 color=purple", "h5"))["payload"]
        assert refused["error"]["code"] == "INVALID_ARGUMENTS"
        assert "red, green, blue" in refused["error"]["message"] and "purple" not in refused["text"]
    finally:
        await app.stop()


async def test_history_answers_only_with_the_rooms_own_runs_newest_first(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    add_runbooks(agent_home)
    app = await start(agent_home, relay)
    try:
        await ask(operator, "run pick host=h1 color=red", "r1")
        await ask(operator, "run echo_args host=h2 'value=password=hunter22'", "r2", user="park")
        await ask(operator, "run other_room host=h1", "r3", room="other")
        await ask(operator, "run pick host=down color=blue", "r4")
        mine = (await ask(operator, "history", "q1"))["payload"]
        runs = mine["data"]["history"]
        assert [r["task_id"] for r in runs] == ["r4", "r2", "r1"]  # not r3: it ran in another room
        assert runs[0]["status"] == "UNREACHABLE" and runs[2]["args"] == {"color": "red"}
        assert runs[1]["user_id"] == "park" and "hunter22" not in json.dumps(
            mine
        )  # args as the audit log keeps them
        assert "r3" not in mine["text"] and "pick color=red" in mine["text"] and "KST" in mine["text"]
        only = (await ask(operator, "history pick 1", "q2"))["payload"]["data"]["history"]
        assert [r["task_id"] for r in only] == ["r4"]
        theirs = (await ask(operator, "history", "q3", room="other"))["payload"]["data"]["history"]
        assert [r["task_id"] for r in theirs] == ["r3"]
        bad = (await ask(operator, "history pick 500", "q4"))["payload"]
        assert bad["error"]["code"] == "INVALID_ARGUMENTS"
    finally:
        await app.stop()


async def test_pending_cancel_and_decisions_say_what_they_concern(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    configure(agent_home, ACCESS)
    app = await start(agent_home, relay)
    try:
        await operator.send(parse_chat("run approved_change host=h1 note=v1", "p1", "ops", "kim"))
        held = await operator.wait_for(
            lambda e: e.get("event") == "TASK_PENDING_APPROVAL" and e["task_id"] == "p1"
        )
        code = held["payload"]["code"]
        await operator.send(parse_chat("run approved_change host=h2 note=v2", "p2", "ops", "park"))
        held2 = await operator.wait_for(
            lambda e: e.get("event") == "TASK_PENDING_APPROVAL" and e["task_id"] == "p2"
        )
        listed = (await ask(operator, "pending", "l1", user="lee"))["payload"]
        assert [p["code"] for p in listed["data"]["pending"]] == [code, held2["payload"]["code"]]
        assert listed["data"]["pending"][0]["requested_by"] == "kim" and code in listed["text"]
        assert (await ask(operator, "pending", "l2", room="other"))["payload"]["data"]["pending"] == []

        assert (await ask(operator, f"cancel {code}", "c1", user="park"))["payload"]["error"][
            "code"
        ] == "UNAUTHORIZED"
        cancelled = (await ask(operator, f"cancel {code}", "c2", user="kim"))["payload"]
        assert (
            cancelled["data"]["cancelled"] == "p1" and "approved_change @ h1 (note=v1)" in cancelled["text"]
        )
        final = await operator.finished("p1")
        assert final["payload"]["error"]["code"] == "CANCELLED"
        rejected = (await ask(operator, f"reject {held2['payload']['code']}", "j1", user="lee"))["payload"]
        assert rejected["data"] == {"rejected": "p2", "runbook": "approved_change", "hosts": ["h2"],
                                    "args": {"note": "v2"}, "requested_by": "park"}  # fmt: skip
        assert "approved_change @ h2 (note=v2)" in rejected["text"]
        assert (await operator.finished("p2"))["payload"]["error"]["code"] == "REJECTED"
        assert (await ask(operator, "pending", "l3"))["payload"]["data"]["pending"] == []
        assert (await ask(operator, f"cancel {code}", "c3"))["payload"]["error"]["code"] == "APPROVAL_UNKNOWN"
    finally:
        await app.stop()


async def test_a_long_run_posts_progress_then_its_answer(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    configure(agent_home, "progress_after = 0.5\n")  # appended to the [tasks] table, last in the file
    app = await start(agent_home, relay)
    try:
        await operator.send(parse_chat("run sleeper host=h1 host=h2 marker=prog1", "s1"))
        final = await operator.finished("s1")
        progress = operator.of("s1", "TASK_PROGRESS")
        assert progress[0]["payload"]["kind"] == "running" and progress[0]["payload"]["total"] == 2
        assert progress[0]["payload"]["text"].startswith("⏳ sleeper")
        hosts = [p["payload"] for p in progress[1:]]
        # One line per host that ended after the "still running" line, but none for the last: its answer follows.
        assert len(hosts) <= 1 and all(
            h["kind"] == "host" and h["done"] == 1 and h["total"] == 2 for h in hosts
        )
        assert operator.events.index(progress[-1]) < operator.events.index(final)
    finally:
        await app.stop()


async def test_liveness_notices_and_commands_sent_while_the_agent_is_away(agent_home: Path) -> None:
    relay = Relay(agent_token=RELAY_TOKEN, settings=RelaySettings(offline_wait=30, offline_notice_after=0))
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    operator = await connect_operator(relay)
    try:
        await operator.send(parse_chat("run echo_args host=h1 value=early", "w1"))
        queued = await operator.wait_for(
            lambda e: e.get("event") == "RELAY_NOTICE" and e.get("task_id") == "w1"
        )
        assert queued["payload"]["kind"] == "queued" and queued["room_id"] == "ops"
        app = await start(agent_home, relay)
        try:
            assert (await operator.finished("w1"))["payload"][
                "status"
            ] == "SUCCESS"  # delivered once it was back
            back = await operator.wait_for(lambda e: e.get("payload", {}).get("kind") == "agent_back")
            assert back["payload"]["delivered"] == 1
            started = await operator.wait_for(lambda e: e.get("payload", {}).get("kind") == "agent")
            assert started["payload"]["state"] == "started" and started["room_id"] == "ops"
            digest = app.app.catalog.report.lock.catalog_sha256[:12]  # type: ignore[union-attr]
            assert digest in started["payload"]["text"]
        finally:
            await app.stop()
        stopping = await operator.wait_for(lambda e: e.get("payload", {}).get("state") == "stopping")
        assert stopping["event"] == "REPORT"
        gone = await operator.wait_for(lambda e: e.get("payload", {}).get("kind") == "agent_offline")
        assert "test-agent" in gone["payload"]["text"]
        relay.settings.offline_wait = 0  # refuse at once
        await operator.send(parse_chat("run echo_args host=h1 value=late", "w2"))
        refused = await operator.finished("w2")
        assert refused["payload"]["error"]["code"] == "AGENT_OFFLINE" and refused["from_relay"] is True
        relay.settings.offline_wait = 0.2  # queue, then give up
        await operator.send(parse_chat("run echo_args host=h1 value=later", "w3"))
        expired = await operator.finished("w3")
        assert expired["payload"]["error"]["code"] == "AGENT_OFFLINE" and "w3" not in relay.pending
    finally:
        await operator.close()
        await relay.stop()


def second_home(home: Path, tmp_path_factory: pytest.TempPathFactory, agent_id: str) -> Path:
    other = tmp_path_factory.mktemp(agent_id)
    shutil.copytree(home / "runbooks", other / "runbooks")
    shutil.copy(home / "runbooks.lock", other / "runbooks.lock")
    config = (
        (home / "agent.toml")
        .read_text(encoding="utf-8")
        .replace('agent_id = "test-agent"', f'agent_id = "{agent_id}"')
    )
    (other / "agent.toml").write_text(config, encoding="utf-8", newline="\n")
    return other


async def test_several_agents_are_routed_by_room_and_a_duplicate_id_is_refused_without_flapping(
    agent_home: Path, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    settings = RelaySettings(
        agents={"test-agent": AgentRoute(rooms=["ops"]), "site-b": AgentRoute(rooms=["ops-b"])}
    )
    relay = Relay(agent_token=RELAY_TOKEN, settings=settings)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    operator = await connect_operator(relay)
    home_b = second_home(agent_home, tmp_path_factory, "site-b")
    home_dup = second_home(agent_home, tmp_path_factory, "test-agent")
    a = await start(agent_home, relay)
    b = RunningApp.of(home_b / "agent.toml", agent_environ(relay))
    dup = None
    try:
        await eventually(
            lambda: relay.agents.get("site-b") is not None and relay.agents["site-b"].connection is not None,
            10,
            what="site-b in the relay's table",
        )
        await ask(operator, "run echo_args host=h1 value=for-a", "m1")
        await ask(operator, "run echo_args host=h1 value=for-b", "m2", room="ops-b")
        audit_a = (agent_home / "var" / "audit.jsonl").read_text(encoding="utf-8")
        audit_b = (home_b / "var" / "audit.jsonl").read_text(encoding="utf-8")
        assert '"m1"' in audit_a and '"m2"' not in audit_a and '"m2"' in audit_b and '"m1"' not in audit_b
        nobody = (await ask(operator, "help", "m3", room="nowhere"))["payload"]
        assert nobody["error"]["code"] == "NO_AGENT"

        first = relay.agents["test-agent"].connection
        dup = RunningApp.of(home_dup / "agent.toml", agent_environ(relay))
        await eventually(
            lambda: "same agent_id is connected" in caplog.text,
            10,
            what="the duplicate was refused and said why",
        )
        relay_side = [
            r
            for r in caplog.records
            if r.name == "agent.reference.relay" and "second connection" in r.getMessage()
        ]
        agent_side = [
            r for r in caplog.records if r.name == "agent.shell.link" and "same agent_id" in r.getMessage()
        ]
        assert relay_side[0].levelname == "ERROR" and agent_side[0].levelname == "ERROR"
        assert str(CLOSE_DUPLICATE_AGENT) in agent_side[0].getMessage()
        refused_at = caplog.records.index(agent_side[0])
        after = [r.getMessage() for r in caplog.records[refused_at:] if r.name == "agent.shell.link"]
        retry = next(m for m in after if m.startswith("reconnecting in"))
        assert retry == "reconnecting in 2.0 s"  # the longest backoff of this config, not a tight loop
        assert relay.agents["test-agent"].connection is first and a.app.link.connects == 1
        assert (await ask(operator, "run echo_args host=h1 value=still-a", "m4"))["payload"][
            "status"
        ] == "SUCCESS"
    finally:
        if dup is not None:
            await dup.stop()
        await b.stop()
        await a.stop()
        await operator.close()
        await relay.stop()


async def test_a_changed_catalog_or_approver_key_is_told_to_the_room_even_across_relay_restarts(
    agent_home: Path, tmp_path: Path
) -> None:
    state = tmp_path / "relay-state" / "known.json"
    settings = RelaySettings(state_file=state)
    relay = Relay(agent_token=RELAY_TOKEN, settings=settings)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    app = await start(agent_home, relay)
    await app.stop()
    await relay.stop()
    assert json.loads(state.read_text(encoding="utf-8"))["test-agent"]["approver_keys"] == []

    _, line = generate_key_pair(tmp_path / "mallory", "mallory", None)
    add_runbooks(agent_home)  # and the catalog changes too (a relock on the agent PC)
    config = agent_home / "agent.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('agent_id = "test-agent"\n',
                                                 f'agent_id = "test-agent"\n[catalog]\napprover_keys = ["{line}"]\n'), encoding="utf-8", newline="\n")  # fmt: skip
    relay = Relay(agent_token=RELAY_TOKEN, settings=RelaySettings(state_file=state))  # a restarted relay
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    operator = await connect_operator(relay)
    app = await start(agent_home, relay)
    try:
        hello = relay.hello
        assert hello is not None and len(hello["payload"]["approver_keys"]) == 1
        fingerprint = hello["payload"]["approver_keys"][0]
        assert fingerprint.startswith("SHA256:")
        notice = await operator.wait_for(lambda e: e.get("payload", {}).get("kind") == "agent_changed")
        assert notice["room_id"] == "ops" and fingerprint in notice["payload"]["text"]
        assert notice["payload"]["after"]["approver_keys"] == [fingerprint]
        before, after = notice["payload"]["before"]["catalog_sha256"], hello["payload"]["catalog_sha256"]
        assert before != after and f"{before[:12]} → {after[:12]}" in notice["payload"]["text"]
    finally:
        await app.stop()
        await operator.close()
        await relay.stop()


async def test_agent_chat_sends_one_line_with_the_operator_token(agent_home: Path) -> None:
    add_runbooks(agent_home)
    relay = Relay(agent_token=RELAY_TOKEN, operator_token="operator-token-0123456789")
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    app = await start(agent_home, relay)
    url = f"ws://127.0.0.1:{relay.port}/operator"  # type: ignore[attr-defined]
    env = {**os.environ, "AGENT_OPERATOR_TOKEN": "operator-token-0123456789"}

    async def chat(*args: str, environ: dict[str, str]) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "chat", "--relay", url, "--room", "ops", "--user", "kim", *args,
            cwd=ROOT, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    try:
        code, out, _ = await chat("help", "pick", environ=env)
        assert code == 0 and "run pick host=H color=red|green|blue [times=1..9]" in out
        code, out, _ = await chat("run pick host=h1 color=purple", environ=env)
        assert code == 1 and "INVALID_ARGUMENTS" in out
        code, _, err = await chat(
            "help", environ={k: v for k, v in env.items() if k != "AGENT_OPERATOR_TOKEN"}
        )
        assert code == 2 and "refused" in err and "Traceback" not in err
        code, _, err = await chat("frobnicate", environ=env)
        assert code == 2 and "unknown command 'frobnicate'" in err and "help" in err  # nothing sent
    finally:
        await app.stop()
        await relay.stop()


@pytest.mark.parametrize(
    ("text", "problem"),
    [("offline_wait = -1\n", "offline_wait"), ("[agents.a]\nrooms = [\"ops\"]\n[agents.b]\nrooms = [\"ops\"]\n",
      "a room is mapped to two agents"), ("agents = 3 =\n", "relay.toml")],
)  # fmt: skip
def test_a_bad_relay_config_is_refused_with_its_problem(
    agent_cli: Any, tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(text, encoding="utf-8", newline="\n")
    result = agent_cli("relay", "--port", "0", "--config", str(config))
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output


def test_grouped_reports_remind_and_respect_quiet_hours(tmp_path: Path, agent_home: Path) -> None:
    configure(agent_home, '\n[checks.was]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 9\n\n[checks.db]\nkind = "tcp"\n'
                          'host = "127.0.0.1"\nport = 9\n\n[[schedules]]\nname = "health"\nchecks = ["was", "db"]\n'
                          'interval = 60\nremind_after = 1800\nquiet_hours = "22:00-07:00"\n')  # fmt: skip
    config = load_config(agent_home / "agent.toml")
    sent: list[dict[str, Any]] = []
    outbox = Outbox(tmp_path / "state.sqlite3")
    scheduler = CheckScheduler(config, None, outbox, lambda room, payload: sent.append(payload))  # type: ignore[arg-type]
    schedule = scheduler.schedules["health"]
    kst = ZoneInfo("Asia/Seoul")
    day = dt.datetime(2026, 11, 27, 12, 0, tzinfo=kst).timestamp()
    down, ok = CheckResult(CheckStatus.DOWN, "refused"), CheckResult(CheckStatus.OK, "up")

    def run(now: float, was: CheckResult, db: CheckResult) -> None:
        items = [
            i
            for i in (
                scheduler._record(schedule, "was", was, now),
                scheduler._record(schedule, "db", db, now),
            )
            if i
        ]
        scheduler._send_grouped(schedule, items, now)

    run(day, ok, ok)  # first OK: nothing to say
    run(day + 60, down, down)  # both down: ONE message for the run
    assert len(sent) == 1 and [c["check"] for c in sent[0]["checks"]] == ["was", "db"]
    assert sent[0]["kind"] == "schedule" and sent[0]["schedule"] == "health" and sent[0]["at"] == day + 60
    run(day + 120, down, down)  # still down: quiet until remind_after
    assert len(sent) == 1
    run(day + 60 + 1800, down, ok)  # 30 min later: a reminder for was, the recovery of db, in one message
    was, db = sent[1]["checks"]
    assert was["reminder"] and was["failing_since"] == day + 60 and db["recovered"]
    night = dt.datetime(2026, 11, 27, 23, 30, tzinfo=kst).timestamp()
    assert in_quiet_hours("22:00-07:00", night, "Asia/Seoul") and not in_quiet_hours(
        "22:00-07:00", day, "Asia/Seoul"
    )
    run(night, ok, down)  # at night: the failure goes out at once, the recovery waits
    assert [c["check"] for c in sent[2]["checks"]] == ["db"] and sent[2]["quiet_collected"] == []
    morning = dt.datetime(2026, 11, 28, 7, 0, tzinfo=kst).timestamp()
    run(morning, ok, down)  # after the quiet hours: what they held back, collected into this run's message
    assert [c["check"] for c in sent[3]["quiet_collected"]] == ["was"] and sent[3]["quiet_collected"][0][
        "recovered"
    ]
    run(morning + 60, ok, down)
    assert len(sent) == 4  # said once
    outbox.close()


async def test_progress_says_still_running_then_one_line_per_host_but_the_last() -> None:
    from types import SimpleNamespace

    from agent.actions.dispatch import _Progress
    from agent.runs.results import HostResult, Outcome

    lines: list[dict[str, Any]] = []
    ctx = SimpleNamespace(progress=lines.append)
    progress = _Progress(ctx, after=3600)  # type: ignore[arg-type]
    progress.start(SimpleNamespace(name="restart", hosts=["a", "b", "c"]))  # type: ignore[arg-type]
    progress.host_done(HostResult("a", Outcome.SUCCESS, 0, 1.0))  # before the mark: said in the answer only
    progress._still_running()  # the mark passes (the timer, fired by hand)
    progress.host_done(HostResult("b", Outcome.FAIL, 2, 12.0))
    progress.host_done(HostResult("c", Outcome.SUCCESS, 0, 13.0))  # the last: its answer follows at once
    progress.stop()
    assert [(p["kind"], p.get("host"), p["done"]) for p in lines] == [("running", None, 1), ("host", "b", 2)]
    assert lines[0]["finished"] == ["a"] and lines[1]["status"] == "FAIL" and lines[1]["total"] == 3


@pytest.mark.parametrize(
    ("line", "action", "params"),
    [
        ("도움말", "HELP", {}),
        ("도움말 tail_log", "HELP", {"runbook": "tail_log"}),
        ("실행 disk_usage host=was01 mount=/", "RUN_RUNBOOK",
         {"runbook": "disk_usage", "hosts": ["was01"], "args": {"mount": "/"}}),
        ("이력 3", "HISTORY", {"limit": 3}),
        ("승인 ABCDEF", "APPROVE", {"code": "ABCDEF"}),
        ("반려 ABCDEF", "REJECT", {"code": "ABCDEF"}),
        ("점검 was", "RUN_CHECK", {"check": "was"}),
    ],
)  # fmt: skip
def test_korean_command_words_mean_the_english_ones(line: str, action: str, params: dict[str, Any]) -> None:
    packet = parse_chat(line, "k-1")
    assert packet["action"] == action and packet.get("params", {}) == params


def test_an_unknown_word_is_named_with_a_pointer_to_help_not_a_grammar_dump() -> None:
    with pytest.raises(ValueError) as refused:
        parse_chat("재시작 was01", "k-2")
    text = Chat("ko").text(message_of(refused.value))
    assert "재시작" in text and "help" in text and "run NAME" not in text
