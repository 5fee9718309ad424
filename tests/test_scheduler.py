"""Scheduled checks pushed to the relay unprompted, and the existing check actions over the wire."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import pytest

from agent.reference.relay import Relay
from tests.conftest import Operator, RunningApp, agent_environ, connect_operator
from tests.services import HealthServer
from tests.waiting import eventually

pytestmark = pytest.mark.external_service


def reports(operator: Operator, kind: str = "check") -> list[dict[str, object]]:
    """The reports of a kind; "check": each check mentioned in the (grouped) schedule reports."""
    if kind == "check":
        return [item for e in operator.events if e.get("event") == "REPORT"
                and e["payload"].get("kind") == "schedule" for item in e["payload"]["checks"]]  # fmt: skip
    return [
        e["payload"]
        for e in operator.events
        if e.get("event") == "REPORT" and e["payload"].get("kind") == kind
    ]


async def start(home: Path, relay: Relay, extra: str, env: dict[str, str] | None = None) -> RunningApp:
    (home / "agent.toml").write_text(
        (home / "agent.toml").read_text(encoding="utf-8") + "\n" + extra, encoding="utf-8", newline="\n"
    )
    app = RunningApp.of(home / "agent.toml", agent_environ(relay, **(env or {})))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    return app


async def wait_reports(
    operator: Operator, count: int, kind: str = "check", timeout: float = 20
) -> list[dict[str, object]]:
    await eventually(
        lambda: len(reports(operator, kind)) >= count, timeout, what=f"{count} {kind} report(s) in the room"
    )
    return reports(operator, kind)


async def test_on_change_reports_a_failure_and_the_recovery_only(
    agent_home: Path, relay: Relay, operator: Operator, health: HealthServer
) -> None:
    health.flip_status = "UP"
    app = await start(
        agent_home,
        relay,
        f"""
[checks.was]
kind = "http"
url = "{health.url("/flip")}"
timeout = 2

[[schedules]]
name = "was-often"
checks = ["was"]
interval = 0.3
room = "ops-alerts"
notify = "on_change"
""",
    )
    try:
        scheduler = app.app.scheduler
        await eventually(
            lambda: app.app.outbox.get_state("status:was-often:was") is not None,
            10,
            what="the first (OK) run",
        )
        assert reports(operator) == []
        health.flip_status = "DOWN"
        [down] = await wait_reports(operator, 1)
        assert down["status"] == "DOWN" and down["previous"] == "OK" and down["recovered"] is False
        assert down["message"] == "was: HTTP 503, status DOWN"
        health.flip_status = "UP"
        _, recovery = await wait_reports(operator, 2)
        assert (
            recovery["status"] == "OK"
            and recovery["recovered"] is True
            and recovery["message"].startswith("was recovered")
        )
        runs_before = scheduler.tally["was"][0]
        await eventually(lambda: scheduler.tally["was"][0] >= runs_before + 3, 10, what="three more OK runs…")
        assert len(reports(operator)) == 2  # …and nothing more was said
        event = next(
            e for e in operator.events if e.get("event") == "REPORT" and e["payload"]["kind"] == "schedule"
        )
        assert event["room_id"] == "ops-alerts"
    finally:
        health.flip_status = "UP"
        await app.stop()


async def test_a_report_made_while_the_relay_is_down_arrives_once_after(
    agent_home: Path, relay: Relay, operator: Operator, health: HealthServer
) -> None:
    health.flip_status = "UP"
    app = await start(
        agent_home,
        relay,
        f"""
[checks.was]
kind = "http"
url = "{health.url("/flip")}"

[[schedules]]
name = "was-often"
checks = ["was"]
interval = 0.3
notify = "on_failure"
""",
    )
    try:
        await eventually(lambda: app.app.outbox.get_state("status:was-often:was") is not None, 10)
        port = relay.port  # type: ignore[attr-defined]
        await operator.close()
        await relay.stop()
        health.flip_status = "DOWN"
        await eventually(lambda: app.app.outbox.count() != 0, 10, what="a report waiting in the outbox")
        health.flip_status = "UP"
        queued = app.app.outbox.count()
        await relay.start("127.0.0.1", port)
        back = await connect_operator(relay)
        try:
            await eventually(lambda: len(reports(back)) >= queued, 15)
            await back.command("LIST_RUNBOOKS", "fence")
            await back.finished("fence")
            down = reports(back)
            assert all(r["status"] == "DOWN" for r in down) and len(down) == queued
            assert len({e["msg_id"] for e in back.events if e.get("event") == "REPORT"}) == len(down)
        finally:
            await back.close()
    finally:
        health.flip_status = "UP"
        await app.stop()


async def test_a_run_skipped_because_the_last_one_is_still_going_is_reported_missed(
    agent_home: Path, relay: Relay, operator: Operator, health: HealthServer
) -> None:
    app = await start(
        agent_home,
        relay,
        f"""
