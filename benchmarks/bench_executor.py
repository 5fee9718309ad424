"""The executor on real sshd hosts on loopback (distinct 127.0.x.y addresses), against bare asyncssh in the same run.

Every comparison is measured in interleaved rounds (agent, bare, agent, bare, … with the order flipped every round,
so load from the other users of the machine hits both alike); each line prints the median and the spread (min–max)
and every run's output is checked (exit 0 and the script's last line on every host).

1. Per-host cost on one warm connection: ``Executor.run`` against bare asyncssh running plain ``bash -s -- / sshd``
   (goal: <= +3 ms), and what the host itself pays for the agent's command line, exec by exec: ``env -i`` (the clean
   environment), the wrapper's watchdog (a ``sleep`` beside the script) and the survivor sweep (two ``grep`` scans
   of ``/proc/*/environ`` after it).
2. Fan-out, warm, at N = 10, 50, 200 hosts (``BENCH_SIZES``): wall time ratio to bare asyncssh (goal at 200:
   <= 1.25x) and the agent's CPU per host (goal: flat from 10 to 200), bare asyncssh's CPU per host beside it;
   and the ratio of the same runbook without the survivor sweep (``leaves_daemon``): the fleet's hosts share one
   kernel here, so each sweep reads the environment of every concurrent session's processes, which separate
   hosts would not.
3. Memory per pooled connection: the process's RSS growth from opening the pool, divided by the hosts.
4. Cold (new connections) at N = 10: agent, bare asyncssh and the OpenSSH client.
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

from agent.catalog.store import Catalog
from agent.config.environment import Environment
from agent.config.schema import load_config
from agent.runs.executor import Executor
from agent.runs.plan import RunPlan, plan_run
from agent.runs.remote import REMOTE_PATH, remote_command
from tests.sshd import SshFleet

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "10,50,200").split(",")]
ONE_HOST_ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
FANOUT_ROUNDS = 5
COLD_ROUNDS = 3

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
PLAIN = "bash -s -- / sshd"
RUN_ID = "0123456789abcdef0123456789abcdef"


def spread(values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    """``median [min–max] unit`` of ``values`` (seconds, shown in ``unit``)."""
    return f"{statistics.median(values) * scale:7.1f} [{min(values) * scale:.1f}–{max(values) * scale:.1f}] {unit}"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # pragma: no cover - Linux only


async def interleaved(
    rounds: int, contenders: list[Callable[[], Awaitable[None]]]
) -> list[tuple[list[float], list[float]]]:
    """Run each contender once per round, order rotated every round; (wall times, CPU times) per contender."""
    results: list[tuple[list[float], list[float]]] = [([], []) for _ in contenders]
    for r in range(rounds):
        order = list(range(len(contenders)))
        order = order[r % len(order) :] + order[: r % len(order)]
        if r % 2:
            order.reverse()
        for i in order:
            cpu, wall = time.process_time(), time.perf_counter()
            await contenders[i]()
            results[i][0].append(time.perf_counter() - wall)
            results[i][1].append(time.process_time() - cpu)
    return results


class Bench:
    def __init__(self, fleet: SshFleet, home: Path) -> None:
        self.fleet = fleet
        (home / "runbooks").mkdir()
        (home / "runbooks" / "bench.sh").write_text(SCRIPT, encoding="utf-8", newline="\n")
        (home / "runbooks" / "bench.toml").write_text(MANIFEST, encoding="utf-8", newline="\n")
        # The same runbook without the survivor sweep (a leaves_daemon runbook): what the sweep costs at fan-out.
        (home / "runbooks" / "bench_nosweep.sh").write_text(SCRIPT, encoding="utf-8", newline="\n")
        (home / "runbooks" / "bench_nosweep.toml").write_text(
            "leaves_daemon = true\n" + MANIFEST, encoding="utf-8", newline="\n"
        )
        catalog = Catalog(home / "runbooks", home / "runbooks.lock")
        catalog.relock()
        aliases = [f"h{i:03d}" for i in range(len(fleet.endpoints))]
        (home / "agent.toml").write_text(
            fleet.inventory_toml(aliases) + "[executor]\nmax_concurrency = 256\n",
            encoding="utf-8",
            newline="\n",
        )
        self.config = load_config(home / "agent.toml")
        self.catalog = catalog
        self.aliases = aliases
        self.redactor = Environment(self.config, {}).redactor()

    def plan(self, n: int, runbook: str = "bench") -> RunPlan:
        return plan_run(
            self.catalog.load(runbook),
            self.config.inventory,
            self.aliases[:n],
            {"mount": "/", "name": "sshd"},
            None,
        )

    def executor(self) -> Executor:
        return Executor(self.config.inventory, self.config.executor, self.config.base_dir, {})

    async def agent_run(self, executor: Executor, n: int, runbook: str = "bench") -> None:
        result = await executor.run(self.plan(n, runbook), self.redactor)
        assert result.ok and all(h.stdout.endswith("== done\n") for h in result.hosts), result

    async def bare_connect(self, i: int) -> asyncssh.SSHClientConnection:
        e = self.fleet.endpoints[i]
        return await asyncssh.connect(
            e.address, e.port, username=self.fleet.user, client_keys=[str(self.fleet.client_key)],
            known_hosts=str(self.fleet.known_hosts), config=None, agent_path=None,
        )  # fmt: skip

    @staticmethod
    async def bare_run(conn: asyncssh.SSHClientConnection, command: str = PLAIN) -> None:
        result = await conn.run(command, input=SCRIPT, check=True)
        assert str(result.stdout).endswith("== done\n"), result

    async def one_host(self) -> None:
        """Per-host cost on a warm connection, and the host's share of it exec by exec."""
        executor = self.executor()
        conn = await self.bare_connect(0)
        await self.agent_run(executor, 1)
        await self.bare_run(conn)
        quoted = "'" + REMOTE_PATH + "'"
        env_only = f"exec env -i PATH={quoted} LC_ALL=C.UTF-8 LANG=C.UTF-8 GUARDIA_RUN={RUN_ID} {PLAIN}"
        no_sweep = remote_command("bash", ["/", "sshd"], 30, 5, RUN_ID, sweep=False)
        full = remote_command("bash", ["/", "sshd"], 30, 5, RUN_ID, sweep=True)
        old = f"exec env -i PATH={quoted} LC_ALL=C.UTF-8 LANG=C.UTF-8 timeout -k 5 30 {PLAIN}"  # the command line before the survivor sweep (for comparison)
        lines = [PLAIN, env_only, no_sweep, full, old]
        contenders: list[Callable[[], Awaitable[None]]] = [lambda: self.agent_run(executor, 1)]
        contenders += [lambda line=line: self.bare_run(conn, line) for line in lines]  # type: ignore[misc]
        try:
            res = await interleaved(ONE_HOST_ROUNDS, contenders)
        finally:
            conn.close()
            await executor.close()
        agent, plain, env_only_t, no_sweep_t, full_t, old_t = (r[0] for r in res)
        med = statistics.median

        def diff(a: list[float], b: list[float]) -> str:
            deltas = [x - y for x, y in zip(a, b, strict=True)]  # same round: paired differences
            return f"{med(deltas) * 1000:+6.1f} ms (paired, IQR {_iqr(deltas) * 1000:.1f} ms)"

        print(f"   one warm host, {ONE_HOST_ROUNDS} interleaved rounds, wall per run: median [min–max]")
        print(f"     bare asyncssh, plain `bash -s`       {spread(plain)}")
        print(f"     agent (Executor.run, every guarantee) {spread(agent)}")
        print(f"   agent over bare: {diff(agent, plain)}   (goal <= +3 ms)")
        print("   of which the host runs (bare asyncssh sending each command line, minus plain `bash -s`):")
        print(f"     exec env -i (clean environment)        {diff(env_only_t, plain)}")
        print(f"     + wrapper and watchdog sleep            {diff(no_sweep_t, env_only_t)}")
        print(f"     + survivor sweep (grep /proc/*/environ) {diff(full_t, no_sweep_t)}")
        print(f"     = the agent's command line              {diff(full_t, plain)}")
        print(f"     (before: env -i + timeout -k, no sweep  {diff(old_t, plain)})")
        print(f"   client CPU per run: agent {spread(res[0][1])}, bare asyncssh {spread(res[1][1])}")

    async def fanout(self) -> None:
        executor = self.executor()
        conns: list[asyncssh.SSHClientConnection] = []
        print(
            f"   fan-out, warm, {FANOUT_ROUNDS} interleaved rounds: wall median [min–max]; client CPU per host (median)"
        )
        try:
            for n in SIZES:
                before, pooled_before = rss_kib(), len(executor._pool)
                await self.agent_run(executor, n)  # opens the pool for the hosts not in it yet
                pooled_kib = (rss_kib() - before) / max(1, len(executor._pool) - pooled_before)
                conns += await asyncio.gather(*(self.bare_connect(i) for i in range(len(conns), n)))

                async def bare(hosts: list[asyncssh.SSHClientConnection] = conns[:n]) -> None:
                    await asyncio.gather(*(self.bare_run(c) for c in hosts))

                async def agent(n: int = n) -> None:
                    await self.agent_run(executor, n)

                async def no_sweep(n: int = n) -> None:
                    await self.agent_run(executor, n, "bench_nosweep")

                (aw, ac), (bw, bc), (nw, _) = await interleaved(FANOUT_ROUNDS, [agent, bare, no_sweep])
                ratios = [a / b for a, b in zip(aw, bw, strict=True)]
                no_sweep_ratios = [a / b for a, b in zip(nw, bw, strict=True)]
                print(
                    f"     N={n:>3}: agent {spread(aw, 1, 's')}  bare {spread(bw, 1, 's')}  ratio "
                    f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}]  CPU/host agent "
                    f"{statistics.median(ac) / n * 1000:.2f} ms, bare {statistics.median(bc) / n * 1000:.2f} ms"
                    f"  (RSS +{pooled_kib:.0f} KiB per newly pooled host)\n"
                    f"            without the survivor sweep (leaves_daemon): ratio "
                    f"{statistics.median(no_sweep_ratios):.2f}x [{min(no_sweep_ratios):.2f}–{max(no_sweep_ratios):.2f}]"
                    f" (here the {n} hosts share one kernel: every sweep reads every session's /proc/PID/environ)",
                    flush=True,
                )
        finally:
            for c in conns:
                c.close()
            await executor.close()

    async def cold(self, n: int = 10) -> None:
        n = min(n, len(self.fleet.endpoints))
        ssh = shutil.which("ssh")

        async def agent() -> None:
            executor = self.executor()
            try:
                await self.agent_run(executor, n)
            finally:
                await executor.close()

        async def bare() -> None:
            async def one(i: int) -> None:
                conn = await self.bare_connect(i)
                try:
                    await self.bare_run(conn)
                finally:
                    conn.close()

            await asyncio.gather(*(one(i) for i in range(n)))

        async def openssh() -> None:
            assert ssh, "the OpenSSH client is needed for the baseline"

            async def one(i: int) -> None:
                e = self.fleet.endpoints[i]
                proc = await asyncio.create_subprocess_exec(
                    ssh, "-F", "/dev/null", "-i", str(self.fleet.client_key), "-p", str(e.port),
                    "-o", f"UserKnownHostsFile={self.fleet.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{self.fleet.user}@{e.address}", PLAIN,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, err = await proc.communicate(SCRIPT.encode())
                assert proc.returncode == 0 and out.endswith(b"== done\n"), err

            await asyncio.gather(*(one(i) for i in range(n)))

        (aw, _), (bw, _), (ow, _) = await interleaved(COLD_ROUNDS, [agent, bare, openssh])
        print(
            f"   cold N={n} ({COLD_ROUNDS} interleaved rounds): agent {spread(aw, 1, 's')}, bare asyncssh "
            f"{spread(bw, 1, 's')} ({statistics.median(aw) / statistics.median(bw):.2f}x), OpenSSH client "
            f"{spread(ow, 1, 's')} ({statistics.median(ow) / statistics.median(aw):.1f}x slower than the agent)"
        )


def _iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


async def measure(bench: Bench) -> None:
    print(
        f"   load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine: noisy)"
    )
    await bench.one_host()
    await bench.fanout()
    await bench.cold()
    print(f"   load average at end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    fleet = SshFleet(max(SIZES)).start()
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-"))
    try:
        asyncio.run(measure(Bench(fleet, home)))
    finally:
        fleet.stop()
        shutil.rmtree(home, ignore_errors=True)
