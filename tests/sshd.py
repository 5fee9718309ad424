"""Real OpenSSH sshd instances on loopback, for the tests and the benchmarks.

As root, logins go to a dedicated system user whose shell is /bin/sh, so no session pays for a login shell's rc
files (root's .bashrc on these machines runs ``pyenv init``, ~150 ms a session). Otherwise sshd runs as the current
user and accepts only that user. Everything lives in a temp folder; nothing outside it is touched but the user.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TEST_USER = "guardia-ssh"
#: OpenSSH listens on at most 16 addresses per process.
MAX_LISTEN = 16


def sshd_binary() -> str:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(found):
        raise RuntimeError("OpenSSH sshd is not installed (scripts/test installs openssh-server)")
    return found


def login_user() -> str:
    """The user test sessions log in as (created when running as root)."""
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        import pwd  # POSIX only: imported where used, so that the tests import on Windows

        pwd.getpwnam(TEST_USER)
    except KeyError:
        home = f"/var/lib/{TEST_USER}"
        subprocess.run(
            ["useradd", "--system", "--shell", "/bin/sh", "--home-dir", home, "--create-home", "--skel", "/dev/null",
             TEST_USER],
            check=True, capture_output=True,
        )  # fmt: skip
    # "*": no password, but not "locked" ("!"), which sshd refuses without PAM.
    subprocess.run(["usermod", "--password", "*", TEST_USER], check=True, capture_output=True)
    return TEST_USER


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str = "") -> str:
    """Make an unencrypted Ed25519 key at ``path``; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int


class Sshd:
    """One sshd process listening on up to 16 loopback endpoints, accepting one client key."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        authorized_key: str,
        user: str,
        max_sessions: int = 10,
        idle_processes: int | None = None,
    ) -> None:
        """``idle_processes``: run sshd in a PID namespace of its own (root only: ``unshare --pid --fork
        --mount-proc``) beside that many idle processes, so that its sessions' /proc shows one host's processes as on
        real hardware; ``None``: in this machine's namespace."""
        assert 0 < len(endpoints) <= MAX_LISTEN
        self.endpoints = endpoints
        self.idle_processes = idle_processes
        self.user = user
        self.dir = Path(tempfile.mkdtemp(prefix="guardia-sshd-"))
        self.dir.chmod(0o755)
        self.host_key_line = keygen(self.dir / "host_ed25519", "test-host")
        authorized = self.dir / "authorized_keys"
        authorized.write_text(authorized_key + "\n", encoding="utf-8", newline="\n")
        authorized.chmod(0o644)
        self.log = self.dir / "sshd.log"
        listen = "".join(f"ListenAddress {e.address}:{e.port}\n" for e in endpoints)
        (self.dir / "sshd_config").write_text(
            f"{listen}"
            f"HostKey {self.dir / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            f"AllowUsers {user}\n"
            "PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPrintMotd no\nPrintLastLog no\nLogLevel VERBOSE\nMaxStartups 400:30:800\n"
            f"MaxSessions {max_sessions}\nUseDNS no\n",
            encoding="utf-8",
            newline="\n",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def known_hosts_lines(self) -> list[str]:
        return [f"[{e.address}]:{e.port} {self.host_key_line}" for e in self.endpoints]

    def start(self, timeout: float = 10.0) -> Sshd:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        command = [sshd_binary(), "-D", "-f", str(self.dir / "sshd_config"), "-E", str(self.log)]
        if self.idle_processes is not None:
            # PID 1 of the namespace: a shell that starts the idle processes, then becomes sshd. `unshare` ignores
            # TERM (stop() KILLs it); --kill-child then ends sshd, and with it the namespace.
            command = [
                "unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c",
                'i=0; while [ $i -lt "$0" ]; do sleep 86400 & i=$((i+1)); done; exec "$@"',
                str(self.idle_processes), *command,
            ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        pending = list(self.endpoints)
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sshd exited: {self.log.read_text(errors='replace', encoding='utf-8')[-2000:]}"
                )
            try:
                with socket.create_connection((pending[0].address, pending[0].port), timeout=1):
                    pending.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not start listening") from None
                time.sleep(0.02)  # waiting for a port to open, not asserting a duration
        return self

    def logins(self) -> int:
        """How many logins sshd accepted so far."""
        return self.log.read_text(errors="replace", encoding="utf-8").count("Accepted publickey")

    def connections(self) -> int:
        return self.log.read_text(errors="replace", encoding="utf-8").count("Connection from")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.idle_processes is None:
                self.process.terminate()
            else:
                self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def loopback_endpoints(count: int, first: int = 10) -> list[Endpoint]:
    """``count`` endpoints on distinct 127.0.0.x addresses (so each looks like its own host)."""
    endpoints = []
    for i in range(count):
        address = f"127.0.{(first + i) // 250}.{(first + i) % 250 + 2}"
        endpoints.append(Endpoint(address, free_port(address)))
    return endpoints


class SshFleet:
    """As many loopback hosts as asked, spread over sshd processes of up to 16 endpoints, with one client key."""

    def __init__(
        self, count: int, max_sessions: int = 10, untrusted: int = 0, idle_processes: int | None = None
    ) -> None:
        """``idle_processes``: each sshd in a PID namespace of its own with that many idle processes (see
        :class:`Sshd`; as root only, ignored otherwise)."""
        if os.geteuid() != 0:
            idle_processes = None
        self.namespaced = idle_processes is not None
        self.dir = Path(tempfile.mkdtemp(prefix="guardia-fleet-"))
        self.user = login_user()
        self.client_key = self.dir / "client_ed25519"
        public = keygen(self.client_key, "guardia-agent-test")
        endpoints = loopback_endpoints(count)
        self.servers = [
            Sshd(endpoints[i : i + MAX_LISTEN], public, self.user, max_sessions, idle_processes)
            for i in range(0, count, MAX_LISTEN)
        ]
        self.endpoints = endpoints
        self.known_hosts = self.dir / "known_hosts"
        trusted = [line for server in self.servers for line in server.known_hosts_lines()]
        # The last ``untrusted`` endpoints are real sshd hosts that known_hosts has no key for.
        self.known_hosts.write_text(
            "".join(line + "\n" for line in trusted[: count - untrusted]), encoding="utf-8", newline="\n"
        )

    def start(self) -> SshFleet:
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def inventory_toml(self, aliases: list[str], extra_hosts: str = "") -> str:
        hosts = "".join(
            f'[inventory.hosts.{alias}]\naddress = "{e.address}"\nport = {e.port}\n\n'
            for alias, e in zip(aliases, self.endpoints, strict=False)
        )
        return (
            f'[inventory]\nknown_hosts = "{self.known_hosts}"\nuser = "{self.user}"\nkey_file = "{self.client_key}"\n\n'
            f"{hosts}{extra_hosts}"
        )
