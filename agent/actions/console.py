"""The room as an operator's console: ``HELP``, ``HISTORY``, ``PENDING`` and ``CANCEL`` (docs/protocol.md).

Each handler answers with data only (the chat text is :mod:`agent.chat.console`'s) and only about the asking
room: the runbooks it may run, the runs it started, the approvals it waits for. ``HISTORY`` reads the audit log,
the one record of what ran; a room never sees another room's runs.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.catalog.manifest import EnumParam, IntegerParam, Manifest
from agent.chat.i18n import Msg, i18n_json
from agent.errors import InvalidArguments
from agent.session.answers import Help, History, Pending, Refused
from agent.session.core import Answer
from agent.session.protocol import ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.store import VerifyReport
    from agent.state.outbox import Outbox

#: HISTORY reads at most this much of the end of the audit log (older runs are not listed).
HISTORY_WINDOW = 8 * 1024 * 1024
HISTORY_DEFAULT = 10
HISTORY_MAX = 50
#: Audit entry kinds that record a finished run, and the ones that record a held request's end.
_RUN_KINDS = frozenset({"run"})

# -- HELP -------------------------------------------------------------------------------------------------------


def _shape(param: Any) -> str:
    """What a value looks like in the usage line: ``app|was|web``, ``1..2000``, ``NAME``."""
    if isinstance(param, EnumParam):
        return "|".join(param.choices)
    if isinstance(param, IntegerParam):
        if param.min is not None and param.max is not None:
            return f"{param.min}..{param.max}"
        if param.min is not None:
            return f"{param.min}.."
        if param.max is not None:
            return f"..{param.max}"
        return "N"
    return {"identifier": "NAME", "date": "YYYY-MM-DD"}.get(param.type, "TEXT")


def usage_line(name: str, manifest: Manifest) -> str:
    """``run tail_log host=H dir=app|was|web file=NAME [lines=1..2000]``: how to type it in the room."""
    words = ["run", name, "host=H"]
    for param in manifest.params:
        word = f"{param.name}={_shape(param)}"
        words.append(word if param.is_required else f"[{word}]")
    return " ".join(words)


def runbook_help(name: str, manifest: Manifest) -> dict[str, Any]:
    """Everything a room needs to call one runbook."""
    params = []
    for param in manifest.params:
        entry: dict[str, Any] = {"name": param.name, "required": param.is_required, "accepts": str(param.describe()),
                                 "accepts_i18n": i18n_json(param.describe()),
                                 "help": param.help}  # fmt: skip
        if isinstance(param, EnumParam):
            entry["choices"] = list(param.choices)
        default = getattr(param, "default", None)
        if default is not None:
            entry["default"] = default
        params.append(entry)
    return {
        "name": name, "description": manifest.description, "usage": usage_line(name, manifest),
        "params": params, "targets": list(manifest.targets), "roles": list(manifest.roles),
        "requires_approval": manifest.requires_approval, "changes_state": manifest.changes_state,
        "timeout": manifest.timeout,
    }  # fmt: skip


def help_answer(report: VerifyReport, room: str, params: dict[str, Any]) -> Answer[Help] | Answer[Refused]:
    """HELP. ``params``: ``runbook`` (optional). The room's runbooks, or how to call one of them."""
    mine = {}
    for name in report.runnable:
        manifest = report.runbooks[name].manifest
        if manifest is not None and room in manifest.rooms:
            mine[name] = manifest
    wanted = params.get("runbook")
    if wanted is not None:
        if not isinstance(wanted, str) or wanted not in mine:
            # The same answer for unknown, unverified and other rooms' runbooks: nothing leaks across rooms.
            near = suggest(wanted, mine) if isinstance(wanted, str) else []
            return Answer.fail(
                ErrorCode.RUNBOOK_NOT_RUNNABLE,
                Msg(
                    "no runbook by that name may run in this room; did you mean {names}?",
                    names=", ".join(near),
                )
                if near
                else Msg("no runbook by that name may run in this room; 'help' lists them"),
            )
        return Answer(Status.SUCCESS, Help(help={"runbook": runbook_help(wanted, mine[wanted])}))
    listed = [{"name": n, "description": m.description, "usage": usage_line(n, m),
               "requires_approval": m.requires_approval} for n, m in sorted(mine.items())]  # fmt: skip
    return Answer(Status.SUCCESS, Help(help={"runbooks": listed}))


