"""The reference relay under load: 100 agents and 100 rooms on loopback, beside a bare websockets echo relay.

``agent relay`` runs as its own process (``python -m agent relay --config FILE --port 0``), so its CPU and
memory are its own: VmRSS and VmHWM from /proc/PID/status, user + system time from /proc/PID/stat. Room
``room-i`` is routed to ``agent-i`` (``[agents.agent-i] rooms = ["room-i"]``). The load is the same for both
servers:

* 100 simulated agents, all in one process of their own: each dials ``/agent`` with the agent token, sends an
  AGENT_HELLO naming its ``agent_id`` (docs/protocol.md), answers every command with one TASK_FINISHED
  carrying a new ``msg_id`` (a one-host RUN_RUNBOOK result with its Korean ``payload.text``, ~0.7 KB, compact
  JSON as the agent writes it) and ignores the ACKs;
* operator connections in this process speak in the rooms (who speaks in which room with which token:
  :func:`layouts`): one connection for all 100 rooms; one per room with the relay's one operator token (which
  sees every room, so a relay that forwards every agent frame to every such operator sends each answer 100
  times); and, when the relay's config has operator credentials (``[operators.NAME] token_env, rooms``), one
  per room with a credential for its room only;
* phases: one command per room until every room has answered once (warm-up), then ``ROUND_TRIPS`` commands one
  at a time across the rooms (the round trip without queueing), then ``IN_FLIGHT`` commands in flight per room
  for ``WARMUP`` + ``MEASURE`` seconds (throughput and round trip under load, counted over the last
  ``MEASURE`` seconds).

The baseline is a bare websockets "echo relay" (:func:`bare_relay_process`) in its own process, under the same
load in the same run: it reads each frame's ``room_id``, forwards an operator's frame to the agent of that
room and an agent's frame to the operators that spoke in that room, and does nothing else (no ACK, no dedupe,
no queue, no token check). Both servers and all clients keep the websockets defaults otherwise
(permessage-deflate negotiated, as between the real agent and the relay). Figures are printed as relay/bare
ratios; nothing about timing is asserted.

Frames: a command is two frames through the relay (the command in from the operator and out to the agent; the
answer in from the agent and out to the operator); "frames relayed/s" counts command and answer once each,
"frames at the server per command" counts every frame the server read or wrote (ACKs and the copies of an
answer sent to operators of other rooms included).

Environment: BENCH_ROOMS (100: rooms and agents), BENCH_ROUNDS (2, alternating the order), BENCH_MEASURE
(5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import websockets.asyncio.client
import websockets.asyncio.server
from websockets.exceptions import ConnectionClosed
from websockets.version import version as websockets_version

ROOMS = int(os.environ.get("BENCH_ROOMS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
#: Commands each room keeps in flight in the throughput phase.
IN_FLIGHT = 2
WARMUP = 1.0
MEASURE = float(os.environ.get("BENCH_MEASURE", "5"))
#: Commands sent one at a time (rotating over the rooms) for the round trip without queueing.
ROUND_TRIPS = 300
#: A command not answered within this long is counted lost (and the run goes on).
COMMAND_TIMEOUT = 10.0
AGENT_TOKEN = "bench-agent-token-0000000000"
OPERATOR_TOKEN = "bench-operator-token-00000000"
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("relay", "bare")

ROOM_NAMES = tuple(f"room-{i}" for i in range(ROOMS))
AGENT_OF = {room: f"agent-{i}" for i, room in enumerate(ROOM_NAMES)}

# What the operators send and the agents answer: a one-host RUN_RUNBOOK and its result, as the agent writes
# it.
COMMAND = (
    '{{"action":"RUN_RUNBOOK","task_id":"{task}","room_id":"{room}","user_id":"kim",'
    '"params":{{"runbook":"disk_usage","hosts":["was01"],"args":{{"mount":"/app"}}}}}}'
)
_STDOUT = "Filesystem      Size  Used Avail Use% Mounted on\n/dev/sda1        50G   21G   27G  44% /app\n"
PAYLOAD = json.dumps(
    {"status": "SUCCESS",
     "data": {"runbook": "disk_usage", "script_sha256": "5" * 64, "status": "SUCCESS", "output_ref": "t",
              "hosts": [{"host": "was01", "status": "SUCCESS", "exit_code": 0, "duration": 0.12,
                         "stdout": _STDOUT, "stderr": "", "truncated": False, "stdout_cut": 0,
                         "stderr_cut": 0, "output_sha256": "a" * 64}]},
     "text": f"✅ disk_usage 성공 (was01, 종료 코드 0, 0.1초)\n```\n{_STDOUT}```"},
    ensure_ascii=False, separators=(",", ":"),
)  # fmt: skip


# -- who the operators are -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorSpec:
    """One operator connection: the rooms it speaks in (and, on a relay with operator credentials, the only
    rooms it reads), the token it presents, and the environment variable the relay reads that token from
    (None: the relay's one ``$AGENT_OPERATOR_TOKEN``, every room)."""

    name: str
    rooms: tuple[str, ...]
    token: str = OPERATOR_TOKEN
    token_env: str | None = None


def relay_has_operator_credentials() -> bool:
    """Whether this checkout's relay takes ``[operators.NAME] token_env, rooms`` (issue 26): then a layout
    with one operator per room, each with a credential for its room only, is measured too."""
    from agent.reference.relay import RelaySettings

    return "operators" in RelaySettings.model_fields


def layouts(per_room_credentials: bool) -> dict[str, list[OperatorSpec]]:
    """The operator layouts measured. Change the tokens and rooms here (and :func:`relay_config` writes them).

    * one connection speaks in every room with the relay's one operator token (a messenger bridge);
    * one connection per room, all with that one token: a relay that sends every agent frame to every operator
      whose credential sees the room sends each answer to all of them (the bare relay only to the room's);
    * one connection per room, each with a credential for its room only, when the relay has such credentials.
    """
    chosen = {
        "one operator, all rooms, shared token": [OperatorSpec("all", ROOM_NAMES)],
        "one operator per room, shared token": [OperatorSpec(room, (room,)) for room in ROOM_NAMES],
    }
    if per_room_credentials:
        chosen["one operator per room, a credential per room"] = [
            OperatorSpec(room, (room,), f"bench-operator-{room}-token", f"BENCH_OPERATOR_TOKEN_{i}")
            for i, room in enumerate(ROOM_NAMES)
        ]
    return chosen


def relay_config(operators: list[OperatorSpec]) -> str:
    """The relay's TOML: room-i to agent-i; ``[operators.NAME]`` for each spec with a token_env."""
    lines = ["offline_wait = 300", ""]
    for room in ROOM_NAMES:
        lines += [f"[agents.{AGENT_OF[room]}]", f'rooms = ["{room}"]', ""]
    for spec in operators:
        if spec.token_env is not None:
            rooms = ", ".join(f'"{room}"' for room in spec.rooms)
            lines += [
                f'[operators."{spec.name}"]',
                f'token_env = "{spec.token_env}"',
                f"rooms = [{rooms}]",
                "",
            ]
    return "\n".join(lines)


def server_environ(operators: list[OperatorSpec]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "BENCH_OPERATOR_TOKEN_"))}
    env["AGENT_RELAY_TOKEN"] = AGENT_TOKEN
    for spec in operators:
        env[spec.token_env or "AGENT_OPERATOR_TOKEN"] = spec.token
    return env


