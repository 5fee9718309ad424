"""The operator's day in the room (issue 28, items 2-4): the servers and checks a room can use, Korean command words
and typo suggestions, stopping a running runbook on every host, and running a run again on its failed hosts.
Against the real relay, the real agent and real sshd; the grammar and the renderers as tables and properties."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.actions.operations import _may_stop, failed_run
from agent.catalog.store import Catalog
from agent.chat.i18n import Chat, message_of
from agent.chat.operations import cron_words, every, render_checks_list
from agent.chat.render import render_report
from agent.checks import CheckResult, CheckStatus, alerts
from agent.checks.scheduler import CheckScheduler
from agent.config.schema import load_config
from agent.errors import NotAuthorized
from agent.reference.chat import parse_chat
from agent.reference.relay import Relay
from agent.state.outbox import Outbox
from tests.conftest import Operator
from tests.sshd import free_port
from tests.test_console import ACCESS, ask, configure, start
from tests.test_executor_survivors import kill_all, live_processes
from tests.waiting import eventually

KO = Chat("ko")
EN = Chat("en")

# -- the grammar ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "action", "params"),
    [
        ("서버", "HOSTS", {}),
        ("hosts", "HOSTS", {}),
        ("servers", "HOSTS", {}),
        ("점검", "CHECKS", {}),
        ("점검 목록", "CHECKS", {}),
        ("점검목록", "CHECKS", {}),
        ("checks", "CHECKS", {}),
        ("check", "CHECKS", {}),
        ("점검 was", "RUN_CHECK", {"check": "was"}),
        ("중지 chat-1a2b3c-4", "STOP", {"task_id": "chat-1a2b3c-4"}),
        ("stop t-1", "STOP", {"task_id": "t-1"}),
        ("재실행 t-1 실패", "RERUN", {"task_id": "t-1", "hosts": "failed"}),
        ("rerun t-1 failed", "RERUN", {"task_id": "t-1", "hosts": "failed"}),
        ("rerun t-1", "RERUN", {"task_id": "t-1", "hosts": "failed"}),
        ("approve abcdef", "APPROVE", {"code": "ABCDEF"}),
        ("승인 k7p2qx", "APPROVE", {"code": "K7P2QX"}),
        ("반려 k7p2qx", "REJECT", {"code": "K7P2QX"}),
        ("취소 k7p2qx", "CANCEL", {"code": "K7P2QX"}),
    ],
)  # fmt: skip
def test_every_command_has_its_korean_word_and_codes_in_any_case(
    line: str, action: str, params: dict[str, Any]
) -> None:
    packet = parse_chat(line, "k-1")
    assert packet["action"] == action and packet.get("params", {}) == params


@pytest.mark.parametrize(("typed", "meant"), [("histroy", "history"), ("hosst", "hosts"), ("stpo", "stop"),
                                               ("재실헹", "재실행"), ("pendng", "pending")])  # fmt: skip
def test_a_mistyped_command_word_is_answered_with_the_word_meant(typed: str, meant: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_chat(f"{typed} x", "k-2")
    text = KO.text(message_of(refused.value))
    assert typed in text and meant in text and "help" in text


def test_a_wrong_word_count_shows_that_commands_usage_only() -> None:
    with pytest.raises(ValueError) as refused:
        parse_chat("stop", "k-3")
    text = KO.text(message_of(refused.value))
    assert "stop TASK" in text and "run NAME" not in text
    with pytest.raises(ValueError) as refused:
        parse_chat("재실행 t-1 전부", "k-4")
    assert "재실행 TASK 실패" in KO.text(message_of(refused.value))


@given(st.text(max_size=60))
def test_any_typed_line_is_a_packet_or_a_usage_error(line: str) -> None:
    try:
        packet = parse_chat(line, "k-5")
    except ValueError as exc:
        assert KO.text(message_of(exc))  # always something to read
    else:
        assert packet["task_id"] == "k-5" and isinstance(packet["action"], str)


# -- schedules and checks in words ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "korean", "english"),
    [
        ("0 9 * * *", "매일 09:00 KST", "daily at 09:00 KST"),
        ("30 8 * * 1", "매주 월요일 08:30 KST", "every Monday at 08:30 KST"),
        ("0 18 * * 1-5", "평일 18:00 KST", "weekdays at 18:00 KST"),
        ("0 7 1 * *", "매월 1일 07:00 KST", "monthly on day 1 at 07:00 KST"),
        ("15 * * * *", "매시 15분", "every hour at minute 15"),
        ("*/10 * * * *", "10분마다", "every 10 minutes"),
        ("0 9 1-7 * 1", "크론 0 9 1-7 * 1 (KST)", "crontab 0 9 1-7 * 1 (KST)"),
    ],
)
def test_a_schedule_reads_as_words(line: str, korean: str, english: str) -> None:
    assert cron_words(KO, line, "KST") == korean and cron_words(EN, line, "KST") == english


@pytest.mark.parametrize(
    ("seconds", "korean"),
    [(300, "5분마다"), (60, "매분"), (3600, "매시간"), (86400, "매일"), (90, "90초마다")],
)
def test_an_interval_reads_as_words(seconds: float, korean: str) -> None:
    assert every(KO, seconds) == korean


@given(st.text(max_size=40), st.text(max_size=8))
def test_any_crontab_line_renders_without_raising(line: str, zone: str) -> None:
    assert cron_words(KO, line, zone)


def test_the_checks_list_says_what_each_looks_at_when_and_how_it_was_last() -> None:
    data = {
        "checks": [
            {"name": "was", "kind": "http", "schedules": [{"name": "s", "interval": 300}], "status": "DOWN",
             "failing_since": 1_790_000_000.0},
            {"name": "batch", "kind": "runbook", "schedules": [], "status": None, "failing_since": None},
        ],
        "summaries": [{"name": "daily", "cron": "0 9 * * *", "timezone": "KST"}],
    }  # fmt: skip
    text = render_checks_list(KO, data)
    assert "was (상태 페이지) — 5분마다 — 🔴 장애" in text and "KST부터" in text
    assert "batch (점검 스크립트) — 요청할 때만 — 아직 정기 점검 전" in text
    assert "매일 09:00 KST" in text and "check NAME" in text


# -- who may stop -----------------------------------------------------------------------------------------------


def _access(users: dict[str, list[str]]) -> Any:
    return SimpleNamespace(
        access=SimpleNamespace(roles_of=lambda user: set(users.get(user or "", [])) if users else None)
    )


@pytest.mark.parametrize(
    ("roles", "requires_approval", "allowed"),
    [
        (["operator"], False, True),
        (["viewer"], False, False),
        (["operator"], True, False),  # it took an approver to run: it takes one to stop
        (["approver"], True, True),
        (["approver"], False, True),
    ],
)
def test_who_may_run_a_runbook_may_stop_it(roles: list[str], requires_approval: bool, allowed: bool) -> None:
    config = _access({"kim": roles})
    manifest = SimpleNamespace(requires_approval=requires_approval, roles=["operator"])
    if allowed:
        _may_stop(config, "kim", manifest, "rb")  # type: ignore[arg-type]
    else:
        with pytest.raises(NotAuthorized) as refused:
            _may_stop(config, "kim", manifest, "rb")  # type: ignore[arg-type]
        assert "rb" in KO.text(message_of(refused.value))
    _may_stop(_access({}), None, manifest, "rb")  # type: ignore[arg-type]  # no users configured: the room decides


def test_a_rerun_takes_the_failed_hosts_of_its_own_rooms_run_and_never_a_masked_argument() -> None:
    run = {"kind": "run", "task_id": "t1", "room_id": "ops", "runbook": "rb", "args": {"a": "1"},
           "hosts": [{"host": "h1", "status": "SUCCESS"}, {"host": "h2", "status": "FAIL"},
                     {"host": "h3", "status": "STOPPED"}]}  # fmt: skip
    assert failed_run([run], "ops", "t1") == ("rb", ["h2", "h3"], {"a": "1"})
    assert isinstance(failed_run([run], "other", "t1"), str)  # another room's run: not found
    assert isinstance(failed_run([{**run, "hosts": [{"host": "h1", "status": "SUCCESS"}]}], "ops", "t1"), str)
    assert isinstance(failed_run([{**run, "args": {"a": "pw=[REDACTED]"}}], "ops", "t1"), str)


# -- against the real agent -------------------------------------------------------------------------------------

LONG_SH = '#!/usr/bin/env bash\nmarker="$1"\necho "started $marker"\n( exec -a "$marker-child" sleep 300 ) &\nexec -a "$marker-main" sleep 300\n'  # fmt: skip
LONG_TOML = """description = "Test: waits long, well inside its limit"
targets = ["web"]
rooms = ["ops"]
timeout = 120
roles = ["operator"]

