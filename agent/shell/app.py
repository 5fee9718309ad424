"""Wiring: builds the agent from its config and runs it until told to stop (``agent run``).

Shutdown order on SIGTERM/SIGINT: stop taking commands; let running tasks finish within
``tasks.shutdown_grace`` (the rest are answered as interrupted); give the outbox a few seconds to be acknowledged;
then close the link, the SSH connections and the outbox. Whatever is still unacknowledged is sent after the next
start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.actions.dispatch import Parts
from agent.catalog.store import Catalog
from agent.checks.runner import CheckRunner
from agent.config.environment import Environment
from agent.config.schema import AgentConfig
from agent.runs.executor import Executor
from agent.runs.gate import RunGate
from agent.runs.outputs import OutputStore
from agent.session.wire import wire_protocol
from agent.shell.link import Link
from agent.shell.runtime import AgentRuntime
from agent.state.audit import AuditLog
from agent.state.outbox import Outbox

if TYPE_CHECKING:  # pragma: no cover
    from agent.checks.scheduler import CheckScheduler

logger = logging.getLogger(__name__)

#: How long a stopping agent waits for the relay to acknowledge what is left in the outbox.
FLUSH_TIMEOUT = 5.0


class App:
    """The running agent's parts. Build it inside the event loop that will run it.

    Raises:
        ConfigError: no relay URL, an unreadable secret or known_hosts file.
    """

    def __init__(self, config: AgentConfig, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        #: The one place the agent's environment is taken (``environ``: a test's, else the process's).
        self.environment = environment = Environment(config, os.environ if environ is None else environ)
        self.redactor = environment.redactor()
        self.catalog = Catalog.for_config(config)
        self.executor = Executor(config.inventory, config.executor, config.base_dir, environment.environ)
        state = config.path(config.state.dir)
        self.outbox = Outbox(
            state / "outbox.sqlite3",
            task_retention=config.tasks.retention_days * 86400,
            max_bytes=config.state.max_outbox_bytes,
            synchronous=config.state.synchronous,
            redact=self.redactor.redact_json,
        )
        self.audit = AuditLog(state / "audit.jsonl", redact=self.redactor.redact_json)
        self.outputs = OutputStore.for_config(config)
        self.gate = RunGate(environment, self.catalog, self.executor, self.audit, self.redactor, self.outputs)
        self.checks = CheckRunner(config, self.gate, environment.environ)
        parts = Parts(config, self.catalog, self.gate, self.checks, self.outputs, self.outbox, self.audit)
        #: Protocol 1 or the original (v0), chosen here once and handed to the runtime and the link.
        self.wire = wire_protocol(config)
        self.runtime = AgentRuntime(
            parts, self.outbox, self.redactor, environment.command_key(), wire=self.wire
        )
        self.gate.on_evicted = self.runtime.outputs_evicted
        #: Only with schedules configured: an agent without them never loads APScheduler.
        self.scheduler: CheckScheduler | None = None
        if config.schedules:
            from agent.checks.scheduler import CheckScheduler

            self.scheduler = CheckScheduler(config, self.checks, self.outbox, self.runtime.report)
        self.link = Link(
            environment.relay_url(),
            self.outbox,
            on_frame=self.runtime.receive,
            after_frame=self.runtime.head_start,
            hello=self.runtime.hello,
            queued=self.runtime.queued,
            acked=self.runtime.acked,
            token=environment.relay_token(),
            ca_file=config.path(config.relay.ca_file) if config.relay.ca_file else None,
            proxy=config.relay.proxy,
            ping_interval=config.relay.ping_interval,
            open_timeout=config.relay.open_timeout,
            max_backoff=config.relay.max_backoff,
            protocol=self.wire,
        )
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        """Serve until :attr:`stopping` is set, then shut down in order. Returns the exit status.

        The link is supervised: if its task ends while the agent is not stopping (a bug: it retries every failure
        by itself), the agent logs why and stops with status 1 rather than serve headless.
        """
        link_stop = asyncio.Event()
        status = 0
        self.runtime.start()
        if self.scheduler is not None:
            self.scheduler.start()
        link_task = asyncio.create_task(self.link.run(link_stop), name="link")
        stopper = asyncio.create_task(self.stopping.wait(), name="stopping")
        try:
            await asyncio.wait({link_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if link_task.done() and not self.stopping.is_set():
                exc = None if link_task.cancelled() else link_task.exception()
                logger.error("the relay link ended unexpectedly (%s); stopping the agent",
                             f"{type(exc).__name__}: {exc}" if exc else "no error")  # fmt: skip
                status = 1
            logger.info("stopping: no new tasks")
            if self.scheduler is not None:
                self.scheduler.shutdown()
            await self.runtime.drain(self.config.tasks.shutdown_grace)
            self.runtime.notice("stopping")
            self.runtime.flush_writes()  # what the drain and the notice queued is on disk before the flush below
            if self.link.connected.is_set() and not await self.link.flush(FLUSH_TIMEOUT):
                logger.warning("%d message(s) not yet acknowledged; they are sent after the next start",
                               self.outbox.count())  # fmt: skip
        finally:
            stopper.cancel()
            if self.scheduler is not None:
                self.scheduler.shutdown()
            link_stop.set()
            await asyncio.gather(link_task, return_exceptions=True)
            await self.executor.close()
            self.runtime.flush_writes()
            self.outbox.close()
            self.audit.close()
            logger.info("stopped")
        return status


def install_signal_handlers(stopping: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stopping`` (on Windows, where the loop cannot, via signal.signal)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            with contextlib.suppress(ValueError):
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stopping.set))
