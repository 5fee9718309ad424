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
import signal
from collections.abc import Mapping

from agent.audit import AuditLog
from agent.catalog import Catalog
from agent.checks.runner import CheckRunner
from agent.config import AgentConfig
from agent.executor import Executor
from agent.link import Link
from agent.outbox import Outbox
from agent.scheduler import CheckScheduler
from agent.service import AgentService

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
        self.redactor = config.redactor(environ=environ)
        self.catalog = Catalog(
            config.path(config.catalog.dir),
            config.path(config.catalog.lock),
            approvers=config.catalog.approvers(),
            min_signatures=config.catalog.min_signatures,
        )
        self.executor = Executor(config.inventory, config.executor, config.base_dir, environ)
        state = config.path(config.state.dir)
        self.outbox = Outbox(state / "outbox.sqlite3", task_retention=config.tasks.retention_days * 86400)
        self.audit = AuditLog(state / "audit.jsonl", redact=self.redactor.redact_json)
        self.checks = CheckRunner(config, self.catalog, self.executor, self.redactor, environ)
        self.service = AgentService(
            config, self.catalog, self.executor, self.outbox, self.audit, self.redactor, self.checks, environ
        )
        self.scheduler = CheckScheduler(config, self.checks, self.outbox, self.service.report)
        self.link = Link(
            config.relay_url(environ),
            self.service,
            self.outbox,
            token=config.relay_token(environ),
            ca_file=config.path(config.relay.ca_file) if config.relay.ca_file else None,
            proxy=config.relay.proxy,
            ping_interval=config.relay.ping_interval,
            open_timeout=config.relay.open_timeout,
            max_backoff=config.relay.max_backoff,
        )
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Serve until :attr:`stopping` is set, then shut down in order."""
        link_stop = asyncio.Event()
        self.service.start()
        self.scheduler.start()
        link_task = asyncio.create_task(self.link.run(link_stop), name="link")
        try:
            await self.stopping.wait()
            logger.info("stopping: no new tasks")
            self.scheduler.shutdown()
            await self.service.drain(self.config.tasks.shutdown_grace)
            if self.link.connected.is_set() and not await self.link.flush(FLUSH_TIMEOUT):
                logger.warning("%d message(s) not yet acknowledged; they are sent after the next start",
                               self.outbox.count())  # fmt: skip
        finally:
            self.scheduler.shutdown()
            link_stop.set()
            await link_task
            await self.executor.close()
            self.outbox.close()
            logger.info("stopped")


def install_signal_handlers(stopping: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stopping`` (on Windows, where the loop cannot, via signal.signal)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            with contextlib.suppress(ValueError):
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stopping.set))
