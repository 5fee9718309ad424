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
   and the ratio of the same runbook without containment (``leaves_daemon``). The agent uses the containment each
   host offers (here a PID namespace). As root, each sshd (16 hosts) runs in a PID namespace of its own with
   ``BENCH_IDLE`` idle processes, so a sweep reads one sshd's sessions, not the whole fleet's.
3. Memory per pooled connection: the process's RSS growth from opening the pool, divided by the hosts.
4. Cold (new connections) at N = 10: agent, bare asyncssh and the OpenSSH client.
5. Containment modes (agent/runs/remote.py) at N = 100 (``BENCH_MODE_N``), warm: the agent forced to each mode (PID
   namespace, subreaper, marker sweep, and none: a ``leaves_daemon`` runbook) against bare asyncssh in the same
   interleaved rounds: the ratio, and the extra wall time per host (paired difference / N). Then the survivors
   per mode: the escape list of tests/test_executor_survivors.py (``&``, nohup, setsid, double fork, a forking
   loop, an exec chain at the end, ``env -i … &``, a ``setsid -f`` daemon), each on 10 hosts at once, a few
   rounds, and the processes each left behind once its result was in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
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
from agent.runs.remote import PROBE, REMOTE_PATH, Containment, parse_probe, remote_command
from tests.sshd import SshFleet
from tests.test_executor_survivors import ESCAPER, ESCAPER_MANIFEST, ESCAPES, live_processes

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "10,50,200").split(",")]
ONE_HOST_ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
FANOUT_ROUNDS = 5
COLD_ROUNDS = 3
MODE_N = int(os.environ.get("BENCH_MODE_N", "100"))
IDLE = int(os.environ.get("BENCH_IDLE", "200"))
SURVIVOR_ROUNDS = int(os.environ.get("BENCH_SURVIVOR_ROUNDS", "3"))
#: The modes each compared at N = MODE_N (``none`` is the leaves_daemon runbook, whatever mode is forced).
MODES = [Containment.NAMESPACE, Containment.SUBREAPER, Containment.SWEEP]

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
        choices = "[" + ", ".join(f'"{e}"' for e in ESCAPES) + "]"
        (home / "runbooks" / "escaper.sh").write_text(ESCAPER, encoding="utf-8", newline="\n")
        (home / "runbooks" / "escaper.toml").write_text(
            ESCAPER_MANIFEST.format(extra="", choices=choices), encoding="utf-8", newline="\n"
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

    def plan(self, n: int, runbook: str = "bench", args: dict[str, str] | None = None) -> RunPlan:
        return plan_run(
            self.catalog.load(runbook),
            self.config.inventory,
            self.aliases[:n],
            args or {"mount": "/", "name": "sshd"},
            None,
        )

    def executor(self, containment: Containment | None = None) -> Executor:
        return Executor(self.config.inventory, self.config.executor, self.config.base_dir, {}, containment)

    async def agent_run(
        self, executor: Executor, n: int, runbook: str = "bench", mode: Containment | None = None
    ) -> None:
        result = await executor.run(self.plan(n, runbook), self.redactor)
        assert result.ok and all(h.stdout.endswith("== done\n") for h in result.hosts), result
        if mode is not None:
            assert {h.containment for h in result.hosts} == {mode.value}, result

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
        no_sweep = remote_command("bash", ["/", "sshd"], 30, 5, RUN_ID, Containment.NONE)
        full = remote_command("bash", ["/", "sshd"], 30, 5, RUN_ID, Containment.SWEEP)
        old = f"exec env -i PATH={quoted} LC_ALL=C.UTF-8 LANG=C.UTF-8 timeout -k 5 30 {PLAIN}"  # the command line before the survivor sweep (for comparison)
        support = parse_probe(str((await conn.run(PROBE)).stdout))
        namespace = remote_command("bash", ["/", "sshd"], 30, 5, RUN_ID, Containment.NAMESPACE)
        subreaper = remote_command("bash", ["/", "sshd"], 30, 5, RUN_ID, Containment.SUBREAPER, support.prctl)
        assert support.namespace and support.prctl is not None, f"the fleet's host offers less: {support}"
        lines = [PLAIN, env_only, no_sweep, full, old, namespace, subreaper]
        contenders: list[Callable[[], Awaitable[None]]] = [lambda: self.agent_run(executor, 1)]
        contenders += [lambda line=line: self.bare_run(conn, line) for line in lines]  # type: ignore[misc]
        try:
            res = await interleaved(ONE_HOST_ROUNDS, contenders)
        finally:
            conn.close()
            await executor.close()
        agent, plain, env_only_t, no_sweep_t, full_t, old_t, namespace_t, subreaper_t = (r[0] for r in res)
        med = statistics.median

        def diff(a: list[float], b: list[float]) -> str:
            deltas = [x - y for x, y in zip(a, b, strict=True)]  # same round: paired differences
            return f"{med(deltas) * 1000:+6.1f} ms (paired, IQR {_iqr(deltas) * 1000:.1f} ms)"

        print(f"   one warm host, {ONE_HOST_ROUNDS} interleaved rounds, wall per run: median [min–max]")
        print(f"     bare asyncssh, plain `bash -s`       {spread(plain)}")
        print(f"     agent (Executor.run, as chosen: namespace) {spread(agent)}")
        print(f"   agent over bare: {diff(agent, plain)}   (goal <= +3 ms)")
        print("   of which the host runs (bare asyncssh sending each command line, minus plain `bash -s`):")
        print(f"     exec env -i (clean environment)        {diff(env_only_t, plain)}")
        print(f"     + wrapper and watchdog sleep            {diff(no_sweep_t, env_only_t)}")
        print(f"     + survivor sweep (grep /proc/*/environ) {diff(full_t, no_sweep_t)}")
        print(f"     = the command line, sweep mode          {diff(full_t, plain)}")
        print(f"     = the command line, subreaper mode      {diff(subreaper_t, plain)}")
        print(f"     = the command line, namespace mode      {diff(namespace_t, plain)}")
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
                    f"            without containment (leaves_daemon): ratio "
                    f"{statistics.median(no_sweep_ratios):.2f}x [{min(no_sweep_ratios):.2f}–{max(no_sweep_ratios):.2f}]",
                    flush=True,
                )
        finally:
            for c in conns:
                c.close()
            await executor.close()

    async def modes(self, n: int) -> None:
        """Each containment mode at fan-out N, warm, against bare asyncssh in the same interleaved rounds."""
        n = min(n, len(self.fleet.endpoints))
        executors = {mode: self.executor(mode) for mode in MODES}
        conns = await asyncio.gather(*(self.bare_connect(i) for i in range(n)))
        try:
            for mode, executor in executors.items():  # connect, probe, and one run: the pools are warm
                await self.agent_run(executor, n, mode=mode)

            async def bare() -> None:
                await asyncio.gather(*(self.bare_run(c) for c in conns))

            contenders: list[Callable[[], Awaitable[None]]] = [bare]
            contenders += [
                lambda ex=ex, mode=mode: self.agent_run(ex, n, mode=mode)  # type: ignore[misc]
                for mode, ex in executors.items()
            ]
            sweep_executor = executors[Containment.SWEEP]
            contenders.append(lambda: self.agent_run(sweep_executor, n, "bench_nosweep", Containment.NONE))
            res = await interleaved(FANOUT_ROUNDS, contenders)
        finally:
            for c in conns:
                c.close()
            for executor in executors.values():
                await executor.close()
        bw = res[0][0]
        print(
            f"   containment modes, warm, N={n}, {FANOUT_ROUNDS} interleaved rounds: wall median [min–max]; ratio to "
            f"bare asyncssh; extra per host = paired (agent − bare) / N"
        )
        print(f"     bare asyncssh, plain `bash -s`   {spread(bw, 1, 's')}")
        for (mode, _), (aw, _) in zip([*executors.items(), (Containment.NONE, None)], res[1:], strict=True):
            ratios = [a / b for a, b in zip(aw, bw, strict=True)]
            extra = [(a - b) / n for a, b in zip(aw, bw, strict=True)]
            print(
                f"     agent, {mode.value:<9}  {spread(aw, 1, 's')}  ratio {statistics.median(ratios):.2f}x "
                f"[{min(ratios):.2f}–{max(ratios):.2f}]  extra per host {statistics.median(extra) * 1000:+.1f} ms",
                flush=True,
            )

    async def survivors(self, hosts: int = 10) -> None:
        """The escape list under each mode: processes left once each run's result is in."""
        hosts = min(hosts, len(self.fleet.endpoints))
        print(
            f"   survivors: the escape list ({len(ESCAPES)} ways) on {hosts} hosts at once, {SURVIVOR_ROUNDS} rounds "
            f"each ({len(ESCAPES) * hosts * SURVIVOR_ROUNDS} runs a mode); processes left when the result is in"
        )
        for mode in MODES:
            executor = self.executor(mode)
            left: dict[str, int] = {}
            try:
                for how in ESCAPES:
                    for _ in range(SURVIVOR_ROUNDS):
                        marker = f"guardia-bench-{os.urandom(6).hex()}"
                        plan = self.plan(hosts, "escaper", {"how": how, "marker": marker})
                        result = await executor.run(plan, self.redactor)
                        assert result.ok and {h.containment for h in result.hosts} == {mode.value}, result
                        found = live_processes(marker)
                        left[how] = left.get(how, 0) + len(found)
                        for pid, _ in found:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
            finally:
                await executor.close()
            total = sum(left.values())
            detail = ", ".join(f"{how} {count}" for how, count in left.items() if count) or "none by any way"
            print(f"     {mode.value:<9}: {total} left ({detail})", flush=True)

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
    await bench.modes(MODE_N)
    await bench.survivors()
    print(f"   load average at end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    # Each sshd (16 hosts) in a PID namespace of its own with IDLE idle processes, as root: a host's /proc then
    # holds its own sessions and idle processes, not the whole fleet's (every sweep read every host's before).
    fleet = SshFleet(max(SIZES), idle_processes=IDLE).start()
    print(
        f"   hosts: {max(SIZES)} sshd endpoints, 16 a process; "
        + (
            f"each sshd in its own PID namespace with {IDLE} idle processes"
            if fleet.namespaced
            else "all in this machine's PID namespace (not root)"
        )
    )
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-"))
    try:
        asyncio.run(measure(Bench(fleet, home)))
    finally:
        fleet.stop()
        shutil.rmtree(home, ignore_errors=True)
