"""Whether the original agent's three actions can work here: ``agent config check`` with ``[relay] protocol = "v0"``.

A v0 relay was built for an agent that answered ``CHECK_INTERNAL_WAS_STATUS``, ``FETCH_MES_QC`` and
``CHECK_DISK_SPACE``; a drop-in that cannot is not one. Each is tried as it would run, under its own timeouts:

* ``CHECK_INTERNAL_WAS_STATUS``: ``[actions] was_status_check`` names an ``http`` check, and its URL answers with the
  health JSON (an object with ``status``) within the check's ``timeout``, whatever status it reports (the action
  then works, and says it);
* ``FETCH_MES_QC``: DB_HOST, DB_USER and DB_NAME are set, and the query (``tb_mes_wrk_prc_i``, unless
  ``db.queries.mes_qc`` is another) runs with ``LIMIT 0`` under the DB timeouts, for ``today``;
* ``CHECK_DISK_SPACE``: each disk check it runs is a disk check whose path exists, or, with none, the system drive.

Every problem is found in one pass; nothing here raises. Without connecting (``agent config check --before-start``,
what the service runs before each start), the WAS and the database are not tried: one that is down must not keep the agent, which
reports it, from starting.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from agent.actions.dispatch import SYSTEM_DRIVE, disk_space_checks, system_drive
from agent.checks import db, http
from agent.config.schema import AgentConfig, DiskCheck, HttpCheck
from agent.errors import InvalidArguments

#: What FETCH_MES_QC needs from the environment (DB_PASSWORD may be empty: trust or peer authentication).
DB_REQUIRED = ("DB_HOST", "DB_USER", "DB_NAME")


@dataclass(frozen=True)
class Readiness:
    action: str
    ready: bool
    #: One line: what was found (ready) or what to fix (not ready). Never a secret.
    why: str


async def _was_status(config: AgentConfig, connect: bool) -> Readiness:
    action = "CHECK_INTERNAL_WAS_STATUS"
    name = config.actions.was_status_check
    if name is None:
        return Readiness(action, False, "no WAS check: set [actions] was_status_check to an http check")
    spec = config.checks.get(name)
    if not isinstance(spec, HttpCheck):
        return Readiness(
            action, False, f"[actions] was_status_check names {name!r}, which is not an http check"
        )
    if not connect:
        return Readiness(action, True, f"http check {name!r} (not tried: --before-start)")
    result = await http.run(spec)
    code = result.data.get("http_status")
    if code is None:
        return Readiness(action, False, f"check {name!r}: no answer ({result.message})")
    health = result.data.get("health")
    if not isinstance(health, dict) or health.get("status") is None:
        return Readiness(action, False, f"check {name!r}: the URL answers HTTP {code}, but not with the health "
                                        "JSON: is it the health URL?")  # fmt: skip
    return Readiness(action, True, f"check {name!r} answered: {result.status.value}, {result.message}")


async def _mes_qc(config: AgentConfig, environ: Mapping[str, str], connect: bool) -> Readiness:
    action = "FETCH_MES_QC"
    query = config.db.query(config.actions.mes_qc_query)
    if query is None:
        return Readiness(action, False, f"no query {config.actions.mes_qc_query!r} in db.queries")
    missing = [name for name in DB_REQUIRED if not environ.get(name)]
    if missing:
        return Readiness(action, False, f"{', '.join(missing)} not set (the database to read)")
    if not connect:
        return Readiness(action, True, f"{', '.join(DB_REQUIRED)} set (the table not tried: --before-start)")
    where = (
        "tb_mes_wrk_prc_i" if config.actions.mes_qc_query not in config.db.queries else "the query's tables"
    )
    try:
        await db.probe(query, db.bind(query, {"date": "today"}), config.db, environ)
    except InvalidArguments as exc:
        return Readiness(action, False, f"query {config.actions.mes_qc_query!r} cannot take the date: {exc}")
    except db.QueryFailed as exc:
        return Readiness(action, False, f"cannot read {where}: {exc.message}")
    return Readiness(action, True, f"{where} is readable (LIMIT 0, within the DB timeouts)")


async def _disk_space(config: AgentConfig) -> Readiness:
    action = "CHECK_DISK_SPACE"
    names = disk_space_checks(config)
    if not names:
        drive = system_drive()
        try:
            shutil.disk_usage(drive)
        except OSError as exc:
            return Readiness(action, False, f"no disk check, and the system drive {drive} cannot be read "
                                            f"({exc.strerror})")  # fmt: skip
        return Readiness(action, True, f"no disk check: the system drive {drive} ({SYSTEM_DRIVE})")
    problems, paths = [], []
    for name in names:
        spec = config.checks.get(name)
        if not isinstance(spec, DiskCheck):
            problems.append(f"{name!r} is not a disk check")
            continue
        path = config.path(spec.path)
        paths.append(f"{name} {path}")
        if not path.exists():
            problems.append(f"check {name!r}: {path} does not exist")
    if problems:
        return Readiness(action, False, "; ".join(problems))
    return Readiness(action, True, ", ".join(paths))


async def v0_readiness(
    config: AgentConfig, environ: Mapping[str, str], connect: bool = True
) -> list[Readiness]:
    """The three original actions, in the order the original agent listed them, each ready or not and why.

    ``connect=False``: what the config and environment say alone (no WAS or database is tried).
    """
    results = await asyncio.gather(
        _mes_qc(config, environ, connect), _was_status(config, connect), _disk_space(config)
    )
    return list(results)
