"""Dispatch: the fixed table of allowed actions and their handlers. Every path ends in an :class:`Answer`.

A handler gets the command's :class:`TaskContext`, may call :meth:`TaskContext.accept` once its request is valid
(that sends TASK_ACCEPTED), and returns an :class:`Answer`, or raises one of the documented refusals, which
:func:`dispatch` turns into a FAIL with a code and a short message that echoes no raw input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.errors import (
    HostNotAllowed,
    InvalidArguments,
    RoomNotAllowed,
    RunbookNotRunnable,
    UnknownHost,
)
from agent.plan import plan_run
from agent.protocol import Action, Command, ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.service import AgentService


@dataclass(frozen=True)
class Answer:
    status: Status
    data: dict[str, Any] = field(default_factory=dict)
    error: tuple[ErrorCode, str] | None = None

    @classmethod
    def fail(cls, code: ErrorCode, message: str, data: dict[str, Any] | None = None) -> Answer:
        return cls(Status.FAIL, data or {}, (code, message))


class TaskContext:
    """What a handler may use: the service, the command, and a way to say it was accepted."""

    def __init__(self, service: AgentService, command: Command) -> None:
        self.service = service
        self.command = command
        self.accepted = False

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
    ctx.accept({"runbook": plan.name, "hosts": plan.hosts})
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
    return Answer(Status.SUCCESS if result.ok else Status.FAIL, result.to_json())


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


async def not_available(ctx: TaskContext) -> Answer:
    return Answer.fail(ErrorCode.NOT_AVAILABLE, f"{ctx.command.action.value} is not configured on this agent")


#: The allowlist. A test pins it to the actions documented in docs/protocol.md.
HANDLERS: Mapping[Action, Handler] = MappingProxyType(
    {
        Action.RUN_RUNBOOK: run_runbook,
        Action.LIST_RUNBOOKS: list_runbooks,
        Action.FETCH_MES_QC: not_available,
        Action.CHECK_INTERNAL_WAS_STATUS: not_available,
        Action.CHECK_DISK_SPACE: not_available,
    }
)

_REFUSALS: list[tuple[type[Exception], ErrorCode]] = [
    (InvalidArguments, ErrorCode.INVALID_ARGUMENTS),
    (RunbookNotRunnable, ErrorCode.RUNBOOK_NOT_RUNNABLE),
    (UnknownHost, ErrorCode.UNKNOWN_HOST),
    (HostNotAllowed, ErrorCode.HOST_NOT_ALLOWED),
    (RoomNotAllowed, ErrorCode.ROOM_NOT_ALLOWED),
]


async def dispatch(ctx: TaskContext) -> Answer:
    """Run the command's handler; a documented refusal becomes a FAIL answer. Other exceptions propagate."""
    handler = HANDLERS[ctx.command.action]
    try:
        return await handler(ctx)
    except tuple(cls for cls, _ in _REFUSALS) as exc:
        code = next(code for cls, code in _REFUSALS if isinstance(exc, cls))
        return Answer.fail(code, str(exc))
