"""The full output of runs, kept on the agent PC for ``outputs.retention_days``; pages of it for GET_OUTPUT.

Chat gets a short view; the whole redacted output (up to ``executor.max_output`` per stream) stays inside the
network, in ``STATE/outputs/TASK_ID/HOST.stdout`` and ``.stderr``.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from agent.i18n import Msg, nmsg
from agent.results import RunResult

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


class OutputNotFound(LookupError):
    pass


class OutputStore:
    def __init__(self, folder: Path, retention_days: float, page_lines: int = 200) -> None:
        self.folder = folder
        self.retention = retention_days * 86400
        self.page_lines = page_lines
        self._last_purge = 0.0

    def save(self, task_id: str, result: RunResult) -> None:
        """Keep every host's full output of a run (and purge old runs, at most once an hour)."""
        target = self.folder / task_id
        target.mkdir(parents=True, exist_ok=True)
        for host in result.hosts:
            (target / f"{host.host}.stdout").write_text(host.stdout_full, encoding="utf-8")
            (target / f"{host.host}.stderr").write_text(host.stderr_full, encoding="utf-8")
        if time.time() - self._last_purge > 3600:
            self.purge()

    def page(self, task_id: object, host: object, stream: object, page: object) -> tuple[str, int, int]:
        """``(lines of the page, page number, number of pages)``.

        Raises:
            OutputNotFound: unknown or expired task, host or stream (names are checked before any path is built).
            ValueError: a bad page number.
        """
        if not (
            isinstance(task_id, str)
            and _SAFE.fullmatch(task_id)
            and isinstance(host, str)
            and _SAFE.fullmatch(host)
        ):
            raise OutputNotFound(Msg("no stored output for that task and host"))
        if stream not in ("stdout", "stderr"):
            raise ValueError(Msg("stream must be stdout or stderr"))
        if not isinstance(page, int) or isinstance(page, bool) or page < 0:
            raise ValueError(Msg("page must be a whole number from 0"))
        path = self.folder / task_id / f"{host}.{stream}"
        if not path.is_file():
            raise OutputNotFound(Msg("no stored output for that task and host (expired or never kept)"))
        lines = path.read_text(encoding="utf-8").splitlines()
        pages = max(1, -(-len(lines) // self.page_lines))
        if page >= pages:
            raise ValueError(nmsg("there is {n} page", "there are {n} pages", pages))
        chunk = lines[page * self.page_lines : (page + 1) * self.page_lines]
        return "\n".join(chunk), page, pages

    def purge(self, now: float | None = None) -> int:
        """Remove runs older than the retention; return how many."""
        self._last_purge = time.time()
        cutoff = (now or time.time()) - self.retention
        removed = 0
        if not self.folder.is_dir():
            return 0
        for entry in self.folder.iterdir():
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
