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
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent import __version__
from agent.approvals import Approvals
from agent.audit import AuditLog
from agent.catalog import Catalog
from agent.checks.runner import CheckRunner
from agent.command_auth import verify as verify_signature
from agent.config import COMMAND_KEY_ENV, AgentConfig
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
from agent.render import render_finished, render_pending, render_report

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
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        env = os.environ if environ is None else environ
        #: When set, every command must be signed with it (see agent.command_auth).
        self.command_key: str | None = env.get(COMMAND_KEY_ENV) or None
        self.approvals = Approvals(self)
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
        #: Called after an ACK removed a message from the outbox; the link uses it to know when it is flushed.
        self.acked: Callable[[], None] = lambda: None

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
            elif redacted.get("event") == Event.TASK_PENDING_APPROVAL.value:
                payload["text"] = render_pending(payload)
        return redacted

    def emit(self, message: dict[str, Any]) -> None:
        redacted = self.outbound(message)
        self.outbox.put(redacted)
        if redacted.get("event") == Event.REPORT.value:
            payload = redacted.get("payload", {})
            self.audit.append(
                "report", room_id=redacted.get("room_id"), msg_id=redacted["msg_id"],
                report_kind=payload.get("kind"), status=payload.get("status"),
            )  # fmt: skip
        self.notify()

    def emit_result(self, task_id: str | None, message: dict[str, Any]) -> None:
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
            self._interrupted(
                record.task_id, record.room_id, "the agent restarted while this task was running"
            )
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
        for approval in self.outbox.approvals():
            self.approvals.arm(approval)
        if not self.config.access.users:
            logger.warning(
                "no users in access.users: every chat user may do what each room and runbook allows"
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
            self._refuse(exc)
            return
        if isinstance(packet, Ack):
            if self.outbox.ack(packet.msg_id):
                self.acked()
            return
        if self.command_key is not None and not self._signed(packet):
            return
        self._command(packet)

    def _signed(self, command: Command) -> bool:
        """Check a command's signature (HMAC, timestamp, nonce); answer and audit a refusal."""
        skew = self.config.access.clock_skew
        try:
            assert self.command_key is not None
            verify_signature(self.command_key, command.raw, time.time(), skew,
                             lambda nonce: self.outbox.nonce_used(nonce, time.time(), 2 * skew))  # fmt: skip
        except InvalidPacket as exc:
            self._refuse(exc)
            return False
        return True

    def _refuse(self, exc: InvalidPacket) -> None:
        """Answer a packet refused before it became a task: log, audit, one FAIL (not recorded as a task)."""
        logger.warning("refused a packet: %s", exc.message)
        self.audit.append("refused", task_id=exc.task_id, reason=exc.code.value)
        self.emit(finished_message(exc.task_id, exc.room_id, Status.FAIL, error=(exc.code, exc.message)))

    def _command(self, command: Command) -> None:
        self.audit.append(
            "command", task_id=command.task_id, room_id=command.room_id, action=command.action.value,
            user_id=command.user, params=command.params,
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
        self.spawn(command)

    def spawn(self, command: Command, approved_by: str | None = None) -> None:
        """Run a command as its own task (a new one, or a held one an approver released)."""
        task = asyncio.create_task(self._run(command, approved_by), name=f"task-{command.task_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _interrupted(self, task_id: str, room_id: str | None, why: str) -> None:
        self.audit.append("interrupted", task_id=task_id)
        error = (ErrorCode.INTERRUPTED, f"{why}; run it again")
        self.emit_result(task_id, finished_message(task_id, room_id, Status.FAIL, error=error))

    def _repeat(self, command: Command) -> None:
        """A task_id seen before: never run it again; resend its result, or say it is still running."""
        record = self.outbox.task(command.task_id)
        self.audit.append("duplicate", task_id=command.task_id, state=record.state.value if record else None)
        if record is not None and record.state is TaskState.PENDING:
            self.emit(accepted_message(command, {"duplicate": True, "pending_approval": True}))
        elif record is not None and record.state is TaskState.FINISHED and record.result is not None:
            again = dict(record.result, msg_id=new_msg_id())
            again["payload"] = {**again.get("payload", {}), "duplicate": True}
            self.emit(again)
        else:
            self.emit(accepted_message(command, {"duplicate": True, "in_progress": True}))

    async def _run(self, command: Command, approved_by: str | None = None) -> None:
        async with self._slots:
            ctx = TaskContext(self, command, approved_by)
            try:
                answer = await dispatch(ctx)
            except asyncio.CancelledError:
                self._interrupted(
                    command.task_id, command.room_id, "the agent stopped while this task was running"
                )
                raise
            except Exception:
                logger.exception("task %s (%s) failed", command.task_id, command.action.value)
                answer = Answer.fail(ErrorCode.INTERNAL, "internal error; the agent's log has the details")
            if answer.pending is not None:
                self.approvals.hold(command, answer.pending)
                return
            if answer.error is not None:
                self.audit.append(
                    "decision", task_id=command.task_id, decision="refused", reason=answer.error[1]
                )
            self.emit_result(
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
