"""Chat-ready text for answers and reports. Pure, no I/O.

A relay can post ``payload.text`` as is: per host a status mark, exit code and duration, the last lines of output in a
code block, a note when output was cut and where the rest is kept. Whatever came from a host or a user is neutralised
for messengers first: mentions (``@all``), links and code fences cannot trigger anything. The text is rendered from
already redacted data (see :meth:`agent.service.AgentService.outbound`), since neutralising inserts zero-width spaces
that would otherwise hide secrets from the redaction patterns.
"""

from __future__ import annotations

from typing import Any

from agent.i18n import Chat
from agent.markup import MARKS, ZWSP, neutralize
from agent.render_console import output_block

__all__ = ["MARKS", "ZWSP", "neutralize", "render_finished", "render_pending", "render_report", "render_run"]


def _code(text: str) -> str:
    return "```\n" + neutralize(text) + "\n```"


def render_run(data: dict[str, Any], output_ref: str | None = None) -> str:
    """A RUN_RUNBOOK result: one block per host."""
    name = neutralize(str(data.get("runbook", "?")))
    hosts = data.get("hosts") or []
    ok = sum(1 for h in hosts if h.get("status") == "SUCCESS")
    lines = [f"{MARKS.get(str(data.get('status')), '•')} {name}: {ok} of {len(hosts)} host(s) succeeded"]
    for host in hosts:
        status = str(host.get("status"))
        code = "-" if host.get("exit_code") is None else host.get("exit_code")
        head = f"{MARKS.get(status, '•')} {neutralize(str(host.get('host')))} {status} exit={code} {host.get('duration', 0):.2f}s"
        if host.get("message"):
            head += f" — {neutralize(str(host['message']))}"
        lines.append(head)
        # Head and tail of each stream, what was left out, and the exact command that pages the kept copy.
        failed = status != "SUCCESS"
        lines.extend(output_block(host, output_ref, int(data.get("page_lines") or 200), failed, Chat()))
    return "\n".join(lines)


def render_checks(data: dict[str, Any]) -> str:
    lines = [f"{MARKS.get(str(data.get('status')), '•')} checks: {data.get('status')}"]
    for name, result in (data.get("checks") or {}).items():
        status = str(result.get("status"))
        lines.append(
            f"{MARKS.get(status, '•')} {neutralize(str(name))} {status} — {neutralize(str(result.get('message', '')))}"
        )
    return "\n".join(lines)


def render_finished(payload: dict[str, Any]) -> str:
    """TASK_FINISHED: the run, the checks, a list, or the refusal."""
    data = payload.get("data") or {}
    error = payload.get("error")
    if error:
        return f"❌ {neutralize(str(error.get('message', '')))} ({error.get('code')})"
    if "hosts" in data and "runbook" in data:
        return render_run(data, data.get("output_ref"))
    if "checks" in data:
        return render_checks(data)
    if "runbooks" in data:
        names = [
            neutralize(str(r.get("name"))) + " — " + neutralize(str(r.get("description", "")))
            for r in data["runbooks"]
        ]
        return "📋 runbooks you can run here:\n" + ("\n".join(f"• {n}" for n in names) if names else "(none)")
    if "rows" in data:
        rows = data["rows"]
        body = "\n".join(" | ".join(str(v) for v in row.values()) for row in rows[:10])
        return f"✅ {data.get('row_count', len(rows))} row(s)" + (f"\n{_code(body)}" if body else "")
    if "lines" in data:
        return f"📄 page {data.get('page', 0) + 1} of {data.get('pages', 1)}\n{_code(str(data['lines']))}"
    return f"{MARKS.get(str(payload.get('status')), '•')} {payload.get('status')}"


def render_report(payload: dict[str, Any]) -> str:
    kind = payload.get("kind")
    mark = MARKS.get(str(payload.get("status")), "•")
    if payload.get("recovered"):
        mark = "✅"
    message = neutralize(str(payload.get("message", "")))
    if kind == "summary":
        lines = [f"{mark} daily summary: {message}"]
        for name, check in (payload.get("checks") or {}).items():
            lines.append(f"{MARKS.get(str(check.get('status')), '•')} {neutralize(str(name))} {check.get('status')} "
                         f"(not OK {check.get('not_ok', 0)} of {check.get('runs', 0)} runs)")  # fmt: skip
        return "\n".join(lines)
    if kind == "catalog":
        problems = payload.get("problems") or []
        details = "\n".join(
            f"• {neutralize(str(p.get('runbook') or '(lock)'))}: {p.get('kind')}" for p in problems[:20]
        )
        return f"{mark} {message}" + (f"\n{details}" if details else "")
    return f"{mark} {message}"


def render_pending(payload: dict[str, Any]) -> str:
    """TASK_PENDING_APPROVAL: what would run, who asked, and how an approver releases it."""
    args = " ".join(
        f"{neutralize(str(k))}={neutralize(str(v))}" for k, v in (payload.get("args") or {}).items()
    )
    hosts = ", ".join(neutralize(str(h)) for h in payload.get("hosts") or [])
    minutes = round((payload.get("expires_in") or 0) / 60)
    code = payload.get("code")
    return (
        f"🔐 approval needed: {neutralize(str(payload.get('runbook')))} on {hosts}"
        + (f" ({args})" if args else "")
        + f", requested by {neutralize(str(payload.get('requested_by')))}.\n"
        + f"Another approver: approve {code} (or reject {code}) within {minutes} min."
    )
