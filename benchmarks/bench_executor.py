"""The executor on N = 1, 10, 50, 100 real sshd hosts on loopback, against baselines measured in the same run.

Each run is the same ~40-line runbook with two arguments. Measured, median of several trials:

* agent warm: ``Executor.run`` on pooled connections;  agent cold: a new Executor (new connections) per run;
* bare asyncssh: ``conn.run("bash -s -- a b", input=script)`` over all hosts with asyncio.gather, warm and cold;
* the OpenSSH client: ``ssh … 'bash -s -- a b' < script``, one process per host, all in parallel (cold).

Goals: warm N=100 within 1.25x bare asyncssh; agent overhead on one warm host <= 3 ms over bare; cold N=100 within
1.2x bare asyncssh and >= 2x faster than the OpenSSH client.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

from agent.catalog import Catalog
from agent.config import load_config
from agent.executor import Executor
from agent.plan import plan_run, remote_command
from tests.sshd import SshFleet

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1,10,50,100").split(",")]
WARM_TRIALS = 7
COLD_TRIALS = 3

SCRIPT = """#!/usr/bin/env bash
# Benchmark runbook: a small health summary of one mount and one process name.
set -euo pipefail
mount="${1:?mount}"
name="${2:?name}"
case "$mount" in /*) ;; *) echo "mount must be absolute" >&2; exit 2 ;; esac
case "$name" in -*|*[!A-Za-z0-9._-]*) echo "bad name" >&2; exit 2 ;; esac
echo "== host"
echo "kernel=$(uname -r)"
read -r load1 load5 load15 _ < /proc/loadavg
echo "load=${load1} ${load5} ${load15}"
echo "== memory"
total=0
avail=0
while read -r key value _; do
  case "$key" in
    MemTotal:) total=$value ;;
    MemAvailable:) avail=$value ;;
  esac
done < /proc/meminfo
echo "mem_total_kb=${total} mem_available_kb=${avail}"
if [ "$total" -gt 0 ]; then
  echo "mem_used_pct=$(( (total - avail) * 100 / total ))"
fi
echo "== disk ${mount}"
df -P -- "$mount" | while read -r fs blocks used avail pct mnt; do
  [ "$fs" = Filesystem ] && continue
  echo "fs=${fs} used_pct=${pct} mounted_on=${mnt}"
done
echo "== process ${name}"
count=0
for comm in /proc/[0-9]*/comm; do
  if read -r pname < "$comm" 2>/dev/null && [ "$pname" = "$name" ]; then
    count=$((count + 1))
  fi
