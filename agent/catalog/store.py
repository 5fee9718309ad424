"""The runbook catalog on disk: scan ``runbooks/``, write and verify ``runbooks.lock``, hand out verified runbooks.

A runbook is ``runbooks/NAME.toml`` (its :class:`~agent.catalog.manifest.Manifest`) plus ``runbooks/NAME.sh``.
:meth:`Catalog.verify` compares every file with the lock and returns a :class:`VerifyReport` that names each
problem by runbook and kind. :meth:`Catalog.load` is what the executor calls right before a run: it reads the
files again and refuses unless their bytes still hash to what the lock in use recorded, so a script edited while
the agent runs is refused, not run. A new lock is checked with :meth:`Catalog.examine` and put in use with
:meth:`Catalog.adopt` (the running agent's reload: :mod:`agent.shell.runtime`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from agent.catalog.lockfile import (
    Lock,
    LockEntry,
    LockSignature,
    make_lock,
    parse_lock,
    render_lock,
    sha256_hex,
)
from agent.catalog.manifest import NAME_PATTERN, Manifest, parse_manifest
from agent.catalog.signing import ApproverKey, check_signatures
from agent.chat.i18n import N_, Msg
from agent.errors import CatalogError, InvalidLock, InvalidManifest, RunbookNotRunnable

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.lint import Finding
    from agent.config.schema import AgentConfig

MANIFEST_SUFFIX = ".toml"
SCRIPT_SUFFIX = ".sh"


class ProblemKind(StrEnum):
    """What ``agent runbooks verify`` can find wrong; the values are the ``--json`` report's ``kind``."""

    MODIFIED_SCRIPT = "modified_script"
    MODIFIED_MANIFEST = "modified_manifest"
    MISSING_FILE = "missing_file"
    NOT_IN_LOCK = "not_in_lock"
    STALE_LOCK_ENTRY = "stale_lock_entry"
    INVALID_MANIFEST = "invalid_manifest"
    INVALID_NAME = "invalid_name"
    LOCK_MISSING = "lock_missing"
    LOCK_INVALID = "lock_invalid"
    LOCK_EDITED = "lock_edited"
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"


#: Problems with the lock as a whole: while any stands, no runbook is runnable.
LOCK_WIDE = frozenset(
    {
        ProblemKind.LOCK_MISSING,
        ProblemKind.LOCK_INVALID,
        ProblemKind.LOCK_EDITED,
        ProblemKind.SIGNATURE_MISSING,
        ProblemKind.SIGNATURE_INVALID,
    }
)


#: Why a runbook is not runnable, in the room's words, by problem kind (the words of the catalog report).
REASONS: dict[ProblemKind, str] = {
    ProblemKind.MODIFIED_SCRIPT: N_("script changed since it was locked"),
    ProblemKind.MODIFIED_MANIFEST: N_("manifest changed since it was locked"),
    ProblemKind.MISSING_FILE: N_("a file is missing"),
    ProblemKind.NOT_IN_LOCK: N_("not in the lock"),
    ProblemKind.STALE_LOCK_ENTRY: N_("locked but no longer present"),
    ProblemKind.INVALID_MANIFEST: N_("invalid manifest"),
    ProblemKind.INVALID_NAME: N_("invalid name"),
    ProblemKind.LOCK_MISSING: N_("no lock file"),
    ProblemKind.LOCK_INVALID: N_("the lock file does not parse"),
    ProblemKind.LOCK_EDITED: N_("the lock file was edited by hand"),
    ProblemKind.SIGNATURE_MISSING: N_("the lock is not signed"),
    ProblemKind.SIGNATURE_INVALID: N_("the lock's signatures do not verify"),
}


def reason(kind: ProblemKind) -> Msg:
    """One problem kind as the room reads it."""
    return Msg(REASONS[kind])


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    #: The runbook at fault, or ``None`` for a problem of the lock as a whole.
    runbook: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.runbook or '(lock)'}: {self.kind.value}: {self.detail}"


def reasons_of(problems: Sequence[Problem]) -> list[Msg]:
    """Problems in the room's words, each kind of each runbook once (a lock-wide one without a runbook)."""
    reasons: list[Msg] = []
    seen: set[tuple[str | None, ProblemKind]] = set()
    for p in problems:
        if (p.runbook, p.kind) not in seen:
            seen.add((p.runbook, p.kind))
            why = reason(p.kind)
            reasons.append(
                why if p.runbook is None else Msg("{runbook}: {reason}", runbook=p.runbook, reason=why)
            )
    return reasons