[[params]]
name = "marker"
type = "identifier"
"""


def add_long_runbook(home: Path) -> None:
    (home / "runbooks" / "long_wait.sh").write_text(LONG_SH, encoding="utf-8", newline="\n")
    (home / "runbooks" / "long_wait.toml").write_text(LONG_TOML, encoding="utf-8", newline="\n")
    Catalog(home / "runbooks", home / "runbooks.lock").relock()


async def test_hosts_lists_the_rooms_servers_and_groups_and_checks_their_schedules(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    add_long_runbook(agent_home)
    h1 = load_config(agent_home / "agent.toml").inventory.hosts["h1"]
    configure(agent_home, f'\n[checks.ssh_h1]\nkind = "tcp"\nhost = "{h1.address}"\nport = {h1.port}\n\n'
                          '[[schedules]]\nname = "five"\nchecks = ["ssh_h1"]\ninterval = 300\n\n'
                          '[[schedules]]\nname = "morning"\nkind = "summary"\ncron = "0 9 * * *"\n')  # fmt: skip
    app = await start(agent_home, relay)
    try:
        hosts = (await ask(operator, "서버", "o1"))["payload"]
        names = [h["name"] for h in hosts["data"]["hosts"]]
        assert {"h1", "h2", "h3", "down", "stranger"} <= set(names)  # the test runbooks target "all"
        assert (
            next(h for h in hosts["data"]["hosts"] if h["name"] == "h1")["runbooks"].count("long_wait") == 1
        )
        assert hosts["data"]["groups"] == [{"name": "web", "members": ["h1", "h2"]}]
        assert h1.address not in json.dumps(hosts)  # aliases only, never an address
        assert "서버" in hosts["text"] and "web: h1, h2" in hosts["text"]
        # A room with no runbook of its own can target nothing.
        lobby = (await ask(operator, "hosts", "o2", room="lobby"))["payload"]
        assert lobby["data"] == {"hosts": [], "groups": []} and "서버" in lobby["text"]

        checks = (await ask(operator, "점검", "o3"))["payload"]
        (row,) = checks["data"]["checks"]
        assert row["name"] == "ssh_h1" and row["kind"] == "tcp" and row["status"] is None
        assert row["schedules"] == [{"name": "five", "interval": 300.0}]
        assert checks["data"]["summaries"][0]["cron"] == "0 9 * * *"
        assert "ssh_h1 (포트) — 5분마다" in checks["text"] and "매일 09:00" in checks["text"]
        await app.app.scheduler.fire("five")
        checks = (await ask(operator, "checks", "o4"))["payload"]
        assert checks["data"]["checks"][0]["status"] == "OK" and "정상" in checks["text"]
    finally:
        await app.stop()


async def test_stop_ends_a_running_runbook_on_every_host_and_says_who_stopped_it(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    add_long_runbook(agent_home)
    configure(agent_home, ACCESS.replace('park = ["operator"]', 'park = ["operator"]\nchoi = ["viewer"]'))
    app = await start(agent_home, relay)
    marker = "stopme4417"
    try:
        await operator.send(parse_chat(f"실행 long_wait host=web marker={marker}", "run1", "ops", "kim"))
        await eventually(lambda: len([p for p in live_processes(marker) if f"{marker}-main" in p[1]]) == 2,
                         what="the run on both hosts")  # fmt: skip
        # Not in another room, not by a viewer; an unknown task is the same answer as another room's.
        other = (await ask(operator, "stop run1", "x1", user="kim", room="other"))["payload"]
        unknown = (await ask(operator, "stop nothing-here", "x2", user="kim"))["payload"]
        assert other["error"] == unknown["error"] and other["error"]["code"] == "NOT_AVAILABLE"
        assert "이력" in other["text"] or "history" in other["text"]
        viewer = (await ask(operator, "중지 run1", "x3", user="choi"))["payload"]
        assert viewer["error"]["code"] == "UNAUTHORIZED" and "long_wait" in viewer["text"]

        stopped = (await ask(operator, "중지 run1", "x4", user="park"))["payload"]
        assert stopped["status"] == "SUCCESS" and stopped["data"]["stopped_by"] == "park"
        assert stopped["data"]["hosts"] == ["h1", "h2"] and "long_wait" in stopped["text"]
        final = (await operator.finished("run1"))["payload"]
        assert final["status"] == "FAIL" and final["data"]["status"] == "STOPPED"
        assert [h["status"] for h in final["data"]["hosts"]] == ["STOPPED", "STOPPED"]
        assert "중지됨" in final["text"] and "park님이 중지" in final["text"]
        # The host-side kill of a timeout: nothing the run started is left on the host.
        await eventually(lambda: live_processes(marker) == [], what="no survivors of the stopped run")
        audit = [json.loads(line) for line in (app.app.audit.path).read_text(encoding="utf-8").splitlines()]
        (entry,) = [e for e in audit if e["kind"] == "run_stopped"]
        assert entry["task_id"] == "run1" and entry["stopped_by"] == "park" and entry["user_id"] == "kim"
        run = next(e for e in audit if e["kind"] == "run" and e["task_id"] == "run1")
        assert [h["status"] for h in run["hosts"]] == ["STOPPED", "STOPPED"]
        # Once it ended, there is nothing left to stop.
        again = (await ask(operator, "stop run1", "x5", user="park"))["payload"]
        assert again["error"]["code"] == "NOT_AVAILABLE"
    finally:
        kill_all(marker)
        await app.stop()


async def test_rerun_runs_the_same_runbook_and_arguments_on_the_failed_hosts_only(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = await start(agent_home, relay)
    try:
        first = (await ask(operator, "run echo_args host=h1 host=down value=again", "r1"))["payload"]
        assert [h["status"] for h in first["data"]["hosts"]] == ["SUCCESS", "UNREACHABLE"]
        again = (await ask(operator, "재실행 r1 실패", "r2"))["payload"]
        assert [h["host"] for h in again["data"]["hosts"]] == ["down"]
        assert again["data"]["runbook"] == "echo_args"
        history = (await ask(operator, "history echo_args", "r3"))["payload"]["data"]["history"]
        assert history[0]["task_id"] == "r2" and history[0]["args"] == history[1]["args"]
        # Another room learns nothing of it; a run whose every host succeeded has nothing to redo.
        assert (await ask(operator, "rerun r1", "r4", room="other"))["payload"]["error"][
            "code"
        ] == "NOT_AVAILABLE"
        ok = (await ask(operator, "run echo_args host=h1 value=fine", "r5"))["payload"]
        assert ok["status"] == "SUCCESS"
        nothing = (await ask(operator, "rerun r5 failed", "r6"))["payload"]
        assert nothing["error"]["code"] == "NOT_AVAILABLE" and "성공" in nothing["text"]
    finally:
        await app.stop()


async def test_a_rerun_of_a_four_eyes_runbook_waits_for_an_approver_again(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    configure(agent_home, ACCESS)
    app = await start(agent_home, relay)
    try:
        await operator.send(parse_chat("run approved_change host=h1 host=down note=v1", "a1", "ops", "kim"))
        held = await operator.wait_for(
            lambda e: e.get("event") == "TASK_PENDING_APPROVAL" and e["task_id"] == "a1"
        )
        await ask(operator, f"approve {held['payload']['code'].lower()}", "a2", user="lee")  # any case
        first = (await operator.finished("a1"))["payload"]
        assert [h["status"] for h in first["data"]["hosts"]] == ["SUCCESS", "UNREACHABLE"]
        await operator.send(parse_chat("rerun a1 failed", "a3", "ops", "kim"))
        prompt = await operator.wait_for(
            lambda e: e.get("event") == "TASK_PENDING_APPROVAL" and e["task_id"] == "a3"
        )
        assert prompt["payload"]["hosts"] == ["down"] and prompt["payload"]["args"] == {"note": "v1"}
        await ask(operator, f"승인 {prompt['payload']['code']}", "a4", user="lee")
        final = (await operator.finished("a3"))["payload"]
        assert [h["host"] for h in final["data"]["hosts"]] == ["down"]
    finally:
        await app.stop()


async def test_help_and_run_suggest_the_runbook_meant(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    add_long_runbook(agent_home)
    app = await start(agent_home, relay)
    try:
        helped = (await ask(operator, "help long", "s1"))["payload"]
        assert helped["error"]["code"] == "RUNBOOK_NOT_RUNNABLE" and "long_wait" in helped["text"]
        ran = (await ask(operator, "run long_wiat host=h1 marker=m", "s2"))["payload"]
        assert ran["error"]["code"] == "RUNBOOK_NOT_RUNNABLE" and "long_wait" in ran["text"]
        far = (await ask(operator, "help zzzz", "s3"))["payload"]
        assert "long_wait" not in far["text"]
    finally:
        await app.stop()


# -- alerts: acknowledge, mute ----------------------------------------------------------------------------------


def test_an_ack_silences_reminders_until_the_state_changes_and_a_mute_everything_until_its_time(
    tmp_path: Path, agent_home: Path
) -> None:
    configure(agent_home, '\n[checks.was]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 9\n\n[[schedules]]\n'
                          'name = "health"\nchecks = ["was"]\ninterval = 60\nremind_after = 600\n')  # fmt: skip
    config = load_config(agent_home / "agent.toml")
    sent: list[dict[str, Any]] = []
    outbox = Outbox(tmp_path / "state.sqlite3")
    scheduler = CheckScheduler(config, None, outbox, lambda room, payload: sent.append(payload))  # type: ignore[arg-type]
    schedule = scheduler.schedules["health"]
    down, warn, ok = (CheckResult(CheckStatus.DOWN, "refused"), CheckResult(CheckStatus.WARN, "slow"),
                      CheckResult(CheckStatus.OK, "up"))  # fmt: skip
    t = 1_790_000_000.0

    def run(now: float, result: CheckResult) -> list[str]:
        item = scheduler._record(schedule, "was", result, now)
        return [] if item is None else [item["status"] + (" reminder" if item["reminder"] else "")]

    assert run(t, down) == ["DOWN"]
    assert run(t + 700, down) == ["DOWN reminder"]  # not acknowledged: reminded
    alerts.set_ack(outbox, "was", alerts.Ack("kim", "DOWN", t + 701))
    assert run(t + 1400, down) == [] and run(t + 2100, down) == []  # acknowledged: no reminders
    assert alerts.view(outbox, "was", t + 2100) == {"acked_by": "kim"}
    assert run(t + 2160, warn) == ["WARN"]  # a change is told, and ends the acknowledgement
    assert alerts.ack_of(outbox, "was") is None
    assert run(t + 2900, warn) == ["WARN reminder"]
    alerts.set_mute(outbox, "was", alerts.Mute("lee", t + 6000, t + 2900))
    assert (
        run(t + 3000, down) == [] and run(t + 3700, down) == [] and run(t + 4000, ok) == []
    )  # muted: nothing
    assert alerts.view(outbox, "was", t + 4000) == {"muted_until": t + 6000, "muted_by": "lee"}
    assert run(t + 6060, down) == ["DOWN"]  # the window is over: told again
    assert alerts.view(outbox, "was", t + 6060) == {}
    outbox.close()


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("1d", 86400), ("90분", 5400),
                                               ("2시간", 7200), ("1일", 86400), ("2", None), ("h", None),
                                               ("-1h", None), ("1.5h", None)])  # fmt: skip
def test_a_mute_duration_reads_in_english_or_korean_units(text: str, seconds: float | None) -> None:
    assert alerts.parse_duration(text) == seconds


@given(st.text(max_size=20))
def test_any_duration_text_is_seconds_or_none(text: str) -> None:
    seconds = alerts.parse_duration(text)
    assert seconds is None or seconds >= 0


def test_the_summary_and_the_checks_list_name_who_acknowledged_and_who_muted() -> None:
    report = {"kind": "summary", "status": "DOWN", "message": "x", "checks": {
        "was": {"status": "DOWN", "runs": 3, "not_ok": 3, "acked_by": "kim"},
        "db": {"status": "OK", "runs": 3, "not_ok": 0, "muted_until": 1_790_003_600.0, "muted_by": "lee"}}}  # fmt: skip
    text = render_report(KO, report)
    assert "확인: kim님" in text and "알림 꺼짐 (lee님)" in text and "KST까지" in text


async def test_operators_ack_mute_and_unmute_a_check_from_the_room_audited(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    closed = free_port()
    configure(agent_home, ACCESS.replace('park = ["operator"]', 'park = ["operator"]\nchoi = ["viewer"]')
              + f'\n[checks.gone]\nkind = "tcp"\nhost = "127.0.0.1"\nport = {closed}\ntimeout = 1.0\n\n'
              f'[checks.idle]\nkind = "tcp"\nhost = "127.0.0.1"\nport = {closed}\n\n'
              '[[schedules]]\nname = "health"\nchecks = ["gone"]\ninterval = 300\n')  # fmt: skip
    app = await start(agent_home, relay)
    try:
        assert app.app.scheduler is not None
        await app.app.scheduler.fire("health")
        viewer = (await ask(operator, "확인 gone", "k1", user="choi"))["payload"]
        assert viewer["error"]["code"] == "UNAUTHORIZED"
        never = (await ask(operator, "ack idle", "k2"))["payload"]  # never run on a schedule: nothing to ack
        assert never["error"]["code"] == "NOT_AVAILABLE" and "idle" in never["text"]
        unknown = (await ask(operator, "ack nosuch", "k3"))["payload"]
        assert unknown["error"]["code"] == "INVALID_ARGUMENTS" and "점검" in unknown["text"]

        acked = (await ask(operator, "확인 gone", "k4", user="kim"))["payload"]
        assert acked["data"]["acked_by"] == "kim" and acked["data"]["status"] == "DOWN"
        assert "kim님이 gone 점검" in acked["text"]
        muted = (await ask(operator, "알림끄기 gone 2시간", "k5", user="park"))["payload"]
        assert muted["data"]["muted_by"] == "park" and muted["data"]["muted_until"] is not None
        assert "알림켜기 gone" in muted["text"]
        listed = (await ask(operator, "점검", "k6"))["payload"]
        row = next(r for r in listed["data"]["checks"] if r["name"] == "gone")
        assert row["acked_by"] == "kim" and row["muted_by"] == "park"
        assert "확인: kim님" in listed["text"] and "(park님)" in listed["text"]
        unmuted = (await ask(operator, "알림켜기 gone", "k7", user="lee"))["payload"]
        assert unmuted["data"]["muted_until"] is None and "다시" in unmuted["text"]
        audit = [json.loads(line) for line in app.app.audit.path.read_text(encoding="utf-8").splitlines()]
        kinds = [(e["kind"], e.get("user_id")) for e in audit if e["kind"].startswith("check_")]
        assert kinds == [("check_acked", "kim"), ("check_muted", "park"), ("check_unmuted", "lee")]
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("action", "params", "code"),
    [
        ("STOP", {}, "INVALID_ARGUMENTS"),  # params.task_id, refused at parse time, naming the field
        ("STOP", {"task_id": "bad id!"}, "INVALID_ARGUMENTS"),
        ("RERUN", {}, "INVALID_ARGUMENTS"),
        ("RERUN", {"task_id": "t-1", "hosts": "all"}, "INVALID_ARGUMENTS"),
        ("RERUN", {"task_id": "t-never"}, "NOT_AVAILABLE"),
        ("MUTE_CHECK", {"check": "nosuch", "seconds": 600}, "INVALID_ARGUMENTS"),
        ("ACK_CHECK", {"check": ["list"]}, "INVALID_ARGUMENTS"),
        ("UNMUTE_CHECK", {}, "INVALID_ARGUMENTS"),
    ],
)
async def test_new_actions_refuse_bad_params_saying_what_to_do(
    agent_home: Path, relay: Relay, operator: Operator, action: str, params: dict[str, Any], code: str
) -> None:
    app = await start(agent_home, relay)
    try:
        await operator.send({"action": action, "task_id": "bad-1", "room_id": "ops", "params": params})
        payload = (await operator.finished("bad-1"))["payload"]
        assert payload["status"] == "FAIL" and payload["error"]["code"] == code
        assert "bad id!" not in payload["text"] and payload["text"].startswith("❌")
    finally:
        await app.stop()


async def test_a_mute_out_of_range_is_refused(agent_home: Path, relay: Relay, operator: Operator) -> None:
    configure(agent_home, '\n[checks.port]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 9\n')
    app = await start(agent_home, relay)
    try:
        for task, seconds in (("m1", 5), ("m2", 30 * 86400), ("m3", True)):
            await operator.command("MUTE_CHECK", task, check="port", seconds=seconds)
            payload = (await operator.finished(task))["payload"]
            assert payload["error"]["code"] == "INVALID_ARGUMENTS" and "7일" in payload["text"]
    finally:
        await app.stop()


async def test_the_scheduled_summary_carries_who_acknowledged_and_who_muted(
    tmp_path: Path, agent_home: Path
) -> None:
    configure(agent_home, '\n[checks.was]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 9\n\n[checks.db]\nkind = "tcp"\n'
                          'host = "127.0.0.1"\nport = 9\n\n[[schedules]]\nname = "daily"\nkind = "summary"\n'
                          'cron = "0 9 * * *"\n')  # fmt: skip
    config = load_config(agent_home / "agent.toml")

    class Runner:
        names = ("was", "db")

        async def run(self, name: str, room: str | None = None) -> CheckResult:
            return CheckResult(CheckStatus.DOWN, "refused")

    sent: list[dict[str, Any]] = []
    outbox = Outbox(tmp_path / "state.sqlite3")
    scheduler = CheckScheduler(config, Runner(), outbox, lambda room, payload: sent.append(payload))  # type: ignore[arg-type]
    alerts.set_ack(outbox, "was", alerts.Ack("kim", "DOWN", 1.0))
    alerts.set_mute(outbox, "db", alerts.Mute("lee", 4_000_000_000.0, 1.0))
    await scheduler.fire("daily")
    (summary,) = sent
    assert summary["checks"]["was"]["acked_by"] == "kim" and "muted_until" not in summary["checks"]["was"]
    assert (
        summary["checks"]["db"]["muted_by"] == "lee"
        and summary["checks"]["db"]["muted_until"] == 4_000_000_000.0
    )
    text = render_report(KO, summary)
    assert "확인: kim님" in text and "알림 꺼짐 (lee님)" in text
    outbox.close()
