"""The chat grammar of the room, and ``agent chat``: an operator's console on the relay's operator side.

:func:`parse_chat` is what a chat bridge turns a typed line into (the demo and ``agent chat`` use it);
:class:`ChatSession` sends lines as one user in one room and prints the room's answers as the demo does: progress
lines, approval prompts, the relay's notices and the final answer of each command, and, while it waits, the
scheduled reports and notices addressed to the room.
"""

from __future__ import annotations

import asyncio
import difflib
import secrets
import shlex
from collections.abc import Callable
from typing import Any, TextIO

from agent.chat.i18n import Chat, Msg, message_of
from agent.checks.alerts import parse_duration
from agent.reference.operator_client import OperatorClient

GRAMMAR = (
    "help [RUNBOOK] | run NAME host=H [KEY=VALUE …] | output TASK HOST [stderr] [PAGE] | history [RUNBOOK] [N]"
    " | pending | approve CODE | reject CODE | cancel CODE | list | check [NAME] | checks | hosts | stop TASK"
    " | rerun TASK [failed] | ack CHECK | mute CHECK DURATION | unmute CHECK | was | disk"
)
#: Events that belong to a command and are printed with it.
_TASK_EVENTS = ("TASK_PENDING_APPROVAL", "TASK_PROGRESS", "RELAY_NOTICE", "TASK_FINISHED")


def _page(word: str) -> int:
    if not word.isdigit() or int(word) < 1:
        raise ValueError(Msg("PAGE is a page number from 1"))
    return int(word) - 1


