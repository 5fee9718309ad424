"""Nothing a run started survives it on the host (real sshd on loopback; the host's /proc is this machine's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.catalog.store import Catalog
from agent.runs.results import Outcome
from tests.test_executor import Agent
from tests.waiting import eventually

pytestmark = pytest.mark.external_service

ROOT = Path(__file__).resolve().parent.parent


def live_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process that is not a zombie and whose command line names ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if marker in cmdline and state not in ("Z", "X"):
            found.append((int(entry.name), cmdline.strip()))
    return found


def ps_lines(marker: str) -> list[str]:
    """The same question asked of ``ps`` (what an operator on the host would look at)."""
    out = subprocess.run(
        ["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True, encoding="utf-8"
    ).stdout
    return [line for line in out.splitlines() if marker in line and not line.lstrip().startswith("Z")]


def kill_all(marker: str) -> None:
    for pid, _ in live_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def agent(agent_home: Path) -> AsyncIterator[Agent]:
    built = Agent(agent_home)
    yield built
    await built.executor.close()


@pytest.fixture
def marker() -> Iterator[str]:
    name = f"guardia-{uuid.uuid4().hex[:12]}"
    yield name
    kill_all(name)  # whatever a failing test left behind


@pytest.mark.parametrize("mode", ["setsid", "double_fork", "daemon", "nohup", "background", "forker"])
async def test_nothing_the_run_started_survives_a_normal_exit(agent: Agent, marker: str, mode: str) -> None:
    [host] = (await agent.run("spawner", ["h1"], mode=mode, marker=marker)).hosts
    assert host.status is Outcome.SUCCESS, host
    assert f"started {marker}-{mode}" in host.stdout
    assert live_processes(marker) == [] and ps_lines(marker) == []


async def test_nothing_survives_the_time_limit_even_outside_the_process_group(
    agent: Agent, marker: str
) -> None:
    [host] = (await agent.run("spawner", ["h1"], mode="timeout", marker=marker)).hosts
    assert host.status is Outcome.TIMEOUT, host
    assert host.message == "killed at the 3 s time limit"
    assert f"started {marker}-timeout" in host.stdout  # partial output kept
    assert live_processes(marker) == [] and ps_lines(marker) == []


async def test_the_host_sweeps_after_the_connection_dropped(agent: Agent, marker: str) -> None:
    run = asyncio.create_task(agent.run("spawner", ["h2"], mode="timeout", marker=marker))
    await eventually(lambda: len(live_processes(marker)) >= 2, 30, "the script and its setsid child running")
    agent.executor._pool["h2"].connection.abort()  # the agent loses the host mid-run
    [host] = (await run).hosts
    assert host.status is Outcome.ERROR, host
    # Nobody is connected any more: the host's own limit (3 s + 1 s grace) and sweep must clean up.
    await eventually(lambda: not live_processes(marker), 30, "the host's own limit and sweep ending the run")
    assert ps_lines(marker) == []


async def test_a_runbook_that_declares_a_daemon_keeps_it(agent: Agent, marker: str) -> None:
    [host] = (await agent.run("daemon", ["h3"], marker=marker)).hosts
    assert host.status is Outcome.SUCCESS, host
    assert [cmd for _, cmd in live_processes(marker)] == [f"{marker}-daemon 1000"]


def test_no_bundled_runbook_leaves_a_daemon(tmp_path: Path) -> None:
    catalog = Catalog(ROOT / "runbooks", ROOT / "runbooks.lock")
    report = catalog.verify()
    assert report.ok
    names = report.runnable
    assert names and not [n for n in names if catalog.load(n).manifest.leaves_daemon]
