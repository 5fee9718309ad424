"""Dispatch: the fixed table of allowed actions and their handlers. Every path ends in an :class:`Answer`.

A handler gets the command's :class:`TaskContext` (the command, and exactly the parts of the agent it may use, as
arguments: no service object), may call :meth:`TaskContext.accept` once its request is valid (that sends
TASK_ACCEPTED), and returns an :class:`Answer`, or raises one of the documented refusals, which :func:`dispatch`
turns into a FAIL with a code and a short message that echoes no raw input. Runbooks run only through
:class:`agent.runs.gate.RunGate`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.actions import approvals, console, operations
from agent.chat.i18n import Msg, i18n_json, message_of
from agent.checks import CheckResult, CheckStatus, db, disk, worst
from agent.config.schema import DiskCheck
from agent.errors import (
    HostNotAllowed,
    InvalidArguments,
    NotAuthorized,
    RoomNotAllowed,
    RunbookNotRunnable,
    UnknownHost,
)
from agent.runs.gate import Held, RunRequest, Via
from agent.runs.outputs import OutputNotFound
from agent.runs.results import HostResult
from agent.session.answers import (
    CheckAlert,
    CheckResults,
    Checks,
    Help,
    History,
    Hosts,
    OutputPage,
    Pending,
    QueryRows,
    Refused,
    RunbookList,
    RunData,
    Stopped,
)
from agent.session.core import Answer, Decided, Hold, Outcome
from agent.session.protocol import Action, Command, ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.store import Catalog
    from agent.checks.runner import CheckRunner
    from agent.config.schema import AgentConfig
    from agent.runs.gate import RunGate
    from agent.runs.outputs import OutputStore
    from agent.runs.plan import RunPlan
    from agent.state.audit import AuditLog
    from agent.state.outbox import Outbox

__all__ = ["ACTION_ROLES", "HANDLERS", "Answer", "Parts", "TaskContext", "dispatch"]


@dataclass(frozen=True)
class Parts:
    """The parts of the agent that handlers use, built once by the runtime."""

    config: AgentConfig
    catalog: Catalog
    gate: RunGate
    checks: CheckRunner
    outputs: OutputStore
    ledger: Outbox
    audit: AuditLog


@dataclass
class TaskContext:
    """What a handler gets: the command, who released it, the agent's parts, and a way to say it was accepted."""

    command: Command
    parts: Parts
    on_accept: Callable[[dict[str, Any] | None], None]
    #: The approver who released this request (four eyes), if it needed one.
    approved_by: str | None = None
    accepted: bool = field(default=False)
    #: Sends a TASK_PROGRESS line about this command (None: progress is not reported).
    on_progress: Callable[[dict[str, Any]], None] | None = None

    def progress(self, payload: dict[str, Any]) -> None:
        if self.on_progress is not None:
            self.on_progress(payload)

    def accept(self, payload: dict[str, Any] | None = None) -> None:
        if not self.accepted:
            self.accepted = True
            self.on_accept(payload)


Handler = Callable[[TaskContext], Awaitable[Outcome]]


async def run_runbook(ctx: TaskContext) -> Answer[RunData] | Answer[Refused] | Hold:
    """``params``: ``runbook`` (name), ``hosts`` (aliases or groups), ``args`` (parameter values)."""
    command = ctx.command
    params = command.params
    request = RunRequest(
        runbook=params.get("runbook"),  # type: ignore[arg-type]  # the gate refuses a non-string
        hosts=params.get("hosts") or [], args=params.get("args") or {}, via=Via.CHAT,
        user=command.user, room=command.room_id, task_id=command.task_id, approved_by=ctx.approved_by,
    )  # fmt: skip
    try:
        return await run_request(ctx, request)
    except RunbookNotRunnable as exc:
        # A typo: name the room's runbooks it is close to (only this room's: nothing leaks across rooms).
        report = ctx.parts.catalog.report
        mine = operations.room_manifests(report, command.room_id)
        # (a runbook the folder has but the lock does not says why instead: REASONS, not a guess)
        unknown = getattr(exc.reason, "id", None) == "no such runbook"
        near = console.suggest(exc.name, mine) if unknown and exc.name not in report.runbooks else []
        if not near:
            raise
        raise RunbookNotRunnable(
            exc.name, Msg("no such runbook; did you mean {names}?", names=", ".join(near))
        ) from None


