"""The operator's day in the room: ``HOSTS``, ``CHECKS``, ``STOP`` and what ``RERUN`` runs again (docs/protocol.md).

Each function answers only about the asking room, with data only (the chat text is :mod:`agent.chat.operations`'s):
the servers its runbooks may target (aliases, never addresses), the configured checks with their schedules and last
state, a running runbook of this room stopped on every host, and the failed hosts of one of its runs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from agent.chat.i18n import Msg
from agent.checks import CheckStatus, alerts, worst
from agent.checks.scheduler import schedule_view
from agent.errors import InvalidArguments, NotAuthorized
from agent.session.answers import CheckAlert, Checks, Hosts, Refused, Stopped
from agent.session.core import Answer
from agent.session.ledger import TaskState
from agent.session.protocol import Command, ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.manifest import Manifest
    from agent.catalog.store import VerifyReport
    from agent.config.schema import AgentConfig
    from agent.runs.gate import RunGate
    from agent.session.ledger import Ledger
    from agent.state.audit import AuditLog

# -- HOSTS ------------------------------------------------------------------------------------------------------


def room_manifests(report: VerifyReport, room: str) -> dict[str, Manifest]:
    """The runnable runbooks this room may run, by name."""
    mine = {}
    for name in report.runnable:
        manifest = report.runbooks[name].manifest
        if manifest is not None and room in manifest.rooms:
            mine[name] = manifest
    return mine


def hosts_answer(config: AgentConfig, report: VerifyReport, room: str) -> Answer[Hosts]:
    """HOSTS: every server (alias) a runbook of this room may target, with those runbooks; and the groups whose
    servers are all among them. Nothing about a server but its alias."""
    inventory = config.inventory
    runbooks: dict[str, list[str]] = {}
    for name, manifest in sorted(room_manifests(report, room).items()):
        for alias in inventory.resolve(list(manifest.targets)):
            runbooks.setdefault(alias, []).append(name)
    hosts = [{"name": alias, "runbooks": runbooks[alias]} for alias in inventory.hosts if alias in runbooks]
    groups = [
        {"name": group, "members": list(members)}
        for group, members in sorted(inventory.groups.items())
        if members and all(m in runbooks for m in members)
    ]
    return Answer(Status.SUCCESS, Hosts(hosts=hosts, groups=groups))


# -- CHECKS -----------------------------------------------------------------------------------------------------


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def checks_answer(config: AgentConfig, state: Any, now: float) -> Answer[Checks]:
    """CHECKS: each configured check, its kind, the schedules that run it (interval, or crontab line with the zone
    it fires in) and its last scheduled state (the worst over its schedules; None: never run on a schedule).

    ``state``: the outbox's key-value state, where the scheduler keeps the last statuses (``get_state``).
    """
    rows = []
    for name, spec in config.checks.items():
        schedules = [s for s in config.schedules if s.kind == "checks" and name in s.checks]
        statuses, since = [], []
        for schedule in schedules:
            stored = state.get_state(f"status:{schedule.name}:{name}")
            if stored in CheckStatus.__members__:
                statuses.append(CheckStatus(stored))
            failing = _float(state.get_state(f"failing_since:{schedule.name}:{name}"))
            if failing is not None:
                since.append(failing)
        rows.append({
            "name": name, "kind": spec.kind, "schedules": [schedule_view(s) for s in schedules],
            "status": worst(statuses).value if statuses else None,
            "failing_since": min(since) if since and statuses and worst(statuses) is not CheckStatus.OK else None,
            **alerts.view(state, name, now),
        })  # fmt: skip
    summaries = [schedule_view(s) for s in config.schedules if s.kind == "summary"]
    return Answer(Status.SUCCESS, Checks(checks=rows, summaries=summaries))


# -- STOP -------------------------------------------------------------------------------------------------------


def _may_stop(config: AgentConfig, user: str | None, manifest: Manifest, runbook: str) -> None:
    """Who may run a runbook may stop it; one that needs an approver's release needs an approver to stop it.

    Raises:
        NotAuthorized: saying which role it takes.
    """
    roles = config.access.roles_of(user)
    if roles is None:
        return
    if manifest.requires_approval and "approver" not in roles:
        raise NotAuthorized(Msg("stopping {runbook} takes an approver, as it needed one to run; ask an approver "
                                "to type the stop", runbook=runbook))  # fmt: skip
    if not roles & set(manifest.roles) and "approver" not in roles:
        raise NotAuthorized(Msg("stopping {runbook} takes a role that may run it ({roles}); ask one who may",
                                runbook=runbook, roles=", ".join(manifest.roles)))  # fmt: skip


def stop(
    command: Command, config: AgentConfig, gate: RunGate, ledger: Ledger
) -> Answer[Stopped] | Answer[Refused]:
    """STOP. ``params``: ``task_id`` (a running RUN_RUNBOOK or RERUN of this room). Ends it on every host.

    Raises:
        NotAuthorized: the user may not stop that runbook.
    """
    task_id = command.params["task_id"]
    live = gate.live.get(task_id)
    if live is None or live[0].room != command.room_id:
        record = ledger.task(task_id)
        if record is not None and record.room_id == command.room_id and record.state is TaskState.PENDING:
            return Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("that request has not started: it waits for an "
                               "approver; its requester withdraws it with cancel and the code ('pending' shows it)"))  # fmt: skip
        # The same answer for a finished task, an unknown one and another room's: nothing leaks across rooms.
        return Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("no runbook of that task is running in this room; "
                           "'history' shows the finished runs"))  # fmt: skip
    _request, plan = live
    _may_stop(config, command.user, plan.runbook.manifest, plan.name)
    if not gate.stop(task_id, command.user):
        return Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("that run has just ended; 'history' shows how"))
    return Answer(Status.SUCCESS, Stopped(stopped=task_id, runbook=plan.name, hosts=list(plan.hosts),
                                          stopped_by=command.user))  # fmt: skip


# -- RERUN ------------------------------------------------------------------------------------------------------

#: What redaction writes in place of a value (``[REDACTED]``, ``[IP]``, ``[SECRET]``…): a run whose logged arguments
#: hold one cannot be run again from the log.
_MASKED = re.compile(r"\[[A-Z][A-Z ]*\]")


def failed_run(
    entries: list[dict[str, Any]], room: str, task_id: str
) -> tuple[str, list[str], dict[str, Any]] | str:
    """The runbook, failed hosts and arguments of run ``task_id`` of this room, from the audit log's entries; or
    the reason (English, a :class:`Msg`) it cannot be run again."""
    entry = next((e for e in reversed(entries) if e.get("kind") == "run" and e.get("task_id") == task_id
                  and e.get("room_id") == room), None)  # fmt: skip
    if entry is None or not isinstance(entry.get("runbook"), str):
        return Msg("no finished run of that task in this room; 'history' lists the runs with their task ids")
    hosts = [h for h in entry.get("hosts") or [] if isinstance(h, dict)]
    failed = [str(h.get("host")) for h in hosts if h.get("status") != "SUCCESS"]
    if not failed:
        return Msg("every server of that run succeeded; there is nothing to run again")
    args = entry.get("args") if isinstance(entry.get("args"), dict) else {}
    if any(isinstance(v, str) and _MASKED.search(v) for v in args.values()):
        return Msg(
            "that run had a masked argument, which the agent does not keep; type the run again in full"
        )
    return entry["runbook"], failed, dict(args)


# -- ACK_CHECK, MUTE_CHECK, UNMUTE_CHECK ---------------------------------------------------------------------------


def _check_name(config: AgentConfig, params: dict[str, Any]) -> str:
    name = params.get("check")
    if not isinstance(name, str) or name not in config.checks:
        raise InvalidArguments([("check", Msg("must name a configured check; 'checks' lists them"))])
    return name


def _alert(config: AgentConfig, state: Any, name: str, now: float) -> CheckAlert:
    schedules = [s.name for s in config.schedules if s.kind == "checks" and name in s.checks]
    shown = alerts.view(state, name, now)
    return CheckAlert(check=name, status=alerts.last_status(state, name, schedules),
                      acked_by=shown.get("acked_by"), muted_until=shown.get("muted_until"),
                      muted_by=shown.get("muted_by"))  # fmt: skip


def ack_check(
    command: Command, config: AgentConfig, state: Any, audit: AuditLog, now: float
) -> Answer[CheckAlert] | Answer[Refused]:
    """ACK_CHECK. ``params``: ``check``. No more reminders about it until its state changes; audited.

    Raises:
        InvalidArguments: not a configured check.
    """
    name = _check_name(config, command.params)
    current = _alert(config, state, name, now)
    if current["status"] in (None, "OK"):
        return Answer.fail(ErrorCode.NOT_AVAILABLE, Msg("{check} has no failure to acknowledge; its last scheduled "
                           "state is OK or it has not run on a schedule ('checks' shows it)", check=name))  # fmt: skip
    alerts.set_ack(state, name, alerts.Ack(command.user, str(current["status"]), now))
    audit.append(
        "check_acked", check=name, status=current["status"], user_id=command.user, room_id=command.room_id
    )
    return Answer(Status.SUCCESS, _alert(config, state, name, now))


def mute_check(
    command: Command, config: AgentConfig, state: Any, audit: AuditLog, now: float
) -> Answer[CheckAlert]:
    """MUTE_CHECK. ``params``: ``check``, ``seconds`` (60 s to 7 days). No report about it until then; audited.

    Raises:
        InvalidArguments: not a configured check, or a duration out of range.
    """
    name = _check_name(config, command.params)
    seconds = command.params.get("seconds")
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not alerts.MIN_MUTE <= seconds <= alerts.MAX_MUTE):  # fmt: skip
        raise InvalidArguments([("seconds", Msg("a mute lasts from 1 minute to 7 days (30m, 2h, 1d)"))])
    until = now + float(seconds)
    alerts.set_mute(state, name, alerts.Mute(command.user, until, now))
    audit.append("check_muted", check=name, until=until, user_id=command.user, room_id=command.room_id)
    return Answer(Status.SUCCESS, _alert(config, state, name, now))


def unmute_check(
    command: Command, config: AgentConfig, state: Any, audit: AuditLog, now: float
) -> Answer[CheckAlert]:
    """UNMUTE_CHECK. ``params``: ``check``. Its reports go out again; audited.

    Raises:
        InvalidArguments: not a configured check.
    """
    name = _check_name(config, command.params)
    alerts.set_mute(state, name, None)
    audit.append("check_unmuted", check=name, user_id=command.user, room_id=command.room_id)
    return Answer(Status.SUCCESS, _alert(config, state, name, now))
