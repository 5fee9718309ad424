"""One run path: chat, RUN_CHECK, schedules and the CLI authorize, redact and audit a runbook alike (real sshd)."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.catalog.store import Catalog
from agent.cli import main
from agent.config.schema import load_config
from agent.reference.relay import Relay
from agent.shell.app import App
from agent.state.outbox import Outbox, TaskState
from tests.conftest import Operator, RunningApp, agent_environ
from tests.sshd import SshFleet
from tests.waiting import eventually

pytestmark = pytest.mark.external_service

#: A manifest rule of echo_args: its first output line, which the global rules leave alone.
MANIFEST_RULE = '\n[[redact]]\nname = "argc"\npattern = "argc=[0-9]{1,6}"\nreplacement = "[ARGC]"\n'


def audit(home: Path) -> list[dict[str, Any]]:
    path = home / "var" / "audit.jsonl"
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


def cli(home: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["-c", str(home / "agent.toml"), *args], catch_exceptions=False)


def add_manifest_rule(home: Path) -> None:
    manifest = home / "runbooks" / "echo_args.toml"
    manifest.write_text(manifest.read_text(encoding="utf-8") + MANIFEST_RULE, encoding="utf-8", newline="\n")
    Catalog(home / "runbooks", home / "runbooks.lock").relock()


def test_cli_refuses_a_runbook_that_needs_approval_and_audits_the_refusal(agent_home: Path) -> None:
    result = cli(agent_home, "runbooks", "run", "approved_change", "--host", "h1", "--arg", "note=x")
    assert result.exit_code == 1
    assert "approval" in result.stderr and "Traceback" not in result.output
    (refused,) = [e for e in audit(agent_home) if e["kind"] == "run_refused"]
    assert refused["via"] == "cli" and refused["user_id"] == getpass.getuser()
    assert refused["runbook"] == "approved_change"
    assert not [e for e in audit(agent_home) if e["kind"] == "run"]  # nothing ran


def test_cli_runs_are_audited_and_redacted_with_the_manifests_rules(agent_home: Path) -> None:
    add_manifest_rule(agent_home)
    result = cli(agent_home, "runbooks", "run", "echo_args", "--host", "h1", "--arg", "value=x", "--json")
    assert result.exit_code == 0, result.output
    stdout = json.loads(result.stdout)["hosts"][0]["stdout"]
    assert "[ARGC]" in stdout and "argc=" not in stdout
    (run,) = [e for e in audit(agent_home) if e["kind"] == "run"]
    assert (
        run["via"] == "cli" and run["user_id"] == getpass.getuser() and run["hosts"][0]["status"] == "SUCCESS"
    )


def test_a_run_whose_audit_log_cannot_be_written_does_not_start(
    agent_home: Path, fleet: SshFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """From the outside review: the run was recorded only after it ended, so a log the CLI user could not write
    (the service's 0600 file) let the runbook run unrecorded, then failed."""
    from agent.cli import run_cli

    host = fleet.servers[0]  # serves h1
    before = host.connections()
    (agent_home / "var").mkdir(exist_ok=True)
    (agent_home / "var" / "audit.jsonl").mkdir()  # not a file it can append to
    code = run_cli(["-c", str(agent_home / "agent.toml"), "runbooks", "run", "echo_args", "--host", "h1",
                    "--arg", "value=x"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "audit.jsonl" in err and "Traceback" not in err
    assert host.connections() == before  # the host never heard of it


def test_an_argument_of_non_utf8_bytes_is_audited_not_an_error(
    agent_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python reads a command line's non-UTF-8 bytes as lone surrogates, which UTF-8 cannot carry: the audit entry
    raised instead of being written (from the outside review of the audit log)."""
    from agent.cli import run_cli

    code = run_cli(["-c", str(agent_home / "agent.toml"), "runbooks", "run", "echo\udcff", "--host", "h1"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "unexpected" not in err, err
    (entry,) = [e for e in audit(agent_home) if e["kind"] == "run_refused"]
    assert entry["runbook"] == "echo\ufffd"


def test_a_refused_cli_request_is_audited_too(agent_home: Path) -> None:
    result = cli(agent_home, "runbooks", "run", "echo_args", "--host", "nowhere", "--arg", "value=x")
    assert result.exit_code == 1 and "refused" in result.stderr
    assert [e["via"] for e in audit(agent_home) if e["kind"] == "run_refused"] == ["cli"]


CHECKS = """
[checks.needs_approval]
kind = "runbook"
runbook = "approved_change"
hosts = ["h1"]
args = {{ note = "x" }}

[checks.echo]
kind = "runbook"
runbook = "echo_args"
hosts = ["h1"]
args = {{ value = "x" }}
{schedule}
"""


async def run_check(operator: Operator, task_id: str, check: str, room: str = "ops") -> dict[str, Any]:
    await operator.send(
        {"action": "RUN_CHECK", "task_id": task_id, "room_id": room, "params": {"check": check}}
    )
    return await operator.finished(task_id)


async def test_a_check_can_do_nothing_its_runbook_forbids_and_is_redacted_like_chat(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    add_manifest_rule(agent_home)
    config = agent_home / "agent.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + CHECKS.format(schedule=""), encoding="utf-8", newline="\n"
    )
    app = RunningApp.of(config, agent_environ(relay))
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
        approval = (await run_check(operator, "c1", "needs_approval"))["payload"]
        assert approval["status"] == "FAIL"
        assert approval["data"]["checks"]["needs_approval"]["status"] == "ERROR"
        assert "approver" in approval["data"]["checks"]["needs_approval"]["message"]
        elsewhere = (await run_check(operator, "c2", "echo", room="lobby"))["payload"]
        assert elsewhere["data"]["checks"]["echo"]["status"] == "ERROR"  # the runbook's rooms say ops only
        ok = (await run_check(operator, "c3", "echo"))["payload"]
        assert ok["data"]["checks"]["echo"]["status"] == "OK"
        assert "[ARGC]" in json.dumps(ok) and "argc=" not in json.dumps(ok)
    finally:
        await app.stop()
    assert not [e for e in audit(agent_home) if e["kind"] == "run" and e["runbook"] == "approved_change"]
    assert {e["via"] for e in audit(agent_home) if e["kind"] in ("run", "run_refused")} == {"check"}


def test_config_check_and_run_refuse_the_same_problems_all_at_once(agent_home: Path) -> None:
    config = agent_home / "agent.toml"
    bad = CHECKS.format(
        schedule='[[schedules]]\nname = "often"\ncron = "99 * * * *"\nchecks = ["needs_approval"]\n'
    )
    bad += '\n[checks.ghost]\nkind = "runbook"\nrunbook = "no_such_runbook"\nhosts = ["h1"]\n'
    bad += '\n[checks.stray]\nkind = "runbook"\nrunbook = "echo_args"\nhosts = ["nowhere"]\nargs = { value = "x" }\n'
    bad += '\n[checks.badarg]\nkind = "runbook"\nrunbook = "echo_args"\nhosts = ["h1"]\nargs = { colour = "x" }\n'
    config.write_text(config.read_text(encoding="utf-8") + bad, encoding="utf-8", newline="\n")
    env = {"EXTERNAL_WS_URL": "ws://127.0.0.1:9/agent", "AGENT_RELAY_TOKEN": "t0ken-0123456789"}
    checked = CliRunner(env=env).invoke(main, ["-c", str(config), "config", "check"], catch_exceptions=False)
    assert checked.exit_code == 2
    for problem in ["schedules.0 (often).cron", "checks.needs_approval", "checks.ghost", "checks.stray",
                    "checks.badarg"]:  # fmt: skip
        assert problem in checked.stderr, problem
    started = CliRunner(env=env).invoke(main, ["-c", str(config), "run"], catch_exceptions=False)
    assert started.exit_code == 2 and started.stderr == checked.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ws://host:99999/agent", "port out of range"),
        ("http://relay.example/agent", "scheme"),
        ("ws:///agent", "no host"),
    ],
)
def test_a_relay_url_that_cannot_work_is_refused_when_the_config_loads(
    agent_home: Path, url: str, problem: str
) -> None:
    env = {"EXTERNAL_WS_URL": url, "AGENT_RELAY_TOKEN": "t0ken-0123456789"}
    result = CliRunner(env=env).invoke(
        main, ["-c", str(agent_home / "agent.toml"), "run"], catch_exceptions=False
    )
    assert result.exit_code == 2 and problem in result.stderr and "Traceback" not in result.output
    config = agent_home / "agent.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[relay]\n", f'[relay]\nurl = "{url}"\n'),
        encoding="utf-8",
        newline="\n",
    )
    loaded = CliRunner(env={"EXTERNAL_WS_URL": ""}).invoke(main, ["-c", str(config), "config", "check"])
    assert loaded.exit_code == 2 and problem in loaded.stderr and url not in loaded.stderr


async def test_after_a_crash_queued_and_read_only_commands_run_and_state_changes_are_interrupted(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    """What a killed agent leaves in its ledger, answered as docs/protocol.md says after the next start."""
    ledger = Outbox(agent_home / "var" / "outbox.sqlite3")

    def leave(task_id: str, runbook: str, args: dict[str, Any], state: TaskState) -> None:
        packet = {"action": "RUN_RUNBOOK", "task_id": task_id, "room_id": "ops",
                  "params": {"runbook": runbook, "hosts": ["h1"], "args": args}}  # fmt: skip
        assert ledger.begin_task(task_id, "ops", json.dumps(packet))  # queued
        assert state is TaskState.QUEUED or ledger.set_task_state(task_id, state)

    leave("queued-change", "state_change", {"seconds": 0}, TaskState.QUEUED)
    leave("started-read", "echo_args", {"value": "x"}, TaskState.RUNNING)
    leave("started-change", "state_change", {"seconds": 0}, TaskState.RUNNING)
    ledger.close()
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    try:
        answers = {t: (await operator.finished(t))["payload"] for t in
                   ("queued-change", "started-read", "started-change")}  # fmt: skip
    finally:
        await app.stop()
    assert answers["queued-change"]["status"] == "SUCCESS"
    assert answers["started-read"]["status"] == "SUCCESS"
    assert answers["started-change"]["error"]["code"] == "INTERRUPTED"
    assert "may have run" in answers["started-change"]["error"]["message"]
    runs = [e["task_id"] for e in audit(agent_home) if e["kind"] == "run"]
    assert sorted(runs) == ["queued-change", "started-read"]


async def test_link_failures_are_logged_at_error_with_their_cause(
    agent_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.sshd import free_port

    port = free_port()  # nothing listens there
    env = {"EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent", "AGENT_RELAY_TOKEN": "t0ken-0123456789"}
    app = RunningApp.of(agent_home / "agent.toml", env)
    try:
        await eventually(lambda: any("relay connection failed" in r.getMessage() for r in caplog.records), 10,
                         "the failed dial logged")  # fmt: skip
    finally:
        await app.stop()
    failure = next(r for r in caplog.records if "relay connection failed" in r.getMessage())
    assert failure.levelname == "ERROR"
    assert "refused" in failure.getMessage().lower() or "errno" in failure.getMessage().lower()


async def test_kept_output_is_read_only_in_the_room_where_the_task_ran(
    agent_home: Path, relay: Relay, operator: Operator
) -> None:
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    try:
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
        await operator.send({"action": "RUN_RUNBOOK", "task_id": "o-1", "room_id": "ops",
                             "params": {"runbook": "echo_args", "hosts": ["h1"], "args": {"value": "x"}}})  # fmt: skip
        assert (await operator.finished("o-1"))["payload"]["status"] == "SUCCESS"

        async def read(task: str, room: str, about: str) -> dict[str, Any]:
            await operator.send({"action": "GET_OUTPUT", "task_id": task, "room_id": room,
                                 "params": {"task_id": about, "host": "h1"}})  # fmt: skip
            payload: dict[str, Any] = (await operator.finished(task))["payload"]
            return payload

        here = await read("o-2", "ops", "o-1")
        assert here["status"] == "SUCCESS" and "argc=" in json.dumps(here["data"])
        elsewhere = await read("o-3", "lobby", "o-1")
        unknown = await read("o-4", "lobby", "no-such-task")
        # Another room learns nothing: the same refusal as for a task that never existed, and no output.
        assert elsewhere["error"] == unknown["error"] and elsewhere["error"]["code"] == "NOT_AVAILABLE"
        assert "argc" not in json.dumps(elsewhere) and "h1" not in json.dumps(elsewhere.get("data", {}))
    finally:
        await app.stop()


async def test_the_agent_keeps_outputs_under_the_configured_caps(agent_home: Path, relay: Relay) -> None:
    config = agent_home / "agent.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + "\n[outputs]\nmax_runs = 7\nmax_bytes = 2000000\n",
        encoding="utf-8",
        newline="\n",
    )
    app = App(load_config(config), environ=agent_environ(relay))
    try:
        assert (app.outputs.max_runs, app.outputs.max_bytes) == (7, 2000000)
        assert app.gate.outputs is app.outputs
    finally:
        app.outbox.close()
