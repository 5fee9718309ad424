"""fdatasync per command: the agent as a process under strace, a relay and an operator on loopback.

The same agent and relay serve N commands, one at a time (each answered before the next is sent), and, as the
baseline in the same run, none (what start-up and shutdown cost). The difference over N is the agent's durable
writes per command, read by the kernel, not by the agent. Three kinds: LIST_RUNBOOKS (read-only), the same with
signed commands (AGENT_COMMAND_KEY: a nonce recorded per command), and RUN_CHECK of a disk check.
Goal (issue 23): at most one fdatasync per command on the busy path, none inside the core's ``handle`` (the runtime
runs ``handle`` with the ledger's writes relaxed; the group commit of what depends on them makes them durable).
Needs strace (Debian's strace package); prints why when it is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.sshd import free_port

ROOT = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / "agent"
N = 100
TOKEN = "bench-relay-token-0123456789"  # a loopback relay's token
CONFIG = 'agent_id = "bench"\n[relay]\nmax_backoff = 1.0\n\n[checks.root_disk]\nkind = "disk"\npath = "."\n'


def _finished(task_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "TASK_FINISHED" and e.get("task_id") == task_id


async def _serve(home: Path, count: int, command: dict[str, Any], env: dict[str, str], at_once: bool) -> int:
    from agent.reference.operator_client import OperatorClient

    port = free_port()
    relay = subprocess.Popen([str(AGENT), "relay", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    trace = home / f"strace-{count}.txt"
    agent = subprocess.Popen(
        ["strace", "-f", "-c", "-e", "trace=fdatasync,fsync", "-o", str(trace),
         str(AGENT), "-c", str(home / "agent.toml"), "run", "--log-level", "ERROR"],
        env={**env, "EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent"}, cwd=home, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        client = None
        while client is None:
            try:
                client = await OperatorClient.connect(f"ws://127.0.0.1:{port}/operator")
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)  # the relay is starting
        await client.send({**command, "task_id": "warm-up"})  # the agent is connected once this is answered
        await client.wait_for(
            lambda e: e.get("event") == "TASK_FINISHED" and e.get("task_id") == "warm-up", 30
        )
        if at_once:  # the busy path: every command in flight together
            for i in range(count):
                await client.send({**command, "task_id": f"b-{i}"})
            for i in range(count):
                await client.wait_for(_finished(f"b-{i}"), 60)
        for i in range(0 if at_once else count):
            task_id = f"b-{i}"
            await client.send({**command, "task_id": task_id})
            await client.wait_for(_finished(task_id), 30)
        await client.close()
    finally:
        for pid in subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True,
                                  encoding="utf-8", check=False).stdout.split():  # fmt: skip
            os.kill(int(pid), 15)  # the agent itself, not strace: a clean stop
        agent.wait(60)
        relay.terminate()
        relay.wait(10)
    for line in trace.read_text(encoding="utf-8").splitlines():
        fields = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
        if fields and fields[-1] == "fdatasync":
            return int(fields[3])
    return 0


def _measure(command: dict[str, Any], env: dict[str, str], at_once: bool) -> tuple[int, int]:
    counts = []
    for count in (0, N):
        with tempfile.TemporaryDirectory(prefix="guardia-bench-") as tmp:
            home = Path(tmp)
            shutil.copytree(ROOT / "runbooks", home / "runbooks")
            shutil.copy2(ROOT / "runbooks.lock", home / "runbooks.lock")
            (home / "agent.toml").write_text(CONFIG, encoding="utf-8")
            counts.append(asyncio.run(_serve(home, count, command, env, at_once)))
    return counts[0], counts[1]


def main() -> None:
    if shutil.which("strace") is None:
        print("   skipped: strace is not installed (apt-get install strace)")
        return
    base_env = {**os.environ, "AGENT_RELAY_TOKEN": TOKEN}
    kinds = {
        "LIST_RUNBOOKS": ({"action": "LIST_RUNBOOKS", "room_id": "ops", "params": {}}, base_env),
        "LIST_RUNBOOKS, signed": (
            {"action": "LIST_RUNBOOKS", "room_id": "ops", "params": {}},
            {**base_env, "AGENT_COMMAND_KEY": "bench-command-key-0123456789abcdef"},
        ),
        "RUN_CHECK (disk)": (
            {"action": "RUN_CHECK", "room_id": "ops", "params": {"check": "root_disk"}},
            base_env,
        ),
    }
    for name, (command, env) in kinds.items():
        for at_once in (False, True):
            idle, busy = _measure(command, env, at_once)
            per = (busy - idle) / N
            how = f"{N} at once" if at_once else f"{N} one by one"
            print(f"   {name:22} {how:12} {per:.2f} fdatasync/command (start-up and stop alone: {idle})")
    print("   goal (issue 23): at most 1 per command on the busy path (at once); one by one, a command whose")
    print(
        "   handler sends TASK_ACCEPTED first (RUN_CHECK, RUN_RUNBOOK) commits twice: each message is on disk"
    )
    print("   before it is sent")
