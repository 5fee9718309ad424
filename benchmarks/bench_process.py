"""Whole processes, as an operator sees them: start-up, one command's time, peak memory, the daemon's memory.

Every figure is a separate OS process timed from exec to exit (or read from /proc), interleaved with its baseline
measured in the same run, median and spread over the rounds:

* ``agent runbooks run`` on one host vs a bare asyncssh script doing the same (connect, ``bash -s`` the script,
  print). Goal: <= 1.3x.
* ``agent runbooks verify`` of 1,000 runbooks vs a bare ``python -c pass``. Goal: < 0.5 s.
* peak RSS of ``agent runbooks run`` at 100 hosts vs the bare asyncssh script at 100 hosts. Goal: <= 60 MiB.
* ``agent run`` (the daemon, connected to the reference relay): RSS idle, after one 100-host run and after ten.
  Goals: <= 60 MiB idle, <= 80 MiB after a 100-host run, flat after ten.

Environment: BENCH_HOSTS (100), BENCH_ROUNDS (7).
"""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets.asyncio.client

import agent
from agent.catalog.store import Catalog
from agent.reference.operator_client import OperatorClient
from benchmarks.bench_catalog import generate
from benchmarks.bench_executor import MANIFEST, SCRIPT
from tests.sshd import SshFleet, free_port

