"""The asyncio runtime: carries out the core's effects and feeds what happens back to it as events.

:meth:`AgentRuntime.outbound` is the one choke point: every message the agent sends (HELLO, TASK_ACCEPTED,
TASK_FINISHED, REPORT, TASK_PENDING_APPROVAL) is redacted there before it is stored in the outbox or sent.
Commands run as concurrent tasks, at most ``tasks.max_tasks`` at once; a command waiting for a slot is recorded as
queued, one that got its slot as running (what a restart does with each: :mod:`agent.session.core`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from agent import __version__
from agent.actions.dispatch import Parts, TaskContext, dispatch
from agent.catalog.store import Catalog, VerifyReport, reasons_of
from agent.chat.i18n import Msg
from agent.chat.render import render_text
from agent.redaction import Redactor
from agent.session import notices
from agent.session.core import (
    Acked,
    AgentCore,
    Answer,
    ArmTimer,
    Audit,
    CancelTimer,
    Closing,
    Effect,
    Event,
    FrameReceived,
    Log,
    Send,
    Started,
    StartRun,
    TaskEnded,
    TimerFired,
)
from agent.session.ledger import Store, TaskState
from agent.session.protocol import (
    ANCHORED_EVENTS,
    AUDIT_HEAD,
    Command,
    ErrorCode,
    accepted_message,
    hello_message,
    progress_message,
    report_message,
)
from agent.session.protocol import (
    Event as Wire,
)
from agent.session.wire import WireProtocol, wire_protocol
from agent.state.audit import AuditLog
from agent.state.group_commit import GroupCommit
from agent.state.outbox import Outbox

logger = logging.getLogger(__name__)

#: Seconds between two notices of one kind about something dropped (the later one carries the whole count).
NOTICE_EVERY = 60.0
#: How long a command just received may run before the next frame is read (:meth:`Runtime.head_start`).
HEAD_START = 0.002


class AgentRuntime:
    """Runs the core: one instance per agent, built inside the event loop that runs it."""

    def __init__(
        self,
        parts: Parts,
        outbox: Outbox,
        redactor: Redactor,
        command_key: str | None = None,
        wire: WireProtocol | None = None,
    ) -> None:
        self.parts = parts
        self.config = parts.config
        self.catalog: Catalog = parts.catalog
        self.outbox = outbox
        self.audit: AuditLog = parts.audit
        self.redactor = redactor
        #: How the agent speaks to rooms (``[chat]``): every payload.text is rendered with it.
        self.chat = self.config.chat.chat()
        #: The protocol spoken with the relay, chosen once (:func:`agent.session.wire.wire_protocol`).
        self.wire = wire or wire_protocol(self.config)
        self.core = AgentCore(
            outbox,
            changes_state=self._changes_state,
            command_key=command_key,
            clock_skew=self.config.access.clock_skew,
            approval_window=self.config.access.approval_window,
            redact=redactor.redact_json,
            holds_approvals=self.wire.holds_approvals,
            max_held_per_user=self.config.access.max_held_per_user,
            max_held_per_room=self.config.access.max_held_per_room,
            agent_id=self.config.agent_id,
        )
        #: Writes made within one loop iteration share one durable commit (one fsync); the link is woken only
        #: once a message is on disk, so nothing is sent that a power cut could take back.
        self._group = GroupCommit(outbox, on_commit=lambda: self.queued.set())
        self._tasks: set[asyncio.Task[None]] = set()
        #: Tasks started since the last :meth:`head_start`.
        self._fresh: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(self.config.tasks.max_tasks)
        #: Set when a message was queued (the link's writer waits on it).
        self.queued = asyncio.Event()
        #: Set when an ACK removed a message from the outbox (the link's flush waits on it).
        self.acked = asyncio.Event()
        #: The pending "the cap dropped N" notice, and when the last one went (at most one a NOTICE_EVERY).
        self._cap_notice: asyncio.TimerHandle | None = None
        self._cap_noticed = -NOTICE_EVERY
        #: The lock file's (mtime, size, inode) last looked at, the next look, the reload it started, and the
        #: problems of the last new lock refused (the operations room is told once per set of problems).
        self._lock_seen: tuple[int, int, int] | None = None
        self._lock_last: tuple[int, int, int] | None = None
        self._lock_watch: asyncio.TimerHandle | None = None
        self._reloading: asyncio.Task[bool] | None = None
        self._refused: frozenset[str] | None = None

    def _changes_state(self, name: str) -> bool:
        status = self.catalog.report.runbooks.get(name)
        return status is None or status.manifest is None or status.manifest.changes_state

    # -- events in ------------------------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        """Hand one event to the core and carry out its effects. Never raises.

        The core writes nothing itself: its ledger writes come back as effects (:data:`agent.session.ledger.Store`),
        applied here in order, each without an fsync; each becomes durable with the group commit of what depends on
        it: the message that tells the room, or the run's start (:meth:`_run` starts no state-changing run before
        its RUNNING record is on disk). So ``handle`` costs no fsync, and a read-only command one: its answer's.
        """
        try:
            effects = self.core.handle(event)
        except Exception:
            logger.exception("the agent core failed on %s; dropped", type(event).__name__)
            return
        for effect in effects:
            try:
                self._perform(effect)
            except Exception:
                logger.exception("could not carry out %s", type(effect).__name__)

    def receive(self, frame: str | bytes) -> None:
        """A frame from the relay (the link calls this)."""
        now = time.time()
        inbound = self.wire.inbound(frame, now)
        self.feed(FrameReceived(inbound.frame, now, inbound.signed))

    # -- effects out ----------------------------------------------------------------------------------------

    def _perform(self, effect: Effect) -> None:
        if isinstance(effect, Store):
            with self.outbox.relaxed():
                self.outbox.apply(effect)
        elif isinstance(effect, Send):
            self.send(effect.message, effect.task_id, effect.action, effect.stored)
        elif isinstance(effect, Acked):
            if self.outbox.ack(effect.msg_id):
                self.acked.set()
        elif isinstance(effect, StartRun):
            self._spawn(effect.command, effect.approved_by)
        elif isinstance(effect, Audit):
            self.audit.append(effect.kind, **effect.fields)
        elif isinstance(effect, ArmTimer):
            self._cancel_timer(effect.key)
            self._timers[effect.key] = asyncio.get_running_loop().call_later(
                effect.delay, self._fire, effect.key
            )
        elif isinstance(effect, CancelTimer):
            self._cancel_timer(effect.key)
        elif isinstance(effect, Log):
            logger.log(effect.level, "%s", effect.message)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.feed(TimerFired(key, time.time()))

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    # -- the choke point ------------------------------------------------------------------------------------

    def outbound(self, message: dict[str, Any], action: str | None = None) -> dict[str, Any]:
        """Redact a message for the relay, then add its chat-ready text. Everything the agent sends passes here.

        The text is rendered from the redacted message: neutralising markup inserts zero-width spaces, which
        would hide secrets from the redaction patterns if it came first. A final answer is rendered by its
        ``action`` (the command's, as sent), never by guessing from its keys.
        """
        # A task of another room's id ran under a key of its own: every message names the id as sent.
        message = self.core.scopes.reply(message)
        redacted: dict[str, Any] = self.redactor.redact_json(message)
        payload = redacted.get("payload")
        if isinstance(payload, dict):
            event = redacted.get("event")
            # After redaction: a hash is no secret, and must reach the relay whole.
            if event in ANCHORED_EVENTS and (head := self._audit_head()) is not None:
                payload[AUDIT_HEAD] = head
            try:
                text = render_text(self.chat, event, payload, action)
            except Exception:  # a rendering bug must never cost the message itself
                logger.exception("could not render the chat text of a %s", event)
                text = f"{payload.get('status', '')} {payload.get('message', '')}".strip()
            if text is not None:
                payload["text"] = text
        return redacted

    def _audit_head(self) -> dict[str, Any] | None:
        """The audit chain's head for the relay to anchor (None: the log cannot be read now; sent without)."""
        try:
            return self.audit.anchor()
        except OSError as exc:
            logger.warning("the audit log's head could not be read (%s); sent without it", exc.strerror)
            return None

    def send(
        self,
        message: dict[str, Any],
        task_id: str | None = None,
        action: str | None = None,
        stored: bool = False,
        notice: int | None = None,
    ) -> None:
        """Queue a message for the relay, durably; ``task_id``: it is that task's final answer (kept for repeats).

        The write joins this loop iteration's group commit; the link sends it once that commit is done.
        ``notice``: it is the outbox-cap notice, telling this many dropped messages: stored outside the cap in
        place of the unsent one before it (:meth:`Outbox.put_notice`).
        ``action``: the command's action as sent (its answer's text and v0's shape follow it); ``stored``: a final
        kept from before, already redacted, rendered and shaped for the wire, sent again (redacted once more, in
        case a rule was added since; its text stays the one rendered for its own action).
        """
        if stored:
            redacted = message if self.wire.stores_wire_shape else self.redactor.redact_json(message)
        else:
            if not self.wire.carries(message):  # v0: no HELLO, ACCEPTED, PENDING; reports only when asked for
                self._not_sent(message, task_id)
                return
            # Reshaped for the protocol: v0 adds the relay's ids and the action as sent, through the redactor.
            shaped = self.wire.outgoing(self.outbound(message, action), action, self.redactor.redact_json)
            if shaped is None:
                self._not_sent(message, task_id)
                return
            redacted = shaped
        if notice is not None:  # the coalesced cap notice, outside the cap (Outbox.put_notice)
            done = self._group.submit(lambda box: box.put_notice(redacted, notice))
        elif task_id is not None:
            done = self._group.submit(lambda box: box.finish_task(task_id, redacted))
        else:
            done = self._group.submit(lambda box: box.put(redacted))
        done.add_done_callback(self._stored)
        if redacted.get("event") == Wire.REPORT.value:
            payload = redacted.get("payload", {})
            self.audit.append(
                "report", room_id=redacted.get("room_id"), msg_id=redacted["msg_id"],
                report_kind=payload.get("kind"), status=payload.get("status"),
            )  # fmt: skip

    def _stored(self, done: asyncio.Future[int]) -> None:
        if not done.cancelled() and done.exception() is not None:
            logger.error("a message could not be stored in the outbox: %s", done.exception())
            return
        # (the link's writer was woken by the group commit itself: GroupCommit(on_commit=...))
        if self.outbox.untold_drops() is not None and self._cap_notice is None:
            # At most one notice a NOTICE_EVERY: it replaces the unsent one and carries the whole count, and it is
            # outside the cap, so it never drops another message (never self-feeding).
            delay = max(0.0, self._cap_noticed + NOTICE_EVERY - time.monotonic())
            self._cap_notice = asyncio.get_running_loop().call_later(delay, self._tell_dropped)

    def _tell_dropped(self) -> None:
        self._cap_notice = None
        dropped = self.outbox.untold_drops()
        if dropped is None:
            return
        self._cap_noticed = time.monotonic()
        logger.warning(
            "the outbox cap dropped %d old report(s)/acceptance(s) while the relay was away", dropped
        )
        message = report_message(self.config.operations_room, notices.outbox_cap(dropped))
        self.send(message, notice=dropped)

    def outputs_evicted(self, evicted: list[Any]) -> None:
        """Kept outputs removed to stay under [outputs] caps: say so in the operations room."""
        if not evicted:
            return
        self.report(self.config.operations_room, notices.outputs_cap([e.task_id for e in evicted]))

    def flush_writes(self) -> None:
        """Commit what is queued now (before closing the outbox)."""
        self._group.flush()

    def _not_sent(self, message: dict[str, Any], task_id: str | None) -> None:
        """The protocol has no such message (v0: HELLO, ACCEPTED, PENDING, REPORT, an answer without ids)."""
        level, text = self.wire.why_not_sent(message)
        logger.log(level, "%s", text)
        if task_id is not None and message.get("event") == Wire.TASK_FINISHED.value:
            self.outbox.set_task_state(task_id, TaskState.FINISHED)

    def report(self, room_id: str, payload: dict[str, Any]) -> None:
        """Push an unprompted REPORT to a room (through the outbox, like everything else)."""
        self.send(report_message(room_id, payload))

    def hello(self) -> dict[str, Any]:
        report = self.catalog.report
        digest = report.lock.catalog_sha256 if report.lock else None
        keys = [key.fingerprint for key in self.catalog.approvers]
        return self.outbound(hello_message(self.config.agent_id, __version__, digest, report.runnable, keys))

    def notice(self, state: str) -> None:
        """Tell the operations room the agent started (version, short catalog digest) or is stopping."""
        self.report(
            self.config.operations_room,
            notices.agent_state(state, self.config.agent_id, __version__, self.catalog.report),
        )

    # -- start ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Verify the catalog, settle what a previous run left unfinished, tell the operations room of problems."""
        # Before verifying: a lock written meanwhile is looked at again.
        self._lock_seen = self._lock_last = self._lock_stamp()
        report = self.catalog.verify()
        self.outbox.purge()
        if not report.ok:
            for problem in report.problems:
                logger.error("catalog: %s", problem)
            self.report(self.config.operations_room, notices.catalog_problems(report, time.time()))
        if not self.config.access.users:
            logger.warning(
                "no users in access.users: every chat user may do what each room and runbook allows"
            )
        self.wire.resume((task.task_id, task.command) for task in self.outbox.unfinished_tasks())
        self.feed(Started(time.time()))
        self.audit.append("start", runnable=report.runnable, problems=len(report.problems))
        self.notice("started")
        self._watch_lock()

    # -- the catalog's reload -------------------------------------------------------------------------------

    def _lock_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.catalog.lock_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _watch_lock(self) -> None:
        """Look at the lock file again in ``catalog.watch_interval`` seconds (a stat: cheap, on the loop; 0: never)."""
        interval = self.config.catalog.watch_interval
        if interval and not self.core.closing:
            self._lock_watch = asyncio.get_running_loop().call_later(interval, self._look_at_lock)

    def _look_at_lock(self) -> None:
        """A changed lock is verified once it has stayed as it is for one look (a lock being written by an editor
        that does not replace it in one step is not read half-written)."""
        self._lock_watch = None
        stamp = self._lock_stamp()
        settled, self._lock_last = stamp == self._lock_last, stamp
        if stamp != self._lock_seen and settled and self._reloading is None:
            self._lock_seen = stamp
            self._reloading = asyncio.create_task(self.reload_catalog(), name="catalog-reload")
            self._reloading.add_done_callback(lambda _: setattr(self, "_reloading", None))
        self._watch_lock()

    async def reload_catalog(self) -> bool:
        """Verify the catalog as at start (hashes, signatures, ``min_signatures``) in a worker thread; use it when it
        verifies and tell the rooms its changed runbooks serve; else keep the one in use and tell the operations room
        why, once. Returns whether the new catalog is in use. Never raises but cancel.

        A run already past :meth:`Catalog.load` keeps the runbook it loaded; a run that starts later, the new one.
        """
        try:
            new = await asyncio.to_thread(self.catalog.examine)
            return self._swap_catalog(new)
        except Exception:
            logger.exception("the changed runbook lock could not be verified; the catalog in use is kept")
            return False

    def _swap_catalog(self, new: VerifyReport) -> bool:
        """Use ``new`` if nothing blocks it, and tell the rooms; else tell the operations room why (once)."""
        now = time.time()
        blocking = new.blocking
        if blocking:
            for problem in blocking:
                logger.error("catalog reload refused: %s", problem)
            key = frozenset(f"{p.runbook}:{p.kind.value}:{p.detail}" for p in blocking)
            if key != self._refused:
                self._refused = key
                self.audit.append("catalog_refused", problems=len(blocking))
                self.report(
                    self.config.operations_room, notices.catalog_refused(blocking, reasons_of(blocking), now)
                )
            return False
        self._refused = None
        changes = notices.catalog_changes(self.catalog.report, new)
        self.catalog.adopt(new)
        digest = new.lock.catalog_sha256 if new.lock else None
        if not changes:
            logger.info("the runbook lock was rewritten; no runnable runbook changed")
            return True
        logger.info(
            "catalog reloaded: added %s, changed %s, removed %s",
            changes.added or "-", changes.changed or "-", changes.removed or "-",
        )  # fmt: skip
        self.audit.append(
            "catalog_reload",
            catalog=digest,
            added=changes.added,
            changed=changes.changed,
            removed=changes.removed,
        )
        operations = self.config.operations_room
        for room in sorted({operations, *changes.rooms_told()}):
            seen = changes.seen_in(None if room == operations else room)
            if seen:
                self.report(room, notices.catalog_reloaded(seen, digest, now))
        return True

    # -- tasks ----------------------------------------------------------------------------------------------

    def _spawn(self, command: Command, approved_by: str | None) -> None:
        task = asyncio.create_task(self._run(command, approved_by), name=f"task-{command.task_id}")
        self._tasks.add(task)
        self._fresh.add(task)
        task.add_done_callback(self._tasks.discard)

    async def head_start(self) -> None:
        """Before the link reads the next frame: let the commands the last one started run, until they end or
        :data:`HEAD_START` has passed (at once, after a frame that started none: an ACK).

        Commands run concurrently, but each new one first gets this head start, as the original agent answered a
        command before it read the next. A quick one (a query on a kept database connection, a listing) then
        answers before the next frame is even parsed, so the first answer to a burst of 100 commands comes as soon
        as the original's, and answers mostly keep their order; a slow one (a runbook) costs the next frame 2 ms.
        Measured in benchmarks/bench_v0.py: without it, the first answer of 100 came 2.4x later than the original's.
        """
        fresh, self._fresh = self._fresh, set()
        if fresh:
            await asyncio.wait(fresh, timeout=HEAD_START)
        else:
            await asyncio.sleep(0)

    async def _run(self, command: Command, approved_by: str | None) -> None:
        """One command: wait for a slot, run its handler, hand the answer to the core. Never raises but cancel."""
        try:
            async with self._slots:

                def running(box: Outbox) -> bool:
                    return box.set_task_state(command.task_id, TaskState.RUNNING)

                if self.core.may_change_state(command):
                    # After a restart such a task is answered INTERRUPTED, never run again: its RUNNING record (and
                    # its begin record) must be on disk before it starts. One group commit, shared by every task
                    # starting in this loop iteration.
                    await self._group.submit(running)
                else:  # run again after a restart either way: durable with its answer
                    with self.outbox.relaxed():
                        running(self.outbox)
                ctx = TaskContext(
                    command, self.parts, lambda payload: self._accept(command, payload), approved_by,
                    on_progress=lambda payload: self.send(progress_message(command, payload)),
                )  # fmt: skip
                try:
                    answer = await dispatch(ctx)
                except Exception:
                    logger.exception("task %s (%s) failed", command.task_id, command.action.value)
                    answer = Answer.fail(
                        ErrorCode.INTERNAL, Msg("internal error; the agent's log has the details")
                    )
        except asyncio.CancelledError:
            self.feed(TaskEnded(command, None, time.time()))
            raise
        self.feed(TaskEnded(command, answer, time.time()))

    def _accept(self, command: Command, payload: dict[str, Any] | None) -> None:
        self.audit.append("decision", task_id=command.task_id, decision="accepted")
        self.send(accepted_message(command, payload))

    # -- stopping -------------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, grace: float) -> None:
        """Stop taking commands; let running ones finish within ``grace`` seconds, then cancel the rest.

        A cancelled command that cannot change anything runs again after the next start; one that changes state
        is answered INTERRUPTED (see :mod:`agent.session.core`).
        """
        self.feed(Closing())
        if self._reloading is not None:
            self._reloading.cancel()
        for timer in [*self._timers.values(), *filter(None, [self._cap_notice, self._lock_watch])]:
            timer.cancel()  # an untold drop count is on disk: the next start tells it
        self._timers.clear()
        if not self._tasks:
            return
        logger.info("waiting up to %.0f s for %d running task(s)", grace, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
