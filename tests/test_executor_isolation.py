"""Nothing of the agent user's OpenSSH client setup is used: a hostile home and ssh-agent change nothing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.executor import CIPHERS
from agent.results import Outcome
from tests.sshd import SshFleet, keygen
from tests.test_executor import Agent

pytestmark = pytest.mark.external_service


class FakeAgentSocket:
    """A listening Unix socket where an ssh-agent would be; records every connection made to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.contacts = 0
        self._server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.contacts += 1
        writer.close()

    async def __aenter__(self) -> FakeAgentSocket:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (Unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="guardia-home-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hostile_home(short_dir: Path, fleet: SshFleet) -> Iterator[Path]:
    """A home whose ~/.ssh would, if read, redirect, proxy, pty-wrap, re-key and re-identify every connection."""
    home = short_dir / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    # A key the hosts would even accept: if it were offered, sshd's log would show it.
    hostile_public = keygen(ssh / "id_ed25519", "hostile-default-identity")
    saved = {server: (server.dir / "authorized_keys").read_text() for server in fleet.servers}
    for server, keys in saved.items():
        (server.dir / "authorized_keys").write_text(keys + hostile_public + "\n")
    revoked = "".join(f"@revoked {line}\n" for server in fleet.servers for line in server.known_hosts_lines())
    (ssh / "known_hosts").write_text(revoked)
    (ssh / "evil_known_hosts").write_text(revoked)
    (ssh / "ca-bundle.crt").write_text("not a certificate\n")
    (ssh / "config").write_text(
        "Host *\n"
        f"  ProxyCommand sh -c 'touch {short_dir / 'proxy-ran'}'\n"
        "  Hostname 127.0.0.1\n"  # loopback, where no test sshd listens on these ports
        "  RequestTTY force\n"
        f"  UserKnownHostsFile {ssh / 'evil_known_hosts'}\n"
        f"  IdentityFile {ssh / 'id_ed25519'}\n"
        "  IdentitiesOnly yes\n"
        f"  IdentityAgent {short_dir / 'agent.sock'}\n"
        "  User root\n"
        "  SetEnv GUARDIA_HOSTILE=1\n"
        "  ForwardAgent yes\n"
        "  Ciphers aes128-ctr\n"
    )
    yield home
    for server, keys in saved.items():
        (server.dir / "authorized_keys").write_text(keys)


@pytest.fixture
async def fake_agent(short_dir: Path) -> AsyncIterator[FakeAgentSocket]:
    async with FakeAgentSocket(short_dir / "agent.sock") as agent_socket:
        yield agent_socket


async def test_hostile_home_and_ssh_agent_change_nothing(
    agent_home: Path,
    fleet: SshFleet,
    hostile_home: Path,
    fake_agent: FakeAgentSocket,
    short_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(hostile_home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(fake_agent.path))
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("LOGNAME", "root")
    agent = Agent(agent_home)
    try:
        [host] = (await agent.run("echo_args", ["h1"], value="x")).hosts
        # The agent's own cipher order (AES-GCM first), not the hostile config's nor asyncssh's default.
        cipher = agent.executor._pool["h1"].connection.get_extra_info("send_cipher")
    finally:
        await agent.executor.close()
    assert cipher == CIPHERS[0] == "aes256-gcm@openssh.com"
    assert host.status is Outcome.SUCCESS, host
    assert host.stdout.startswith("argc=1\n")  # ran as usual: not redirected, not refused
    names = set(host.stderr.split())  # stderr apart from stdout: no pty was requested
    assert "PATH" in names and "GUARDIA_HOSTILE" not in names
    assert not (short_dir / "proxy-ran").exists()  # the ProxyCommand never ran
    assert fake_agent.contacts == 0  # neither SSH_AUTH_SOCK nor IdentityAgent was contacted
    log = fleet.servers[0].log.read_text(errors="replace")
    accepted = [line for line in log.splitlines() if "Accepted publickey" in line]
    configured = keygen_fingerprint(fleet.client_key)
    assert accepted and all(f" for {fleet.user} " in ln and configured in ln for ln in accepted), accepted


def keygen_fingerprint(private_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(private_key)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]  # SHA256:…