async def run_request(ctx: TaskContext, request: RunRequest) -> Answer[RunData] | Answer[Refused] | Hold:
    """A chat run (RUN_RUNBOOK, RERUN) through the run gate: progress, the hold for four eyes, one row per host."""
    command, gate = ctx.command, ctx.parts.gate
    extra = {"approved_by": ctx.approved_by} if ctx.approved_by else {}
    progress = _Progress(ctx, ctx.parts.config.tasks.progress_after)

    def accepted(plan: RunPlan) -> None:
        ctx.accept({"runbook": plan.name, "hosts": plan.hosts, **extra})
        progress.start(plan)

    try:
        result = await gate.run(request, on_accept=accepted, on_host=progress.host_done)
    finally:
        progress.stop()
    if isinstance(result, Held):
        if not any("approver" in roles for roles in ctx.parts.config.access.users.values()):
            return Answer.fail(
                ErrorCode.NOT_AVAILABLE,
                Msg("{runbook} needs an approver, and none is configured", runbook=result.runbook),
            )
        return Hold({"runbook": result.runbook, "hosts": result.hosts, "args": result.args})
    rows = [h.to_json() for h in result.hosts]
    for row, host in zip(rows, result.hosts, strict=True):
        # How long each kept stream is, so the chat view can say how many lines it left out and which page.
        row["stdout_lines"] = _line_count(host.stdout_full or host.stdout)
        row["stderr_lines"] = _line_count(host.stderr_full or host.stderr)
    data = RunData(runbook=result.runbook, script_sha256=result.script_sha256, status=result.status.value,
                   hosts=rows, output_ref=command.task_id, page_lines=ctx.parts.outputs.page_lines)  # fmt: skip
    return Answer(Status.SUCCESS if result.ok else Status.FAIL, data)


def _line_count(text: str) -> int:
    return len(text.splitlines())


class _Progress:
    """Progress of a long run: once it has run ``after`` seconds, one line then, and one per host as it ends."""

    def __init__(self, ctx: TaskContext, after: float | None) -> None:
        self.ctx = ctx
        self.after = after
        self.late = False
        self.done: list[HostResult] = []
        self.plan: RunPlan | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, plan: RunPlan) -> None:
        self.plan = plan
        if self.after is not None:
            self._timer = asyncio.get_running_loop().call_later(self.after, self._still_running)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _base(self) -> dict[str, Any]:
        assert self.plan is not None
        return {"runbook": self.plan.name, "done": len(self.done), "total": len(self.plan.hosts)}

    def _still_running(self) -> None:
        self.late = True
        self.ctx.progress({**self._base(), "kind": "running", "elapsed": self.after,
                           "finished": [h.host for h in self.done]})  # fmt: skip

    def host_done(self, host: HostResult) -> None:
        self.done.append(host)
        # The last host's line would say what the final answer says a moment later.
        if self.late and self.plan is not None and len(self.done) < len(self.plan.hosts):
            self.ctx.progress({**self._base(), "kind": "host", "host": host.host, "status": host.status.value,
                               "exit_code": host.exit_code, "duration": round(host.duration, 3)})  # fmt: skip


async def get_output(ctx: TaskContext) -> Answer[OutputPage] | Answer[Refused]:
    """``params``: ``task_id`` (the run's, its ``output_ref``), ``host``, ``stream`` (stdout), ``page`` (0)."""
    params = ctx.command.params
    task_id = params.get("task_id")
    record = ctx.parts.ledger.task(task_id) if isinstance(task_id, str) else None
    if record is None or record.room_id != ctx.command.room_id:
        # The same answer whether the task does not exist or ran in another room: nothing leaks across rooms.
        return Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("no kept output for that task in this room"))
    try:
        lines, page, pages = ctx.parts.outputs.page(
            params.get("task_id"), params.get("host"), params.get("stream", "stdout"), params.get("page", 0)
        )
    except OutputNotFound as exc:
        return Answer.fail(ErrorCode.NOT_AVAILABLE, message_of(exc))
    except ValueError as exc:
        raise InvalidArguments([("page" if "page" in str(exc) else "stream", message_of(exc))]) from None
    return Answer(Status.SUCCESS, OutputPage(task_id=params["task_id"], host=params["host"],
                                             stream=params.get("stream", "stdout"), page=page, pages=pages,
                                             lines=lines))  # fmt: skip