# -- /proc ---------------------------------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the bare echo relay (its own process) -------------------------------------------------------------------


def bare_relay_process() -> None:
    """Entry point of the bare relay's process: routes by ``room_id`` as the config's ``[agents.ID]`` say."""
    config = tomllib.loads(Path(os.environ["BENCH_RELAY_CONFIG"]).read_text(encoding="utf-8"))
    agent_of = {room: agent for agent, route in config["agents"].items() for room in route["rooms"]}
    agents: dict[str, websockets.asyncio.server.ServerConnection] = {}
    listeners: dict[str, set[websockets.asyncio.server.ServerConnection]] = {}

    async def agent_side(ws: websockets.asyncio.server.ServerConnection) -> None:
        agent_id = json.loads(await ws.recv())["payload"]["agent_id"]
        agents[agent_id] = ws
        try:
            async for frame in ws:
                for operator in tuple(listeners.get(json.loads(frame).get("room_id"), ())):
                    with contextlib.suppress(ConnectionClosed):
                        await operator.send(frame)
        finally:
            if agents.get(agent_id) is ws:
                del agents[agent_id]

    async def operator_side(ws: websockets.asyncio.server.ServerConnection) -> None:
        try:
            async for frame in ws:
                room = json.loads(frame).get("room_id")
                listeners.setdefault(room, set()).add(ws)
                agent = agents.get(agent_of.get(room, ""))
                if agent is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await agent.send(frame)
        finally:
            for operators in listeners.values():
                operators.discard(ws)

    async def handle(ws: websockets.asyncio.server.ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request else ""
        with contextlib.suppress(ConnectionClosed):
            await (agent_side(ws) if path == "/agent" else operator_side(ws))

    async def serve() -> None:
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        async with websockets.asyncio.server.serve(
            handle, "127.0.0.1", 0, max_size=16 * 1024 * 1024, ping_interval=None
        ) as server:
            port = server.sockets[0].getsockname()[1]
            print(f"bare relay on ws://127.0.0.1:{port}/agent", flush=True)
            await stopping.wait()

    asyncio.run(serve())


# -- the simulated agents (their own process) ----------------------------------------------------------------


def agents_process() -> None:
    """Entry point of the agents' process: ``BENCH_AGENTS`` agents on ``BENCH_AGENT_URL`` until stdin closes;
    then prints what they received as one JSON line."""
    asyncio.run(_agents(os.environ["BENCH_AGENT_URL"], int(os.environ["BENCH_AGENTS"])))


def _answer(command: dict[str, Any]) -> str:
    ids = json.dumps(command.get("room_id"), ensure_ascii=False), json.dumps(command.get("task_id"))
    return (f'{{"event":"TASK_FINISHED","room_id":{ids[0]},"task_id":{ids[1]},'
            f'"msg_id":"{os.urandom(16).hex()}","payload":{PAYLOAD}}}')  # fmt: skip


async def _agent(ws: websockets.asyncio.client.ClientConnection, counts: Counter[str]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            text = frame if isinstance(frame, str) else frame.decode()
            message = json.loads(text)
            if message.get("event") == "ACK":
                counts["acks"] += 1
            elif "action" in message:
                counts["commands"] += 1
                counts["sent"] += 1
                await ws.send(_answer(message))
            else:
                counts["other"] += 1


async def _agents(url: str, count: int) -> None:
    counts: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    connections = []
    for i in range(count):
        ws = await websockets.asyncio.client.connect(
            url, additional_headers=headers, ping_interval=None, max_size=16 * 1024 * 1024
        )
        hello = {"event": "AGENT_HELLO", "msg_id": os.urandom(16).hex(),
                 "payload": {"agent_id": f"agent-{i}", "version": "bench", "protocol": 1,
                             "max_frame": 1024 * 1024, "catalog_sha256": None, "runbooks": ["disk_usage"],
                             "approver_keys": [], "actions": ["RUN_RUNBOOK"]}}  # fmt: skip
        await ws.send(json.dumps(hello))
        counts["sent"] += 1
        connections.append(ws)
    readers = [asyncio.create_task(_agent(ws, counts)) for ws in connections]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    for ws in connections:
        await ws.close()
    await asyncio.gather(*readers)
    print(json.dumps(counts), flush=True)


# -- the operators (this process) ----------------------------------------------------------------------------


class Operator:
    """One operator connection: sends commands in its rooms and matches their TASK_FINISHED by task_id."""

    def __init__(self, spec: OperatorSpec) -> None:
        self.spec = spec
        self.rooms = frozenset(spec.rooms)
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.counts: Counter[str] = Counter()
        #: Set once the connection is over (closed by us, or dropped by the server: counted).
        self.closed = False
        self._closing = False

    async def connect(self, port: int) -> None:
        self.ws = await websockets.asyncio.client.connect(
            f"ws://127.0.0.1:{port}/operator",
            additional_headers={"Authorization": f"Bearer {self.spec.token}"},
            ping_interval=None, max_size=None,
        )  # fmt: skip
        self.reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self._closing = True
        await self.ws.close()
        await self.reader

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                self.counts["received"] += 1
                message = json.loads(frame)
                if message.get("event") != "TASK_FINISHED":
                    self.counts["notices"] += 1
                elif message.get("room_id") not in self.rooms:
                    self.counts["other rooms"] += 1
                else:
                    future = self.waiting.pop(message.get("task_id"), None)
                    if future is None:
                        self.counts["stray"] += 1  # an answer to a warm-up command already sent again
                        continue
                    if message["payload"].get("status") != "SUCCESS":
                        self.counts["refused"] += 1
                    future.set_result(time.perf_counter())
        self.closed = True
        if not self._closing:
            self.counts["dropped by the server"] += 1

    async def command(self, room: str, task_id: str, timeout: float = COMMAND_TIMEOUT) -> float | None:
        """The round trip of one command (send -> its TASK_FINISHED read), or None when none came in time."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[task_id] = future
        started = time.perf_counter()
        try:
            await self.ws.send(COMMAND.format(task=task_id, room=room))
        except ConnectionClosed:
            self.waiting.pop(task_id, None)
            return None
        self.counts["sent"] += 1
        try:
            async with asyncio.timeout(timeout):
                return await future - started
        except TimeoutError:
            self.waiting.pop(task_id, None)
            self.counts["lost"] += 1
            return None


# -- one run: one server, one layout -------------------------------------------------------------------------


@dataclass
class Run:
    """What one run measured."""

    loaded: list[float] = field(default_factory=list)
    single: list[float] = field(default_factory=list)
    window: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # server, agents, operators: CPU s over the window
    rss: dict[str, int] = field(default_factory=dict)  # start, connected, peak, end (KiB)
    operators: Counter[str] = field(default_factory=Counter)
    agents: Counter[str] = field(default_factory=Counter)
    log_lines: list[str] = field(default_factory=list)


def _spawn(
    target: str, env: dict[str, str], stdout: int, stdin: int | None, stderr: IO[str] | int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", f"import benchmarks.bench_relay as b; b.{target}()"],
        env=env, cwd=ROOT, stdin=stdin, stdout=stdout, stderr=stderr, text=True, encoding="utf-8",
    )  # fmt: skip


async def _line(process: subprocess.Popen[str], what: str, log: Path) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
    if not line:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.exists() else ""
        raise SystemExit(f"{what} exited before it was ready (status {process.wait()}):\n{tail}")
    return line


class Servers:
    """Start and stop the server under test (``agent relay`` or the bare relay) and the agents' process."""

    def __init__(self, kind: str, home: Path, operators: list[OperatorSpec]) -> None:
        self.kind, self.home = kind, home
        self.config = home / f"{kind}.toml"
        self.config.write_text(relay_config(operators), encoding="utf-8")
        self.env = server_environ(operators)
        self.log = home / f"{kind}.log"
        self.agents_log = home / "agents.log"
        self.agents: subprocess.Popen[str] | None = None

    async def start(self) -> int:
        with self.log.open("w", encoding="utf-8") as log:
            if self.kind == "relay":
                argv = [sys.executable, "-m", "agent", "relay", "--port", "0", "--config", str(self.config)]
                self.server = subprocess.Popen(
                    argv,
                    env=self.env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    encoding="utf-8",
                )
            else:
                env = {**self.env, "BENCH_RELAY_CONFIG": str(self.config)}
                self.server = _spawn("bare_relay_process", env, subprocess.PIPE, None, log)
        found = re.search(r":(\d+)/agent", await _line(self.server, self.kind, self.log))
        if found is None:
            raise SystemExit(f"{self.kind}: no port in its first line")
        return int(found[1])

    async def start_agents(self, port: int) -> None:
        env = {**os.environ, "BENCH_AGENT_URL": f"ws://127.0.0.1:{port}/agent", "BENCH_AGENTS": str(ROOMS)}
        with self.agents_log.open("w", encoding="utf-8") as log:
            self.agents = _spawn("agents_process", env, subprocess.PIPE, subprocess.PIPE, log)
        await _line(self.agents, "the agents' process", self.agents_log)

    async def stop(self) -> tuple[Counter[str], list[str]]:
        """Stop both; what the agents received, and the server's log lines at WARNING and above."""
        counts: Counter[str] = Counter()
        if self.agents is not None and self.agents.stdin is not None:
            self.agents.stdin.close()
            counts.update(json.loads(await _line(self.agents, "the agents' process", self.agents_log)))
            await asyncio.to_thread(self.agents.wait, 30)
        self.server.terminate()
        await asyncio.to_thread(self.server.wait, 30)
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return counts, [line for line in lines if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]


async def warm(route: dict[str, Operator]) -> None:
    """One answered command per room (sent again until it is: an agent's HELLO may not be read yet)."""

    async def one(room: str) -> None:
        for attempt in range(20):
            if await route[room].command(room, f"w{attempt}-{room}", timeout=2.0) is not None:
                return
        raise SystemExit(f"{room}: no answer to 20 warm-up commands")

    await asyncio.gather(*(one(room) for room in ROOM_NAMES))


async def saturate(route: dict[str, Operator], pids: dict[str, int], run: Run) -> None:
    """IN_FLIGHT commands per room for WARMUP + MEASURE s; round trips and CPU over the last MEASURE s."""
    stopping = asyncio.Event()
    recording = False

    async def worker(room: str, lane: int) -> None:
        n = 0
        while not stopping.is_set() and not route[room].closed:
            n += 1
            elapsed = await route[room].command(room, f"s{lane}-{room}-{n}")
            if elapsed is not None and recording:
                run.loaded.append(elapsed)

    def cpu() -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in pids.items()}, "operators": time.process_time()}

    workers = [asyncio.create_task(worker(room, lane)) for room in ROOM_NAMES for lane in range(IN_FLIGHT)]
    await asyncio.sleep(WARMUP)
    before, started, recording = cpu(), time.perf_counter(), True
    await asyncio.sleep(MEASURE)
    after, run.window, recording = cpu(), time.perf_counter() - started, False
    run.cpu = {name: after[name] - before[name] for name in after}
    stopping.set()
    await asyncio.gather(*workers)


