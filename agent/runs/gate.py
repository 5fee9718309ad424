"""The one run path: every runbook run passes :meth:`RunGate.run`, whoever starts it.

Chat ``RUN_RUNBOOK``, ``RUN_CHECK`` and scheduled runbook checks, and ``agent runbooks run`` on the agent PC all
call it, and it does the same steps in the same order:

1. **authorize**: the runbook verifies against the lock; the room may trigger it (chat, checks); the user's roles
   allow it (chat, ``RUN_CHECK``); four eyes: a runbook with ``requires_approval`` runs only with an approver's
   release (chat, CLI) and never as a check;
2. **plan**: hosts and arguments against the inventory and the parameter schema (:func:`agent.runs.plan.plan_run`);
3. **execute** on the hosts (the executor; nothing else in the agent calls it — ``tests/test_layers.py``);
4. **redact** with the agent's rules plus the manifest's own ``[[redact]]`` rules;
5. **keep** the full (redacted) output on the agent PC when the run has a task id;
6. **audit** the run, or its refusal, with who asked, how (``via``) and who approved.

The gate raises the documented refusals (:mod:`agent.errors`) after auditing them, and returns :class:`Held` instead
of running when a second person must approve first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from agent.catalog.manifest import effective_args
from agent.chat.i18n import Msg
from agent.errors import InvalidArguments, NotAuthorized, RequestRefused, RunbookNotRunnable
from agent.runs.plan import RunPlan, plan_run
from agent.runs.results import HostResult, RunResult

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.manifest import RedactRuleModel
    from agent.catalog.store import Catalog
    from agent.config.environment import Environment
    from agent.config.schema import AgentConfig
    from agent.redaction import Redactor
    from agent.runs.executor import Executor
    from agent.runs.outputs import OutputStore
    from agent.state.audit import AuditLog


class Via(StrEnum):
    """Who started a run: recorded in the audit log and deciding which checks apply."""

    CHAT = "chat"  # RUN_RUNBOOK from a chat room
    CHECK = "check"  # RUN_CHECK from a chat room
    SCHEDULE = "schedule"  # a scheduled check
    CLI = "cli"  # agent runbooks run, on the agent PC


@dataclass(frozen=True)
class RunRequest:
    """What someone asked to run, as they asked it (nothing validated yet)."""

    runbook: str
    hosts: Sequence[Any]
    args: Mapping[str, Any]
    via: Via
    #: The chat user the relay authenticated; the local OS user for the CLI; None for a schedule.
    user: str | None = None
    #: The chat room asking, or the room a check reports to; None for the CLI.
    room: str | None = None
    task_id: str | None = None
    #: The approver who released this request (four eyes), when it needed one.
    approved_by: str | None = None


@dataclass(frozen=True)
class Held:
    """Not run: the runbook needs a second person's approval first. What would run, for the approval prompt."""

    runbook: str
    hosts: list[str]
    args: dict[str, Any]


def authorize(config: AgentConfig, catalog: Catalog, request: RunRequest) -> RunPlan | Held:
    """Steps 1 and 2, without running anything: the plan, or :class:`Held` when an approver must release it first.

    Also what ``agent config check`` uses to prove a runbook check can run.

    Raises:
        RunbookNotRunnable, RequestRefused, InvalidArguments: the documented refusals (not audited here).
    """
    if not isinstance(request.runbook, str) or not request.runbook:
        raise InvalidArguments([("runbook", Msg("params.runbook must name a runbook"))])
    runbook = catalog.load(request.runbook)
    manifest = runbook.manifest
    if request.via in (Via.CHAT, Via.CHECK):
        roles = config.access.roles_of(request.user)
        if roles is not None and not roles & set(manifest.roles):
            raise NotAuthorized(
                Msg(
                    "runbook {name!r} needs the role {roles}",
                    name=runbook.name,
                    roles=" or ".join(manifest.roles),
                )
            )
    room = request.room if request.via is not Via.CLI else None
    plan = plan_run(runbook, config.inventory, request.hosts, request.args, room=room)
    if manifest.requires_approval and request.approved_by is None:
        if request.via in (Via.CHECK, Via.SCHEDULE):
            raise NotAuthorized(
                Msg("runbook {name!r} needs an approver; a check cannot run it", name=runbook.name)
            )
        # What would run, defaults included: the approver sees every argument, not only those typed.
        return Held(plan.name, plan.hosts, effective_args(manifest, request.args))
    return plan


