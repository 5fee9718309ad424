"""The durable link: what committing results so they survive power loss costs, and how grouping pays it back.

Part 1, the outbox alone (no network): one task's writes as the service makes them today (begin, TASK_ACCEPTED,
TASK_FINISHED, two ACKs, each its own commit) against the same writes grouped (begin + TASK_ACCEPTED in one
:meth:`Outbox.batch`, TASK_FINISHED, the ACKs in one :meth:`Outbox.ack_many` without an fsync of its own), each with
``synchronous=FULL`` and ``NORMAL``, interleaved round by round; and 100 results in flight through
:class:`GroupCommit` (one commit for what arrives within one loop iteration).

Part 2, end to end: RUN_RUNBOOK of a trivial runbook on one warm sshd host through the reference relay, each agent in
its own process behind its own relay: FULL and NORMAL (the runtime groups every write made within one loop
iteration into one commit); round trips alternating between them; 100 in flight on each
(nothing lost or duplicated); bare asyncssh on the same host as the floor, and as the ceiling of the 100 in flight
(the same script 8 channels at a time, the agent's sessions per host: once as plain ``bash -s``, once with the agent's
host-side command line, which shows what the host itself can take); then relay restarts -> agent online again.
Targets (FULL): p50 <= 10 ms, p99 <= 30 ms, >= 200 tasks/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import websockets.asyncio.client
import websockets.asyncio.server

from agent.catalog.store import Catalog
from agent.reference.relay import Relay
from agent.runs.remote import new_run_id, remote_command
from agent.state.group_commit import GroupCommit
from agent.state.outbox import Outbox, Synchronous
from tests.sshd import SshFleet

ROUND_TRIPS = 200
IN_FLIGHT = 100
FLIGHT_ROUNDS = 3
OUTBOX_ROUNDS = 15
OUTBOX_TASKS = 40
RESTARTS = 3
#: Each connection stays up this long before the relay restarts (past the agent's backoff reset).
UPTIME = 5.5
SCRIPT = "#!/usr/bin/env bash\ntrue\n"
MANIFEST = 'description = "trivial"\ntargets = ["all"]\nrooms = ["ops"]\ntimeout = 10\n'
TOKEN = "bench-token-000000"
MODES: tuple[Synchronous, Synchronous] = ("FULL", "NORMAL")
#: End-to-end agents: durable (FULL) and process-crash-safe only (NORMAL); both group their writes per loop iteration.
VARIANTS = ("FULL", "NORMAL")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def spread(values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    return (
        f"median {statistics.median(values) * scale:.2f} {unit} "
        f"(p10 {percentile(values, 10) * scale:.2f}, p90 {percentile(values, 90) * scale:.2f})"
    )


# -- part 1: the outbox -----------------------------------------------------------------------------------------


def message(event: str, n: int) -> dict[str, Any]:
    return {"event": event, "msg_id": f"{event}-{n}", "task_id": f"t{n}", "room_id": "ops",
            "payload": {"status": "SUCCESS", "data": {"hosts": [{"host": "h1", "stdout": "x" * 200}]}}}  # fmt: skip


def task_today(box: Outbox, n: int) -> None:
    box.begin_task(f"t{n}", "ops")
    box.put(message("TASK_ACCEPTED", n))
    box.finish_task(f"t{n}", message("TASK_FINISHED", n))
    box.ack(f"TASK_ACCEPTED-{n}")
    box.ack(f"TASK_FINISHED-{n}")


def task_grouped(box: Outbox, n: int) -> None:
    with box.batch():
        box.begin_task(f"t{n}", "ops")
        box.put(message("TASK_ACCEPTED", n))
    box.finish_task(f"t{n}", message("TASK_FINISHED", n))
    box.ack_many([f"TASK_ACCEPTED-{n}", f"TASK_FINISHED-{n}"])


def outbox_part(folder: Path) -> None:
    patterns: dict[str, Callable[[Outbox, int], None]] = {"today": task_today, "grouped": task_grouped}
    boxes = {mode: Outbox(folder / f"{mode}.sqlite3", synchronous=mode) for mode in MODES}
    times: dict[tuple[str, Synchronous], list[float]] = {(p, m): [] for p in patterns for m in MODES}
    counter = 0
    for round_ in range(OUTBOX_ROUNDS):
        order = [(p, m) for p in patterns for m in MODES]
        for pattern, mode in order if round_ % 2 == 0 else reversed(order):
            started = time.perf_counter()
            for _ in range(OUTBOX_TASKS):
                counter += 1
                patterns[pattern](boxes[mode], counter)
            times[(pattern, mode)].append((time.perf_counter() - started) / OUTBOX_TASKS)
    print(f"   outbox writes of one task, {OUTBOX_ROUNDS} interleaved rounds of {OUTBOX_TASKS} tasks:")
    base = statistics.median(times[("today", "NORMAL")])
    for (pattern, mode), values in times.items():
        print(
            f"     {pattern:8} {mode:6} {spread(values)}  ({statistics.median(values) / base:.1f}x today/NORMAL)"
        )

    # 100 results arriving together: one commit each (today) against one GroupCommit flush.
    async def grouped(box: Outbox, base: int) -> float:
        group = GroupCommit(box)
        started = time.perf_counter()
        writes = (
            group.finish_task(f"g{base + i}", message("TASK_FINISHED", base + i)) for i in range(IN_FLIGHT)
        )
        await asyncio.gather(*writes)
        assert group.commits == 1
        return time.perf_counter() - started

    def separate(box: Outbox, base: int) -> float:
        started = time.perf_counter()
        for i in range(IN_FLIGHT):
            box.finish_task(f"g{base + i}", message("TASK_FINISHED", base + i))
        return time.perf_counter() - started

    flights: dict[tuple[str, Synchronous], list[float]] = {
        (w, m): [] for w in ("separate", "grouped") for m in MODES
    }
    for round_ in range(OUTBOX_ROUNDS):
        order = list(flights)
        for way, mode in order if round_ % 2 == 0 else reversed(order):
            base = 10**6 * (1 + len(flights[(way, mode)])) + (0 if way == "separate" else 10**5)
            box = boxes[mode]
            elapsed = asyncio.run(grouped(box, base)) if way == "grouped" else separate(box, base)
            flights[(way, mode)].append(IN_FLIGHT / elapsed)
    print(f"   {IN_FLIGHT} results at once, {OUTBOX_ROUNDS} interleaved rounds (results/s):")
    floor = statistics.median(flights[("separate", "FULL")])
    for (way, mode), rates in flights.items():
        print(f"     {way:8} {mode:6} median {statistics.median(rates):,.0f} (min {min(rates):,.0f}, "
              f"max {max(rates):,.0f})  ({statistics.median(rates) / floor:.1f}x separate/FULL)")  # fmt: skip
    for box in boxes.values():
        box.close()


# -- part 2: end to end, the agent in its own process ---------------------------------------------------------


def agent_process() -> None:
    """Entry point of the agent subprocess (``BENCH_AGENT_CONFIG``, ``BENCH_SYNC`` in the environment)."""
    from agent.config.schema import load_config
    from agent.shell.app import App, install_signal_handlers

    async def serve() -> None:
        config = load_config(os.environ["BENCH_AGENT_CONFIG"])
        app = App(config, environ=os.environ)
        install_signal_handlers(app.stopping)
        await app.run()

    asyncio.run(serve())


class Agent:
    """One agent process behind its own relay, and the operator's connection to that relay."""

    def __init__(self, fleet: SshFleet, home: Path, variant: str) -> None:
        self.variant = variant
        mode = variant.split("+")[0]
        self.home = home / variant.replace("+", "-")
        (self.home / "runbooks").mkdir(parents=True)
        (self.home / "runbooks" / "trivial.sh").write_text(SCRIPT, encoding="utf-8", newline="\n")
        (self.home / "runbooks" / "trivial.toml").write_text(MANIFEST, encoding="utf-8", newline="\n")
        Catalog(self.home / "runbooks", self.home / "runbooks.lock").relock()
        (self.home / "agent.toml").write_text(
            fleet.inventory_toml(["h1"]) + f'[relay]\nmax_backoff = 2.0\n[state]\nsynchronous = "{mode}"\n',
            encoding="utf-8",
            newline="\n",
        )
        self.relay = Relay(agent_token=TOKEN)
        self.events: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.counts: dict[str, int] = {}

    async def start(self) -> None:
        self.port = await self.relay.start("127.0.0.1", 0)
        env = {**os.environ, "EXTERNAL_WS_URL": f"ws://127.0.0.1:{self.port}/agent", "AGENT_RELAY_TOKEN": TOKEN,
               "BENCH_AGENT_CONFIG": str(self.home / "agent.toml")}  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import benchmarks.bench_link as b; b.agent_process()"],
            env=env, cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(self.relay.agent_connected.wait(), 30)
        self.ws = await websockets.asyncio.client.connect(f"ws://127.0.0.1:{self.port}/operator")
        self.reader = asyncio.create_task(self.read())

    async def stop(self) -> None:
        self.reader.cancel()
        await self.ws.close()
        self.process.terminate()
        await asyncio.to_thread(self.process.wait, 30)
        await self.relay.stop()

    async def read(self) -> None:
        async for frame in self.ws:
            event = json.loads(frame)
            if event.get("event") == "TASK_FINISHED":
                task_id = str(event["task_id"])
                self.counts[task_id] = self.counts.get(task_id, 0) + 1
                future = self.events.get(task_id)
                if future is not None and not future.done():
                    future.set_result(event)

    async def round_trip(self, task_id: str, action: str = "RUN_RUNBOOK") -> float:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.events[task_id] = future
        params = {"runbook": "trivial", "hosts": ["h1"]} if action == "RUN_RUNBOOK" else {}
        started = time.perf_counter()
        await self.ws.send(
            json.dumps({"action": action, "task_id": task_id, "room_id": "ops", "params": params})
        )
        event = await asyncio.wait_for(future, 30)
        elapsed = time.perf_counter() - started
        assert event["payload"]["status"] == "SUCCESS", event
        return elapsed

    async def flight(self, prefix: str) -> tuple[float, int, int]:
        ids = [f"{prefix}-{i}" for i in range(IN_FLIGHT)]
        started = time.perf_counter()
        await asyncio.gather(*(self.round_trip(task_id) for task_id in ids))
        elapsed = time.perf_counter() - started
        await self.round_trip(f"{prefix}-fence")  # anything duplicated would have arrived before this answer
        lost = sum(1 for t in ids if self.counts.get(t, 0) == 0)
        duplicated = sum(1 for t in ids if self.counts.get(t, 0) > 1)
        return IN_FLIGHT / elapsed, lost, duplicated