async def run_once(kind: str, operators: list[OperatorSpec], home: Path) -> Run:
    run = Run()
    servers = Servers(kind, home, operators)
    port = await servers.start()
    pid = servers.server.pid
    run.rss["start"] = memory_kib(pid)["VmRSS"]
    clients = [Operator(spec) for spec in operators]
    route = {room: client for client in clients for room in client.spec.rooms}
    try:
        await servers.start_agents(port)
        for client in clients:
            await client.connect(port)
        await warm(route)
        run.rss["connected"] = memory_kib(pid)["VmRSS"]
        for i in range(ROUND_TRIPS):
            room = ROOM_NAMES[i % ROOMS]
            elapsed = await route[room].command(room, f"q-{i}")
            if elapsed is not None:
                run.single.append(elapsed)
        assert servers.agents is not None
        await saturate(route, {"server": pid, "agents": servers.agents.pid}, run)
        memory = memory_kib(pid)
        run.rss["peak"], run.rss["end"] = memory["VmHWM"], memory["VmRSS"]
    finally:
        for client in clients:
            if hasattr(client, "ws"):
                await client.close()
            run.operators.update(client.counts)
        run.agents, run.log_lines = await servers.stop()
    return run


# -- the report ----------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Figures:
    """One server's figures in one layout, over every round."""

    runs: list[Run]

    @property
    def commands_per_s(self) -> float:
        return sum(len(r.loaded) for r in self.runs) / sum(r.window for r in self.runs)

    def cpu_per_command(self, who: str) -> float:
        return sum(r.cpu[who] for r in self.runs) / sum(len(r.loaded) for r in self.runs)

    def busy(self, who: str) -> float:
        return sum(r.cpu[who] for r in self.runs) / sum(r.window for r in self.runs)

    def loaded(self, p: float) -> float:
        return percentile([x for r in self.runs for x in r.loaded], p)

    def single(self, p: float) -> float:
        return percentile([x for r in self.runs for x in r.single], p)

    def rss(self, key: str) -> float:
        """MiB; the largest over the rounds for the peak, the median otherwise."""
        values = [r.rss[key] / 1024 for r in self.runs]
        return max(values) if key == "peak" else statistics.median(values)

    def count(self, side: str, key: str) -> int:
        return sum(getattr(r, side)[key] for r in self.runs)

    @property
    def answered(self) -> int:
        return self.count("operators", "sent") - self.count("operators", "lost")

    @property
    def frames_per_command(self) -> float:
        """Every frame the server read or wrote, per command (HELLOs left out)."""
        read = self.count("operators", "sent") + self.count("agents", "sent") - ROOMS * len(self.runs)
        written = (
            self.count("agents", "commands") + self.count("agents", "acks") + self.count("agents", "other")
        )
        written += self.count("operators", "received")
        return (read + written) / self.count("operators", "sent")

    @property
    def growth(self) -> tuple[float, float]:
        """MiB the server's RSS grew from "connected" to "end", and the commands of a run (medians)."""
        grown = statistics.median(r.rss["end"] - r.rss["connected"] for r in self.runs) / 1024
        return grown, statistics.median(r.operators["sent"] for r in self.runs)


