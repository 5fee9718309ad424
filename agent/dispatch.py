"""Dispatch: the fixed table of allowed actions and their handlers. Every path ends in an :class:`Answer`.

A handler gets the command's :class:`TaskContext`, may call :meth:`TaskContext.accept` once its request is valid
(that sends TASK_ACCEPTED), and returns an :class:`Answer`, or raises one of the documented refusals, which
:func:`dispatch` turns into a FAIL with a code and a short message that echoes no raw input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.checks import CheckResult, CheckStatus, db, worst
from agent.config import DiskCheck
from agent.errors import (
    HostNotAllowed,
    InvalidArguments,
    NotAuthorized,
    RoomNotAllowed,
    RunbookNotRunnable,
    UnknownHost,
)
from agent.outputs import OutputNotFound
from agent.plan import plan_run
from agent.protocol import Action, Command, ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.service import AgentService


@dataclass(frozen=True)
class Answer:
    status: Status
    data: dict[str, Any] = field(default_factory=dict)
    error: tuple[ErrorCode, str] | None = None
    #: Set instead of a final answer when the request waits for approval: what will run.
    pending: dict[str, Any] | None = None

    @classmethod
    def fail(cls, code: ErrorCode, message: str, data: dict[str, Any] | None = None) -> Answer:
        return cls(Status.FAIL, data or {}, (code, message))


class TaskContext:
    """What a handler may use: the service, the command, and a way to say it was accepted."""

    def __init__(self, service: AgentService, command: Command, approved_by: str | None = None) -> None:
        self.service = service
        self.command = command
        self.accepted = False
        #: The approver who released this request (four eyes), if it needed one.
        self.approved_by = approved_by

    def accept(self, payload: dict[str, Any] | None = None) -> None:
        if not self.accepted:
            self.accepted = True
            self.service.accept(self.command, payload)


Handler = Callable[[TaskContext], Awaitable[Answer]]


async def run_runbook(ctx: TaskContext) -> Answer:
    """``params``: ``runbook`` (name), ``hosts`` (aliases or groups), ``args`` (parameter values)."""
    service, command = ctx.service, ctx.command
    params = command.params
    name = params.get("runbook")
    if not isinstance(name, str):
        raise InvalidArguments([("runbook", "params.runbook must name a runbook")])
    runbook = service.catalog.load(name)
    plan = plan_run(runbook, service.config.inventory, params.get("hosts") or [], params.get("args") or {},
                    room=command.room_id)  # fmt: skip
    roles = service.config.access.roles_of(command.user)
    if roles is not None and not roles & set(runbook.manifest.roles):
        raise NotAuthorized(f"runbook {plan.name!r} needs the role " + " or ".join(runbook.manifest.roles))
    if runbook.manifest.requires_approval and ctx.approved_by is None:
        if not any("approver" in user_roles for user_roles in service.config.access.users.values()):
            return Answer.fail(
                ErrorCode.NOT_AVAILABLE, f"{plan.name} needs an approver, and none is configured"
            )
        return Answer(
            Status.FAIL, pending={"runbook": plan.name, "hosts": plan.hosts, "args": params.get("args") or {}}
        )
    ctx.accept(
        {
            "runbook": plan.name,
            "hosts": plan.hosts,
            **({"approved_by": ctx.approved_by} if ctx.approved_by else {}),
        }
    )
    result = await service.executor.run(plan, service.redactor_for(runbook.name, runbook.manifest.redact))
    service.audit.append(
        "run",
        task_id=command.task_id,
        runbook=plan.name,
        script_sha256=plan.runbook.script_sha256,
        argv_count=len(plan.argv),
        hosts=[
            {"host": h.host, "status": h.status.value, "exit_code": h.exit_code, "duration": round(h.duration, 3),
             "output_sha256": h.output_sha256}
            for h in result.hosts
        ],
    )  # fmt: skip
    service.outputs.save(command.task_id, result)
    return Answer(
        Status.SUCCESS if result.ok else Status.FAIL, {**result.to_json(), "output_ref": command.task_id}
    )


async def get_output(ctx: TaskContext) -> Answer:
    """``params``: ``task_id`` (the run's, its ``output_ref``), ``host``, ``stream`` (stdout), ``page`` (0)."""
    params = ctx.command.params
    try:
        lines, page, pages = ctx.service.outputs.page(
            params.get("task_id"), params.get("host"), params.get("stream", "stdout"), params.get("page", 0)
        )
    except OutputNotFound as exc:
        return Answer.fail(ErrorCode.NOT_AVAILABLE, str(exc))
    except ValueError as exc:
        raise InvalidArguments([("page" if "page" in str(exc) else "stream", str(exc))]) from None
    return Answer(Status.SUCCESS, {"task_id": params["task_id"], "host": params["host"],
                                   "stream": params.get("stream", "stdout"), "page": page, "pages": pages,
                                   "lines": lines})  # fmt: skip


async def list_runbooks(ctx: TaskContext) -> Answer:
    """The runbooks this room may run, with their parameters."""
    report = ctx.service.catalog.report
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
                    {"name": p.name, "required": p.is_required, "accepts": p.describe(), "help": p.help}
                    for p in manifest.params
                ],
            }
        )
    return Answer(Status.SUCCESS, {"runbooks": listed})


