"""Chat text for the operator's day: the room's servers (HOSTS), the checks and their schedules in words (CHECKS),
and a stop (STOP). Pure, no I/O; every text through the message catalog, every name from the config neutralised.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from typing import Any

from agent.chat.i18n import N_, Chat
from agent.chat.markup import MARKS, neutralize, status_word

#: What each kind of check looks at, in an SM engineer's words.
CHECK_KINDS = {
    "http": N_("health page"),
    "disk": N_("disk space"),
    "db": N_("database query"),
    "tcp": N_("port"),
    "runbook": N_("check script"),
}
#: Weekdays as crontab numbers them (0 and 7: Sunday).
WEEKDAYS = [N_("Sunday"), N_("Monday"), N_("Tuesday"), N_("Wednesday"), N_("Thursday"), N_("Friday"),
            N_("Saturday"), N_("Sunday")]  # fmt: skip
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_NUMBER = re.compile(r"\d{1,2}")


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _n(value: Any) -> str:
    return neutralize(str(value))


def every(chat: Chat, seconds: float) -> str:
    """An interval in words: ``매 5분``, ``매 2시간``, ``매일``; ``every 90 s`` when no unit divides it."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return chat._("every {n} s").format(n=f"{seconds:g}")
    for unit, one, many in (
        (86400, N_("every day"), N_("every {n} days")),
        (3600, N_("every hour"), N_("every {n} hours")),
        (60, N_("every minute"), N_("every {n} minutes")),
    ):
        if whole % unit == 0:
            n = whole // unit
            return chat._(one) if n == 1 else chat._(many).format(n=n)
    return chat._("every {n} s").format(n=whole)


def _weekday(field: str) -> int | None:
    if field.isdigit() and 0 <= int(field) <= 7:
        return int(field)
    return _DAY_NAMES.index(field.lower()) if field.lower() in _DAY_NAMES else None


def cron_words(chat: Chat, line: str, zone: str) -> str:
    """A crontab line in words, for the lines schedules use: ``매일 09:00 KST``, ``매주 월요일 09:00 KST``,
    ``평일 09:00 KST``, ``매월 1일 09:00 KST``, ``매시 15분``, ``매 10분``; any other line as it is, with its zone."""
    fields = line.split()
    if len(fields) != 5:
        return chat._("crontab {line} ({zone})").format(line=_n(line), zone=_n(zone))
    minute, hour, day, month, weekday = fields
    if minute.startswith("*/") and minute[2:].isdigit() and fields[1:] == ["*"] * 4:
        return every(chat, int(minute[2:]) * 60)
    if _NUMBER.fullmatch(minute) and fields[1:] == ["*"] * 4:
        return chat._("every hour at minute {minute}").format(minute=int(minute))
    if not (_NUMBER.fullmatch(minute) and _NUMBER.fullmatch(hour)) or month != "*":
        return chat._("crontab {line} ({zone})").format(line=_n(line), zone=_n(zone))
    time = f"{int(hour):02d}:{int(minute):02d} {_n(zone)}"
    if day == "*" and weekday == "*":
        return chat._("daily at {time}").format(time=time)
    if day == "*" and weekday in ("1-5", "mon-fri"):
        return chat._("weekdays at {time}").format(time=time)
    if day == "*" and (number := _weekday(weekday)) is not None:
        return chat._("every {weekday} at {time}").format(weekday=chat._(WEEKDAYS[number]), time=time)
    if weekday == "*" and _NUMBER.fullmatch(day):
        return chat._("monthly on day {day} at {time}").format(day=int(day), time=time)
    return chat._("crontab {line} ({zone})").format(line=_n(line), zone=_n(zone))


def schedule_words(chat: Chat, schedule: Mapping[str, Any]) -> str:
    """One schedule (``agent.checks.scheduler.schedule_view``) in words."""
    interval = schedule.get("interval")
    if isinstance(interval, int | float) and not isinstance(interval, bool) and math.isfinite(interval):
        return every(chat, float(interval))
    return cron_words(chat, str(schedule.get("cron") or ""), str(schedule.get("timezone") or ""))