def _row(label: str, relay: float, bare: float, fmt: str, ratio: bool = True) -> str:
    cells = f"{format(relay, fmt):>12} {format(bare, fmt):>12}"
    shown = f" {relay / bare:>11.2f}x" if ratio and bare else ""
    return f"     {label:44}{cells}{shown}"


def report(name: str, operators: list[OperatorSpec], relay: Figures, bare: Figures) -> None:
    print(f"   {name} ({len(operators)} operator connection{'s' if len(operators) > 1 else ''}):")
    print(f"     {'':44}{'relay':>12} {'bare':>12} {'relay/bare':>12}")
    ms = 1000.0
    rows = [
        ("commands answered/s, under load", relay.commands_per_s, bare.commands_per_s, ",.0f"),
        ("frames relayed/s (command + answer)", 2 * relay.commands_per_s, 2 * bare.commands_per_s, ",.0f"),
        (f"round trip, {IN_FLIGHT * ROOMS} in flight, p50 ms", relay.loaded(50) * ms, bare.loaded(50) * ms,
         ".1f"),
        ("                          p99 ms", relay.loaded(99) * ms, bare.loaded(99) * ms, ".1f"),
        ("round trip, one at a time, p50 ms", relay.single(50) * ms, bare.single(50) * ms, ".2f"),
        ("                           p99 ms", relay.single(99) * ms, bare.single(99) * ms, ".2f"),
        ("server CPU per command, µs", relay.cpu_per_command("server") * 1e6,
         bare.cpu_per_command("server") * 1e6, ",.0f"),
        ("frames at the server per command", relay.frames_per_command, bare.frames_per_command, ".2f"),
        ("server RSS at start, MiB", relay.rss("start"), bare.rss("start"), ".1f"),
        (f"  with {ROOMS} agents + operators connected", relay.rss("connected"), bare.rss("connected"),
         ".1f"),
        ("  peak (VmHWM)", relay.rss("peak"), bare.rss("peak"), ".1f"),
        ("  at the end", relay.rss("end"), bare.rss("end"), ".1f"),
    ]  # fmt: skip
    for label, a, b, fmt in rows:
        print(_row(label, a, b, fmt))
    (relay_grown, relay_n), (bare_grown, bare_n) = relay.growth, bare.growth
    print(f"     {'  grown connected->end, MiB':44}{relay_grown:>12.1f} {bare_grown:>12.1f}"
          f"   over {relay_n:,.0f} and {bare_n:,.0f} commands a run")  # fmt: skip
    for key in ("server", "agents", "operators"):
        print(_row(f"CPU % of a core under load: {key}", relay.busy(key) * 100, bare.busy(key) * 100, ".0f",
                   ratio=False))  # fmt: skip
    for fig, kind in ((relay, "relay"), (bare, "bare")):
        answered = fig.answered
        print(f"     {kind}: {answered:,} answered, lost {fig.count('operators', 'lost')}, "
              f"refused {fig.count('operators', 'refused')}, notices {fig.count('operators', 'notices')}, "
              f"other rooms' answers {fig.count('operators', 'other rooms')} "
              f"({fig.count('operators', 'other rooms') / max(answered, 1):.1f} per answer), "
              f"ACKs {fig.count('agents', 'acks'):,}, "
              f"operators dropped by the server {fig.count('operators', 'dropped by the server')}, "
              f"server log lines at WARNING+ {sum(len(r.log_lines) for r in fig.runs)}")  # fmt: skip
        for line in [line for r in fig.runs for line in r.log_lines][:3]:
            print(f"       {line[:200]}")


