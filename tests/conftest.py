"""Shared fixtures: a private copy of the bundled catalog, and a CLI runner bound to it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

from agent.cli import main

ROOT = Path(__file__).resolve().parent.parent

# HYPOTHESIS_PROFILE=deep scripts/test  runs every property ten times harder.
settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("deep", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    """A copy of runbooks/ and runbooks.lock in a temp folder (returns the folder holding both)."""
    shutil.copytree(ROOT / "runbooks", tmp_path / "runbooks")
    shutil.copy2(ROOT / "runbooks.lock", tmp_path / "runbooks.lock")
    return tmp_path


@pytest.fixture
def agent_cli(catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``agent ARGS`` in-process from ``catalog_dir`` as the working directory (no config file)."""
    monkeypatch.chdir(catalog_dir)
    monkeypatch.delenv("AGENT_CONFIG", raising=False)

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return run