async def echo_round_trips(count: int) -> list[float]:
    """The floor of the plumbing: one websockets round trip to an echo server on loopback (the relay path is two
    such hops out and two back)."""

    async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
        async for frame in ws:
            await ws.send(frame)

    async with websockets.asyncio.server.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}") as ws:
            times = []
            for i in range(count + 10):
                started = time.perf_counter()
                await ws.send(json.dumps({"action": "LIST_RUNBOOKS", "task_id": f"e-{i}", "room_id": "ops"}))
                await ws.recv()
                times.append(time.perf_counter() - started)
    return times[10:]


async def command_round_trips(agent: Agent) -> None:
    """The v1 round trip without SSH: operator -> relay -> agent -> durable answer -> relay -> operator."""
    for i in range(10):
        await agent.round_trip(f"lw-{i}", "LIST_RUNBOOKS")
    values = [await agent.round_trip(f"l-{i}", "LIST_RUNBOOKS") for i in range(ROUND_TRIPS)]
    floor = await echo_round_trips(ROUND_TRIPS)
    echo = percentile(floor, 50)
    print(f"   LIST_RUNBOOKS round trip ({agent.variant}, answer fsynced before it is sent), {ROUND_TRIPS}:")
    print(f"     agent        p50 {percentile(values, 50) * 1000:5.1f} ms, p99 {percentile(values, 99) * 1000:5.1f} ms"
          f"  ({spread(values)}; {percentile(values, 50) / echo:.1f}x one echo)")  # fmt: skip
    print(
        f"     bare websockets echo, one hop: p50 {echo * 1000:.2f} ms, p99 {percentile(floor, 99) * 1000:.2f} ms"
    )
    print("     targets (issue 23): p50 <= 10 ms, p99 <= 30 ms")