async def measure(home: Path) -> None:
    per_room = relay_has_operator_credentials()
    chosen = layouts(per_room)
    answer = len(_answer({"room_id": ROOM_NAMES[0], "task_id": "s0-room-0-1"}).encode())
    print(f"   {ROOMS} agents (agent-i serves room-i), {ROOMS} rooms, RUN_RUNBOOK -> TASK_FINISHED "
          f"({answer} B); websockets {websockets_version}, permessage-deflate (the default); server, agents, "
          f"operators each in their own process; {ROUNDS} rounds, alternating; {IN_FLIGHT} in flight per "
          f"room, {MEASURE:.0f} s measured after {WARMUP:.0f} s; {ROUND_TRIPS} one at a time")  # fmt: skip
    runs: dict[tuple[str, str], list[Run]] = {(layout, kind): [] for layout in chosen for kind in KINDS}
    order = list(runs)
    for round_ in range(ROUNDS):
        for layout, kind in order if round_ % 2 == 0 else reversed(order):
            runs[(layout, kind)].append(await run_once(kind, chosen[layout], home))
    for layout, operators in chosen.items():
        report(layout, operators, Figures(runs[(layout, "relay")]), Figures(runs[(layout, "bare")]))


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="guardia-bench-relay-"))
    try:
        asyncio.run(measure(home))
    finally:
        for path in home.iterdir():
            path.unlink()
        home.rmdir()