async def list_runbooks(ctx: TaskContext) -> Answer[RunbookList]:
    """The runbooks this room may run, with their parameters."""
    report = ctx.parts.catalog.report
    room = ctx.command.room_id
    listed = []
    for name in report.runnable:
        manifest = report.runbooks[name].manifest
        if manifest is None or room not in manifest.rooms:
            continue
        listed.append(
            {
                "name": name,
                "description": manifest.description,
                "changes_state": manifest.changes_state,
                "targets": manifest.targets,
                "argv": manifest.argv_template(),
                "params": [
                    {
                        "name": p.name,
                        "required": p.is_required,
                        "accepts": str(p.describe()),
                        "accepts_i18n": i18n_json(p.describe()),
                        "help": p.help,
                    }
                    for p in manifest.params
                ],
            }
        )
    return Answer(Status.SUCCESS, RunbookList(runbooks=listed))


def _check_answer(results: dict[str, CheckResult]) -> Answer[CheckResults]:
    overall = worst([r.status for r in results.values()])
    status = Status.SUCCESS if overall in (CheckStatus.OK, CheckStatus.WARN) else Status.FAIL
    return Answer(
        status, CheckResults(status=overall.value, checks={n: r.to_json() for n, r in results.items()})
    )


async def _run_checks(ctx: TaskContext, names: list[str]) -> Answer[CheckResults]:
    runner = ctx.parts.checks
    ctx.accept({"checks": names})
    cmd = ctx.command
    results = await asyncio.gather(
        *(runner.run(name, via=Via.CHECK, room=cmd.room_id, user=cmd.user) for name in names)
    )
    return _check_answer(dict(zip(names, results, strict=True)))


async def run_check(ctx: TaskContext) -> Answer[CheckResults]:
    """``params``: ``check`` (a check name from the config)."""
    name = ctx.command.params.get("check")
    if not isinstance(name, str) or name not in ctx.parts.config.checks:
        raise InvalidArguments([("check", Msg("params.check must name a configured check"))])
    return await _run_checks(ctx, [name])


async def check_was_status(ctx: TaskContext) -> Answer[CheckResults] | Answer[Refused]:
    name = ctx.parts.config.actions.was_status_check
    if name is None:
        return Answer.fail(
            ErrorCode.NOT_AVAILABLE, Msg("no WAS health check is configured (actions.was_status_check)")
        )
    return await _run_checks(ctx, [name])


def disk_space_checks(config: AgentConfig) -> list[str]:
    """The checks CHECK_DISK_SPACE runs: ``[actions] disk_space_checks``, else every disk check (may be none)."""
    names = config.actions.disk_space_checks
    if names is None:
        names = [n for n, c in config.checks.items() if isinstance(c, DiskCheck)]
    return names


async def check_disk_space(ctx: TaskContext) -> Answer[CheckResults]:
    config = ctx.parts.config
    names = disk_space_checks(config)
    if not names:
        # None configured: the agent PC's own system drive (C:\ on Windows, / elsewhere).
        ctx.accept({"checks": [SYSTEM_DRIVE]})
        spec = DiskCheck(kind="disk", path=system_drive())
        return _check_answer({SYSTEM_DRIVE: await disk.run(spec)})
    return await _run_checks(ctx, names)


#: The name CHECK_DISK_SPACE gives the system drive when no disk check is configured.
SYSTEM_DRIVE = "system_drive"


def system_drive() -> Path:
    """The drive the OS runs from: ``%SystemDrive%\\`` on Windows, ``/`` elsewhere."""
    if os.name == "nt":  # pragma: no cover - Windows
        return Path(os.environ.get("SYSTEMDRIVE", "C:") + "\\")
    return Path("/")


async def fetch_mes_qc(ctx: TaskContext) -> Answer[QueryRows] | Answer[Refused]:
    """``params``: ``date``, text PostgreSQL reads as a date (``2026-09-18``, ``2026/09/18``, ``20260918``, ``today``,
    ``yesterday``…); absent: ``today``, the database's current_date. Runs the fixed MES QC query for that day."""
    config = ctx.parts.config
    query = config.db.query(config.actions.mes_qc_query)
    if query is None:
        return Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("the MES QC query is not configured"))
    sent = ctx.command.params.get("date")
    # Refused here only what could never reach PostgreSQL (InvalidArguments); what it reads is its business.
    bound = db.bind(query, {"date": "today" if sent is None else sent})

    def read(dates: dict[str, str]) -> None:
        ctx.accept({"date": dates.get("date", sent)})

    try:
        result = await db.query(query, bound, config.db, ctx.parts.checks.environ, on_dates=read)
    except db.QueryFailed as exc:
        return Answer.fail(ErrorCode.CHECK_FAILED, exc.message)
    # The day the database queried, in its words; a query whose date is a plain string: the text as sent.
    day = result.dates.get("date", sent)
    # Honest counts: "total" from the query's bounded count_sql (the built-in mes_qc has one), else unknown.
    return Answer(Status.SUCCESS, QueryRows(date=day, rows=result.rows, row_count=len(result.rows),
                                            truncated=result.truncated, total=result.total,
                                            total_at_least=result.total_at_least))  # fmt: skip