@dataclass(frozen=True)
class ScannedRunbook:
    """One runbook's files as found on disk (either may be missing)."""

    name: str
    manifest_bytes: bytes | None
    script_bytes: bytes | None
    manifest: Manifest | None = None
    manifest_error: InvalidManifest | None = None

    @property
    def manifest_sha256(self) -> str | None:
        return None if self.manifest_bytes is None else sha256_hex(self.manifest_bytes)

    @property
    def script_sha256(self) -> str | None:
        return None if self.script_bytes is None else sha256_hex(self.script_bytes)


@dataclass(frozen=True)
class RunbookStatus:
    name: str
    manifest: Manifest | None
    manifest_sha256: str | None
    script_sha256: str | None
    verified: bool


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of comparing the catalog with its lock."""

    problems: list[Problem]
    runbooks: dict[str, RunbookStatus]
    lock: Lock | None
    signed_by: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def runnable(self) -> list[str]:
        return sorted(name for name, status in self.runbooks.items() if status.verified)

    def problems_of(self, name: str) -> list[Problem]:
        return [p for p in self.problems if p.runbook == name or p.kind in LOCK_WIDE]

    def why_not_runnable(self, name: str) -> list[Msg]:
        """Why the runbook ``name`` (in the folder, not verified) may not run: one reason per problem kind."""
        kinds = sorted({p.kind for p in self.problems_of(name)}, key=list(ProblemKind).index)
        return [reason(kind) for kind in kinds]

    @property
    def blocking(self) -> list[Problem]:
        """The problems that keep this report from replacing the one in use (:meth:`Catalog.adopt` on reload): the
        lock's own, and any of a runbook the lock names. A file the lock does not name (a draft not locked yet, a
        bad name) only makes that file not runnable."""
        locked = self.lock.runbooks if self.lock is not None else {}
        return [
            p
            for p in self.problems
            if p.kind in LOCK_WIDE or self.lock is None or (p.runbook is not None and p.runbook in locked)
        ]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "catalog_sha256": self.lock.catalog_sha256 if self.lock else None,
            "signed_by": self.signed_by,
            "problems": [
                {"runbook": p.runbook, "kind": p.kind.value, "detail": p.detail} for p in self.problems
            ],
            "runbooks": {
                name: {
                    "verified": status.verified,
                    "manifest_sha256": status.manifest_sha256,
                    "script_sha256": status.script_sha256,
                }
                for name, status in sorted(self.runbooks.items())
            },
        }


@dataclass(frozen=True)
class VerifiedRunbook:
    """A runbook whose bytes were just checked against the lock: what the executor runs."""

    name: str
    manifest: Manifest
    script: bytes
    script_sha256: str


class Catalog:
    """The runbook folder, its lock, and the approver keys that must have signed the lock."""

    def __init__(
        self,
        directory: Path,
        lock_path: Path,
        approvers: list[ApproverKey] | None = None,
        min_signatures: int = 1,
    ) -> None:
        self.directory = directory
        self.lock_path = lock_path
        self.approvers = approvers or []
        self.min_signatures = min_signatures
        self._report: VerifyReport | None = None

    @classmethod
    def for_config(cls, config: AgentConfig) -> Catalog:
        """The catalog the config names, with its approver keys.

        Raises:
            SigningError: an approver key line that cannot be read.
        """
        return cls(
            config.path(config.catalog.dir),
            config.path(config.catalog.lock),
            approvers=config.catalog.approvers(),
            min_signatures=config.catalog.min_signatures,
        )

    # -- reading ------------------------------------------------------------------------------------------

    def scan(self) -> tuple[dict[str, ScannedRunbook], list[Problem]]:
        """Read every manifest and script in the folder.

        Raises:
            CatalogError: never; unreadable files and bad names come back as problems.
        """
        files: dict[str, dict[str, bytes]] = {}
        problems: list[Problem] = []
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError as exc:
            return {}, [
                Problem(ProblemKind.MISSING_FILE, None, f"cannot read {self.directory}: {exc.strerror}")
            ]
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix not in (MANIFEST_SUFFIX, SCRIPT_SUFFIX) or not entry.is_file():
                continue
            if not re.fullmatch(NAME_PATTERN, stem):
                problems.append(
                    Problem(ProblemKind.INVALID_NAME, None, f"{entry.name}: runbook names are {NAME_PATTERN}")
                )
                continue
            with open(entry.path, "rb") as handle:
                files.setdefault(stem, {})[suffix] = handle.read()
        scanned = {}
        for name, found in files.items():
            manifest_bytes = found.get(MANIFEST_SUFFIX)
            manifest, error = None, None
            if manifest_bytes is not None:
                try:
                    manifest = parse_manifest(manifest_bytes, name + MANIFEST_SUFFIX)
                except InvalidManifest as exc:
                    error = exc
            scanned[name] = ScannedRunbook(name, manifest_bytes, found.get(SCRIPT_SUFFIX), manifest, error)
        return scanned, problems

    def read_lock(self) -> Lock:
        """Raises: InvalidLock (unparseable) or FileNotFoundError (no lock)."""
        return parse_lock(self.lock_path.read_bytes(), self.lock_path.name)

    # -- verifying ------------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Compare every runbook with the lock and the lock with the approver keys; runs use this report from now."""
        report = self.examine()
        self._report = report
        return report

    def examine(self) -> VerifyReport:
        """What :meth:`verify` finds, without putting it in use (the agent's reload checks a new lock with it, in a
        worker thread, and :meth:`adopt` s it only when it verifies)."""
        scanned, problems = self.scan()
        lock: Lock | None = None
        signed_by: list[str] = []
        try:
            lock = self.read_lock()
        except FileNotFoundError:
            problems.append(Problem(ProblemKind.LOCK_MISSING, None, f"{self.lock_path.name} does not exist"))
        except InvalidLock as exc:
            problems.append(Problem(ProblemKind.LOCK_INVALID, None, str(exc)))
        if lock is not None:
            if lock.recomputed_digest() != lock.catalog_sha256:
                problems.append(
                    Problem(
                        ProblemKind.LOCK_EDITED,
                        None,
                        "catalog_sha256 does not match the lock's entries: the lock was edited by hand",
                    )
                )
            elif self.approvers:
                reason = check_signatures(
                    lock.signatures, self.approvers, lock.signed_message(), self.min_signatures
                )
                if reason is None:
                    signed_by = sorted(
                        a.comment or a.fingerprint
                        for a in self.approvers
                        if any(s.key == a.fingerprint for s in lock.signatures)
                    )
                else:
                    kind = (
                        ProblemKind.SIGNATURE_MISSING
                        if not lock.signatures
                        else ProblemKind.SIGNATURE_INVALID
                    )
                    problems.append(Problem(kind, None, reason))
        locked = lock.runbooks if lock is not None else {}
        for name in sorted(set(scanned) | set(locked)):
            problems.extend(self._compare(scanned.get(name), locked.get(name), name, lock is not None))
        lock_ok = not any(p.kind in LOCK_WIDE for p in problems)
        at_fault = {p.runbook for p in problems}
        statuses = {
            name: RunbookStatus(
                name=name,
                manifest=found.manifest,
                manifest_sha256=found.manifest_sha256,
                script_sha256=found.script_sha256,
                verified=lock_ok and name not in at_fault,
            )
            for name, found in scanned.items()
        }
        return VerifyReport(problems=problems, runbooks=statuses, lock=lock, signed_by=signed_by)

    def adopt(self, report: VerifyReport) -> None:
        """Put a report from :meth:`examine` in use: one assignment, so every reader sees the old catalog or the
        new one, never a mix; a run already past :meth:`load` keeps the bytes it loaded."""
        self._report = report

    @staticmethod
    def _compare(
        found: ScannedRunbook | None, entry: LockEntry | None, name: str, have_lock: bool
    ) -> list[Problem]:
        problems: list[Problem] = []
        if found is None:
            return [Problem(ProblemKind.STALE_LOCK_ENTRY, name, "the lock names it, but neither file exists")]
        if found.manifest_bytes is None:
            problems.append(Problem(ProblemKind.MISSING_FILE, name, f"{name}{MANIFEST_SUFFIX} is missing"))
        if found.script_bytes is None:
            problems.append(Problem(ProblemKind.MISSING_FILE, name, f"{name}{SCRIPT_SUFFIX} is missing"))
        if found.manifest_error is not None:
            problems.extend(
                Problem(ProblemKind.INVALID_MANIFEST, name, f"{found.manifest_error.source}: {line}")
                for line in found.manifest_error.problems
            )
        if entry is None:
            if have_lock:
                problems.append(
                    Problem(ProblemKind.NOT_IN_LOCK, name, "not in the lock: run 'agent runbooks lock'")
                )
            return problems
        if found.manifest_sha256 is not None and found.manifest_sha256 != entry.manifest_sha256:
            problems.append(
                Problem(ProblemKind.MODIFIED_MANIFEST, name, f"{name}{MANIFEST_SUFFIX} differs from the lock")
            )
        if found.script_sha256 is not None and found.script_sha256 != entry.script_sha256:
            problems.append(
                Problem(ProblemKind.MODIFIED_SCRIPT, name, f"{name}{SCRIPT_SUFFIX} differs from the lock")
            )
        return problems

    # -- writing ------------------------------------------------------------------------------------------

    def build_lock(self) -> tuple[Lock | None, list[Problem]]:
        """The lock for the folder as it is now, or the problems that prevent locking it.

        Signatures of the current lock are kept when the content is unchanged, so re-locking is idempotent.
        """
        scanned, problems = self.scan()
        for name, found in scanned.items():
            problems.extend(self._compare(found, None, name, have_lock=False))
        if problems:
            return None, problems
        entries = {
            name: LockEntry(
                manifest_sha256=found.manifest_sha256 or "", script_sha256=found.script_sha256 or ""
            )
            for name, found in scanned.items()
        }
        lock = make_lock(entries)
        try:
            previous = self.read_lock()
        except (FileNotFoundError, InvalidLock):
            previous = None
        if previous is not None and previous.catalog_sha256 == lock.catalog_sha256:
            lock = make_lock(entries, list(previous.signatures))
        return lock, []

    def lint(self) -> list[Finding]:
        """ShellCheck findings for every script that has a valid manifest (its interpreter picks the shell).

        Raises:
            LintError: shellcheck is missing or fails.
        """
        from agent.catalog.lint import find_shellcheck, lint_script

        scanned, _ = self.scan()
        shellcheck = find_shellcheck()
        findings: list[Finding] = []
        for name, found in sorted(scanned.items()):
            if found.script_bytes is not None and found.manifest is not None:
                findings.extend(lint_script(name, found.script_bytes, found.manifest.interpreter, shellcheck))
        return findings

    def relock(self) -> Lock:
        """Build and write the lock for the folder as it is (for tools, tests and the demo).

        Raises:
            CatalogError: the folder cannot be locked; the message lists why.
        """
        lock, problems = self.build_lock()
        if lock is None:
            raise CatalogError("cannot lock the catalog: " + "; ".join(map(str, problems)))
        self.write_lock(lock)
        return lock

    def write_lock(self, lock: Lock) -> None:
        """Replace the lock file atomically (a crash never leaves half a lock)."""
        text = render_lock(lock)
        fd, tmp = tempfile.mkstemp(prefix=".runbooks.lock.", dir=self.lock_path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii", newline="\n") as handle:
                handle.write(text)
            os.replace(tmp, self.lock_path)
        except BaseException:
            os.unlink(tmp)
            raise

    @staticmethod
    def add_signature(lock: Lock, signature: LockSignature) -> Lock:
        """The lock with ``signature`` added, replacing an earlier one by the same key."""
        others = [s for s in lock.signatures if s.key != signature.key]
        return make_lock(lock.runbooks, [*others, signature])

    # -- running ------------------------------------------------------------------------------------------

    @property
    def report(self) -> VerifyReport:
        """The report of the last :meth:`verify` (the agent's start); verifies now if there was none."""
        return self._report if self._report is not None else self.verify()

    def load(self, name: str) -> VerifiedRunbook:
        """Read a runbook for a run, re-hashing its bytes against the lock in use (verified at start or at the last
        reload, :meth:`adopt`).

        Raises:
            RunbookNotRunnable: unknown, in the folder but not runnable (the reason in the room's words, from the
            report's problems), or its files changed since.
        """
        report = self.report  # read once: a reload swaps the report, never this run's view of it
        status = report.runbooks.get(name) if isinstance(name, str) else None
        if status is None:
            # A name that could be a runbook's is named back; anything else is not echoed (it came from chat).
            valid = isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None
            if valid and any(
                (self.directory / (name + suffix)).is_file() for suffix in (MANIFEST_SUFFIX, SCRIPT_SUFFIX)
            ):
                raise RunbookNotRunnable(name, reason(ProblemKind.NOT_IN_LOCK))  # added since the lock in use
            raise RunbookNotRunnable(name if valid else "(invalid name)", Msg("no such runbook"))
        if not status.verified or report.lock is None:
            # In the folder but not runnable: say why, in the catalog report's words (the name is a file's).
            raise RunbookNotRunnable(name, Msg("{problems}", problems=report.why_not_runnable(name)))
        entry = report.lock.runbooks[name]
        try:
            manifest_bytes = (self.directory / (name + MANIFEST_SUFFIX)).read_bytes()
            script = (self.directory / (name + SCRIPT_SUFFIX)).read_bytes()
        except OSError:
            raise RunbookNotRunnable(name, Msg("its files can no longer be read")) from None
        if sha256_hex(manifest_bytes) != entry.manifest_sha256:
            raise RunbookNotRunnable(name, Msg("its manifest changed since it was locked"))
        script_sha256 = sha256_hex(script)
        if script_sha256 != entry.script_sha256:
            raise RunbookNotRunnable(name, Msg("its script changed since it was locked"))
        manifest = status.manifest
        assert manifest is not None  # verified implies a valid manifest
        return VerifiedRunbook(name=name, manifest=manifest, script=script, script_sha256=script_sha256)
