"""Shared fixtures: a private copy of the bundled catalog, and a CLI runner bound to it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

from agent.catalog import Catalog
from agent.cli import main
from tests.sshd import SshFleet, free_port

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


TEST_RUNBOOKS = Path(__file__).resolve().parent / "runbooks"


@pytest.fixture(scope="session")
def fleet() -> Iterator[SshFleet]:
    """Loopback SSH hosts served by a real sshd: h1, h2, h3, and a fourth that known_hosts does not list."""
    hosts = SshFleet(4, untrusted=1).start()
    yield hosts
    hosts.stop()


@pytest.fixture
def agent_home(fleet: SshFleet, tmp_path: Path) -> Path:
    """A folder with agent.toml (inventory: h1-h3, a host that is down, one with an untrusted key) and a locked
    copy of the test runbooks; returns the folder."""
    shutil.copytree(TEST_RUNBOOKS, tmp_path / "runbooks")
    catalog = Catalog(tmp_path / "runbooks", tmp_path / "runbooks.lock")
    lock, problems = catalog.build_lock()
    assert lock is not None, problems
    catalog.write_lock(lock)
    down = free_port()
    extra = (
        f'[inventory.hosts.down]\naddress = "127.0.0.1"\nport = {down}\n\n'
        f'[inventory.hosts.stranger]\naddress = "{fleet.endpoints[3].address}"\nport = {fleet.endpoints[3].port}\n\n'
    )  # "stranger": a real sshd that known_hosts has no key for
    (tmp_path / "agent.toml").write_text(
        'agent_id = "test-agent"\n'
        + fleet.inventory_toml(["h1", "h2", "h3"], extra)
        + '[inventory.groups]\nweb = ["h1", "h2"]\n\n[executor]\nkill_grace = 1.0\nconnect_timeout = 5.0\n'
    )
    return tmp_path