async def bare(fleet: SshFleet) -> list[float]:
    e = fleet.endpoints[0]
    conn = await asyncssh.connect(
        e.address, e.port, username=fleet.user, client_keys=[str(fleet.client_key)],
        known_hosts=str(fleet.known_hosts), config=[], agent_path=None,
    )  # fmt: skip
    times = []
    for _ in range(ROUND_TRIPS // 2 + 10):
        started = time.perf_counter()
        await conn.run("bash -s --", input=SCRIPT, check=True)
        times.append(time.perf_counter() - started)
    conn.close()
    return times[10:]


async def bare_flight(fleet: SshFleet, command: Callable[[], str], sessions: int = 8) -> float:
    """Tasks/s of IN_FLIGHT runs of the script on one warm connection, ``sessions`` channels at a time."""
    e = fleet.endpoints[0]
    async with asyncssh.connect(
        e.address, e.port, username=fleet.user, client_keys=[str(fleet.client_key)],
        known_hosts=str(fleet.known_hosts), config=[], agent_path=None,
    ) as conn:  # fmt: skip
        slots = asyncio.Semaphore(sessions)

        async def one() -> None:
            async with slots:
                for _ in range(
                    100
                ):  # sshd frees a session a moment after its close: retry, as the agent does
                    try:
                        await conn.run(command(), input=SCRIPT, check=True)
                        return
                    except asyncssh.ChannelOpenError:
                        await asyncio.sleep(0.005)
                raise SystemExit("bare asyncssh: sshd kept refusing sessions")

        await asyncio.gather(*(one() for _ in range(sessions)))  # warm
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
        return IN_FLIGHT / (time.perf_counter() - started)


async def end_to_end(fleet: SshFleet, home: Path) -> None:
    agents = {variant: Agent(fleet, home, variant) for variant in VARIANTS}
    for agent in agents.values():
        await agent.start()
    try:
        for i in range(20):  # warm the SSH connections and every code path
            for agent in agents.values():
                await agent.round_trip(f"warm-{i}")
        latencies: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for i in range(ROUND_TRIPS):
            for variant in VARIANTS if i % 2 == 0 else reversed(VARIANTS):
                latencies[variant].append(await agents[variant].round_trip(f"rt-{i}"))
        await command_round_trips(agents["FULL"])
        floor = await bare(fleet)
        print(
            f"   RUN_RUNBOOK round trip, agent and relay in separate processes, {ROUND_TRIPS} each, alternating:"
        )
        normal = statistics.median(latencies["NORMAL"])
        for variant, values in latencies.items():
            print(f"     {variant:12} p50 {percentile(values, 50) * 1000:5.1f} ms, p99 {percentile(values, 99) * 1000:5.1f} ms"
                  f"  ({spread(values)}; {statistics.median(values) / normal:.2f}x NORMAL)")  # fmt: skip
        print("     targets (FULL): p50 <= 10 ms, p99 <= 30 ms")
        print(f"     bare asyncssh, same script, same warm host: p50 {percentile(floor, 50) * 1000:.1f} ms, "
              f"p99 {percentile(floor, 99) * 1000:.1f} ms")  # fmt: skip

        rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}

        def wrapped() -> str:  # each run its own marker, as the agent's: a sweep ends only its own run
            return remote_command("bash", [], 10, 5, new_run_id(os.urandom(16)))

        ceilings: dict[str, tuple[Callable[[], str], list[float]]] = {
            "bare asyncssh, plain `bash -s`": (lambda: "bash -s --", []),
            "bare asyncssh, the agent's command line": (wrapped, []),
        }
        lost = duplicated = 0
        for round_ in range(FLIGHT_ROUNDS):
            for variant in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):
                rate, missing, twice = await agents[variant].flight(f"fl{round_}")
                rates[variant].append(rate)
                lost, duplicated = lost + missing, duplicated + twice
            for command, values in ceilings.values():
                values.append(await bare_flight(fleet, command))
        for variant, values in rates.items():
            print(f"     {IN_FLIGHT} in flight, {variant:12}: median {statistics.median(values):.0f} tasks/s "
                  f"(min {min(values):.0f}, max {max(values):.0f}, {FLIGHT_ROUNDS} rounds; target >= 200)")  # fmt: skip
        full = statistics.median(rates["FULL"])
        for label, (_, values) in ceilings.items():
            print(f"       ceiling, {label}, 8 at a time: median {statistics.median(values):.0f} tasks/s "
                  f"(min {min(values):.0f}, max {max(values):.0f}); FULL is {full / statistics.median(values):.2f}x")  # fmt: skip
        print(
            f"     lost {lost}, duplicated {duplicated} over {FLIGHT_ROUNDS * IN_FLIGHT * len(VARIANTS)} tasks"
        )

        agent = agents["FULL"]
        recoveries = []
        for _ in range(RESTARTS):
            await asyncio.sleep(UPTIME)
            await agent.relay.stop()
            await asyncio.sleep(0.3)  # the relay is down for a moment, as in a restart
            await agent.relay.start("127.0.0.1", agent.port)
            restarted = time.perf_counter()
            await asyncio.wait_for(agent.relay.agent_connected.wait(), 10)
            recoveries.append(time.perf_counter() - restarted)
            await agent.ws.close()
            agent.reader.cancel()
            agent.ws = await websockets.asyncio.client.connect(f"ws://127.0.0.1:{agent.port}/operator")
            agent.reader = asyncio.create_task(agent.read())
        print(f"   relay restart -> agent online again: median {statistics.median(recoveries):.2f} s, "
              f"worst {max(recoveries):.2f} s over {RESTARTS} restarts (target < 2 s)")  # fmt: skip
    finally:
        for agent in agents.values():
            await agent.stop()


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-link-"))
    fleet = SshFleet(1).start()
    try:
        outbox_part(home)
        asyncio.run(end_to_end(fleet, home))
    finally:
        fleet.stop()
        shutil.rmtree(home, ignore_errors=True)