def suggest(word: str, names: Any, n: int = 3) -> list[str]:
    """The names ``word`` is most likely a typo or a beginning of (``batch`` → ``batch_wait``), best first."""
    names = list(names)
    found = difflib.get_close_matches(word, names, n=n, cutoff=0.6)
    starts = [name for name in sorted(names) if word and name.startswith(word) and name not in found]
    return (found + starts)[:n]


# -- HISTORY ----------------------------------------------------------------------------------------------------


def recent_entries(path: Path, window: int = HISTORY_WINDOW) -> list[dict[str, Any]]:
    """The audit log's entries in its last ``window`` bytes, oldest first (a partial first line is skipped)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - window)
            handle.seek(start)
            chunk = handle.read()
    except FileNotFoundError:
        return []
    lines = chunk.split(b"\n")
    if start > 0:
        lines = lines[1:]
    entries = []
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def room_history(
    entries: list[dict[str, Any]], room: str, runbook: str | None, limit: int
) -> list[dict[str, Any]]:
    """The room's own runs, newest first: when, who, what (the audit log's redacted args), where, result, approver."""
    runs = []
    for entry in reversed(entries):
        if entry.get("kind") not in _RUN_KINDS or entry.get("room_id") != room:
            continue
        if runbook is not None and entry.get("runbook") != runbook:
            continue
        hosts = entry.get("hosts") if isinstance(entry.get("hosts"), list) else []
        statuses = [str(h.get("status")) for h in hosts if isinstance(h, dict)]
        runs.append(
            {
                "ts": entry.get("ts"), "task_id": entry.get("task_id"), "runbook": entry.get("runbook"),
                "user_id": entry.get("user_id"), "via": entry.get("via"), "args": entry.get("args") or {},
                "hosts": [{"host": h.get("host"), "status": h.get("status")} for h in hosts if isinstance(h, dict)],
                "status": "SUCCESS" if statuses and all(s == "SUCCESS" for s in statuses) else
                          next((s for s in statuses if s != "SUCCESS"), "ERROR"),
                "approved_by": entry.get("approved_by"),
            }
        )  # fmt: skip
        if len(runs) >= limit:
            break
    return runs


def history_answer(audit_path: Path, room: str, params: dict[str, Any]) -> Answer[History]:
    """HISTORY. ``params``: ``runbook`` (optional), ``limit`` (1–50, default 10). The room's own runs, newest first.

    Raises:
        InvalidArguments: a bad ``runbook`` or ``limit``.
    """
    runbook, limit = params.get("runbook"), params.get("limit", HISTORY_DEFAULT)
    problems = []
    if runbook is not None and not isinstance(runbook, str):
        problems.append(("runbook", Msg("must be a runbook name")))
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= HISTORY_MAX:
        problems.append(("limit", Msg("must be a whole number from 1 to {max}", max=HISTORY_MAX)))
    if problems:
        raise InvalidArguments(problems)
    runs = room_history(recent_entries(audit_path), room, runbook, limit)
    return Answer(Status.SUCCESS, History(history=runs, runbook=runbook, limit=limit))


# -- PENDING and CANCEL -----------------------------------------------------------------------------------------


def pending_answer(ledger: Outbox, room: str, now: float) -> Answer[Pending]:
    """PENDING: the requests of this room that wait for an approver: code, what, who asked, when it expires."""
    waiting: list[dict[str, Any]] = [
        {"code": a.code, "task_id": a.task_id, "requested_by": a.requester, "expires": a.expires,
         "expires_in": max(0, round(a.expires - now)), "runbook": a.summary.get("runbook"),
         "hosts": a.summary.get("hosts") or [], "args": a.summary.get("args") or {}}
        for a in ledger.held()
        if a.room_id == room and a.expires >= now
    ]  # fmt: skip
    waiting.sort(key=lambda a: float(a["expires"]))
    return Answer(Status.SUCCESS, Pending(pending=waiting))
