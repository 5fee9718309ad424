"""Chat-ready text for answers and reports, in the room's language. Pure, no I/O.

A relay can post ``payload.text`` as is: per host a status mark and word, exit code and duration, the head and tail
of its output in a code block (:func:`agent.chat.console.output_block`: what was left out, and the command that
pages the rest), an honest count when a list was cut.
Every ``render_*`` takes the room's :class:`~agent.chat.i18n.Chat` (language, timezone): texts come from the message
catalog, times are shown in the configured zone (``2026-11-28 14:05 KST``), and a message that travels as a
:class:`~agent.chat.i18n.Msg` (``"message"`` + ``"i18n"`` in the JSON: errors, check results, reports, host messages) is
translated from its template and values. Error codes stay English, in parentheses.

Whatever came from a host or a user is neutralised for messengers: mentions (``@all``), links and code fences cannot
trigger anything. The text is rendered from already redacted data (see :meth:`agent.shell.runtime.AgentRuntime.outbound`),
since neutralising inserts zero-width spaces that would otherwise hide secrets from the redaction patterns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from agent.chat.console import (
    output_block,
    render_agent_notice,
    render_decision,
    render_help,
    render_history,
    render_pending_list,
    render_progress,
    render_schedule,
)
from agent.chat.i18n import N_, Chat
from agent.chat.markup import MARKS, STATUS_WORDS, ZWSP, neutralize, status_word
from agent.chat.operations import (
    alert_notes,
    render_check_alert,
    render_checks_list,
    render_hosts,
    render_stopped,
)

__all__ = [
    "MARKS",
    "STATUS_WORDS",
    "ZWSP",
    "neutralize",
    "render_error",
    "render_finished",
    "render_pending",
    "render_report",
    "render_run",
]

#: What ``agent runbooks verify`` found, in words (catalog.ProblemKind values).
PROBLEM_WORDS = {
    "modified_script": N_("script changed since it was locked"),
    "modified_manifest": N_("manifest changed since it was locked"),
    "missing_file": N_("a file is missing"),
    "not_in_lock": N_("not in the lock"),
    "stale_lock_entry": N_("locked but no longer present"),
    "invalid_manifest": N_("invalid manifest"),
    "invalid_name": N_("invalid name"),
    "lock_missing": N_("no lock file"),
    "lock_invalid": N_("the lock file does not parse"),
    "lock_edited": N_("the lock file was edited by hand"),
}
#: Rows of a query result shown in chat.
MAX_ROWS_SHOWN = 10
#: Catalog problems listed in a report.
MAX_PROBLEMS_SHOWN = 20


def _n(value: Any) -> str:
    return neutralize(str(value))


def _map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is an object, else empty: the renderers never raise on an odd payload."""
    return value if isinstance(value, Mapping) else {}