def _history(rest: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for word in rest:
        if word.isdigit():
            params["limit"] = int(word)
        elif "runbook" not in params:
            params["runbook"] = word
        else:
            raise ValueError(Msg("usage: {usage}", usage="history [RUNBOOK] [N]"))
    return {"action": "HISTORY", "params": params}


def _output(rest: list[str]) -> dict[str, Any]:
    stream = "stdout"
    tail = rest[2:]
    if tail and tail[0].lower() in ("stdout", "stderr"):
        stream, tail = tail[0].lower(), tail[1:]
    if len(tail) > 1:
        raise ValueError(Msg("usage: {usage}", usage="output TASK HOST [stderr] [PAGE]"))
    page = _page(tail[0]) if tail else 0
    return {
        "action": "GET_OUTPUT",
        "params": {"task_id": rest[0], "host": rest[1], "stream": stream, "page": page},
    }


def _run(rest: list[str]) -> dict[str, Any]:
    hosts, args = [], {}
    for word in rest[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(Msg("expected KEY=VALUE, got {word!r}", word=word[:20]))
        if key == "host":
            hosts.append(value)
        else:
            args[key] = value
    return {"action": "RUN_RUNBOOK", "params": {"runbook": rest[0], "hosts": hosts, "args": args}}


def _code(action: str) -> Callable[[list[str]], dict[str, Any]]:
    # The agent hands codes out in upper case; one typed in lower case is the same code.
    return lambda rest: {"action": action, "params": {"code": rest[0].upper()}}


#: The words that ask for the checks' list rather than one check (``점검 목록``, ``check list``).
_LIST_WORDS = frozenset({"list", "목록"})
#: The words ``rerun TASK …`` takes for the servers to run on again (only the failed ones).
_FAILED_WORDS = frozenset({"failed", "실패"})


def _check(rest: list[str]) -> dict[str, Any]:
    if not rest or rest[0].lower() in _LIST_WORDS:
        return {"action": "CHECKS"}
    return {"action": "RUN_CHECK", "params": {"check": rest[0]}}


def _mute(rest: list[str]) -> dict[str, Any]:
    seconds = parse_duration(rest[1])
    if seconds is None:
        raise ValueError(Msg("usage: {usage}", usage="mute CHECK 30m|2h|1d (알림끄기 CHECK 2시간)"))
    return {"action": "MUTE_CHECK", "params": {"check": rest[0], "seconds": seconds}}


def _rerun(rest: list[str]) -> dict[str, Any]:
    if rest[1:] and rest[1].lower() not in _FAILED_WORDS:
        raise ValueError(Msg("usage: {usage}", usage="rerun TASK failed (재실행 TASK 실패)"))
    return {"action": "RERUN", "params": {"task_id": rest[0], "hosts": "failed"}}


#: The grammar as a table: command word -> (fewest words after it, most (None: any), its action and params).
#: A line whose word count is out of range is not in the grammar.
_COMMANDS: dict[str, tuple[int, int | None, Callable[[list[str]], dict[str, Any]]]] = {
    "list": (0, 0, lambda rest: {"action": "LIST_RUNBOOKS"}),
    "help": (0, 1, lambda rest: {"action": "HELP", "params": {"runbook": rest[0]} if rest else {}}),
    "history": (0, 2, _history),
    "pending": (0, 0, lambda rest: {"action": "PENDING"}),
    "approve": (1, 1, _code("APPROVE")),
    "reject": (1, 1, _code("REJECT")),
    "cancel": (1, 1, _code("CANCEL")),
    "was": (0, 0, lambda rest: {"action": "CHECK_INTERNAL_WAS_STATUS"}),
    "disk": (0, 0, lambda rest: {"action": "CHECK_DISK_SPACE"}),
    "check": (0, 1, _check),
    "checks": (0, 0, lambda rest: {"action": "CHECKS"}),
    "hosts": (0, 0, lambda rest: {"action": "HOSTS"}),
    "stop": (1, 1, lambda rest: {"action": "STOP", "params": {"task_id": rest[0]}}),
    "rerun": (1, 2, _rerun),
    "ack": (1, 1, lambda rest: {"action": "ACK_CHECK", "params": {"check": rest[0]}}),
    "mute": (2, 2, _mute),
    "unmute": (1, 1, lambda rest: {"action": "UNMUTE_CHECK", "params": {"check": rest[0]}}),
    "output": (2, 4, _output),
    "run": (1, None, _run),
}


#: The Korean command words, as one table: every command but `was` (typed as is) has one, as an SM engineer types it;
#: each is the English word it stands for.
KOREAN_WORDS = {
    "도움말": "help", "목록": "list", "실행": "run", "이력": "history", "대기": "pending", "승인": "approve",
    "반려": "reject", "취소": "cancel", "점검": "check", "점검목록": "checks", "출력": "output", "디스크": "disk",
    "서버": "hosts", "중지": "stop", "재실행": "rerun", "확인": "ack", "알림끄기": "mute", "알림켜기": "unmute",
}  # fmt: skip
#: Every word that stands for another: the Korean ones and a few English synonyms.
ALIASES = {**KOREAN_WORDS, "servers": "hosts"}
#: Every word that starts a command (English and Korean), for suggestions on a typo.
COMMAND_WORDS = sorted({*_COMMANDS, *ALIASES})


def suggest_command(word: str) -> str | None:
    """The command word ``word`` is most likely a typo of (``histroy`` → ``history``), or None."""
    found = difflib.get_close_matches(word.lower(), COMMAND_WORDS, n=1, cutoff=0.6)
    return found[0] if found else None


def parse_chat(line: str, task_id: str, room: str = "ops", user: str | None = "kim") -> dict[str, Any]:
    """What a chat bridge would turn a typed line into (a command packet for the relay).

    Grammar: see :data:`GRAMMAR`; each command word also in Korean (:data:`KOREAN_WORDS`: ``도움말``, ``실행``…).
    ``output`` pages count from 1, as the answers show them.

    Raises:
        ValueError: with a usage hint, for anything else.
    """
    try:
        words = shlex.split(line)
    except ValueError:
        raise ValueError(Msg("unbalanced quotes")) from None
    if not words:
        raise ValueError(Msg("type a command; 'help' lists them"))
    verb, rest = words[0].lower(), words[1:]
    verb = ALIASES.get(verb, verb)
    if verb not in _COMMANDS:
        near = suggest_command(words[0])
        if near is not None:
            raise ValueError(Msg("unknown command {word!r}; did you mean {suggestion}? 'help' lists the commands",
                                 word=words[0][:20], suggestion=near))  # fmt: skip
        raise ValueError(Msg("unknown command {word!r}; 'help' lists the commands", word=words[0][:20]))
    fewest, most, parse = _COMMANDS[verb]
    if len(rest) < fewest or (most is not None and len(rest) > most):
        usage = next((u for u in GRAMMAR.split(" | ") if u.split()[0] == verb), GRAMMAR)
        raise ValueError(Msg("usage: {usage}", usage=usage))
    base: dict[str, Any] = {"task_id": task_id, "room_id": room}
    if user is not None:
        base["user_id"] = user
    return {**base, **parse(rest)}


def text_of(event: dict[str, Any]) -> str:
    """The chat text of an event (the agent's ``payload.text``, else its status)."""
    payload = event.get("payload")
    if isinstance(payload, dict):
        return str(payload.get("text") or payload.get("status") or "")
    return ""


def agent_lines(text: str, who: str = "guardia") -> str:
    """How a transcript shows what the agent (or the relay) said: the speaker, then continuation lines indented."""
    lines = text.splitlines() or [""]
    return "\n".join([f"🤖 {who}> " + lines[0], *(" " * 11 + line for line in lines[1:])])


class ChatSession:
    """One user in one room on the relay's operator side."""

    def __init__(
        self,
        client: OperatorClient,
        room: str,
        user: str,
        out: TextIO,
        prefix: str = "chat",
        new_task_id: Callable[[], str] | None = None,
        chat: Chat | None = None,
    ) -> None:
        #: The language of this console's own lines (the agent's texts come rendered already).
        self.chat = chat or Chat()
        self.client = client
        self.room = room
        self.user = user
        self.out = out
        self.prefix = prefix
        self._counter = 0
        self._new_task_id = new_task_id
        self._printed: set[int] = set()

    def task_id(self) -> str:
        if self._new_task_id is not None:
            return self._new_task_id()
        self._counter += 1
        return f"{self.prefix}-{secrets.token_hex(3)}-{self._counter}"

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def agent_says(self, text: str, who: str = "guardia") -> None:
        self.say(agent_lines(text, who))

    def print_room_events(self) -> None:
        """Print the room's unprompted events (reports, relay notices) not printed yet."""
        for index, event in enumerate(self.client.events):
            if index in self._printed or event.get("room_id") != self.room or event.get("task_id"):
                continue
            if event.get("event") in ("REPORT", "RELAY_NOTICE"):
                self._printed.add(index)
                kind = (event.get("payload") or {}).get("kind")
                scheduled = kind in ("schedule", "summary", "missed", "check")
                who = (
                    "relay"
                    if event.get("event") == "RELAY_NOTICE"
                    else "guardia (" + self.chat._("scheduled") + ")"
                    if scheduled
                    else "guardia"
                )
                self.agent_says(text_of(event), who)

    async def ask(
        self, line: str, timeout: float = 120.0, echo: bool = True, until_held: bool = False
    ) -> dict[str, Any]:
        """Send one typed line and print everything about it until its final answer; returns that answer.

        ``until_held``: a request held for a second person's approval is an answer too (one-line use: the
        approver's decision may take minutes, and its outcome reaches the room, not this line).

        Raises:
            ValueError: the line is not in the grammar (nothing was sent).
            TimeoutError: no final answer within ``timeout`` seconds.
        """
        packet = parse_chat(line, self.task_id(), self.room, self.user)
        task_id = packet["task_id"]
        if echo:
            self.say(f"👤 {self.user}> {line}")
        start = len(self.client.events)
        await self.client.send(packet)
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                await self.client.wait_beyond(seen)
                for index in range(seen, len(self.client.events)):
                    event = self.client.events[index]
                    if event.get("task_id") != task_id or event.get("event") not in _TASK_EVENTS:
                        continue
                    self._printed.add(index)
                    who = (
                        "relay"
                        if event.get("event") == "RELAY_NOTICE" or event.get("from_relay")
                        else "guardia"
                    )
                    self.agent_says(text_of(event), who)
                    if event.get("event") == "TASK_FINISHED":
                        return event
                    if until_held and event.get("event") == "TASK_PENDING_APPROVAL":
                        return event
                seen = len(self.client.events)

    async def interactive(self, read_line: Callable[[str], str] = input) -> None:
        """A prompt: type lines as in the chat room; 'quit' ends."""
        self.say(f"{self.room} / {self.user}: "
                 + self.chat._("type commands as in the chat room ('help', 'quit')."))  # fmt: skip
        loop = asyncio.get_running_loop()
        while True:
            self.print_room_events()
            try:
                line = await loop.run_in_executor(None, read_line, f"{self.user}> ")
            except EOFError:
                return
            if line.strip() in ("quit", "exit"):
                return
            if not line.strip():
                continue
            try:
                await self.ask(line, echo=False)
            except ValueError as exc:
                self.say(f"  ({self.chat.text(message_of(exc))})")
            except TimeoutError:
                self.say("  (" + self.chat._("no answer yet; it will show when it comes") + ")")
