"""The agent's core: takes frames from the link, runs commands as tasks, and emits every outbound message.

:meth:`AgentService.outbound` is the one choke point: every message the agent sends (HELLO, TASK_ACCEPTED,
TASK_FINISHED, REPORT) is redacted there before it is stored in the outbox or sent. Commands run as concurrent
tasks (bounded), so a slow one never blocks the link; every command ends in exactly one TASK_FINISHED, a
repeated ``task_id`` is never run twice, and a task cut short by a restart or a shutdown is answered as
interrupted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from agent import __version__
from agent.audit import AuditLog
from agent.catalog import Catalog
from agent.checks.runner import CheckRunner
from agent.config import AgentConfig
from agent.dispatch import Answer, TaskContext, dispatch
from agent.executor import Executor
from agent.manifest import RedactRuleModel
from agent.outbox import Outbox, TaskState
from agent.outputs import OutputStore
from agent.protocol import (
    Ack,
    Command,
    ErrorCode,
    Event,
    InvalidPacket,
    Status,
    accepted_message,
    finished_message,
    hello_message,
    new_msg_id,
    parse_frame,
    report_message,
)
from agent.redaction import Redactor
from agent.render import render_finished, render_report

logger = logging.getLogger(__name__)


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        catalog: Catalog,
        executor: Executor,
        outbox: Outbox,
        audit: AuditLog,
        redactor: Redactor,
        checks: CheckRunner | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.executor = executor
        self.outbox = outbox
        self.audit = audit
        self.redactor = redactor
        self.checks = checks or CheckRunner(config, catalog, executor, redactor)
        self.outputs = OutputStore(
            config.path(config.state.dir) / "outputs",
            config.outputs.retention_days,
            config.outputs.page_lines,
        )
        self._runbook_redactors: dict[tuple[str, tuple[RedactRuleModel, ...]], Redactor] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.tasks.max_tasks)
        self.closing = False
        #: Called after a message is queued; the link sets it to wake its writer.
        self.notify: Callable[[], None] = lambda: None

    # -- the choke point ----------------------------------------------------------------------------------------

    def outbound(self, message: dict[str, Any]) -> dict[str, Any]:
        """Redact a message for the relay, then add its chat-ready text. Everything the agent sends passes here.

        The text is rendered from the redacted message: neutralising markup inserts zero-width spaces, which
        would hide secrets from the redaction patterns if it came first.
        """
        redacted: dict[str, Any] = self.redactor.redact_json(message)
        payload = redacted.get("payload")
        if isinstance(payload, dict):
            if redacted.get("event") == Event.TASK_FINISHED.value:
                payload["text"] = render_finished(payload)
            elif redacted.get("event") == Event.REPORT.value:
                payload["text"] = render_report(payload)
        return redacted

    def emit(self, message: dict[str, Any]) -> None:
        redacted = self.outbound(message)
        self.outbox.put(redacted)
        if redacted.get("event") == "REPORT":
            payload = redacted.get("payload", {})
            self.audit.append(
                "report", room_id=redacted.get("room_id"), msg_id=redacted["msg_id"],
                report_kind=payload.get("kind"), status=payload.get("status"),
            )  # fmt: skip
        self.notify()

    def _emit_result(self, task_id: str | None, message: dict[str, Any]) -> None:
        self.outbox.finish_task(task_id, self.outbound(message))
        self.notify()

    def hello(self) -> dict[str, Any]:
        report = self.catalog.report
        digest = report.lock.catalog_sha256 if report.lock else None
        return self.outbound(hello_message(self.config.agent_id, __version__, digest, report.runnable))

    def report(self, room_id: str, payload: dict[str, Any]) -> None:
        """Push an unprompted REPORT to a room (through the outbox, like everything else)."""
        self.emit(report_message(room_id, payload))

    def accept(self, command: Command, payload: dict[str, Any] | None) -> None:
        self.audit.append("decision", task_id=command.task_id, decision="accepted")
        self.emit(accepted_message(command, payload))

    def redactor_for(self, name: str, rules: Sequence[RedactRuleModel]) -> Redactor:
        """The redactor for one runbook's output: the agent's, plus the manifest's own rules."""
        if not rules:
            return self.redactor
        key = (name, tuple(rules))
        if key not in self._runbook_redactors:
            self._runbook_redactors[key] = self.config.redactor(rules)
        return self._runbook_redactors[key]

    # -- start ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Verify the catalog, answer tasks a previous run left unfinished, tell the operations room of problems."""
        report = self.catalog.verify()
        self.outbox.purge()
        for record in self.outbox.running_tasks():
            logger.warning(
                "task %s was running when the agent stopped; answering it as interrupted", record.task_id
            )
            self.audit.append("interrupted", task_id=record.task_id)
            self._emit_result(
                record.task_id,
                finished_message(
                    record.task_id, record.room_id, Status.FAIL,
                    error=(ErrorCode.INTERRUPTED, "the agent restarted while this task was running; run it again"),
                ),
            )  # fmt: skip
        if not report.ok:
            for problem in report.problems:
                logger.error("catalog: %s", problem)
            self.emit(
                report_message(
                    self.config.operations_room,
                    {
                        "kind": "catalog",
                        "status": "ERROR",
                        "message": f"{len(report.problems)} catalog problem(s); "
                        f"{len(report.runnable)} of {len(report.runbooks)} runbooks runnable",
                        "problems": [
                            {"runbook": p.runbook, "kind": p.kind.value, "detail": p.detail}
                            for p in report.problems
                        ],
                    },
                )
            )
        self.audit.append("start", runnable=report.runnable, problems=len(report.problems))

    # -- receiving --------------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> None:
        """Handle one frame from the relay. Never raises; never waits."""
        try:
            self._receive(frame)
        except Exception:
            logger.exception("a frame from the relay could not be handled; dropped")

    def _receive(self, frame: str | bytes) -> None:
        try:
            packet = parse_frame(frame)
        except InvalidPacket as exc:
            logger.warning("refused a packet: %s", exc.message)
            self.audit.append("refused", task_id=exc.task_id, reason=exc.code.value)
            self._emit_result(
                None, finished_message(exc.task_id, exc.room_id, Status.FAIL, error=(exc.code, exc.message))
            )
            return
        if isinstance(packet, Ack):
            self.outbox.ack(packet.msg_id)
            return
        self._command(packet)

    def _command(self, command: Command) -> None:
        self.audit.append(
            "command", task_id=command.task_id, room_id=command.room_id, action=command.action.value,
            user_id=command.user_id, params=command.params,
        )  # fmt: skip
        if self.closing:
            self.emit(
                finished_message(
                    command.task_id, command.room_id, Status.FAIL,
                    error=(ErrorCode.SHUTTING_DOWN, "the agent is shutting down; send it again later"),
                )
            )  # fmt: skip
            return
        if not self.outbox.begin_task(command.task_id, command.room_id):
            self._repeat(command)
            return
        task = asyncio.create_task(self._run(command), name=f"task-{command.task_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _repeat(self, command: Command) -> None:
        """A task_id seen before: never run it again; resend its result, or say it is still running."""
        record = self.outbox.task(command.task_id)
        self.audit.append("duplicate", task_id=command.task_id, state=record.state.value if record else None)
        if record is not None and record.state is TaskState.FINISHED and record.result is not None:
            again = dict(record.result, msg_id=new_msg_id())
            again["payload"] = {**again.get("payload", {}), "duplicate": True}
            self.emit(again)
        else:
            self.emit(accepted_message(command, {"duplicate": True, "in_progress": True}))

    async def _run(self, command: Command) -> None:
        async with self._slots:
            ctx = TaskContext(self, command)
            try:
                answer = await dispatch(ctx)
            except asyncio.CancelledError:
                self.audit.append("interrupted", task_id=command.task_id)
                self._emit_result(
                    command.task_id,
                    finished_message(
                        command.task_id, command.room_id, Status.FAIL,
                        error=(ErrorCode.INTERRUPTED, "the agent stopped while this task was running; run it again"),
                    ),
                )  # fmt: skip
                raise
            except Exception:
                logger.exception("task %s (%s) failed", command.task_id, command.action.value)
                answer = Answer.fail(ErrorCode.INTERNAL, "internal error; the agent's log has the details")
            if answer.error is not None:
                self.audit.append(
                    "decision", task_id=command.task_id, decision="refused", reason=answer.error[1]
                )
            self._emit_result(
                command.task_id,
                finished_message(command.task_id, command.room_id, answer.status, answer.data, answer.error),
            )
            self.audit.append("finished", task_id=command.task_id, status=answer.status.value)

    # -- stopping -----------------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, grace: float) -> None:
        """Stop taking commands; let running ones finish within ``grace`` seconds, then interrupt the rest."""
        self.closing = True
        if not self._tasks:
            return
        logger.info("waiting up to %.0f s for %d running task(s)", grace, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
