"""The demo's SSH host: an embedded asyncssh *server* on loopback, for machines without OpenSSH's sshd.

It accepts only the demo's generated client key, listens only on 127.0.0.1, and runs each session's command the
way sshd does — ``/bin/sh -c COMMAND`` as the current user, stdin and both output streams connected — so the agent's
real command line and locked script bytes are exercised unchanged. Never used by the agent itself (whose only
asyncssh import is the executor's client); it exists for ``agent demo``.

The shell is a POSIX ``sh``, never the platform's default shell: on Windows ``create_subprocess_shell`` would hand the
agent's ``bash -s`` line to ``cmd.exe``, which fails in ways that look like success. :func:`find_shell` looks for
``sh`` (``$AGENT_DEMO_SHELL``, then PATH, then Git for Windows' usual place); where there is none, the demo stops
before it starts and says what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
from pathlib import Path

import asyncssh

from agent.chat.i18n import Msg


async def _copy(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


async def _feed_stdin(reader: asyncssh.SSHReader[bytes], writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncssh.Error):
        pass
    finally:
        writer.close()


SHELL_ENV = "AGENT_DEMO_SHELL"
#: Where Git for Windows puts its sh (the usual POSIX shell of a Windows PC).
GIT_SH = (r"C:\Program Files\Git\bin\sh.exe", r"C:\Program Files (x86)\Git\bin\sh.exe")


class NoShellError(RuntimeError):
    """No POSIX ``sh`` on this machine for the demo's SSH host to run commands with."""


def find_shell(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str:
    """The POSIX shell the demo host runs each command with (``sh -c COMMAND``), as sshd would.

    Raises:
        NoShellError: none found; the message says what to install or set.
    """
    env = os.environ if environ is None else environ
    given = env.get(SHELL_ENV)
    if given:
        if Path(given).is_file():
            return given
        raise NoShellError(Msg("${env} is {path}, which is not a file", env=SHELL_ENV, path=given))
    if platform != "win32":
        return "/bin/sh"
    found = shutil.which("sh", path=env.get("PATH")) or next((p for p in GIT_SH if Path(p).is_file()), None)
    if found is None:
        raise NoShellError(
            Msg(
                "the demo's SSH host runs the bundled bash scripts on this PC and needs a POSIX sh here: install "
                "Git for Windows (it brings sh.exe), or set ${env} to a sh.exe. The agent itself needs no shell on "
                "this PC; only the servers it runs scripts on do.",
                env=SHELL_ENV,
            )
        )
    return found


async def _session(process: asyncssh.SSHServerProcess[bytes], shell: str) -> None:
    command = process.command
    if not command:
        process.stderr.write(b"this demo host runs commands only\n")
        process.exit(1)
        return
    child = await asyncio.create_subprocess_exec(
        shell, "-c", command,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    stdin = asyncio.create_task(_feed_stdin(process.stdin, child.stdin))
    try:
        # Both outputs are copied to their end before the exit status goes out: nothing is lost.
        await asyncio.gather(_copy(child.stdout, process.stdout), _copy(child.stderr, process.stderr))
        code = await child.wait()
    except (asyncssh.Error, ConnectionError):
        code = None  # the client went away first; the command's own timeout still ends it
    finally:
        stdin.cancel()
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
    if code is None:
        return
    if code < 0:
        process.exit_with_signal(signal.Signals(-code).name.removeprefix("SIG"))
    else:
        process.exit(code)


class DemoHost:
    """``start()`` writes a host key and a client key pair into ``folder`` and listens on a free loopback port."""

    def __init__(self, folder: Path, shell: str | None = None) -> None:
        self.folder = folder
        #: Found at construction, so that a machine without one stops the demo before anything starts.
        self.shell = shell or find_shell()
        self.client_key = folder / "client_ed25519"
        self.known_hosts = folder / "known_hosts"
        self.port = 0
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self) -> None:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        self._server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
            process_factory=functools.partial(_session, shell=self.shell), encoding=None, allow_scp=False,
            agent_forwarding=False, x11_forwarding=False, sftp_factory=None, line_editor=False,
        )  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        public = host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n", encoding="utf-8", newline="\n")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
