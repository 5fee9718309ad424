"""Shared fixtures: a private copy of the bundled catalog, and a CLI runner bound to it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets.asyncio.client
from click.testing import CliRunner, Result
from hypothesis import settings

from agent.catalog.store import Catalog
from agent.cli import main
from agent.config.schema import load_config
from agent.reference.operator_client import OperatorClient
from agent.reference.relay import Relay
from agent.shell.app import App
from tests.services import HealthServer, postgres_database
from tests.sshd import SshFleet, free_port

ROOT = Path(__file__).resolve().parent.parent

# HYPOTHESIS_PROFILE=deep scripts/test  runs every property ten times harder.
settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("deep", max_examples=3000, deadline=None)
# scripts/test-windows: the properties' search is the Linux run's job; under Wine (5-10x slower per example) each
# property runs enough examples to show the code behaves the same on Windows, and CI stays under its 20 minutes.
settings.register_profile("windows", max_examples=40, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


#: Fixtures that start OpenSSH's sshd or need PostgreSQL on this machine. Under scripts/test-windows (a Windows
#: CPython under Wine) there is neither: those tests run on the Linux side, and the Windows run skips them by name.
LINUX_SERVICES = {"fleet", "postgres"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if sys.platform != "win32":
        return
    for item in items:
        needs = LINUX_SERVICES & set(getattr(item, "fixturenames", ()))
        posix = item.get_closest_marker("posix_only")
        if needs or posix:
            why = (
                f"needs {', '.join(sorted(needs))} on this machine"
                if needs
                else posix.kwargs.get("reason", "POSIX")
            )
            item.add_marker(pytest.mark.skip(reason=f"Windows run: {why} (covered by the Linux run)"))


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
    Catalog(tmp_path / "runbooks", tmp_path / "runbooks.lock").relock()
    down = free_port()
    extra = (
        f'[inventory.hosts.down]\naddress = "127.0.0.1"\nport = {down}\n\n'
        f'[inventory.hosts.stranger]\naddress = "{fleet.endpoints[3].address}"\nport = {fleet.endpoints[3].port}\n\n'
    )  # "stranger": a real sshd that known_hosts has no key for
    (tmp_path / "agent.toml").write_text(
        'agent_id = "test-agent"\n'
        + fleet.inventory_toml(["h1", "h2", "h3"], extra)
        + '[inventory.groups]\nweb = ["h1", "h2"]\n\n[executor]\nkill_grace = 1.0\nconnect_timeout = 5.0\n\n'
        + "[relay]\nmax_backoff = 2.0\n\n[tasks]\nshutdown_grace = 5.0\n",
        encoding="utf-8",
        newline="\n",
    )
    return tmp_path


RELAY_TOKEN = "relay-token-0123456789"


class Operator(OperatorClient):
    """The operator client plus shorthands for the tests."""

    async def command(self, action: str, task_id: str, room_id: str = "ops", **params: Any) -> None:
        await self.send({"action": action, "task_id": task_id, "room_id": room_id, "params": params})

    def of(self, task_id: str, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("task_id") == task_id and e.get("event") == event]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    server = Relay(agent_token=RELAY_TOKEN)
    server.port = await server.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    yield server
    await server.stop()


async def connect_operator(relay: Relay) -> Operator:
    ws = await websockets.asyncio.client.connect(f"ws://127.0.0.1:{relay.port}/operator", max_size=None)  # type: ignore[attr-defined]
    return Operator(ws)


@pytest.fixture
async def operator(relay: Relay) -> AsyncIterator[Operator]:
    client = await connect_operator(relay)
    yield client
    await client.close()


def agent_environ(relay: Relay, **extra: str) -> dict[str, str]:
    return {
        "EXTERNAL_WS_URL": f"ws://127.0.0.1:{relay.port}/agent",
        "AGENT_RELAY_TOKEN": RELAY_TOKEN,
        **extra,
    }  # type: ignore[attr-defined]


class RunningApp:
    """An agent running in-process (``App.run`` as a task); :meth:`of` builds it from a config file."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.task = asyncio.create_task(app.run())

    @classmethod
    def of(cls, config: Path | str, environ: dict[str, str]) -> RunningApp:
        """Load ``config``, start the agent with ``environ`` as its environment (relay URL, tokens, DB_*)."""
        return cls(App(load_config(Path(config)), environ=environ))

    async def stop(self) -> None:
        self.app.stopping.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def running_agent(agent_home: Path, relay: Relay) -> AsyncIterator[RunningApp]:
    """The agent of agent_home, in-process, connected to the relay."""
    running = RunningApp.of(agent_home / "agent.toml", agent_environ(relay, DB_PASSWORD="Db-Passw0rd-xyz"))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    yield running
    await running.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, str]]:
    """DB_* environment of a throwaway PostgreSQL database with tb_mes_wrk_prc_i (dropped after the run)."""
    with postgres_database() as env:
        yield env


@pytest.fixture(scope="session")
def health() -> Iterator[HealthServer]:
    with HealthServer() as server:
        yield server
