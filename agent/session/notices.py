"""What the agent tells the operations room on its own (start, stop, catalog problems, a cap that dropped something),
composed as REPORT payloads. Pure: the runtime sends them through the outbox like everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.chat.i18n import Msg, i18n_json, nmsg

if TYPE_CHECKING:
    from agent.catalog.store import Problem, VerifyReport


def outbox_cap(dropped: int) -> dict[str, Any]:
    """The outbox cap dropped ``dropped`` older reports or acceptance notices (never a result)."""
    return {
        "kind": "outbox_cap", "status": "WARN", "dropped": dropped,
        "message": f"the relay was away long: {dropped} older report(s) or acceptance notice(s) were dropped to stay "
                   "under state.max_outbox_bytes; no result was dropped",
    }  # fmt: skip


def outputs_cap(evicted: Sequence[str]) -> dict[str, Any]:
    """Kept outputs of these tasks were removed to stay under the ``[outputs]`` caps."""
    return {
        "kind": "outputs_cap", "status": "WARN", "evicted": list(evicted),
        "message": f"{len(evicted)} oldest kept output(s) removed to stay under [outputs] max_bytes/max_runs",
    }  # fmt: skip


def agent_state(state: str, agent_id: str, version: str, report: VerifyReport) -> dict[str, Any]:
    """The agent ``started`` (version, short catalog digest, how many runbooks run) or is ``stopping``."""
    digest = report.lock.catalog_sha256[:12] if report.lock and report.lock.catalog_sha256 else None
    return {
        "kind": "agent", "state": state, "status": "OK" if state == "started" else "WARN",
        "agent_id": agent_id, "version": version, "catalog": digest, "runnable": len(report.runnable),
    }  # fmt: skip


def catalog_problems(report: VerifyReport, now: float) -> dict[str, Any]:
    """The catalog failed verification at start: every problem, and how many runbooks still run."""
    message = nmsg(
        "{n} catalog problem; {runnable} of {total} runbooks runnable",
        "{n} catalog problems; {runnable} of {total} runbooks runnable",
        len(report.problems), runnable=len(report.runnable), total=len(report.runbooks),
    )  # fmt: skip
    return {
        "kind": "catalog",
        "status": "ERROR",
        "message": message,
        "i18n": i18n_json(message),
        "at": now,
        "problems": [
            {"runbook": p.runbook, "kind": p.kind.value, "detail": p.detail} for p in report.problems
        ],
    }


@dataclass(frozen=True)
class CatalogChanges:
    """What a reload changed: runnable runbooks added, changed (other bytes) and removed, by name."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    #: Each of those runbooks' rooms (a removed one's from the catalog it left).
    rooms: dict[str, frozenset[str]]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def rooms_told(self) -> list[str]:
        """Every room one of the changed runbooks serves."""
        return sorted(set().union(*self.rooms.values())) if self.rooms else []

    def seen_in(self, room: str | None) -> CatalogChanges:
        """Only the runbooks ``room`` serves (``None``: all, for the operations room)."""

        def keep(names: list[str]) -> list[str]:
            return [n for n in names if room is None or room in self.rooms.get(n, ())]

        return CatalogChanges(keep(self.added), keep(self.changed), keep(self.removed), self.rooms)


def catalog_changes(old: VerifyReport, new: VerifyReport) -> CatalogChanges:
    """The runnable runbooks that ``new`` adds, changes or removes compared with ``old``."""

    def runnable(report: VerifyReport) -> dict[str, tuple[str | None, str | None]]:
        return {
            n: (report.runbooks[n].manifest_sha256, report.runbooks[n].script_sha256) for n in report.runnable
        }

    before, after = runnable(old), runnable(new)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    rooms: dict[str, frozenset[str]] = {}
    for name in [*added, *changed, *removed]:
        manifest = (new if name in after else old).runbooks[name].manifest
        rooms[name] = frozenset(manifest.rooms) if manifest is not None else frozenset()
    return CatalogChanges(added, changed, removed, rooms)


def catalog_reloaded(changes: CatalogChanges, digest: str | None, now: float) -> dict[str, Any]:
    """A new lock verified and is in use without a restart: what it added, changed and removed."""
    parts = []
    if changes.added:
        parts.append(Msg("added: {names}", names=", ".join(changes.added)))
    if changes.changed:
        parts.append(Msg("changed: {names}", names=", ".join(changes.changed)))
    if changes.removed:
        parts.append(Msg("removed: {names}", names=", ".join(changes.removed)))
    message = Msg("runbooks reloaded without a restart: {changes}", changes=parts)
    return {
        "kind": "catalog_reload", "status": "OK", "message": message, "i18n": i18n_json(message), "at": now,
        "catalog": digest[:12] if digest else None,
        "added": changes.added, "changed": changes.changed, "removed": changes.removed,
    }  # fmt: skip


def catalog_refused(blocking: Sequence[Problem], reasons: Sequence[Msg], now: float) -> dict[str, Any]:
    """A new lock did not verify: it is not used, the runbooks stay as they were. ``reasons``: the problems in the
    room's words (:func:`agent.catalog.store.reasons_of`)."""
    message = Msg(
        "the new lock file was not applied; the runbooks stay as they were: {problems}",
        problems=list(reasons),
    )
    return {
        "kind": "catalog_refused", "status": "ERROR", "message": message, "i18n": i18n_json(message), "at": now,
        "problems": [{"runbook": p.runbook, "kind": p.kind.value, "detail": p.detail} for p in blocking],
    }  # fmt: skip
