"""RUN_RUNBOOK end to end through the reference relay, with durable delivery on, against bare asyncssh.

Operator → relay → agent (dispatch, lock re-hash, plan, audit, SQLite outbox) → sshd → agent → relay → operator,
for a trivial runbook on one warm SSH host, all on loopback (relay, operator and agent share one event loop).
Measured in the same run: bare asyncssh running the same script on the same warm host. Also: 100 tasks in flight
(none may be lost or duplicated), and how long the agent takes to be online again after the relay restarts.
Targets: p50 <= 10 ms, p99 <= 30 ms; relay restart -> online in under 2 s.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import asyncssh
import websockets.asyncio.client

from agent.app import App
from agent.catalog import Catalog
from agent.config import load_config
from agent.reference.relay import Relay
from tests.sshd import SshFleet

ROUND_TRIPS = 300
IN_FLIGHT = 100
RESTARTS = 3
#: Each connection stays up this long before the relay restarts (past the agent's backoff reset).
UPTIME = 5.5
SCRIPT = "#!/usr/bin/env bash\ntrue\n"
MANIFEST = 'description = "trivial"\ntargets = ["all"]\nrooms = ["ops"]\ntimeout = 10\n'


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, fleet: SshFleet, home: Path) -> None:
        (home / "runbooks").mkdir()
        (home / "runbooks" / "trivial.sh").write_text(SCRIPT)
        (home / "runbooks" / "trivial.toml").write_text(MANIFEST)
        catalog = Catalog(home / "runbooks", home / "runbooks.lock")
        catalog.relock()
        (home / "agent.toml").write_text(fleet.inventory_toml(["h1"]) + "[relay]\nmax_backoff = 2.0\n")
        self.home = home
        self.fleet = fleet
        self.events: dict[str, asyncio.Future[dict[str, object]]] = {}
        self.counts: dict[str, int] = {}

    async def run(self) -> None:
        relay = Relay(agent_token="bench-token-000000")
        port = await relay.start("127.0.0.1", 0)
        env = {"EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent", "AGENT_RELAY_TOKEN": "bench-token-000000"}
        app = App(load_config(self.home / "agent.toml"), environ=env)
        agent_task = asyncio.create_task(app.run())
        await asyncio.wait_for(relay.agent_connected.wait(), 10)
        ws = await websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/operator")
        reader = asyncio.create_task(self.read(ws))
        try:
            await self.measure(ws, relay, port, app)
        finally:
            reader.cancel()
            await ws.close()
            app.stopping.set()
            await agent_task
            await relay.stop()

    async def read(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        async for frame in ws:
            event = json.loads(frame)
            if event.get("event") == "TASK_FINISHED":
                task_id = str(event["task_id"])
                self.counts[task_id] = self.counts.get(task_id, 0) + 1
                future = self.events.get(task_id)
                if future is not None and not future.done():
                    future.set_result(event)

    async def round_trip(self, ws: websockets.asyncio.client.ClientConnection, task_id: str) -> float:
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.events[task_id] = future
        started = time.perf_counter()
        await ws.send(json.dumps({"action": "RUN_RUNBOOK", "task_id": task_id, "room_id": "ops",
                                  "params": {"runbook": "trivial", "hosts": ["h1"]}}))  # fmt: skip
        event = await asyncio.wait_for(future, 30)
        elapsed = time.perf_counter() - started
        assert event["payload"]["status"] == "SUCCESS", event  # type: ignore[index]
        return elapsed

    async def bare(self) -> list[float]:
        e = self.fleet.endpoints[0]
        conn = await asyncssh.connect(
            e.address, e.port, username=self.fleet.user, client_keys=[str(self.fleet.client_key)],
            known_hosts=str(self.fleet.known_hosts), config=[], agent_path=None,
        )  # fmt: skip
        times = []
        for _ in range(ROUND_TRIPS // 3 + 10):
            started = time.perf_counter()
            await conn.run("bash -s --", input=SCRIPT, check=True)
            times.append(time.perf_counter() - started)
        conn.close()
        return times[10:]

    async def measure(self, ws, relay: Relay, port: int, app: App) -> None:  # type: ignore[no-untyped-def]
        for i in range(20):  # warm the SSH connection and every code path
            await self.round_trip(ws, f"warm-{i}")
        latencies = [await self.round_trip(ws, f"rt-{i}") for i in range(ROUND_TRIPS)]
        bare = await self.bare()
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        b50, b99 = percentile(bare, 50) * 1000, percentile(bare, 99) * 1000
        print(
            f"   RUN_RUNBOOK round trip, {ROUND_TRIPS} sequential: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(targets 10 / 30 ms)"
        )
        print(
            f"   bare asyncssh, same script, same warm host:  p50 {b50:.1f} ms, p99 {b99:.1f} ms "
            f"-> the agent adds {p50 - b50:.1f} ms at p50"
        )

        started = time.perf_counter()
        ids = [f"fl-{i}" for i in range(IN_FLIGHT)]
        await asyncio.gather(*(self.round_trip(ws, task_id) for task_id in ids))
        elapsed = time.perf_counter() - started
        await self.round_trip(ws, "fl-fence")  # anything duplicated would have arrived before this answer
        lost = [t for t in ids if self.counts.get(t, 0) == 0]
        duplicated = [t for t in ids if self.counts.get(t, 0) > 1]
        print(
            f"   {IN_FLIGHT} tasks in flight: all answered in {elapsed:.2f} s ({IN_FLIGHT / elapsed:.0f} tasks/s); "
            f"lost {len(lost)}, duplicated {len(duplicated)}; outbox left {app.outbox.count()}"
        )

        recoveries = []
        for _ in range(RESTARTS):
            await asyncio.sleep(UPTIME)
            await relay.stop()
            await asyncio.sleep(0.3)  # the relay is down for a moment, as in a restart
            await relay.start("127.0.0.1", port)
            restarted = time.perf_counter()
            await asyncio.wait_for(relay.agent_connected.wait(), 10)
            recoveries.append(time.perf_counter() - restarted)
        print(
            f"   relay restart -> agent online again: median {statistics.median(recoveries):.2f} s, "
            f"worst {max(recoveries):.2f} s over {RESTARTS} restarts (target < 2 s)"
        )


def main() -> None:
    fleet = SshFleet(1).start()
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-link-"))
    try:
        asyncio.run(Bench(fleet, home).run())
    finally:
        fleet.stop()
        shutil.rmtree(home, ignore_errors=True)