def _maps(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def _when(chat: Chat, value: Any) -> str | None:
    """A Unix time in the room's zone, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return chat.when(float(value))
    except (OverflowError, OSError, ValueError):
        return None


def _mark(status: Any) -> str:
    return MARKS.get(str(status), "•")


def _word(chat: Chat, status: Any) -> str:
    return status_word(chat, status)


def _message(chat: Chat, item: Any) -> str:
    """An object's ``message``, translated from its ``i18n`` when it has one, neutralised."""
    item = _map(item)
    return _n(chat.text(item.get("i18n"), fallback=str(item.get("message") or "")))


def _code(text: str) -> str:
    return "```\n" + neutralize(text) + "\n```"


def render_error(chat: Chat, error: Any) -> str:
    """A refusal or failure: ``❌ <translated message> (CODE)``."""
    error = _map(error)
    return f"❌ {_message(chat, error)} ({_n(error.get('code'))})"


def render_run(chat: Chat, data: Mapping[str, Any], output_ref: str | None = None) -> str:
    """A RUN_RUNBOOK result: a summary line, then one block per host."""
    name = _n(data.get("runbook", "?"))
    hosts = _maps(data.get("hosts"))
    ok = sum(1 for h in hosts if h.get("status") == "SUCCESS")
    summary = chat.ngettext(
        "{runbook}: {ok} of {total} host succeeded", "{runbook}: {ok} of {total} hosts succeeded", len(hosts)
    ).format(runbook=name, ok=ok, total=len(hosts))
    lines = [f"{_mark(data.get('status'))} {summary}"]
    for host in hosts:
        status = host.get("status")
        code, duration = host.get("exit_code"), chat.duration(_number(host.get("duration")))
        if code is None:  # it never ran, or was killed: no exit code to show
            head = chat._("{host} {status} ({duration})").format(
                host=_n(host.get("host")), status=_word(chat, status), duration=duration)  # fmt: skip
        else:
            head = chat._("{host} {status} (exit code {code}, {duration})").format(
                host=_n(host.get("host")), status=_word(chat, status), code=code, duration=duration)  # fmt: skip
        if host.get("message"):
            head += " — " + _message(chat, host)
        lines.append(f"{_mark(status)} {head}")
        # What the run changed among the host user's persistence points (crontab, ~/.ssh/rc, ...): the wrapper's
        # fingerprint (agent/runs/remote.py), shown whatever the status.
        points = host.get("persistence")
        if isinstance(points, list | tuple) and (named := [_n(p) for p in points if isinstance(p, str)]):
            lines.append(
                "⚠️ " + chat._("persistence points changed: {points}").format(points=", ".join(named))
            )
        # Head and tail of each stream, what was left out, and the exact command that pages the kept copy.
        failed = status != "SUCCESS"
        page_lines = int(_number(data.get("page_lines"), 200)) or 200
        lines.extend(output_block(dict(host), output_ref, page_lines, failed, chat))
    return "\n".join(lines)


def render_checks(chat: Chat, data: Mapping[str, Any]) -> str:
    """Check results (CHECK_INTERNAL_WAS_STATUS, CHECK_DISK_SPACE, RUN_CHECK): overall, then one line each."""
    lines = [f"{_mark(data.get('status'))} " + chat._("checks: {status}").format(
        status=_word(chat, data.get("status")))]  # fmt: skip
    for name, result in _map(data.get("checks")).items():
        status = _map(result).get("status")
        lines.append(f"{_mark(status)} {_n(name)} {_word(chat, status)} — {_message(chat, result)}")
    return "\n".join(lines)


def render_rows(chat: Chat, data: Mapping[str, Any]) -> str:
    """Query rows (FETCH_MES_QC): an honest count, then at most :data:`MAX_ROWS_SHOWN` rows in a code block.

    ``total`` (when the query counted the matches) and ``truncated``/``total_at_least`` say how many matched.
    """
    rows = _maps(data.get("rows"))
    shown = rows[:MAX_ROWS_SHOWN]
    total = data.get("total")
    at_least = data.get("total_at_least") is True
    if not isinstance(total, int) or isinstance(total, bool):
        total, at_least = len(rows), bool(data.get("truncated"))
    count = chat.count(len(shown), total, at_least=at_least)
    head = chat._("MES QC {date}: {count}").format(date=_n(data.get("date") or ""), count=count)
    if not rows:
        head = chat._("MES QC {date}: no rows").format(date=_n(data.get("date") or ""))
    body = "\n".join(" | ".join(str(v) for v in row.values()) for row in shown)
    return f"✅ {head}" + (f"\n{_code(body)}" if body else "")


def render_runbooks(chat: Chat, data: Mapping[str, Any]) -> str:
    """LIST_RUNBOOKS: the runbooks this room may run, one line each."""
    names = [f"• {_n(r.get('name'))} — {_n(r.get('description', ''))}" for r in _maps(data.get("runbooks"))]
    body = "\n".join(names) if names else chat._("(none)")
    return "📋 " + chat._("runbooks you can run here:") + "\n" + body


def render_page(chat: Chat, data: Mapping[str, Any]) -> str:
    """GET_OUTPUT: one page of a run's kept output."""
    page = chat._("page {page} of {pages}").format(page=int(_number(data.get("page"))) + 1,
                                                    pages=int(_number(data.get("pages"), 1)))  # fmt: skip
    return f"📄 {page}\n{_code(str(data.get('lines', '')))}"


def _run(chat: Chat, data: Mapping[str, Any]) -> str:
    return render_run(chat, data, data.get("output_ref"))


Renderer = Callable[[Chat, Mapping[str, Any]], str]

#: The renderer of each action's answer, by the action's wire name (docs/protocol.md's action table; a test pins
#: the keys to the protocol's actions). The answer's shape is the action's: no renderer guesses it from the keys.
FINISHED_RENDERERS: dict[str, Renderer] = {
    "RUN_RUNBOOK": _run,
    "LIST_RUNBOOKS": render_runbooks,
    "FETCH_MES_QC": render_rows,
    "CHECK_INTERNAL_WAS_STATUS": render_checks,
    "CHECK_DISK_SPACE": render_checks,
    "RUN_CHECK": render_checks,
    "GET_OUTPUT": render_page,
    "APPROVE": lambda chat, data: render_decision(chat, "approved", data),
    "REJECT": lambda chat, data: render_decision(chat, "rejected", data),
    "CANCEL": lambda chat, data: render_decision(chat, "cancelled", data),
    "HELP": lambda chat, data: render_help(_map(data.get("help")), chat),
    "HISTORY": lambda chat, data: render_history(data, chat),
    "PENDING": lambda chat, data: render_pending_list(data, chat),
    "HOSTS": render_hosts,
    "CHECKS": render_checks_list,
    "STOP": render_stopped,
    "RERUN": _run,
    "ACK_CHECK": lambda chat, data: render_check_alert(chat, "ACK_CHECK", data),
    "MUTE_CHECK": lambda chat, data: render_check_alert(chat, "MUTE_CHECK", data),
    "UNMUTE_CHECK": lambda chat, data: render_check_alert(chat, "UNMUTE_CHECK", data),
}


def render_finished(chat: Chat, payload: Mapping[str, Any], action: str | None) -> str:
    """TASK_FINISHED of ``action`` (the command's action as sent): the refusal, or the action's own renderer."""
    error = payload.get("error")
    if isinstance(error, Mapping) and error:
        return render_error(chat, error)
    render = FINISHED_RENDERERS.get(action or "")
    if render is None:  # an answer to no known action (a refusal always has its error): its status alone
        return f"{_mark(payload.get('status'))} {_word(chat, payload.get('status'))}"
    return render(chat, _map(payload.get("data")))


def _at(chat: Chat, payload: Mapping[str, Any]) -> str:
    at = _when(chat, payload.get("at"))
    return f" ({at})" if at else ""


def render_report(chat: Chat, payload: Mapping[str, Any]) -> str:
    """REPORT: a scheduled check, a daily summary, missed runs or catalog problems, with the time it was made."""
    kind = payload.get("kind")
    mark = "✅" if payload.get("recovered") else _mark(payload.get("status"))
    message = _message(chat, payload)
    if kind == "summary":
        lines = [f"{mark} " + chat._("summary: {message}").format(message=message) + _at(chat, payload)]
        for name, check in _map(payload.get("checks")).items():
            check = _map(check)
            tally = chat._("not OK in {not_ok} of {runs} runs").format(
                not_ok=check.get("not_ok", 0), runs=check.get("runs", 0))  # fmt: skip
            lines.append(
                f"{_mark(check.get('status'))} {_n(name)} {_word(chat, check.get('status'))} ({tally})"
                + alert_notes(chat, check)
            )
        return "\n".join(lines)
    if kind == "catalog":
        problems = _maps(payload.get("problems"))
        details = [
            f"• {_n(p.get('runbook') or '(lock)')}: "
            + (
                chat._(PROBLEM_WORDS[str(p.get("kind"))])
                if str(p.get("kind")) in PROBLEM_WORDS
                else _n(p.get("kind"))
            )
            for p in problems[:MAX_PROBLEMS_SHOWN]
        ]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            details.append(chat.count(MAX_PROBLEMS_SHOWN, len(problems)))
        return f"{mark} {message}{_at(chat, payload)}" + ("\n" + "\n".join(details) if details else "")
    return f"{mark} {message}{_at(chat, payload)}"


def render_pending(chat: Chat, payload: Mapping[str, Any]) -> str:
    """TASK_PENDING_APPROVAL: what would run, who asked, and how and until when an approver releases it."""
    args = " ".join(f"{_n(k)}={_n(v)}" for k, v in _map(payload.get("args")).items())
    hosts = payload.get("hosts")
    hosts = ", ".join(_n(h) for h in hosts) if isinstance(hosts, list) else ""
    code = _n(payload.get("code"))
    expires = _when(chat, payload.get("expires_at"))
    until = chat._(" (until {time})").format(time=expires) if expires else ""
    return (
        "🔐 " + chat._("approval needed: {runbook} on {hosts}").format(
            runbook=_n(payload.get("runbook")), hosts=hosts)
        + (f" ({args})" if args else "")
        + chat._(", requested by {user}.").format(user=_n(payload.get("requested_by")))
        + "\n"
        + chat._("Another approver: approve {code} (or reject {code}) within {minutes} min").format(
            code=code, minutes=round(_number(payload.get("expires_in")) / 60))
        + until + "."
    )  # fmt: skip


def render_text(chat: Chat, event: Any, payload: dict[str, Any], action: str | None = None) -> str | None:
    """The chat-ready ``payload.text`` of any message the agent sends, or None for one that carries none (HELLO):
    the one place that decides which renderer writes it. ``action``: a final answer's command, as sent."""
    if event == "TASK_FINISHED":
        return render_finished(chat, payload, action)
    if event == "TASK_PENDING_APPROVAL":
        return render_pending(chat, payload)
    if event == "TASK_PROGRESS":
        return render_progress(payload, chat)
    if event == "REPORT":
        own = _REPORT_RENDERERS.get(str(payload.get("kind")))
        return own(payload, chat) if own is not None else render_report(chat, payload)
    return None


#: Reports with a layout of their own, by ``payload.kind``; every other kind is :func:`render_report`'s.
_REPORT_RENDERERS = {"agent": render_agent_notice, "schedule": render_schedule}
