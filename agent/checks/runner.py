"""Runs a configured check by name, with what each kind needs. Never raises."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from agent.chat.i18n import Msg
from agent.checks import CheckResult, CheckStatus, db, disk, http, runbook, tcp
from agent.config.schema import AgentConfig, DbCheck, DiskCheck, HttpCheck, RunbookCheck, TcpCheck
from agent.runs.gate import RunGate, Via

logger = logging.getLogger(__name__)


class CheckRunner:
    def __init__(
        self,
        config: AgentConfig,
        gate: RunGate,
        environ: Mapping[str, str],
    ) -> None:
        self.config = config
        self.gate = gate
        #: Where DB_* are read from: the environment the agent was started with (agent/config/environment.py).
        self.environ = environ

    @property
    def names(self) -> list[str]:
        return list(self.config.checks)

    async def run(
        self, name: str, via: Via = Via.SCHEDULE, room: str | None = None, user: str | None = None
    ) -> CheckResult:
        """Run the check called ``name``; an unknown name or a bug becomes an ERROR result.

        ``via``, ``room`` and ``user`` say who asked (a schedule, or a chat user in a room): a runbook check runs
        through the run gate as that request, so it can do nothing its runbook forbids them.
        """
        spec = self.config.checks.get(name)
        if spec is None:
            return CheckResult(CheckStatus.ERROR, Msg("no such check"))
        started = time.monotonic()
        try:
            if isinstance(spec, HttpCheck):
                return await http.run(spec)
            if isinstance(spec, DiskCheck):
                return await disk.run(spec.model_copy(update={"path": self.config.path(spec.path)}))
            if isinstance(spec, DbCheck):
                return await db.run(spec, self.config.db, self.environ)
            if isinstance(spec, TcpCheck):
                return await tcp.run(spec)
            if isinstance(spec, RunbookCheck):
                return await runbook.run(spec, self.gate, via, room, user)
        except Exception:
            logger.exception("check %s failed", name)
        return CheckResult(CheckStatus.ERROR, Msg("the check failed; the agent's log has the details"),
                           duration=time.monotonic() - started)  # fmt: skip
