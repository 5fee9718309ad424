"""Scheduled checks: APScheduler 3.x wiring only (the one module that imports it).

Each configured schedule becomes a job with ``max_instances=1``, coalescing and a misfire grace time. A job runs its
checks through the :class:`~agent.checks.runner.CheckRunner` and hands the results that are worth a message
(:func:`agent.checks.notify_decision`) to ``report`` — the agent's durable outbox, so reports made while the relay is
down arrive after it comes back. A run that APScheduler had to skip (the agent was busy past the grace time) and
runs that fell while the agent was not running are reported as missed, not dropped silently. Last statuses and
last run times live in the outbox database, so ``on_change`` survives a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agent.chat.i18n import Msg, i18n_json, nmsg
from agent.checks import CheckResult, CheckStatus, alerts, notify_decision, worst
from agent.checks.history import HISTORY_NAME, CheckHistory
from agent.checks.runner import CheckRunner
from agent.config.schema import AgentConfig, Schedule
from agent.errors import ConfigError
from agent.state.outbox import Outbox

logger = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]
#: At most this many missed runs are counted when the agent comes back after a long time down.
MAX_COUNTED_MISSES = 10_000


#: Statuses that go out even in quiet hours.
FAILURES = frozenset({CheckStatus.DOWN.value, CheckStatus.ERROR.value})


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def in_quiet_hours(spec: str, now: float, timezone: str) -> bool:
    """Whether ``now`` falls in ``"22:00-07:00"`` (start inclusive, end exclusive; may span midnight) there."""
    start, end = ((int(p[:2]) * 60 + int(p[3:])) for p in spec.split("-"))
    local = dt.datetime.fromtimestamp(now, ZoneInfo(timezone))
    minute = local.hour * 60 + local.minute
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


def make_trigger(schedule: Schedule) -> BaseTrigger:
    """Raises: ValueError for a crontab line APScheduler does not accept."""
    if schedule.interval is not None:
        return IntervalTrigger(seconds=schedule.interval, jitter=schedule.jitter or None)
    assert schedule.cron is not None
    trigger = CronTrigger.from_crontab(schedule.cron)
    trigger.jitter = schedule.jitter or None
    return trigger


def schedule_problems(config: AgentConfig) -> list[str]:
    """Every schedule whose trigger APScheduler would refuse (a crontab line out of range, say)."""
    problems = []
    for index, schedule in enumerate(config.schedules):
        try:
            make_trigger(schedule)
        except ValueError as exc:
            problems.append(f"schedules.{index} ({schedule.name}).cron: {exc}")
    return problems


def schedule_view(schedule: Schedule) -> dict[str, Any]:
    """When a schedule fires, as data the room renders in words: its name, ``interval`` (seconds) or ``cron`` (the
    crontab line) with ``timezone``, the abbreviation of the zone APScheduler reads it in (the agent PC's: KST)."""
    if schedule.interval is not None:
        return {"name": schedule.name, "interval": schedule.interval}
    zone = make_trigger(schedule).timezone
    return {"name": schedule.name, "cron": schedule.cron, "timezone": dt.datetime.now(zone).tzname()}


def _now() -> float:
    """When a report was made (Unix time; the room reads it in its timezone, ``2026-11-28 14:05 KST``)."""
    return round(dt.datetime.now(dt.UTC).timestamp(), 3)


class CheckScheduler:
    def __init__(self, config: AgentConfig, runner: CheckRunner, state: Outbox, report: Report) -> None:
        self.config = config
        self.runner = runner
        self.state = state
        self.report = report
        self.schedules = {s.name: s for s in config.schedules}
        problems = schedule_problems(config)
        if problems:
            raise ConfigError("schedules", problems)
        self.triggers = {s.name: make_trigger(s) for s in config.schedules}
        #: Per check since the last summary: [runs, runs that were not OK].
        self.tally: dict[str, list[int]] = {}
        #: Quiet hours are read in the chat's timezone (KST by default).
        self.timezone = config.chat.timezone
        self._scheduler: AsyncIOScheduler | None = None
        #: Every scheduled result, for `agent report` (incidents and availability): agent/checks/history.py.
        self.history = CheckHistory(config.path(config.state.dir) / HISTORY_NAME)

    def start(self) -> None:
        """Report runs missed while the agent was down, then start the jobs (inside the running event loop)."""
        self._report_downtime()
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        for name, schedule in self.schedules.items():
            scheduler.add_job(
                self._fire_job, self.triggers[name], args=[name], id=name, name=name, max_instances=1, coalesce=True,
                misfire_grace_time=max(1, round(schedule.misfire_grace)),
            )  # fmt: skip
        scheduler.add_listener(self._skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        self._scheduler = scheduler
        if self.schedules:
            logger.info("scheduler started: %s", ", ".join(self.schedules))

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        self.history.flush()

    def _room(self, schedule: Schedule) -> str:
        return schedule.room or self.config.operations_room

    # -- running ------------------------------------------------------------------------------------------------

    async def _fire_job(self, name: str) -> None:
        """:meth:`fire` as the scheduler's job: a run the agent's shutdown cuts short is not an error (APScheduler
        would log the cancellation with a traceback, as if the check had failed)."""
        try:
            await self.fire(name)
        except asyncio.CancelledError:
            if self._scheduler is not None:
                raise
            logger.info("check run %s cut short by the shutdown", name)

    async def fire(self, name: str) -> None:
        """One run of a schedule (also what the tests and ``agent checks`` call directly)."""
        schedule = self.schedules[name]
        self.state.set_state(f"schedule:{name}:last_run", dt.datetime.now(dt.UTC).isoformat())
        if schedule.kind == "summary":
            await self._summary(schedule)
            return
        room = self._room(schedule)
        results = await asyncio.gather(*(self.runner.run(check, room=room) for check in schedule.checks))
        now = time.time()
        items = []
        for check, result in zip(schedule.checks, results, strict=True):
            item = self._record(schedule, check, result, now)
            if item is not None:
                items.append(item)
        self._send_grouped(schedule, items, now)

    def _record(
        self, schedule: Schedule, check: str, result: CheckResult, now: float
    ) -> dict[str, Any] | None:
        """Remember the check's status; return what the room should hear about it this run (None: nothing).

        Besides what the schedule's ``notify`` mode decides, a check that is still not OK is mentioned again once
        ``remind_after`` seconds have passed since it was last mentioned.
        """
        key = f"status:{schedule.name}:{check}"
        stored = self.state.get_state(key)
        previous = CheckStatus(stored) if stored else None
        self.state.set_state(key, result.status.value)
        self.history.record(check, result.status, now)
        tally = self.tally.setdefault(check, [0, 0])
        tally[0] += 1
        tally[1] += result.status is not CheckStatus.OK
        since_key = f"failing_since:{schedule.name}:{check}"
        if result.status is CheckStatus.OK:
            self.state.set_state(since_key, "")
        elif not self.state.get_state(since_key):
            self.state.set_state(since_key, repr(now))
        decision = notify_decision(schedule.notify, previous, result.status)
        told_key = f"reported:{schedule.name}:{check}"
        reminder = False
        if decision is None and schedule.remind_after is not None and result.status is not CheckStatus.OK:
            told = _float(self.state.get_state(told_key))
            reminder = told is not None and now - told >= schedule.remind_after
        if self._silenced(check, result, now):
            reminder = False
            if alerts.mute_of(self.state, check, now) is not None:
                logger.info("check %s: %s (muted)", check, result.status.value)
                return None
        logger.info("check %s: %s (%s)%s", check, result.status.value, result.message,
                    f" -> {decision or ('reminder' if reminder else '')}" if decision or reminder else "")  # fmt: skip
        if decision is None and not reminder:
            return None
        self.state.set_state(told_key, repr(now))
        message = (
            Msg("{check} recovered: {message}", check=check, message=result.message)
            if decision == "recovery"
            else Msg("{check}: {message}", check=check, message=result.message)
        )
        return {
            "check": check, "status": result.status.value, "previous": previous.value if previous else None,
            "recovered": decision == "recovery", "reminder": reminder,
            "failing_since": _float(self.state.get_state(since_key)), "at": now,
            "message": message, "i18n": i18n_json(message), "data": result.data,
            "duration": round(result.duration, 3),
        }  # fmt: skip

    def _silenced(self, check: str, result: CheckResult, now: float) -> bool:
        """Whether an operator silenced this check's reminders: muted until a time, or acknowledged in its present
        state (an acknowledgement ends when the state changes: the change is reported, and reminded again)."""
        ack = alerts.ack_of(self.state, check)
        if ack is not None and ack.status != result.status.value:
            alerts.set_ack(self.state, check, None)
            ack = None
        return ack is not None or alerts.mute_of(self.state, check, now) is not None

    def _send_grouped(self, schedule: Schedule, items: list[dict[str, Any]], now: float) -> None:
        """One message per schedule run, titled with the schedule's name and the time.

        In the schedule's quiet hours only failures go out; the rest is kept (durably) and goes out with the first
        run after the quiet hours.
        """
        quiet_key = f"quiet:{schedule.name}"
        held: list[dict[str, Any]] = json.loads(self.state.get_state(quiet_key) or "[]")
        if schedule.quiet_hours is not None and in_quiet_hours(schedule.quiet_hours, now, self.timezone):
            later = [i for i in items if i["status"] not in FAILURES]
            items = [i for i in items if i["status"] in FAILURES]
            if later:
                self.state.set_state(quiet_key, json.dumps(held + later))
            held = []
        elif held:
            self.state.set_state(quiet_key, "[]")
        if not items and not held:
            return
        statuses = [CheckStatus(i["status"]) for i in items if not i["recovered"]]
        overall = worst(statuses) if statuses else CheckStatus.OK
        self.report(self._room(schedule), {
            "kind": "schedule", "schedule": schedule.name, "at": now, "status": overall.value,
            "message": "; ".join(i["message"] for i in items + held), "checks": items, "quiet_collected": held,
        })  # fmt: skip

    async def _summary(self, schedule: Schedule) -> None:
        names = self.runner.names
        room = self._room(schedule)
        results = await asyncio.gather(*(self.runner.run(check, room=room) for check in names))
        checks = {}
        for check, result in zip(names, results, strict=True):
            runs, not_ok = self.tally.get(check, [0, 0])
            checks[check] = {
                "status": result.status.value,
                "message": result.message,
                "i18n": i18n_json(result.message),
                "runs": runs,
                "not_ok": not_ok,
                **alerts.view(self.state, check, time.time()),
            }
        self.tally.clear()
        overall = worst([r.status for r in results])
        bad = [c for c, r in zip(names, results, strict=True) if r.status is not CheckStatus.OK]
        message = (
            nmsg("{n} check, all OK", "{n} checks, all OK", len(names))
            if not bad
            else nmsg("{n} check, not OK: {bad}", "{n} checks, not OK: {bad}", len(names), bad=", ".join(bad))
        )
        self.report(self._room(schedule), {"kind": "summary", "schedule": schedule.name, "status": overall.value,
                                           "message": message, "i18n": i18n_json(message), "at": _now(),
                                           "checks": checks})  # fmt: skip

    # -- missed runs ---------------------------------------------------------------------------------------------

    def _skipped(self, event: JobExecutionEvent | JobSubmissionEvent) -> None:
        schedule = self.schedules.get(event.job_id)
        if schedule is None:
            return
        busy = event.code == EVENT_JOB_MAX_INSTANCES
        when = getattr(event, "scheduled_run_time", None) or (event.scheduled_run_times or [None])[0]
        at = when.astimezone(dt.UTC) if isinstance(when, dt.datetime) else None
        reason = (
            Msg("the previous run was still going") if busy else Msg("the agent was busy past the grace time")
        )
        logger.warning(
            "schedule %s: run at %s missed (%s)", schedule.name, at.isoformat() if at else "?", reason
        )
        message = (
            Msg(
                "{schedule}: the run at {at} was missed ({reason})",
                schedule=schedule.name,
                at=at,
                reason=reason,
            )
            if at
            else Msg("{schedule}: a run was missed ({reason})", schedule=schedule.name, reason=reason)
        )
        self.report(self._room(schedule), {"kind": "missed", "schedule": schedule.name, "status": "WARN",
                                           "message": message, "i18n": i18n_json(message), "at": _now()})  # fmt: skip

    def _report_downtime(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for name, schedule in self.schedules.items():
            stored = self.state.get_state(f"schedule:{name}:last_run")
            if stored is None:
                continue
            last = dt.datetime.fromisoformat(stored)
            grace = dt.timedelta(seconds=schedule.misfire_grace)
            missed, first = 0, None
            if schedule.interval is not None:
                # A new IntervalTrigger counts from now; the runs that fell due since the last one are arithmetic.
                interval = dt.timedelta(seconds=schedule.interval)
                missed = min(MAX_COUNTED_MISSES, max(0, (now - grace - last) // interval))
                first = last + interval if missed else None
            else:
                trigger = self.triggers[name]
                fire = trigger.get_next_fire_time(None, last + dt.timedelta(microseconds=1))
                while fire is not None and fire + grace < now and missed < MAX_COUNTED_MISSES:
                    missed += 1
                    first = first or fire
                    fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(microseconds=1))
            if missed:
                logger.warning("schedule %s: %d run(s) missed while the agent was not running", name, missed)
                message = nmsg(
                    "{schedule}: {n} run missed while the agent was not running (since {since})",
                    "{schedule}: {n} runs missed while the agent was not running (since {since})",
                    missed, schedule=name, since=(first or last).astimezone(dt.UTC),
                )  # fmt: skip
                self.report(self._room(schedule), {
                    "kind": "missed", "schedule": name, "status": "WARN", "missed": missed,
                    "message": message, "i18n": i18n_json(message), "at": _now(),
                })  # fmt: skip