def _check_answer(results: dict[str, CheckResult]) -> Answer:
    overall = worst([r.status for r in results.values()])
    status = Status.SUCCESS if overall in (CheckStatus.OK, CheckStatus.WARN) else Status.FAIL
    return Answer(status, {"status": overall.value, "checks": {n: r.to_json() for n, r in results.items()}})


async def _run_checks(ctx: TaskContext, names: list[str]) -> Answer:
    runner = ctx.service.checks
    ctx.accept({"checks": names})
    results = await asyncio.gather(*(runner.run(name) for name in names))
    return _check_answer(dict(zip(names, results, strict=True)))


async def run_check(ctx: TaskContext) -> Answer:
    """``params``: ``check`` (a check name from the config)."""
    name = ctx.command.params.get("check")
    if not isinstance(name, str) or name not in ctx.service.config.checks:
        raise InvalidArguments([("check", "params.check must name a configured check")])
    return await _run_checks(ctx, [name])


async def check_was_status(ctx: TaskContext) -> Answer:
    name = ctx.service.config.actions.was_status_check
    if name is None:
        return Answer.fail(
            ErrorCode.NOT_AVAILABLE, "no WAS health check is configured (actions.was_status_check)"
        )
    return await _run_checks(ctx, [name])


async def check_disk_space(ctx: TaskContext) -> Answer:
    config = ctx.service.config
    names = config.actions.disk_space_checks
    if names is None:
        names = [n for n, c in config.checks.items() if isinstance(c, DiskCheck)]
    if not names:
        return Answer.fail(ErrorCode.NOT_AVAILABLE, "no disk checks are configured")
    return await _run_checks(ctx, names)


async def fetch_mes_qc(ctx: TaskContext) -> Answer:
    """``params``: ``date`` (YYYY-MM-DD). Runs the fixed MES QC query for that day."""
    config = ctx.service.config
    query = config.db.query(config.actions.mes_qc_query)
    if query is None:
        return Answer.fail(ErrorCode.NOT_AVAILABLE, "the MES QC query is not configured")
    params = ctx.command.params
    bound = db.bind(query, {"date": params.get("date")})  # InvalidArguments before any connection is made
    ctx.accept({"date": params.get("date")})
    try:
        result = await db.query(query, bound, config.db, ctx.service.checks.environ)
    except db.QueryFailed as exc:
        return Answer.fail(ErrorCode.CHECK_FAILED,
                           exc.message)  # fmt: skip
    return Answer(Status.SUCCESS, {"date": params.get("date"), "rows": result.rows, "row_count": len(result.rows),
                                   "truncated": result.truncated})  # fmt: skip


async def approve(ctx: TaskContext) -> Answer:
    """``params``: ``code`` (from TASK_PENDING_APPROVAL). A different user with the approver role releases it."""
    return await ctx.service.approvals.decide(ctx.command, approve=True)


async def reject(ctx: TaskContext) -> Answer:
    """``params``: ``code``. A different user with the approver role cancels the request."""
    return await ctx.service.approvals.decide(ctx.command, approve=False)


ANYONE = frozenset({"viewer", "operator", "approver"})
#: Roles each action needs when the config lists users (RUN_RUNBOOK: the runbook's own ``roles``, checked there).
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


async def dispatch(ctx: TaskContext) -> Answer:
    """Run the command's handler; a documented refusal becomes a FAIL answer. Other exceptions propagate."""
    handler = HANDLERS[ctx.command.action]
    try:
        roles = ctx.service.config.access.roles_of(ctx.command.user)
        if roles is not None and not roles & ACTION_ROLES[ctx.command.action]:
            who = "an unknown user" if not roles else "this user's roles"
            raise NotAuthorized(f"{ctx.command.action.value} is not allowed for {who}")
        return await handler(ctx)
    except tuple(cls for cls, _ in _REFUSALS) as exc:
        code = next(code for cls, code in _REFUSALS if isinstance(exc, cls))
        return Answer.fail(code, str(exc))
