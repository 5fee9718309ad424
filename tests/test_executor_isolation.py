"""Nothing of the agent user's OpenSSH client setup is used: a hostile home and ssh-agent change nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runs.executor import CIPHERS
from agent.runs.results import Outcome
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
    saved = {server: (server.dir / "authorized_keys").read_text(encoding="utf-8") for server in fleet.servers}
    for server, keys in saved.items():
        (server.dir / "authorized_keys").write_text(
            keys + hostile_public + "\n", encoding="utf-8", newline="\n"
        )
    revoked = "".join(f"@revoked {line}\n" for server in fleet.servers for line in server.known_hosts_lines())
    (ssh / "known_hosts").write_text(revoked, encoding="utf-8", newline="\n")
    (ssh / "evil_known_hosts").write_text(revoked, encoding="utf-8", newline="\n")
    (ssh / "ca-bundle.crt").write_text("not a certificate\n", encoding="utf-8", newline="\n")
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
        "  Ciphers aes128-ctr\n",
        encoding="utf-8",
        newline="\n",
    )
    yield home
    for server, keys in saved.items():
        (server.dir / "authorized_keys").write_text(keys, encoding="utf-8", newline="\n")


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
    log = fleet.servers[0].log.read_text(errors="replace", encoding="utf-8")
    accepted = [line for line in log.splitlines() if "Accepted publickey" in line]
    configured = keygen_fingerprint(fleet.client_key)
    assert accepted and all(f" for {fleet.user} " in ln and configured in ln for ln in accepted), accepted


def keygen_fingerprint(private_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(private_key)],
        capture_output=True,
        text=True,
        check=True,
        encoding="utf-8",
    ).stdout
    return out.split()[1]  # SHA256:…


@pytest.mark.posix_only(reason="asyncssh's search for liboqs runs ldconfig/gcc on POSIX only")
def test_importing_the_executor_runs_no_compiler_or_linker_from_path(tmp_path: Path) -> None:
    """asyncssh searches for liboqs as it is imported (ctypes.util.find_library: ldconfig, then gcc and ld from
    PATH). The agent skips that one search: a service should not start a compiler found on its PATH, and the key
    exchanges it offers should not depend on what else the relay PC has installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "ran"
    for tool in ("gcc", "cc", "ld"):
        (bin_dir / tool).write_text(
            f'#!/bin/sh\necho {tool} "$@" >> "{ran}"\nexit 1\n', encoding="utf-8", newline="\n"
        )
        (bin_dir / tool).chmod(0o755)
    probe = (
        "import ctypes.util, json\n"
        "asked = []\n"
        "real = ctypes.util.find_library\n"
        "def recorder(name):\n"
        "    asked.append(name)\n"
        "    return real(name)\n"
        "ctypes.util.find_library = recorder\n"
        "import {module}\n"
        "import asyncssh.crypto.pq as pq\n"
        "print(json.dumps([asked, pq.sntrup_available, pq.mlkem_available, ctypes.util.find_library is recorder]))\n"
    )

    def imported(module: str) -> tuple[list[Any], str]:
        ran.unlink(missing_ok=True)
        out = subprocess.run(
            [sys.executable, "-c", probe.format(module=module)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}, encoding="utf-8",
        ).stdout  # fmt: skip
        return json.loads(out), ran.read_text(encoding="utf-8") if ran.exists() else ""

    # The control: asyncssh imported on its own asks for liboqs, and the fake gcc on PATH is run for it.
    (asked, _, _, _), tools_run = imported("asyncssh")
    assert "oqs" in asked and "-loqs" in tools_run, (asked, tools_run)
    # Through the executor: liboqs is never asked for, so no compiler or linker runs for it; the lookup is put
    # back as it was; ML-KEM (from cryptography) is still offered, sntrup761 (liboqs) is not.
    (asked, sntrup, mlkem, restored), tools_run = imported("agent.runs.executor")
    assert not {"oqs", "liboqs"} & set(asked) and "oqs" not in tools_run, (asked, tools_run)
    assert (sntrup, mlkem, restored) == (False, True, True)
