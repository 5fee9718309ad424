"""Chat text for the room's console: output views, help, history, approvals, progress, notices, grouped reports.

Pure, no I/O. Every text comes from the message catalog through a :class:`~agent.chat.i18n.Chat` (Korean by default);
whatever came from a host or a user is neutralised for messengers (:func:`agent.chat.markup.neutralize`), and the text is
rendered from already redacted data (:meth:`agent.shell.runtime.AgentRuntime.outbound`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from agent.chat.i18n import N_, Chat
from agent.chat.markup import MARKS, neutralize, status_word

#: Lines of a stream shown from its start and from its end in a run's answer.
HEAD_LINES = 5
TAIL_LINES = 10
#: A shown line longer than this is cut (the kept copy has it whole).
LINE_CHARS = 300
#: The marker :func:`agent.redaction.cap_output` puts where it cut the middle of a stream.
_CUT_MARK = re.compile(r"^… \d+ bytes cut …$")


def _code(text: str) -> str:
    return "```\n" + neutralize(text) + "\n```"


def _line(text: str) -> str:
    return text if len(text) <= LINE_CHARS else text[:LINE_CHARS] + "…"


def _args(args: Any) -> str:
    if not isinstance(args, dict):
        return ""
    return " ".join(f"{neutralize(str(k))}={neutralize(str(v))}" for k, v in args.items())


# -- 1. output that says what it left out -------------------------------------------------------------------------


def output_command(task_id: str, host: str, stream: str, page: int) -> str:
    """The exact chat line that pages a kept output (pages count from 1)."""
    words = ["output", task_id, host] + (["stderr"] if stream == "stderr" else []) + [str(page)]
    return " ".join(words)


def stream_view(
    text: str, total_lines: int | None, *, head: int = HEAD_LINES, tail: int = TAIL_LINES
) -> tuple[list[str], list[str], int]:
    """``(head lines, tail lines, lines left out)`` of one stream as the answer carries it.

    ``text`` may have been cut in its middle by the output cap (a ``… N bytes cut …`` line); ``total_lines`` is
    the kept copy's line count (the answer's own when unknown).
    """
    lines = text.rstrip("\n").splitlines() if text.strip() else []
    cut_at = next((i for i, line in enumerate(lines) if _CUT_MARK.match(line)), None)
    if cut_at is not None:
        before, after = lines[:cut_at], lines[cut_at + 1 :]
    else:
        before, after = lines, []
    whole = before + after
    total = max(total_lines or 0, len(whole))
    if cut_at is None and total <= head + tail:
        return whole, [], 0
    shown_head = before[:head]
    shown_tail = (after or before[len(shown_head) :])[-tail:]
    return shown_head, shown_tail, max(0, total - len(shown_head) - len(shown_tail))


def output_block(
    host: dict[str, Any], output_ref: str | None, page_lines: int, run_failed: bool, chat: Chat
) -> list[str]:
    """A host's output in a run's answer: head and tail of stdout, of stderr when the run failed or stdout is
    empty, each with an explicit line saying how many lines were left out and the command that shows them."""
    lines: list[str] = []
    stdout = str(host.get("stdout") or "")
    streams = ["stdout"] if stdout.strip() else []
    if str(host.get("stderr") or "").strip() and (run_failed or not streams):
        streams.append("stderr")
    name = str(host.get("host"))
    for stream in streams:
        total = host.get(f"{stream}_lines")
        head, tail, left_out = stream_view(
            str(host.get(stream) or ""), total if isinstance(total, int) else None
        )
        if stream == "stderr":
            lines.append(chat._("stderr:"))
        body = [_line(x) for x in head]
        if left_out or tail:
            if left_out:
                first = len(head) + 1
                template = chat.ngettext(
                    "… {n} line left out (line {first}) …",
                    "… {n} lines left out (lines {first}–{last}) …",
                    left_out,
                )
                body.append(template.format(n=left_out, first=first, last=first + left_out - 1))
            body.extend(_line(x) for x in tail)
        lines.append(_code("\n".join(body)))
        if left_out:
            page = len(head) // max(1, page_lines) + 1
            if output_ref:
                command = neutralize(output_command(output_ref, name, stream, page))
                lines.append(chat._("Whole output: {command}").format(command=command))
            else:
                lines.append(chat._("(the whole output is not kept for this run)"))
    return lines


# -- 2. help ------------------------------------------------------------------------------------------------------

COMMANDS = [
    ("help [RUNBOOK]", N_("the runbooks this room may run, or how to call one")),
    ("run RUNBOOK host=H [KEY=VALUE …]", N_("run a runbook")),
    ("output TASK HOST [stderr] [PAGE]", N_("page the whole kept output of a run")),
    ("history [RUNBOOK] [N]", N_("this room's latest runs")),
    ("pending", N_("requests waiting for an approver")),
    ("approve CODE | reject CODE", N_("decide someone else's request (approvers)")),
    ("cancel CODE", N_("withdraw your own waiting request")),
    ("check NAME | was | disk", N_("run a configured check")),
    ("checks", N_("the configured checks, when they run and how they were last")),
    ("hosts", N_("the servers and groups this room can run on")),
    ("stop TASK", N_("stop a running runbook on every server")),
    ("rerun TASK failed", N_("run a finished run again on the servers that failed")),
    ("ack CHECK", N_("acknowledge a failing check: no more reminders until its state changes")),
    ("mute CHECK 2h | unmute CHECK", N_("no reports about a check for a while (maintenance), or again")),
]


def _items(value: Any) -> list[Any]:
    """``value`` if it is a list, else empty: the renderers never raise on an odd payload."""
    return value if isinstance(value, list) else []


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in _items(value) if isinstance(v, Mapping)]


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seconds(value: Any) -> float:
    """A duration in seconds, or 0 when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value)


