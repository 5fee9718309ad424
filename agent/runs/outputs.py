"""The full output of runs, kept on the agent PC; pages of it for GET_OUTPUT.

Chat gets a short view; the whole redacted output (up to ``executor.max_output`` per stream) stays inside the
network. Nothing on disk is named after a relay-provided string: a run lives in ``STATE/outputs/KEY/`` where KEY is
the sha256 of its ``task_id``, each host's streams in ``HOSTKEY.stdout``/``.stderr`` (HOSTKEY the digest of the
alias), with ``meta.json`` recording the task id, when it was kept and its size. Any string is therefore a safe
lookup (no ``..``, no absolute path, nothing Windows refuses such as ``:``), and an unknown one is simply not found.

Bounded: runs older than ``retention_days`` are purged, and when the kept runs exceed ``max_bytes`` or ``max_runs``
the oldest go first. :meth:`OutputStore.save` returns what a cap evicted so the caller can say so in a REPORT.
Files are 0600 and folders 0700 whatever the umask (:mod:`agent.state.files`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.chat.i18n import Msg, nmsg
from agent.runs.results import RunResult
from agent.state.files import private_dir, write_private

if TYPE_CHECKING:  # pragma: no cover
    from agent.config.schema import AgentConfig

logger = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
_META = "meta.json"


class OutputNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Evicted:
    """A kept run removed to stay under a cap (not by age): what a REPORT should name."""

    task_id: str
    #: When it was kept (Unix time).
    saved: float
    #: Bytes it took.
    size: int


@dataclass
class _Entry:
    task_id: str
    saved: float
    size: int


def key_of(task_id: str) -> str:
    """The folder name of a run: a digest, never the id itself."""
    return hashlib.sha256(b"task\0" + task_id.encode("utf-8", "surrogatepass")).hexdigest()


def _host_key(host: str) -> str:
    return hashlib.sha256(b"host\0" + host.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class OutputStore:
    """Kept output of runs, keyed by digest, bounded by age, total size and number of runs."""

    def __init__(
        self,
        folder: Path,
        retention_days: float,
        page_lines: int = 200,
        max_bytes: int = 512 * 1024 * 1024,
        max_runs: int = 10_000,
    ) -> None:
        self.folder = folder
        self.retention = retention_days * 86400
        self.page_lines = page_lines
        self.max_bytes = max_bytes
        self.max_runs = max_runs
        self._last_purge = 0.0
        #: key → entry, oldest first; loaded from meta.json files on first use. ``_total``: their bytes.
        self._index: OrderedDict[str, _Entry] | None = None
        self._total = 0

    @classmethod
    def for_config(cls, config: AgentConfig) -> OutputStore:
        """The store in the config's state folder, with its retention, page size and caps."""
        settings = config.outputs
        return cls(
            config.path(config.state.dir) / "outputs", settings.retention_days, settings.page_lines,
            max_bytes=settings.max_bytes, max_runs=settings.max_runs,
        )  # fmt: skip

    # -- writing --------------------------------------------------------------------------------------------------

    def save(self, task_id: str, result: RunResult, now: float | None = None) -> list[Evicted]:
        """Keep every host's full output of a run; purge expired runs (at most once an hour); enforce the caps.

        Returns:
            The runs the caps evicted to make room (oldest first), for the caller to report; usually empty. The run
            just saved is never evicted, even when it alone exceeds ``max_bytes``.
        """
        now = time.time() if now is None else now
        index = self._load()
        key = key_of(task_id)
        target = private_dir(self.folder) / key
        if key in index:
            self._remove(key)
        private_dir(target)
        size = 0
        hosts: dict[str, str] = {}
        for host in result.hosts:
            hosts[host.host] = _host_key(host.host)
            for stream, text in (("stdout", host.stdout_full), ("stderr", host.stderr_full)):
                data = text.encode("utf-8", "replace")
                write_private(target / f"{hosts[host.host]}.{stream}", data)
                size += len(data)
        meta = {"task_id": task_id, "saved": now, "size": size, "hosts": hosts}
        write_private(target / _META, json.dumps(meta, ensure_ascii=False).encode())
        index[key] = _Entry(task_id, now, size)
        self._total += size
        if now - self._last_purge > 3600:
            self.purge(now)
        return self._enforce_caps(keep=key)

    def _enforce_caps(self, keep: str) -> list[Evicted]:
        index = self._load()
        evicted: list[Evicted] = []
        while len(index) > 1 and (self._total > self.max_bytes or len(index) > self.max_runs):
            key, entry = next(iter(index.items()))
            if key == keep:  # only the newest is left above the cap
                break
            self._remove(key)
            evicted.append(Evicted(entry.task_id, entry.saved, entry.size))
        if evicted:
            logger.warning("kept output over its cap: removed the %d oldest run(s)", len(evicted))
        return evicted

    def _remove(self, key: str) -> None:
        if self._index is not None:
            entry = self._index.pop(key, None)
            self._total -= entry.size if entry is not None else 0
        shutil.rmtree(self.folder / key, ignore_errors=True)

    # -- reading --------------------------------------------------------------------------------------------------

    def page(self, task_id: object, host: object, stream: object, page: object) -> tuple[str, int, int]:
        """``(lines of the page, page number, number of pages)``.

        Any string is a safe ``task_id`` or ``host``: both are looked up by digest, never used as a path.

        Raises:
            OutputNotFound: unknown or expired task, host or stream.
            ValueError: a bad stream or page number.
        """
        if not (isinstance(task_id, str) and isinstance(host, str)):
            raise OutputNotFound(Msg("no stored output for that task and host"))
        if stream not in STREAMS:
            raise ValueError(Msg("stream must be stdout or stderr"))
        if not isinstance(page, int) or isinstance(page, bool) or page < 0:
            raise ValueError(Msg("page must be a whole number from 0"))
        path = self.folder / key_of(task_id) / f"{_host_key(host)}.{stream}"
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            raise OutputNotFound(
                Msg("no stored output for that task and host (expired or never kept)")
            ) from None
        lines = text.splitlines()
        pages = max(1, -(-len(lines) // self.page_lines))
        if page >= pages:
            raise ValueError(nmsg("there is {n} page", "there are {n} pages", pages))
        chunk = lines[page * self.page_lines : (page + 1) * self.page_lines]
        return "\n".join(chunk), page, pages

    # -- housekeeping ---------------------------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> int:
        """Remove runs older than the retention (and stray folders of older layouts by their age); return how many."""
        now = time.time() if now is None else now
        self._last_purge = now
        cutoff = now - self.retention
        index = self._load()
        expired = [key for key, entry in index.items() if entry.saved < cutoff]
        for key in expired:
            self._remove(key)
        removed = len(expired)
        if self.folder.is_dir():
            for entry in self.folder.iterdir():
                if entry.name not in index and entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed

    def kept(self) -> list[tuple[str, float, int]]:
        """``(task_id, saved, size)`` of every kept run, oldest first."""
        return [(e.task_id, e.saved, e.size) for e in self._load().values()]

    def _load(self) -> OrderedDict[str, _Entry]:
        if self._index is not None:
            return self._index
        entries: list[tuple[str, _Entry]] = []
        if self.folder.is_dir():
            for folder in self.folder.iterdir():
                try:
                    meta = json.loads((folder / _META).read_bytes())
                    entries.append((folder.name, _Entry(str(meta["task_id"]), float(meta["saved"]),
                                                        int(meta["size"]))))  # fmt: skip
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # not a run of this layout; purge() ages it out
        entries.sort(key=lambda item: item[1].saved)
        self._index = OrderedDict(entries)
        self._total = sum(entry.size for _, entry in entries)
        return self._index