done
echo "process=${name} count=${count}"
echo "== done"
"""
MANIFEST = """description = "benchmark"
targets = ["all"]
rooms = []
timeout = 30
[[params]]
name = "mount"
type = "string"
[[params]]
name = "name"
type = "identifier"
"""


async def median(trials: int, once: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await once() for _ in range(trials)])


class Bench:
    def __init__(self, fleet: SshFleet, home: Path) -> None:
        self.fleet = fleet
        (home / "runbooks").mkdir()
        (home / "runbooks" / "bench.sh").write_text(SCRIPT)
        (home / "runbooks" / "bench.toml").write_text(MANIFEST)
        catalog = Catalog(home / "runbooks", home / "runbooks.lock")
        catalog.relock()
        aliases = [f"h{i:03d}" for i in range(len(fleet.endpoints))]
        (home / "agent.toml").write_text(
            fleet.inventory_toml(aliases) + "[executor]\nmax_concurrency = 128\n"
        )
        self.config = load_config(home / "agent.toml")
        self.catalog = catalog
        self.aliases = aliases
        self.redactor = self.config.redactor(environ={})

    def plan(self, n: int):  # type: ignore[no-untyped-def]
        return plan_run(
            self.catalog.load("bench"),
            self.config.inventory,
            self.aliases[:n],
            {"mount": "/", "name": "sshd"},
            None,
        )

    def executor(self) -> Executor:
        return Executor(self.config.inventory, self.config.executor, self.config.base_dir)

    async def agent_warm(self, n: int) -> float:
        executor = self.executor()
        plan = self.plan(n)
        assert (await executor.run(plan, self.redactor)).ok

        async def once() -> float:
            started = time.perf_counter()
            result = await executor.run(self.plan(n), self.redactor)
            elapsed = time.perf_counter() - started
            assert result.ok, result
            return elapsed

        try:
            return await median(WARM_TRIALS, once)
        finally:
            await executor.close()

    async def agent_cold(self, n: int) -> float:
        async def once() -> float:
            executor = self.executor()
            started = time.perf_counter()
            result = await executor.run(self.plan(n), self.redactor)
            elapsed = time.perf_counter() - started
            await executor.close()
            assert result.ok, result
            return elapsed

        return await median(COLD_TRIALS, once)

    async def bare_connect(self, i: int) -> asyncssh.SSHClientConnection:
        e = self.fleet.endpoints[i]
        return await asyncssh.connect(
            e.address, e.port, username=self.fleet.user, client_keys=[str(self.fleet.client_key)],
            known_hosts=str(self.fleet.known_hosts), config=[], agent_path=None,
        )  # fmt: skip

    async def bare_run(self, conn: asyncssh.SSHClientConnection) -> None:
        result = await conn.run("bash -s -- / sshd", input=SCRIPT, check=True)
        assert "== done" in str(result.stdout)

    async def bare_warm(self, n: int) -> float:
        conns = await asyncio.gather(*(self.bare_connect(i) for i in range(n)))
        await asyncio.gather(*(self.bare_run(c) for c in conns))

        async def once() -> float:
            started = time.perf_counter()
            await asyncio.gather(*(self.bare_run(c) for c in conns))
            return time.perf_counter() - started

        try:
            return await median(WARM_TRIALS, once)
        finally:
            for c in conns:
                c.close()

    async def bare_cold(self, n: int) -> float:
        async def one(i: int) -> asyncssh.SSHClientConnection:
            conn = await self.bare_connect(i)
            await self.bare_run(conn)
            return conn

        async def once() -> float:
            started = time.perf_counter()
            conns = await asyncio.gather(*(one(i) for i in range(n)))
            elapsed = time.perf_counter() - started
            for c in conns:
                c.close()
            return elapsed

        return await median(COLD_TRIALS, once)

    async def openssh(self, n: int) -> float:
        ssh = shutil.which("ssh")
        assert ssh, "the OpenSSH client is needed for the baseline"

        async def one(i: int) -> None:
            e = self.fleet.endpoints[i]
            proc = await asyncio.create_subprocess_exec(
                ssh, "-F", "/dev/null", "-i", str(self.fleet.client_key), "-p", str(e.port),
                "-o", f"UserKnownHostsFile={self.fleet.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{self.fleet.user}@{e.address}",
                "bash -s -- / sshd",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate(SCRIPT.encode())
            assert proc.returncode == 0 and b"== done" in out, err

        async def once() -> float:
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - started

        return await median(COLD_TRIALS, once)

    async def hardened_command_cost(self) -> float:
        """Bare asyncssh running the agent's exact command line, minus plain ``bash -s``, on a warm host, in ms."""
        conn = await self.bare_connect(0)
        command = remote_command("bash", ["/", "sshd"], 30, 5)
        medians = []
        for line in ("bash -s -- / sshd", command):
            times = []
            for _ in range(40):
                started = time.perf_counter()
                await conn.run(line, input=SCRIPT, check=True)
                times.append(time.perf_counter() - started)
            medians.append(statistics.median(times[5:]))
        conn.close()
        return (medians[1] - medians[0]) * 1000

    async def first_run_on_new_connection(self) -> tuple[float, float]:
        """Bare asyncssh and the agent: the first run on a fresh connection minus a warm run, in ms."""
        bare = []
        for _ in range(3):
            conn = await self.bare_connect(0)
            started = time.perf_counter()
            await self.bare_run(conn)
            first = time.perf_counter() - started
            started = time.perf_counter()
            await self.bare_run(conn)
            bare.append(first - (time.perf_counter() - started))
            conn.close()
        agent = []
        for _ in range(3):
            executor = self.executor()
            await executor._acquire(self.aliases[0])  # connect only
            started = time.perf_counter()
            await executor.run(self.plan(1), self.redactor)
            first = time.perf_counter() - started
            started = time.perf_counter()
            await executor.run(self.plan(1), self.redactor)
            agent.append(first - (time.perf_counter() - started))
            await executor.close()
        return statistics.median(bare) * 1000, statistics.median(agent) * 1000


async def measure(bench: Bench) -> None:
    print(
        f"   {'N':>4} | {'agent warm':>10} {'bare warm':>10} {'ratio':>6} | {'agent cold':>10} {'bare cold':>10}"
        f" {'ratio':>6} {'openssh':>8} {'speedup':>7}"
    )
    rows = {}
    for n in SIZES:
        aw, bw = await bench.agent_warm(n), await bench.bare_warm(n)
        ac, bc, os_ = await bench.agent_cold(n), await bench.bare_cold(n), await bench.openssh(n)
        rows[n] = (aw, bw, ac, bc, os_)
        print(
            f"   {n:>4} | {aw:>9.3f}s {bw:>9.3f}s {aw / bw:>5.2f}x | {ac:>9.3f}s {bc:>9.3f}s {ac / bc:>5.2f}x"
            f" {os_:>7.3f}s {os_ / ac:>6.1f}x",
            flush=True,
        )
    aw1, bw1 = rows[SIZES[0]][0], rows[SIZES[0]][1]
    aw, bw, ac, bc, os_ = rows[SIZES[-1]]
    bare_first, agent_first = await bench.first_run_on_new_connection()
    hardened = await bench.hardened_command_cost()
    print(
        f"   agent overhead on one warm host: {(aw1 - bw1) * 1000:+.1f} ms over bare asyncssh (goal <= 3 ms); of that,"
        f" the hardened command line (env -i, timeout) costs {hardened:+.1f} ms on the host itself"
    )
    n = SIZES[-1]
    print(f"   warm N={n}: {aw / bw:.2f}x bare asyncssh (goal <= 1.25x)")
    print(
        f"   cold N={n}: {ac / bc:.2f}x bare asyncssh (goal <= 1.2x), {os_ / ac:.1f}x faster than OpenSSH (goal >= 2x)"
    )
    print(
        f"   first run on a new connection, extra over a warm run: bare asyncssh {bare_first:.1f} ms, "
        f"agent {agent_first:.1f} ms"
    )


def main() -> None:
    fleet = SshFleet(max(SIZES)).start()
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-"))
    try:
        asyncio.run(measure(Bench(fleet, home)))
    finally:
        fleet.stop()
        shutil.rmtree(home, ignore_errors=True)