HOSTS = int(os.environ.get("BENCH_HOSTS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
BIN = Path(sys.executable).parent
AGENT = str(BIN / "agent")

BARE = """
import asyncio, sys
import asyncssh

async def one(host, port, user, key, known, script):
    async with asyncssh.connect(host, port, username=user, client_keys=[key], known_hosts=known, config=[],
                                agent_path=None) as conn:
        result = await conn.run("bash -s -- / sshd", input=script, check=False)
        return result.stdout

async def main():
    user, key, known, script_file, *endpoints = sys.argv[1:]
    script = open(script_file).read()
    outs = await asyncio.gather(*(one(e.split(":")[0], int(e.split(":")[1]), user, key, known, script)
                                  for e in endpoints))
    sys.stdout.write("".join(outs))

asyncio.run(main())
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall time (s) and ``ru_maxrss`` (KiB) of one process run to its end; fails loudly on a non-zero exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"benchmark command failed: {argv[:4]} … {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
        )
    return elapsed, usage.ru_maxrss


def peak_rss(argv: list[str]) -> int:
    """Peak RSS (KiB) of one process run to its end, read from its own /proc/PID/status (VmHWM) while it runs.

    Not the ``ru_maxrss`` of ``wait4``: the kernel carries a forked child's pre-exec peak into it, which is this
    benchmark process's own size (it reported 213.6 MiB for both the agent and bare asyncssh).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text(encoding="utf-8").splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):  # exiting between the poll and the read
            pass
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(
            f"benchmark command failed: {argv[:4]} … {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
        )
    return peak


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def setup(home: Path, fleet: SshFleet) -> list[str]:
    (home / "runbooks").mkdir()
    (home / "runbooks" / "bench.sh").write_text(SCRIPT, encoding="utf-8", newline="\n")
    (home / "runbooks" / "bench.toml").write_text(
        MANIFEST.replace("rooms = []", 'rooms = ["ops"]'), encoding="utf-8", newline="\n"
    )
    Catalog(home / "runbooks", home / "runbooks.lock").relock()
    aliases = [f"h{i:03d}" for i in range(len(fleet.endpoints))]
    (home / "agent.toml").write_text(
        'agent_id = "bench"\n' + fleet.inventory_toml(aliases) + "[executor]\nmax_concurrency = 128\n",
        encoding="utf-8",
        newline="\n",
    )
    (home / "bare.py").write_text(BARE, encoding="utf-8", newline="\n")
    (home / "script.sh").write_text(SCRIPT, encoding="utf-8", newline="\n")
    return aliases


def bare_argv(home: Path, fleet: SshFleet, n: int) -> list[str]:
    endpoints = [f"{e.address}:{e.port}" for e in fleet.endpoints[:n]]
    return [sys.executable, str(home / "bare.py"), fleet.user, str(fleet.client_key), str(fleet.known_hosts),
            str(home / "script.sh"), *endpoints]  # fmt: skip


def agent_run_argv(home: Path, host: str) -> list[str]:
    return [AGENT, "-c", str(home / "agent.toml"), "runbooks", "run", "bench", "--host", host,
            "--arg", "mount=/", "--arg", "name=sshd"]  # fmt: skip


async def daemon_memory(home: Path, runs: int) -> tuple[int, int, int]:
    """RSS (KiB) of `agent run`: idle, after one HOSTS-host run, after `runs` of them."""
    port = free_port()
    env = {
        **os.environ,
        "EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent",
        "AGENT_RELAY_TOKEN": "bench-token-0123",
    }
    env.pop("AGENT_OPERATOR_TOKEN", None)
    relay = subprocess.Popen([AGENT, "relay", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    assert relay.stdout is not None
    relay.stdout.readline()  # "relay on ws://…": listening
    daemon = subprocess.Popen([AGENT, "-c", str(home / "agent.toml"), "run", "--log-level", "WARNING"], env=env,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        ws = await websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/operator", max_size=None)
        operator = OperatorClient(ws)
        await operator.send({"action": "LIST_RUNBOOKS", "task_id": "warm", "room_id": "ops", "params": {}})
        await operator.finished("warm", timeout=60)
        await asyncio.sleep(2)
        idle = rss_kib(daemon.pid)
        after: list[int] = []
        for i in range(runs):
            task = f"run-{i}"
            await operator.send({"action": "RUN_RUNBOOK", "task_id": task, "room_id": "ops",
                                 "params": {"runbook": "bench", "hosts": ["all"],
                                            "args": {"mount": "/", "name": "sshd"}}})  # fmt: skip
            answer = await operator.finished(task, timeout=300)
            ok = sum(h["status"] == "SUCCESS" for h in answer["payload"]["data"]["hosts"])
            if ok != HOSTS:
                raise SystemExit(
                    f"daemon run {i}: {ok} of {HOSTS} hosts succeeded: {json.dumps(answer)[:300]}"
                )
            after.append(rss_kib(daemon.pid))
        await operator.close()
        return idle, after[0], after[-1]
    finally:
        for proc in (daemon, relay):
            proc.terminate()
            proc.wait(30)


def main() -> None:
    fleet = SshFleet(HOSTS).start()
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-process-"))
    try:
        aliases = setup(home, fleet)
        # As installed: pip compiles a wheel's modules as it installs it, so the agent's bytecode exists. A shell
        # with PYTHONDONTWRITEBYTECODE=1 (this sandbox's) never writes it for a source checkout, and every
        # agent process compiled its own modules: ~55 ms of CPU a command that no installed agent pays. (The
        # libraries, the baseline's among them, were compiled by pip.)
        compileall.compile_dir(Path(agent.__file__).parent, quiet=1)
        timed(agent_run_argv(home, aliases[0]))  # warm the page cache
        timed(bare_argv(home, fleet, 1))
        agent_t, bare_t = [], []
        for _ in range(ROUNDS):
            agent_t.append(timed(agent_run_argv(home, aliases[0]))[0])
            bare_t.append(timed(bare_argv(home, fleet, 1))[0])
        ratio = statistics.median(agent_t) / statistics.median(bare_t)
        print(f"   runbooks run, 1 host (process): agent {summary(agent_t)} s; bare asyncssh {summary(bare_t)} s;"
              f" ratio {ratio:.2f}x (goal <= 1.3x)")  # fmt: skip

        catalog_home = home / "catalog"
        catalog_home.mkdir()
        generate(catalog_home)
        (catalog_home / "agent.toml").write_text("", encoding="utf-8", newline="\n")
        verify = [AGENT, "-c", str(catalog_home / "agent.toml"), "runbooks", "verify"]
        python = [sys.executable, "-c", "pass"]
        verify_t, python_t = [], []
        for _ in range(ROUNDS):
            verify_t.append(timed(verify)[0])
            python_t.append(timed(python)[0])
        print(f"   runbooks verify, 1,000 runbooks (process): {summary(verify_t)} s (goal < 0.5 s); "
              f"bare python start-up {summary(python_t)} s")  # fmt: skip

        peak_agent = [peak_rss(agent_run_argv(home, "all")) for _ in range(3)]
        peak_bare = [peak_rss(bare_argv(home, fleet, HOSTS)) for _ in range(3)]
        print(f"   peak RSS at {HOSTS} hosts: agent runbooks run {statistics.median(peak_agent) / 1024:.1f} MiB "
              f"(goal <= 60 MiB); bare asyncssh {statistics.median(peak_bare) / 1024:.1f} MiB; "
              f"ratio {statistics.median(peak_agent) / statistics.median(peak_bare):.2f}x")  # fmt: skip

        idle, first, tenth = asyncio.run(daemon_memory(home, 10))
        print(f"   agent run RSS: idle {idle / 1024:.1f} MiB (goal <= 60); after one {HOSTS}-host run "
              f"{first / 1024:.1f} MiB (goal <= 80); after ten {tenth / 1024:.1f} MiB "
              f"(growth {(tenth - first) / 1024:+.1f} MiB)")  # fmt: skip
    finally:
        fleet.stop()
        shutil.rmtree(home, ignore_errors=True)