def _when(chat: Chat, value: Any) -> str:
    try:
        return (
            chat.when(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else "?"
        )
    except (OverflowError, OSError, ValueError):
        return "?"


def render_help(data: Mapping[str, Any], chat: Chat) -> str:
    if "runbook" in data:
        return _render_runbook_help(_object(data["runbook"]), chat)
    lines = [chat._("📋 Runbooks this room may run:")]
    for runbook in _objects(data.get("runbooks")):
        mark = " 🔐" if runbook.get("requires_approval") else ""
        lines.append(
            f"• {neutralize(str(runbook.get('name')))}{mark} — {neutralize(str(runbook.get('description', '')))}"
        )
    if not _objects(data.get("runbooks")):
        lines.append(chat._("(none)"))
    lines.append("")
    lines.append(chat._("Commands:"))
    lines.extend(f"• {usage} — {chat._(what)}" for usage, what in COMMANDS)
    return "\n".join(lines)


def _render_runbook_help(runbook: Mapping[str, Any], chat: Chat) -> str:
    lines = [f"📖 {neutralize(str(runbook.get('name')))} — {neutralize(str(runbook.get('description', '')))}",
             _code(str(runbook.get("usage", "")))]  # fmt: skip
    for param in _objects(runbook.get("params")):
        need = chat._("required") if param.get("required") else chat._("optional")
        accepts = chat.text(param.get("accepts_i18n"), fallback=str(param.get("accepts", "")))
        text = f"• {neutralize(str(param.get('name')))} ({need}): {neutralize(accepts)}"
        if "default" in param:
            text += chat._(", default {value}").format(value=neutralize(str(param["default"])))
        if param.get("help"):
            text += f" — {neutralize(str(param['help']))}"
        lines.append(text)
    hosts = ", ".join(neutralize(str(t)) for t in _items(runbook.get("targets")))
    lines.append(chat._("Hosts: {hosts}").format(hosts=hosts))
    roles = ", ".join(neutralize(str(r)) for r in _items(runbook.get("roles")))
    lines.append(chat._("Who may run it: {roles}").format(roles=roles))
    lines.append(
        chat._("Needs an approver's release (four eyes).")
        if runbook.get("requires_approval")
        else chat._("Runs without approval.")
    )
    return "\n".join(lines)


# -- 3. history -----------------------------------------------------------------------------------------------------


def render_history(data: Mapping[str, Any], chat: Chat) -> str:
    runs = _objects(data.get("history"))
    if not runs:
        return chat._("🕘 No runs from this room in the audit log.")
    lines = [chat.ngettext("🕘 The latest run from this room:", "🕘 The latest {n} runs from this room:",
                           len(runs)).format(n=len(runs))]  # fmt: skip
    for run in runs:
        when = _when(chat, run.get("ts"))
        hosts = ", ".join(f"{neutralize(str(h.get('host')))} {MARKS.get(str(h.get('status')), '•')}"
                          for h in _objects(run.get("hosts")))  # fmt: skip
        args = _args(run.get("args"))
        who = neutralize(str(run.get("user_id") or chat._("(schedule)")))
        text = (f"{MARKS.get(str(run.get('status')), '•')} {when} {who}: {neutralize(str(run.get('runbook')))}"
                + (f" {args}" if args else "") + f" → {hosts}")  # fmt: skip
        if run.get("approved_by"):
            text += " " + chat._("(approved by {user})").format(user=neutralize(str(run["approved_by"])))
        if run.get("task_id"):
            text += f" [{neutralize(str(run['task_id']))}]"
        lines.append(text)
    return "\n".join(lines)


# -- 4. pending, cancel, decisions ----------------------------------------------------------------------------------


def _what(data: Mapping[str, Any]) -> str:
    hosts = ", ".join(neutralize(str(h)) for h in _items(data.get("hosts")))
    args = _args(data.get("args"))
    return f"{neutralize(str(data.get('runbook')))} @ {hosts}" + (f" ({args})" if args else "")


def render_pending_list(data: Mapping[str, Any], chat: Chat) -> str:
    waiting = _objects(data.get("pending"))
    if not waiting:
        return chat._("🔐 No request is waiting for approval in this room.")
    lines = [chat.ngettext("🔐 {n} request waits for approval:", "🔐 {n} requests wait for approval:",
                           len(waiting)).format(n=len(waiting))]  # fmt: skip
    for item in waiting:
        lines.append(
            chat._("• {code}: {what}, asked by {user}, expires {when}").format(
                code=neutralize(str(item.get("code"))),
                what=_what(item),
                user=neutralize(str(item.get("requested_by"))),
                when=_when(chat, item.get("expires")),
            )
        )
    return "\n".join(lines)


def render_decision(chat: Chat, decision: str, data: Mapping[str, Any]) -> str:
    """The answer to APPROVE / REJECT / CANCEL (``decision``: approved, rejected, cancelled)."""
    template = _DECISIONS[decision]
    return chat._(template).format(what=_what(data), user=neutralize(str(data.get("requested_by"))),
                                   task=neutralize(str(data.get(decision))))  # fmt: skip


_DECISIONS = {
    "approved": N_("✅ Released: {what}, asked by {user}. It runs now as task {task}."),
    "rejected": N_("⛔ Rejected: {what}, asked by {user} (task {task}). It will not run."),
    "cancelled": N_("↩️ Withdrawn: {what} (task {task}). It will not run."),
}


# -- 5. progress ----------------------------------------------------------------------------------------------------


def render_progress(payload: Mapping[str, Any], chat: Chat) -> str:
    name = neutralize(str(payload.get("runbook")))
    done, total = (int(_seconds(payload.get(key))) for key in ("done", "total"))
    if payload.get("kind") == "running":
        return chat.ngettext(
            "⏳ {runbook} is still running after {elapsed}: {done} of {total} host done",
            "⏳ {runbook} is still running after {elapsed}: {done} of {total} hosts done",
            total,
        ).format(
            runbook=name, elapsed=chat.duration(_seconds(payload.get("elapsed"))), done=done, total=total
        )
    status = str(payload.get("status"))
    code = "-" if payload.get("exit_code") is None else neutralize(str(payload.get("exit_code")))
    return chat._("{mark} {runbook}: {host} {status} exit={code} in {duration} ({done} of {total})").format(
        mark=MARKS.get(status, "•"), runbook=name, host=neutralize(str(payload.get("host"))),
        status=status_word(chat, status),
        code=code, duration=chat.duration(_seconds(payload.get("duration"))), done=done, total=total,
    )  # fmt: skip


# -- 6. liveness ----------------------------------------------------------------------------------------------------


def render_agent_notice(payload: Mapping[str, Any], chat: Chat) -> str:
    agent = neutralize(str(payload.get("agent_id")))
    if payload.get("state") == "started":
        return chat._("🟢 Agent {agent} started (version {version}, catalog {digest}, {n} runbooks runnable).").format(
            agent=agent, version=neutralize(str(payload.get("version"))),
            digest=neutralize(str(payload.get("catalog") or chat._("not locked"))),
            n=int(_seconds(payload.get("runnable"))),
        )  # fmt: skip
    return chat._(
        "⚪ Agent {agent} is stopping; the relay keeps commands sent now only for a while: send them again once it is back."
    ).format(agent=agent)


# -- 8. grouped scheduled reports -----------------------------------------------------------------------------------


def _check_line(item: Mapping[str, Any], chat: Chat) -> str:
    status = str(item.get("status"))
    mark = "✅" if item.get("recovered") else MARKS.get(status, "•")
    message = chat.text(item.get("i18n"), fallback=str(item.get("message") or ""))
    text = f"{mark} {neutralize(message)} ({status_word(chat, status)})"
    if item.get("reminder") and not item.get("recovered"):
        text += " " + chat._("(still failing since {when})").format(
            when=_when(chat, item.get("failing_since"))
        )
    if item.get("at") and item.get("quiet"):
        text += f" [{_when(chat, item['at'])}]"
    return text


def render_schedule(payload: Mapping[str, Any], chat: Chat) -> str:
    when = _when(chat, payload.get("at"))
    mark = MARKS.get(str(payload.get("status")), "•")
    lines = [chat._("{mark} [{schedule}] {when}").format(mark=mark, schedule=neutralize(str(payload.get("schedule"))),
                                                       when=when)]  # fmt: skip
    lines.extend(_check_line(item, chat) for item in _objects(payload.get("checks")))
    held = _objects(payload.get("quiet_collected"))
    if held:
        lines.append(chat._("During quiet hours:"))
        lines.extend(_check_line({**item, "quiet": True}, chat) for item in held)
    return "\n".join(lines)
