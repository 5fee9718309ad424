"""Protocol v0 against the ORIGINAL agent, in one run: the original (rebuilt from its design note,
:mod:`benchmarks.original_agent`) and the project's agent in ``[relay] protocol = "v0"`` mode, each its own process,
both dialling one v0 relay on loopback (``/original`` and ``/project``), reading the same PostgreSQL table
(tb_mes_wrk_prc_i in a throwaway database) and configured with the same WAS stub.

(a) Round trip of FETCH_MES_QC (``date`` 2026-09-18: ten rows), one command at a time, the two agents interleaved
    round by round (which one goes first alternates): p50 and p99 of each, and project/original.
(b) 100 FETCH_MES_QC sent at once (back to back, without waiting) to one agent, then to the other, a few rounds:
    the time from the first send to the first, the median and the last answer, and how many answers arrived out of
    send order (after an answer to a command sent later), each as the median over the rounds, and project/original.

Issue 25's goal: project <= 1.0x the original at p50 and p99, and its first answer of 100 no later than the
original's. Nothing here asserts a timing. The relay, WAS stub and process start-up below are also the harness of
tests/test_v0_side_by_side.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
ROUND_TRIPS = 200
WARM = 10
AT_ONCE = 100
AT_ONCE_ROUNDS = 9
DATE = "2026-09-18"
SIDES = ("original", "project")
#: Environment the agents must not inherit: a proxy would take their loopback traffic elsewhere; without a command
#: key and a relay token the v0 relay here needs neither signing nor a token.
DROPPED_ENV = ("AGENT_COMMAND_KEY", "AGENT_RELAY_TOKEN", "AGENT_CONFIG")
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- the harness: a v0 relay, a WAS stub, the two agents ---------------------------------------------------------


class Side:
    """One agent's connection to the relay, and every frame it sent (parsed, raw, arrival time)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ws: ServerConnection | None = None
        self.connections = 0
        self.frames: list[Any] = []
        self.raw: list[str] = []
        self.arrivals: list[float] = []
        #: task_id -> a future set to the perf_counter() at which its answer arrived.
        self.waiters: dict[Any, asyncio.Future[float]] = {}

    async def send(self, frame: str | bytes) -> None:
        if self.ws is None:
            raise ConnectionError(f"{self.name} is not connected")
        await self.ws.send(frame)

    def expect(self, task_id: Any) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[task_id] = future
        return future


class Relay:
    """A v0 relay on loopback: it sends commands and reads answers, never ACKs; ``/original`` and ``/project``."""

    def __init__(self) -> None:
        self.sides = {name: Side(name) for name in SIDES}
        self.server: Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await serve(self._handler, "127.0.0.1", 0, max_size=None)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def url(self, side: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{side}"

    async def _handler(self, ws: ServerConnection) -> None:
        side = self.sides[ws.request.path.strip("/") if ws.request else ""]
        side.ws = ws
        side.connections += 1
        try:
            async for frame in ws:
                arrived = time.perf_counter()
                text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                side.raw.append(text)
                side.frames.append(parsed)
                side.arrivals.append(arrived)
                if isinstance(parsed, dict):
                    task_id = parsed.get("task_id")
                    waiter = side.waiters.pop(task_id, None) if isinstance(task_id, str | int) else None
                    if waiter is not None and not waiter.done():
                        waiter.set_result(arrived)
        except ConnectionClosed:
            pass
        finally:
            if side.ws is ws:
                side.ws = None


class WasStub:
    """A WAS health endpoint on loopback, switchable: ``up`` (200, actuator JSON), ``503`` (503, actuator JSON),
    ``html`` (200, an HTML page), ``hang`` (accepts, never answers), ``down`` (nothing listens on the port)."""

    BODY: ClassVar[dict[str, Any]] = {"status": "UP", "components": {
        "db": {"status": "UP", "details": {"database": "PostgreSQL", "url": "jdbc:postgresql://10.1.2.3/mes"}},
        "diskSpace": {"status": "UP", "details": {"total": 100, "free": 60}}}}  # fmt: skip
    DOWN_BODY: ClassVar[dict[str, Any]] = {
        "status": "DOWN",
        "components": {"db": {"status": "DOWN", "details": {"error": "timeout"}}},
    }
    HTML = b"<!DOCTYPE html><html><head><title>Login</title></head><body><h1>Welcome</h1></body></html>"

    def __init__(self) -> None:
        self.mode = "up"
        self.server: asyncio.Server | None = None
        self.port = 0
        self.hung: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/actuator/health"

    async def set(self, mode: str) -> None:
        self.mode = mode
        if mode == "down":
            await self.stop()
        elif self.server is None:  # (again) on the same port: the agents were given its URL
            self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)
            self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self.hung:
            writer.close()
        self.hung.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if self.mode == "hang":
            self.hung.append(writer)
            return
        status, kind, body = {
            "up": (
                b"200 OK",
                b"application/vnd.spring-boot.actuator.v3+json",
                json.dumps(self.BODY).encode(),
            ),
            "503": (b"503 Service Unavailable", b"application/json", json.dumps(self.DOWN_BODY).encode()),
            "html": (b"200 OK", b"text/html; charset=utf-8", self.HTML),
        }[self.mode]
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def agent_environ(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without proxies, command key or relay token, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV and k.lower() not in PROXY_ENV}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return {**env, **extra}