def render_hosts(chat: Chat, data: Mapping[str, Any]) -> str:
    """HOSTS: the servers this room's runbooks may target (with those runbooks), then the groups."""
    hosts = _objects(data.get("hosts"))
    if not hosts:
        return chat._("🖥️ No server can be targeted from this room: no runbook of this room names one.")
    lines = [chat.ngettext("🖥️ {n} server this room can run on:", "🖥️ {n} servers this room can run on:",
                           len(hosts)).format(n=len(hosts))]  # fmt: skip
    for host in hosts:
        runbooks = ", ".join(_n(r) for r in host.get("runbooks") or [])
        lines.append(
            f"• {_n(host.get('name'))} — " + chat._("runbooks: {runbooks}").format(runbooks=runbooks)
        )
    groups = _objects(data.get("groups"))
    if groups:
        lines.append(chat._("Groups (host=GROUP runs on each of its servers):"))
        lines.extend(
            f"• {_n(g.get('name'))}: " + ", ".join(_n(m) for m in g.get("members") or []) for g in groups
        )
    return "\n".join(lines)


def _check_state(chat: Chat, row: Mapping[str, Any]) -> str:
    status = row.get("status")
    if status is None:
        return chat._("not run on a schedule yet")
    text = f"{MARKS.get(str(status), '•')} {status_word(chat, status)}"
    since = row.get("failing_since")
    if isinstance(since, int | float) and not isinstance(since, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            text += " " + chat._("(since {when})").format(when=chat.when(float(since)))
    return text


def render_checks_list(chat: Chat, data: Mapping[str, Any]) -> str:
    """CHECKS: each check, what it looks at, when it runs, and how it was last; then when the summary comes."""
    rows = _objects(data.get("checks"))
    if not rows:
        return chat._("🩺 No check is configured on this agent.")
    lines = [chat.ngettext("🩺 {n} check:", "🩺 {n} checks:", len(rows)).format(n=len(rows))]
    for row in rows:
        kind = CHECK_KINDS.get(str(row.get("kind")))
        what = chat._(kind) if kind else _n(row.get("kind"))
        schedules = _objects(row.get("schedules"))
        when = (
            ", ".join(schedule_words(chat, s) for s in schedules) if schedules else chat._("only on request")
        )
        lines.append(
            f"• {_n(row.get('name'))} ({what}) — {when} — " + _check_state(chat, row) + alert_notes(chat, row)
        )
    summaries = _objects(data.get("summaries"))
    if summaries:
        lines.append(chat._("Summary of every check: {when}").format(
            when=", ".join(schedule_words(chat, s) for s in summaries)))  # fmt: skip
    lines.append(chat._("Run one now: check NAME"))
    return "\n".join(lines)


def render_stopped(chat: Chat, data: Mapping[str, Any]) -> str:
    """STOP: what was told to stop; the run's own answer follows with each server's state."""
    hosts = ", ".join(_n(h) for h in data.get("hosts") or [])
    return chat._("🛑 Stopping {runbook} on {hosts} (task {task}); its result follows.").format(
        runbook=_n(data.get("runbook")), hosts=hosts, task=_n(data.get("stopped")))  # fmt: skip


def alert_notes(chat: Chat, row: Mapping[str, Any]) -> str:
    """`` — acknowledged by kim — muted until … by lee``: what operators said about a check's alerts, or ``""``."""
    notes = []
    if row.get("acked_by"):
        notes.append(chat._("acknowledged by {user}").format(user=_n(row["acked_by"])))
    until = row.get("muted_until")
    if isinstance(until, int | float) and not isinstance(until, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            notes.append(chat._("🔕 muted until {when} by {user}").format(when=chat.when(float(until)),
                                                                          user=_n(row.get("muted_by"))))  # fmt: skip
    return "".join(" — " + note for note in notes)


def render_check_alert(chat: Chat, action: str, data: Mapping[str, Any]) -> str:
    """ACK_CHECK, MUTE_CHECK, UNMUTE_CHECK: what now holds of the check's alerts."""
    check = _n(data.get("check"))
    if action == "ACK_CHECK":
        return chat._("👌 {user} acknowledged {check} ({status}): no more reminders until its state changes.").format(
            user=_n(data.get("acked_by")), check=check, status=status_word(chat, data.get("status")))  # fmt: skip
    if action == "MUTE_CHECK":
        until = data.get("muted_until")
        when = (
            chat.when(float(until)) if isinstance(until, int | float) and not isinstance(until, bool) else "?"
        )
        return chat._("🔕 No reports about {check} until {when} (muted by {user}); the summary still shows it. "
                      "To end it sooner: unmute {check}").format(check=check, when=when,
                                                                 user=_n(data.get("muted_by")))  # fmt: skip
    return chat._("🔔 Reports about {check} go out again.").format(check=check)
