"""One prepare step: everything about a config that can be known before the agent runs, in one pass.

``agent config check`` prints what :func:`prepare` finds; ``agent run`` refuses to start on any error it finds, so a
config that passes the check starts, and one that would fail on every scheduled run is refused up front. Each
problem is one line naming the setting at fault; none echoes a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.catalog.store import Catalog
from agent.config.environment import Environment
from agent.config.schema import RunbookCheck
from agent.errors import (
    CatalogError,
    ConfigError,
    InvalidArguments,
    RequestRefused,
    SigningError,
)
from agent.runs.gate import Held, RunRequest, Via, authorize
from agent.state.acl import folder_problems


@dataclass
class Prepared:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The verified catalog, when it could be read.
    catalog: Catalog | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def prepare(environment: Environment, *, executor: bool = True) -> Prepared:
    """Validate the config and every runtime reference in it; list every problem.

    Checks: on Windows, that the state and output folders grant no one else write access (their ACLs); relay URL
    and token, files (catalog, known_hosts, keys, secret files, CA), redaction rules and
    secrets, schedules' cron lines, approver keys, the catalog against its lock, and each runbook check against
    the catalog and inventory as its schedule would run it (runbook, room, hosts, arguments, approval).
    ``executor``: also load the SSH keys and known_hosts as the executor would.
    """
    config = environment.config
    found = Prepared()
    errors, warnings = environment.problems()
    found.errors += errors
    state = config.path(config.state.dir)
    # Windows: the folders' ACLs (POSIX owner and mode are checked where each state file is opened).
    found.errors += [f"state.dir: {problem}" for problem in folder_problems([state, state / "outputs"])]
    found.warnings += warnings
    if config.schedules:
        from agent.checks.scheduler import schedule_problems

        found.errors += schedule_problems(config)
    try:
        environment.redactor()
    except ConfigError as exc:
        found.errors += [f"{exc.source}: {p}" for p in exc.problems]
    if executor and not any(e.startswith(("inventory.known_hosts", "hosts.")) for e in found.errors):
        from agent.runs.executor import Executor

        try:
            Executor(config.inventory, config.executor, config.base_dir, environment.environ)
        except ConfigError as exc:
            found.errors += [f"{exc.source}: {p}" for p in exc.problems]
    try:
        catalog = Catalog.for_config(config)
        report = catalog.verify()
    except (SigningError, CatalogError, ValueError, OSError) as exc:
        found.errors.append(f"catalog: {exc}")
        return found
    found.catalog = catalog
    found.warnings += [f"catalog: {p}" for p in report.problems]
    rooms: dict[str, set[str | None]] = {}
    for schedule in config.schedules:
        for name in schedule.checks if schedule.kind == "checks" else list(config.checks):
            rooms.setdefault(name, set()).add(schedule.room or config.operations_room)
    for name, spec in config.checks.items():
        if not isinstance(spec, RunbookCheck):
            continue
        for room in sorted(rooms.get(name, {None}), key=str):
            request = RunRequest(spec.runbook, spec.hosts, spec.args, via=Via.SCHEDULE, room=room)
            try:
                planned = authorize(config, catalog, request)
            except (CatalogError, RequestRefused, InvalidArguments) as exc:
                where = f" (reporting to room {room!r})" if room else ""
                found.errors.append(f"checks.{name}{where}: {exc}")
                continue
            if isinstance(planned, Held):  # pragma: no cover - authorize refuses these for schedules
                found.errors.append(f"checks.{name}: runbook {spec.runbook!r} needs an approver")
    return found