def start_original(relay: Relay, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m benchmarks.original_agent`` dialling ``/original``; its print()s go to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.original_agent"], cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT,
            env={**env, "EXTERNAL_WS_URL": relay.url("original"), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def project_home(home: Path, was_url: str) -> Path:
    """An agent home for v0 (empty locked catalog, the WAS check, no schedule); returns its agent.toml."""
    from agent.catalog.store import Catalog

    (home / "runbooks").mkdir(parents=True, exist_ok=True)
    Catalog(home / "runbooks", home / "runbooks.lock").relock()
    config = home / "agent.toml"
    config.write_text(
        'agent_id = "v0-project"\n[relay]\nprotocol = "v0"\nmax_backoff = 1.0\n'
        f'\n[checks.was]\nkind = "http"\nurl = "{was_url}"\ntimeout = 3\n'
        '\n[actions]\nwas_status_check = "was"\n',
        encoding="utf-8",
        newline="\n",
    )
    return config


def start_project(relay: Relay, config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(config), "run"], cwd=config.parent,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
            env={**env, "EXTERNAL_WS_URL": relay.url("project")},
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def connected(relay: Relay, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(side.ws is None for side in relay.sides.values()):
        if time.monotonic() > deadline:
            raise SystemExit("an agent did not connect to the relay")
        await asyncio.sleep(0.05)  # a process starting: nothing to wait on


# -- the benchmark --------------------------------------------------------------------------------------------------


def fetch(task_id: str) -> str:
    return json.dumps(
        {"action": "FETCH_MES_QC", "params": {"date": DATE}, "task_id": task_id, "room_id": "ops"}
    )


async def round_trip(side: Side, task_id: str) -> float:
    answered = side.expect(task_id)
    started = time.perf_counter()
    await side.send(fetch(task_id))
    return await asyncio.wait_for(answered, 30) - started


async def at_once(side: Side, prefix: str) -> tuple[float, float, float, int]:
    """First, median and last answer (s after the first send) of AT_ONCE commands sent back to back, and how many
    answers arrived after an answer to a command sent later."""
    ids = [f"{prefix}-{i}" for i in range(AT_ONCE)]
    futures = [side.expect(task_id) for task_id in ids]
    started = time.perf_counter()
    for task_id in ids:
        await side.send(fetch(task_id))
    arrivals = await asyncio.wait_for(asyncio.gather(*futures), 120)
    times = sorted(t - started for t in arrivals)
    order = sorted(range(AT_ONCE), key=lambda i: arrivals[i])
    late, highest = 0, -1
    for index in order:
        if index < highest:
            late += 1
        highest = max(highest, index)
    return times[0], statistics.median(times), times[-1], late


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


async def measure(relay: Relay) -> None:
    sides = [relay.sides[name] for name in SIDES]
    for i in range(WARM):
        for side in sides:
            await round_trip(side, f"warm-{i}")
    trips: dict[str, list[float]] = {name: [] for name in SIDES}
    for i in range(ROUND_TRIPS):
        for side in sides if i % 2 == 0 else reversed(sides):
            trips[side.name].append(await round_trip(side, f"rt-{i}"))
    print(f"   FETCH_MES_QC round trip (10 rows), {ROUND_TRIPS} each, one at a time, interleaved:")
    for name in SIDES:
        values = trips[name]
        print(f"     {name:8} p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}, "
              f"mean {ms(statistics.mean(values))}")  # fmt: skip
    ratio = {p: percentile(trips["project"], p) / percentile(trips["original"], p) for p in (50, 99)}
    print(f"     project/original: p50 {ratio[50]:.2f}x, p99 {ratio[99]:.2f}x  (goal, issue 25: <= 1.0x)")

    flights: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in SIDES}
    for round_ in range(AT_ONCE_ROUNDS):
        for side in sides if round_ % 2 == 0 else reversed(sides):
            flights[side.name].append(await at_once(side, f"burst{round_}"))
    print(f"   {AT_ONCE} FETCH_MES_QC at once, time from the first send, median of {AT_ONCE_ROUNDS} rounds:")
    summary: dict[str, tuple[float, float, float, float]] = {}
    for name in SIDES:
        rounds = flights[name]
        first, median, last = (statistics.median(r[k] for r in rounds) for k in range(3))
        late = statistics.median(r[3] for r in rounds)
        summary[name] = (first, median, last, late)
        print(f"     {name:8} first {ms(first)}, median {ms(median)}, last {ms(last)}; "
              f"out of send order {late:.0f} of {AT_ONCE} (per round: {', '.join(str(r[3]) for r in rounds)})")  # fmt: skip
    o, p = summary["original"], summary["project"]
    print(f"     project/original: first {p[0] / o[0]:.2f}x, median {p[1] / o[1]:.2f}x, last {p[2] / o[2]:.2f}x"
          "  (goal, issue 25: first <= 1.0x)")  # fmt: skip


async def run(home: Path, db_env: dict[str, str]) -> None:
    relay, was = Relay(), WasStub()
    await relay.start()
    await was.set("up")
    env = agent_environ({**db_env, "ORIGINAL_WAS_URL": was.url})
    processes = [
        start_original(relay, env, home / "original.log"),
        start_project(relay, project_home(home / "project", was.url), env, home / "project.log"),
    ]
    try:
        await connected(relay)
        await measure(relay)
    finally:
        for process in processes:
            await asyncio.to_thread(stop, process)
        await relay.stop()
        await was.stop()


def main() -> None:
    # Imported by name: mypy, which checks benchmarks/, would otherwise check tests/services.py too (whose
    # psycopg2 ``type: ignore`` it finds unused).
    postgres_database = importlib.import_module("tests.services").postgres_database
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-v0-"))
    try:
        with postgres_database() as db_env:
            asyncio.run(run(home, db_env))
    finally:
        shutil.rmtree(home, ignore_errors=True)
