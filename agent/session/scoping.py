"""Task ids are per room: a ``task_id`` another room used is answered exactly as a fresh one. Pure, no I/O.

The ledger, the kept output, the run gate and the audit log know a task by one string. A relay (protocol 1) promises
a ``task_id`` unique per command, but rooms do not know each other's ids: when a command names a ``task_id`` that the
ledger holds for *another* room, refusing it (``MALFORMED``, as the agent once did) told that room the id existed
elsewhere (issue 27: an existence oracle across rooms). Instead the command gets a task key of the agent's own,
:func:`scoped_key` (the id, ``@@`` and a digest of room and id), under which it runs like any fresh command; its
answers name the ``task_id`` as sent (:meth:`RoomScopes.reply`, at the one choke point everything sent passes).

``params.task_id`` (``GET_OUTPUT``, and any action naming an earlier task) is read the same way: the asking room's own
task of that id, if it has one; another room's is never reached (it stays the bare id, whose record names the other
room, and is answered as unknown).

The translated packet keeps the ids as sent under ``reply_to`` (as protocol v0's :class:`Addressing` does), so a task
kept over a restart is answered under its own id too (:meth:`RoomScopes.remember`).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agent.session.ledger import TaskRecord
from agent.session.protocol import Command

#: The separator of a scoped key (``@`` is in the task_id alphabet, so a scoped key parses as a task_id).
SEPARATOR = "@@"
#: Characters of the id kept in a scoped key (the key stays within the 128 of a task_id).
KEPT = 96
#: Scoped keys whose ids are remembered for the answers (the oldest forgotten first).
MAX_REMEMBERED = 10_000
_DIGEST = re.compile(r"@@([0-9a-f]{24})")
_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-")
#: Keys recognised by recomputing them, at most, in one message (each costs up to KEPT digests).
MAX_DERIVED = 32


def scoped_key(task_id: str, room_id: str) -> str:
    """The agent's own task key for ``task_id`` of ``room_id`` when another room holds that id."""
    digest = hashlib.sha256(f"{room_id}\0{task_id}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{task_id[:KEPT]}{SEPARATOR}{digest}"


class RoomScopes:
    """Decides each command's task key, and maps the keys back to the ids as sent in what the agent says."""

    def __init__(self) -> None:
        #: Scoped key's digest -> (the key, the id as sent).
        self._ids: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: The room of the message :meth:`reply` is working on, and how many keys it may still recompute.
        self._room: str | None = None
        self._budget = 0

    def key(self, task: Callable[[str], TaskRecord | None], task_id: str, room_id: str) -> str:
        """The key under which ``room_id``'s ``task_id`` is (or will be) in the ledger (``task``: its lookup)."""
        scoped = scoped_key(task_id, room_id)
        if task(scoped) is not None:
            return scoped
        record = task(task_id)
        return task_id if record is None or record.room_id == room_id else scoped

    def inbound(self, command: Command, task: Callable[[str], TaskRecord | None]) -> Command:
        """``command`` under the keys of its room: itself when no id it names belongs to another room."""
        key = self.key(task, command.task_id, command.room_id)
        named = command.params.get("task_id")
        params = command.params
        if isinstance(named, str):
            own = scoped_key(named, command.room_id)
            if task(own) is not None:
                params = {**params, "task_id": own}
                self._remember(own, named)
        if key == command.task_id and params is command.params:
            return command
        raw = {**command.raw, "task_id": key, "params": params}
        if key != command.task_id:
            raw["reply_to"] = {"task_id": command.task_id, "room_id": command.room_id}
            self._remember(key, command.task_id)
        scoped = command.model_copy(update={"task_id": key, "params": params})
        scoped._raw = raw
        return scoped

    def remember(self, command: Command) -> None:
        """A command kept over a restart: if it was scoped, answer under the id it was sent with."""
        reply = command.raw.get("reply_to")
        if not isinstance(reply, dict):
            return
        task_id, room_id = reply.get("task_id"), reply.get("room_id")
        if (
            isinstance(task_id, str)
            and room_id == command.room_id
            and scoped_key(task_id, room_id) == command.task_id
        ):
            self._remember(command.task_id, task_id)

    def _remember(self, key: str, task_id: str) -> None:
        digest = key[-24:]
        self._ids[digest] = (key, task_id)
        self._ids.move_to_end(digest)
        while len(self._ids) > MAX_REMEMBERED:
            self._ids.popitem(last=False)

    def reply(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` with every scoped key in it (the ``task_id``, an ``output_ref``, a history row, a word in a
        text) replaced by the id as sent. Returns ``message`` itself when there is nothing to replace.

        A key this process made or was told of (:meth:`remember`) is known; any other of the message's room (one
        made before a restart, named in its history) is recognised by recomputing it, when its id was short enough
        to be kept whole (at most :data:`KEPT` characters), at most :data:`MAX_DERIVED` times a message.
        """
        room = message.get("room_id")
        self._budget = MAX_DERIVED
        self._room = room if isinstance(room, str) else None
        if not self._ids and self._room is None:
            return message
        replaced = self._replace(message)
        return replaced if isinstance(replaced, dict) else message

    def _replace(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._unscoped(value) if SEPARATOR in value else value
        if isinstance(value, dict):
            items = {k: self._replace(v) for k, v in value.items()}
            return value if all(items[k] is v for k, v in value.items()) else items
        if isinstance(value, list):
            changed = [self._replace(v) for v in value]
            return value if all(a is b for a, b in zip(changed, value, strict=True)) else changed
        return value

    def _unscoped(self, text: str) -> str:
        """``text`` with each scoped key in it replaced by its id (a key is its id's first characters, ``@@`` and a
        digest: found by the digest, checked whole)."""
        out, at = [], 0
        for match in _DIGEST.finditer(text):
            found = self._known(text, match) or self._derived(text, match)
            if found is None or found[0] < at:
                continue
            start, task_id = found
            out += [text[at:start], task_id]
            at = match.end()
        return "".join(out) + text[at:] if out else text

    def _known(self, text: str, match: re.Match[str]) -> tuple[int, str] | None:
        known = self._ids.get(match.group(1))
        if known is None:
            return None
        key, task_id = known
        start = match.end() - len(key)
        return (start, task_id) if start >= 0 and text[start : match.end()] == key else None

    def _derived(self, text: str, match: re.Match[str]) -> tuple[int, str] | None:
        if self._room is None or self._budget <= 0:
            return None
        self._budget -= 1
        end = begin = match.start()
        while begin > 0 and end - begin < KEPT and text[begin - 1] in _ID_CHARACTERS:
            begin -= 1
        for start in range(begin, end):  # the longest candidate first
            candidate = text[start:end]
            if scoped_key(candidate, self._room) == text[start : match.end()]:
                return start, candidate
        return None