async def approve(ctx: TaskContext) -> Answer[Refused] | Decided:
    """``params``: ``code`` (from TASK_PENDING_APPROVAL). A different user with the approver role releases it."""
    return approvals.decide(ctx.command, ctx.parts.ledger, ctx.parts.audit, approve=True, now=time.time())


async def reject(ctx: TaskContext) -> Answer[Refused] | Decided:
    """``params``: ``code``. A different user with the approver role cancels the request."""
    return approvals.decide(ctx.command, ctx.parts.ledger, ctx.parts.audit, approve=False, now=time.time())


async def help_command(ctx: TaskContext) -> Answer[Help] | Answer[Refused]:
    """``params``: ``runbook`` (optional). The runbooks this room may run, or how to call one."""
    return console.help_answer(ctx.parts.catalog.report, ctx.command.room_id, ctx.command.params)


async def history(ctx: TaskContext) -> Answer[History]:
    """``params``: ``runbook`` (optional), ``limit``. This room's runs from the audit log, newest first."""
    return console.history_answer(ctx.parts.audit.path, ctx.command.room_id, ctx.command.params)


async def hosts(ctx: TaskContext) -> Answer[Hosts]:
    """The servers and groups this room's runbooks may target."""
    return operations.hosts_answer(ctx.parts.config, ctx.parts.catalog.report, ctx.command.room_id)


async def checks(ctx: TaskContext) -> Answer[Checks]:
    """The configured checks, their schedules and their last state."""
    return operations.checks_answer(ctx.parts.config, ctx.parts.ledger, time.time())


async def stop(ctx: TaskContext) -> Answer[Stopped] | Answer[Refused]:
    """``params``: ``task_id``. Ends a running runbook of this room on every host (the timeout's host-side kill)."""
    return operations.stop(ctx.command, ctx.parts.config, ctx.parts.gate, ctx.parts.ledger)


async def rerun(ctx: TaskContext) -> Answer[RunData] | Answer[Refused] | Hold:
    """``params``: ``task_id`` (a finished run of this room), ``hosts``: ``"failed"`` (the default and the only
    choice). A new run of the same runbook and arguments on the hosts that did not succeed; approval as for a run."""
    command = ctx.command
    if command.params.get("hosts", "failed") != "failed":
        raise InvalidArguments(
            [("hosts", Msg('only "failed" (the servers that did not succeed) can be run again'))]
        )
    found = operations.failed_run(
        console.recent_entries(ctx.parts.audit.path), command.room_id, command.params["task_id"]
    )
    if isinstance(found, str):
        return Answer.fail(ErrorCode.NOT_AVAILABLE, found)
    runbook, failed, args = found
    if ctx.approved_by is None:  # recorded once: when asked, not again when an approver releases it
        ctx.parts.audit.append("rerun", task_id=command.task_id, rerun_of=command.params["task_id"],
                               hosts=failed, user_id=command.user, room_id=command.room_id)  # fmt: skip
    request = RunRequest(runbook=runbook, hosts=failed, args=args, via=Via.CHAT, user=command.user,
                         room=command.room_id, task_id=command.task_id, approved_by=ctx.approved_by)  # fmt: skip
    return await run_request(ctx, request)


async def ack_check(ctx: TaskContext) -> Answer[CheckAlert] | Answer[Refused]:
    """``params``: ``check``. No more reminders about its failure until its state changes."""
    parts = ctx.parts
    return operations.ack_check(ctx.command, parts.config, parts.ledger, parts.audit, time.time())


async def mute_check(ctx: TaskContext) -> Answer[CheckAlert]:
    """``params``: ``check``, ``seconds``. No report about it until then (a maintenance window)."""
    parts = ctx.parts
    return operations.mute_check(ctx.command, parts.config, parts.ledger, parts.audit, time.time())


async def unmute_check(ctx: TaskContext) -> Answer[CheckAlert]:
    """``params``: ``check``. Its reports go out again."""
    parts = ctx.parts
    return operations.unmute_check(ctx.command, parts.config, parts.ledger, parts.audit, time.time())