[checks.slow]
kind = "http"
url = "{health.url("/slow")}"
timeout = 5

[[schedules]]
name = "too-often"
checks = ["slow"]
interval = 0.5
misfire_grace = 1
""",
    )
    try:
        [missed, *_] = await wait_reports(operator, 1, kind="missed")
        assert missed["schedule"] == "too-often" and "the previous run was still going" in str(
            missed["message"]
        )
    finally:
        await app.stop()


async def test_runs_missed_while_the_agent_was_down_are_reported(
    agent_home: Path, relay: Relay, operator: Operator, health: HealthServer
) -> None:
    from agent.state.outbox import Outbox

    box = Outbox(agent_home / "var" / "outbox.sqlite3")
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    box.set_state("schedule:hourly-ish:last_run", an_hour_ago.isoformat())
    box.close()
    app = await start(
        agent_home,
        relay,
        f"""
[checks.was]
kind = "http"
url = "{health.url("/up")}"

[[schedules]]
name = "hourly-ish"
checks = ["was"]
interval = 600
misfire_grace = 60
""",
    )
    try:
        [missed] = await wait_reports(operator, 1, kind="missed")
        assert missed["missed"] == 5 and "5 runs missed while the agent was not running" in str(
            missed["message"]
        )
        assert re.search(r"실행 5회를 건너뜀 \(\d{4}-\d{2}-\d{2} \d{2}:\d{2} KST부터\)", missed["text"])
    finally:
        await app.stop()


async def test_daily_summary_sums_up_every_check(
    agent_home: Path, relay: Relay, operator: Operator, health: HealthServer
) -> None:
    app = await start(
        agent_home,
        relay,
        f"""
[checks.was]
kind = "http"
url = "{health.url("/up")}"
[checks.broken]
kind = "http"
url = "{health.url("/down")}"

[[schedules]]
name = "often"
checks = ["was", "broken"]
interval = 3600
notify = "always"

[[schedules]]
name = "daily"
kind = "summary"
cron = "0 9 * * *"
""",
    )
    try:
        scheduler = app.app.scheduler
        await scheduler.fire("often")
        await scheduler.fire("often")
        await scheduler.fire("daily")
        [summary] = await wait_reports(operator, 1, kind="summary")
        assert summary["status"] == "DOWN" and summary["message"] == "2 checks, not OK: broken"
        assert {
            name: {k: v for k, v in check.items() if k != "i18n"} for name, check in summary["checks"].items()
        } == {
            "was": {"status": "OK", "message": "HTTP 200, UP", "runs": 2, "not_ok": 0},
            "broken": {"status": "DOWN", "message": "HTTP 503, status DOWN", "runs": 2, "not_ok": 2},
        }
        assert (
            "요약: 점검 2개 중 비정상: broken" in summary["text"]
            and "실행 2회 중 비정상 2회" in summary["text"]
        )
    finally:
        await app.stop()


async def test_existing_actions_over_the_wire(
    agent_home: Path, relay: Relay, operator: Operator, health: HealthServer, postgres: dict[str, str]
) -> None:
    app = await start(
        agent_home,
        relay,
        f"""
[checks.was]
kind = "http"
url = "{health.url("/up")}"
[checks.root_disk]
kind = "disk"
path = "."
warn_percent = 100
critical_percent = 100

[actions]
was_status_check = "was"
""",
        env=postgres,
    )
    try:
        await operator.command("FETCH_MES_QC", "m-1", date="2026-09-18")
        mes = (await operator.finished("m-1"))["payload"]
        assert mes["status"] == "SUCCESS" and mes["data"]["row_count"] == 10
        rows = mes["data"]["rows"]
        assert list(rows[0]) == ["work_date", "prc_code", "err_msg", "reg_date"]
        assert rows[0]["reg_date"] > rows[-1]["reg_date"] and rows[0]["work_date"] == "2026-09-18"
        assert all("10.20.30" not in row["err_msg"] for row in rows)  # redacted on the way out
        await operator.command("FETCH_MES_QC", "m-2", date="2026-02-30")
        assert (await operator.finished("m-2"))["payload"]["error"]["code"] == "INVALID_ARGUMENTS"
        await operator.command("CHECK_INTERNAL_WAS_STATUS", "w-1")
        was = (await operator.finished("w-1"))["payload"]
        assert was["status"] == "SUCCESS" and was["data"]["checks"]["was"]["status"] == "OK"
        await operator.command("CHECK_DISK_SPACE", "d-1")
        disk = (await operator.finished("d-1"))["payload"]
        assert disk["status"] == "SUCCESS" and list(disk["data"]["checks"]) == ["root_disk"]
        await operator.command("RUN_CHECK", "c-1", check="was")
        assert (await operator.finished("c-1"))["payload"]["data"]["status"] == "OK"
    finally:
        await app.stop()