class RunGate:
    """Authorize, plan, execute, redact, keep, audit: the only way to run a runbook."""

    def __init__(
        self,
        environment: Environment,
        catalog: Catalog,
        executor: Executor,
        audit: AuditLog,
        redactor: Redactor,
        outputs: OutputStore | None = None,
        on_evicted: Callable[[list[Any]], None] | None = None,
    ) -> None:
        #: The config and its environment (a runbook's own redaction rules add to the secrets found there).
        self.environment = environment
        self.config = environment.config
        self.catalog = catalog
        self._executor = executor
        self.audit = audit
        self.redactor = redactor
        self.outputs = outputs
        #: Told which kept outputs the store's caps removed (the runtime reports them).
        self.on_evicted = on_evicted
        self._redactors: dict[tuple[str, tuple[RedactRuleModel, ...]], Redactor] = {}
        #: The runs going now that STOP may end, by task id: what was asked, and its plan.
        self.live: dict[str, tuple[RunRequest, RunPlan]] = {}

    async def close(self) -> None:
        """Close the executor's SSH connections."""
        await self._executor.close()

    def redactor_for(self, name: str, rules: Sequence[RedactRuleModel]) -> Redactor:
        """The redactor for one runbook's output: the agent's, plus the manifest's own rules."""
        if not rules:
            return self.redactor
        key = (name, tuple(rules))
        if key not in self._redactors:
            self._redactors[key] = self.environment.redactor(rules)
        return self._redactors[key]

    async def run(
        self,
        request: RunRequest,
        on_accept: Callable[[RunPlan], None] | None = None,
        on_host: Callable[[HostResult], None] | None = None,
    ) -> RunResult | Held:
        """Run a request through every step. ``on_accept`` is told the plan once it is authorized.

        Raises:
            RunbookNotRunnable, RequestRefused, InvalidArguments: refused (and audited as refused).
        """
        try:
            planned = authorize(self.config, self.catalog, request)
        except (RunbookNotRunnable, RequestRefused, InvalidArguments) as exc:
            self._audit("run_refused", request, reason=str(exc))
            raise
        if isinstance(planned, Held):
            return planned
        self.audit.ready()  # a run is recorded after it ends: a log that cannot be written refuses it first
        if on_accept is not None:
            on_accept(planned)
        manifest = planned.runbook.manifest
        redactor = self.redactor_for(planned.name, manifest.redact)
        if request.task_id is None:
            result = await self._executor.run(planned, redactor, on_host=on_host)
        else:
            self.live[request.task_id] = (request, planned)
            try:
                result = await self._executor.run_stoppable(
                    planned, redactor, request.task_id, on_host=on_host
                )
            finally:
                self.live.pop(request.task_id, None)
        if request.task_id is not None and self.outputs is not None:
            evicted = self.outputs.save(request.task_id, result)
            if evicted and self.on_evicted is not None:
                self.on_evicted(evicted)
        self._audit(
            "run",
            request,
            script_sha256=planned.runbook.script_sha256,
            argv_count=len(planned.argv),
            args=dict(request.args),
            hosts=[
                {"host": h.host, "status": h.status.value, "exit_code": h.exit_code,
                 "duration": round(h.duration, 3), "output_sha256": h.output_sha256, "containment": h.containment,
                 **({"persistence": list(h.persistence)} if h.persistence is not None else {})}
                for h in result.hosts
            ],
        )  # fmt: skip
        return result

    def stop(self, task_id: str, by: str | None) -> bool:
        """End the run of ``task_id`` on every host (the executor's host-side kill, as at a timeout) and audit who
        stopped it. The caller has checked the stopper may (STOP, agent/actions/operations.py).

        Returns:
            False when no run of that task is going.
        """
        live = self.live.get(task_id)
        if live is None or not self._executor.stop(task_id, by):
            return False
        self._audit("run_stopped", live[0], stopped_by=by, hosts=list(live[1].hosts))
        return True

    def _audit(self, kind: str, request: RunRequest, **fields: Any) -> None:
        self.audit.append(
            kind, task_id=request.task_id, runbook=request.runbook if isinstance(request.runbook, str) else None,
            via=request.via.value, user_id=request.user, room_id=request.room,
            **({"approved_by": request.approved_by} if request.approved_by else {}), **fields,
        )  # fmt: skip