async def pending(ctx: TaskContext) -> Answer[Pending]:
    """This room's requests waiting for an approver."""
    return console.pending_answer(ctx.parts.ledger, ctx.command.room_id, time.time())


async def cancel(ctx: TaskContext) -> Answer[Refused] | Decided:
    """``params``: ``code``. The requester withdraws their own held request."""
    return approvals.cancel(ctx.command, ctx.parts.ledger, ctx.parts.audit)


ANYONE = frozenset({"viewer", "operator", "approver"})
#: Who may silence a check's alerts (acknowledge, mute): those who answer for it, not viewers.
OPERATORS = frozenset({"operator", "approver"})
#: Roles each action needs when the config lists users (RUN_RUNBOOK, RERUN: the runbook's own ``roles``, checked by
#: the gate; STOP: a role that may run the runbook, an approver's for one that needed approval).
ACTION_ROLES: Mapping[Action, frozenset[str]] = MappingProxyType(
    {
        Action.RUN_RUNBOOK: ANYONE,
        Action.LIST_RUNBOOKS: ANYONE,
        Action.FETCH_MES_QC: ANYONE,
        Action.CHECK_INTERNAL_WAS_STATUS: ANYONE,
        Action.CHECK_DISK_SPACE: ANYONE,
        Action.RUN_CHECK: ANYONE,
        Action.GET_OUTPUT: ANYONE,
        Action.APPROVE: frozenset({"approver"}),
        Action.REJECT: frozenset({"approver"}),
        Action.HELP: ANYONE,
        Action.HISTORY: ANYONE,
        Action.PENDING: ANYONE,
        Action.CANCEL: ANYONE,
        Action.HOSTS: ANYONE,
        Action.CHECKS: ANYONE,
        Action.STOP: ANYONE,
        Action.RERUN: ANYONE,
        Action.ACK_CHECK: OPERATORS,
        Action.MUTE_CHECK: OPERATORS,
        Action.UNMUTE_CHECK: OPERATORS,
    }
)

#: The allowlist. A test pins it to the actions documented in docs/protocol.md.
HANDLERS: Mapping[Action, Handler] = MappingProxyType(
    {
        Action.RUN_RUNBOOK: run_runbook,
        Action.LIST_RUNBOOKS: list_runbooks,
        Action.FETCH_MES_QC: fetch_mes_qc,
        Action.CHECK_INTERNAL_WAS_STATUS: check_was_status,
        Action.CHECK_DISK_SPACE: check_disk_space,
        Action.RUN_CHECK: run_check,
        Action.GET_OUTPUT: get_output,
        Action.APPROVE: approve,
        Action.REJECT: reject,
        Action.HELP: help_command,
        Action.HISTORY: history,
        Action.PENDING: pending,
        Action.CANCEL: cancel,
        Action.HOSTS: hosts,
        Action.CHECKS: checks,
        Action.STOP: stop,
        Action.RERUN: rerun,
        Action.ACK_CHECK: ack_check,
        Action.MUTE_CHECK: mute_check,
        Action.UNMUTE_CHECK: unmute_check,
    }
)

_REFUSALS: list[tuple[type[Exception], ErrorCode]] = [
    (InvalidArguments, ErrorCode.INVALID_ARGUMENTS),
    (RunbookNotRunnable, ErrorCode.RUNBOOK_NOT_RUNNABLE),
    (UnknownHost, ErrorCode.UNKNOWN_HOST),
    (HostNotAllowed, ErrorCode.HOST_NOT_ALLOWED),
    (RoomNotAllowed, ErrorCode.ROOM_NOT_ALLOWED),
    (NotAuthorized, ErrorCode.UNAUTHORIZED),
]


async def dispatch(ctx: TaskContext) -> Outcome:
    """Run the command's handler; a documented refusal becomes a FAIL answer. Other exceptions propagate."""
    handler = HANDLERS[ctx.command.action]
    try:
        roles = ctx.parts.config.access.roles_of(ctx.command.user)
        if roles is not None and not roles & ACTION_ROLES[ctx.command.action]:
            action = ctx.command.action.value
            raise NotAuthorized(
                Msg("{action} is not allowed for an unknown user", action=action)
                if not roles
                else Msg("{action} is not allowed for this user's roles", action=action)
            )
        return await handler(ctx)
    except tuple(cls for cls, _ in _REFUSALS) as exc:
        code = next(code for cls, code in _REFUSALS if isinstance(exc, cls))
        return Answer.fail(code, message_of(exc))
