"""The reference relay: the executable form of docs/protocol.md, used by the demo and the tests.

Agents connect on ``/agent`` (``Authorization: Bearer TOKEN`` checked when a token is set); operators (a chat
bridge, the demo, a test) connect on ``/operator``. The relay:

* acknowledges every agent message that has a ``msg_id`` and forwards it to every operator once (a message sent
  again after a reconnect is acknowledged again but not forwarded twice);
* forwards operator frames to the agent verbatim (signed first when it has the command key), and keeps each command (by ``task_id``) until the agent has said
  anything about that task, sending the unanswered ones again when the agent reconnects;
* routes each command to the agent serving its room (``[agents.ID] rooms`` in the relay's config; with none
  configured, to the one agent connected), by the ``agent_id`` of the agent's AGENT_HELLO;
* refuses a second connection with an ``agent_id`` that is already connected and still answering pings, closing
  it with :data:`CLOSE_DUPLICATE_AGENT` (an old connection that no longer answers is replaced instead);
* answers a command for an agent that is not connected with a RELAY_NOTICE "agent offline, queued" and, if the
  agent is not back within ``offline_wait`` seconds, with a TASK_FINISHED ``FAIL``/``AGENT_OFFLINE`` (0: at once);
* tells the agent's rooms when it has been unreachable for ``offline_notice_after`` seconds and when it is back;
* remembers each agent's catalog digest and approver keys (``state_file``) and tells its rooms when either differs
  from the last time that agent connected;
* logs who connected and what went where.

It is small on purpose; a production relay adds the messenger integration and persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import ssl
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.chat.i18n import Chat
from agent.session.command_auth import sign

logger = logging.getLogger(__name__)

AGENT_PATH = "/agent"
OPERATOR_PATH = "/operator"
#: Frames the relay accepts from either side (larger than the agent's own limit, so tests can exceed that).
RELAY_MAX_FRAME = 16 * 1024 * 1024
SEEN_MSG_IDS = 100_000
#: Close code for a second connection with an agent_id that is already connected (docs/protocol.md).
CLOSE_DUPLICATE_AGENT = 4409
#: How long the relay waits for a new agent connection's AGENT_HELLO before treating it as anonymous.
HELLO_TIMEOUT = 5.0
#: How long the connected agent has to answer a ping before a second connection with its id replaces it.
LIVENESS_TIMEOUT = 5.0
#: The pending-queue key of commands for "whichever agent is connected" (no routing configured).
ANY_AGENT = ""


class RelayConfigError(ValueError):
    """The relay's config file is unreadable or invalid; the message lists every problem."""


class AgentRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The chat rooms this agent (site) serves: their commands go to it, its notices go to them.
    rooms: list[str] = Field(min_length=1)


class RelaySettings(BaseModel):
    """The reference relay's config (TOML, ``agent relay --config FILE``)."""

    model_config = ConfigDict(extra="forbid")

    #: Language and timezone of the relay's own notices.
    language: str = "ko"
    timezone: str = "Asia/Seoul"
    #: How long a command for an agent that is not connected waits for it, in seconds (0: refused at once).
    offline_wait: float = Field(default=300.0, ge=0)
    #: An agent gone this long is announced as unreachable to its rooms, in seconds.
    offline_notice_after: float = Field(default=30.0, ge=0)
    #: Rooms told about an agent that no ``[agents.ID]`` names.
    notice_rooms: list[str] = Field(default_factory=lambda: ["ops"])
    #: Where the relay remembers each agent's catalog digest and approver keys (None: in memory only).
    state_file: Path | None = None
    agents: dict[str, AgentRoute] = Field(default_factory=dict)

    def agent_for(self, room: str) -> str | None:
        """The agent_id serving ``room``; :data:`ANY_AGENT` when no routing is configured; None: nobody."""
        if not self.agents:
            return ANY_AGENT
        return next((agent for agent, route in self.agents.items() if room in route.rooms), None)

    def rooms_of(self, agent_id: str | None) -> list[str]:
        route = self.agents.get(agent_id or "")
        return list(route.rooms) if route else list(self.notice_rooms)


def load_relay_settings(path: Path) -> RelaySettings:
    """Raises: RelayConfigError naming every problem."""
    import tomli

    try:
        raw = tomli.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError) as exc:
        raise RelayConfigError(f"{path}: {exc}") from None
    try:
        settings = RelaySettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise RelayConfigError(f"{path}: {problems}") from None
    rooms = [room for route in settings.agents.values() for room in route.rooms]
    if len(rooms) != len(set(rooms)):
        raise RelayConfigError(f"{path}: a room is mapped to two agents")
    if settings.state_file is not None and not settings.state_file.is_absolute():
        settings.state_file = path.parent / settings.state_file
    return settings


@dataclass
class _AgentState:
    """What the relay knows about one agent_id."""

    connection: ServerConnection | None = None
    offline_since: float | None = None
    announced_offline: bool = False
    notice_timer: asyncio.TimerHandle | None = None
    queued: set[str] = field(default_factory=set)


class Relay:
    """One relay. ``hold_acks`` (tests only) withholds ACKs, as a relay that crashes before acknowledging would."""

    def __init__(
        self,
        agent_token: str | None = None,
        operator_token: str | None = None,
        hold_acks: bool = False,
        command_key: str | None = None,
        settings: RelaySettings | None = None,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.chat = Chat(self.settings.language, self.settings.timezone)
        self.agent_token = agent_token
        self.operator_token = operator_token
        self.hold_acks = hold_acks
        #: With a key, every command from an operator is signed before it goes to the agent (docs/protocol.md).
        self.command_key = command_key
        #: Per agent_id (``""``: an agent that sent no AGENT_HELLO) what the relay knows about it.
        self.agents: dict[str, _AgentState] = {}
        self.operators: set[ServerConnection] = set()
        self.pending: OrderedDict[str, str] = OrderedDict()  # task_id -> command frame
        self._pending_for: dict[str, str] = {}  # task_id -> agent_id it waits for
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: Per agent_id: the catalog digest and approver keys of its last AGENT_HELLO.
        self.known: dict[str, dict[str, Any]] = self._load_known()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.agent_connected = asyncio.Event()
        self._last_to_agent: str | None = None
        self.hello: dict[str, Any] | None = None
        #: How often each msg_id arrived from an agent (a resend counts again).
        self.received: Counter[str] = Counter()
        #: Every frame agents sent, in order (for tests and debugging; bounded).
        self.log: deque[str] = deque(maxlen=100_000)
        self._server: Server | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Listen (with TLS when ``ssl_context`` is given); return the port."""
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._check,
            max_size=RELAY_MAX_FRAME,
            ping_interval=None,
            ssl=ssl_context,
        )
        sock = next(iter(self._server.sockets))
        port = int(sock.getsockname()[1])
        logger.info(
            "relay listening on %s:%d (agents: %s, operators: %s)", host, port, AGENT_PATH, OPERATOR_PATH
        )
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for state in self.agents.values():
            state.connection = None
            if state.notice_timer is not None:
                state.notice_timer.cancel()
        for timer in self._offline_timers.values():
            timer.cancel()
        self._offline_timers.clear()
        self.agent_connected.clear()

    @property
    def agent(self) -> ServerConnection | None:
        """A connected agent (the one, when no routing is configured)."""
        return next((s.connection for s in self.agents.values() if s.connection is not None), None)

    def _connection_for(self, agent_id: str) -> ServerConnection | None:
        if agent_id == ANY_AGENT:
            return self.agent
        state = self.agents.get(agent_id)
        return state.connection if state else None

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        token = {AGENT_PATH: self.agent_token, OPERATOR_PATH: self.operator_token}.get(path, "")
        if token == "":
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown path\n")
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                logger.warning("refused a connection on %s: bad or missing token", path)
                return _unauthorized()
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        path = connection.request.path.split("?", 1)[0] if connection.request else ""
        if path == AGENT_PATH:
            await self._agent_session(connection)
        else:
            await self._operator_session(connection)

    async def _agent_session(self, connection: ServerConnection) -> None:
        first: str | bytes | None = None
        try:
            first = await asyncio.wait_for(connection.recv(), HELLO_TIMEOUT)
        except TimeoutError:
            first = None
        except ConnectionClosed:
            return
        hello = _json(first) if first is not None else None
        agent_id = ""
        if isinstance(hello, dict) and hello.get("event") == "AGENT_HELLO":
            payload = hello.get("payload")
            named = payload.get("agent_id") if isinstance(payload, dict) else None
            agent_id = named if isinstance(named, str) and named else ""
        state = self.agents.setdefault(agent_id, _AgentState())
        if state.connection is not None and state.connection is not connection:
            if await _answers(state.connection):
                logger.error(
                    "refused a second connection for agent_id %r: an agent with that id is connected and "
                    "answering (closed with %d); two agents share one agent_id, or one runs twice",
                    agent_id, CLOSE_DUPLICATE_AGENT,
                )  # fmt: skip
                await connection.close(CLOSE_DUPLICATE_AGENT, "agent_id already connected")
                return
            logger.warning(
                "agent %r reconnected; its old connection no longer answers and is replaced", agent_id
            )
            with contextlib.suppress(ConnectionClosed):
                await state.connection.close(4000, "replaced by a new agent connection")
        state.connection = connection
        if state.notice_timer is not None:
            state.notice_timer.cancel()
            state.notice_timer = None
        self.agent_connected.set()
        logger.info("agent %r connected", agent_id or "(no hello)")
        try:
            if first is not None:
                await self._from_agent(connection, first, agent_id)
            await self._agent_back(agent_id, state, connection)
            async for frame in connection:
                await self._from_agent(connection, frame, agent_id)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1009 and self._last_to_agent is not None:
                # The agent refused the last command as too large: sending it again would only repeat that.
                logger.warning(
                    "the agent refused command %s as too large; not sending it again", self._last_to_agent
                )
                self.pending.pop(self._last_to_agent, None)
        finally:
            if state.connection is connection:
                state.connection = None
                state.offline_since = time.time()
                self._arm_offline_notice(agent_id, state)
            if self.agent is None:
                self.agent_connected.clear()
            logger.info("agent %r disconnected", agent_id or "(no hello)")

    async def _agent_back(self, agent_id: str, state: _AgentState, connection: ServerConnection) -> None:
        """Send the commands that waited for this agent; tell its rooms it is back if they heard it was gone."""
        delivered = 0
        for task_id, pending in list(self.pending.items()):
            if self._pending_for.get(task_id) in (agent_id, ANY_AGENT):
                timer = self._offline_timers.pop(task_id, None)
                if timer is not None:
                    timer.cancel()
                    delivered += 1
                await connection.send(pending)
        if state.announced_offline or delivered:
            state.announced_offline = False
            text = self.chat.ngettext(
                "🟢 Agent {agent} is back; {n} waiting command delivered.",
                "🟢 Agent {agent} is back; {n} waiting commands delivered.", delivered,
            ).format(agent=agent_id or "?", n=delivered)  # fmt: skip
            await self._notice(
                agent_id, {"kind": "agent_back", "agent_id": agent_id, "delivered": delivered}, text
            )

    def _arm_offline_notice(self, agent_id: str, state: _AgentState) -> None:
        if self._server is None:
            return
        loop = asyncio.get_running_loop()

        def announce() -> None:
            state.notice_timer = None
            if state.connection is None:
                state.announced_offline = True
                since = self.chat.when(state.offline_since or time.time())
                text = self.chat._(
                    "🔴 Agent {agent} is unreachable since {when}; commands wait for it."
                ).format(agent=agent_id or "?", when=since)
                self._spawn(self._notice(agent_id, {"kind": "agent_offline", "agent_id": agent_id}, text))

        state.notice_timer = loop.call_later(self.settings.offline_notice_after, announce)

    async def _notice(
        self, agent_id: str, payload: dict[str, Any], text: str, task: str | None = None
    ) -> None:
        """A RELAY_NOTICE to the agent's rooms (or, with ``task``, about one command, to its room)."""
        rooms = [payload["room_id"]] if "room_id" in payload else self.settings.rooms_of(agent_id or None)
        for room in rooms:
            message = {"event": "RELAY_NOTICE", "room_id": room, "task_id": task,
                       "payload": {**payload, "text": text}}  # fmt: skip
            await self._to_operators(json.dumps(message, ensure_ascii=False))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _to_operators(self, text: str) -> None:
        for operator in list(self.operators):
            try:
                await operator.send(text)
            except ConnectionClosed:
                self.operators.discard(operator)

    # -- what changed about an agent ---------------------------------------------------------------------------

    def _load_known(self) -> dict[str, dict[str, Any]]:
        path = self.settings.state_file
        if path is None or not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.error("the relay's state file %s is unreadable; starting without it", path)
            return {}
        return data if isinstance(data, dict) else {}

    def _save_known(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.known, indent=1, sort_keys=True), encoding="utf-8")
        temporary.replace(path)

    async def _identity(self, agent_id: str, payload: dict[str, Any]) -> None:
        """Compare the HELLO's catalog digest and approver keys with the last ones; tell the rooms of a change."""
        digest = payload.get("catalog_sha256")
        keys = payload.get("approver_keys")
        now: dict[str, Any] = {"catalog_sha256": digest if isinstance(digest, str) else None,
               "approver_keys": sorted(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else []}  # fmt: skip
        before = self.known.get(agent_id)
        self.known[agent_id] = now
        self._save_known()
        if before is None or before == now:
            return
        lines = [
            self.chat._("⚠️ Agent {agent} connected with a changed catalog or approver set:").format(
                agent=agent_id
            )
        ]
        if before.get("catalog_sha256") != now["catalog_sha256"]:
            lines.append(self.chat._("• catalog digest {old} → {new}").format(
                old=str(before.get("catalog_sha256"))[:12], new=str(now["catalog_sha256"])[:12]))  # fmt: skip
        added = sorted(set(now["approver_keys"]) - set(before.get("approver_keys") or []))
        removed = sorted(set(before.get("approver_keys") or []) - set(now["approver_keys"]))
        lines += [self.chat._("• approver key added: {key}").format(key=k) for k in added]
        lines += [self.chat._("• approver key removed: {key}").format(key=k) for k in removed]
        lines.append(self.chat._("If nobody here changed it on purpose, check the agent PC."))
        logger.warning("agent %r: catalog or approver keys changed since its last connection", agent_id)
        await self._notice(agent_id, {"kind": "agent_changed", "agent_id": agent_id, "before": before,
                                      "after": now}, "\n".join(lines))  # fmt: skip

    async def _from_agent(self, connection: ServerConnection, frame: str | bytes, agent_id: str = "") -> None:
        self.log.append(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))
        message = _json(frame)
        if message is None:
            logger.warning("agent sent a frame that is not JSON; dropped")
            return
        if not isinstance(message, dict):
            return
        msg_id = message.get("msg_id")
        task_id = message.get("task_id")
        if isinstance(task_id, str):
            self.pending.pop(task_id, None)
        if message.get("event") == "AGENT_HELLO":
            self.hello = message
            if agent_id and isinstance(message.get("payload"), dict):
                await self._identity(agent_id, message["payload"])
        if isinstance(msg_id, str):
            self.received[msg_id] += 1
        if isinstance(msg_id, str) and not self.hold_acks:
            await connection.send(json.dumps({"event": "ACK", "msg_id": msg_id}))
        if isinstance(msg_id, str):
            if msg_id in self.seen:
                return
            self.seen[msg_id] = None
            if len(self.seen) > SEEN_MSG_IDS:
                self.seen.popitem(last=False)
        await self._to_operators(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))

    async def _operator_session(self, connection: ServerConnection) -> None:
        self.operators.add(connection)
        logger.info("operator connected")
        try:
            async for frame in connection:
                await self._from_operator(frame)
        except ConnectionClosed:
            pass
        finally:
            self.operators.discard(connection)

    async def _from_operator(self, frame: str | bytes) -> None:
        message = _json(frame)
        task_id = message.get("task_id") if isinstance(message, dict) else None
        room = message.get("room_id") if isinstance(message, dict) else None
        target = self.settings.agent_for(room) if isinstance(room, str) else ANY_AGENT
        if target is None:
            logger.warning("no agent serves room %r; command %s refused", room, task_id)
            await self._relay_fail(message, "NO_AGENT", self.chat._("No agent serves this room."))
            return
        if self.command_key is not None and isinstance(message, dict) and "action" in message:
            try:
                frame = json.dumps(
                    sign(self.command_key, message, int(time.time()), secrets.token_urlsafe(18))
                )
            except ValueError:
                logger.warning("not forwarding a command that cannot be signed (floating-point numbers)")
                return
        connection = self._connection_for(target)
        if connection is None and isinstance(task_id, str) and self.settings.offline_wait == 0:
            await self._relay_fail(
                message, "AGENT_OFFLINE", self.chat._("The agent is offline; send it again later.")
            )
            return
        if isinstance(task_id, str) and isinstance(frame, str):
            self.pending[task_id] = frame
            self._pending_for[task_id] = target
        self._last_to_agent = task_id if isinstance(task_id, str) else None
        if connection is not None:
            with contextlib.suppress(ConnectionClosed):
                await connection.send(frame)
        elif isinstance(task_id, str) and task_id not in self._offline_timers:
            wait = self.settings.offline_wait
            logger.info(
                "agent %r offline; command %s queued for up to %.0f s", target or "(any)", task_id, wait
            )
            self._offline_timers[task_id] = asyncio.get_running_loop().call_later(
                wait, lambda: self._spawn(self._expire(message, task_id))
            )
            text = self.chat._("⏳ The agent is offline; your command is queued and runs when it is back "
                               "(up to {wait}).").format(wait=self.chat.duration(wait))  # fmt: skip
            await self._notice(target, {"kind": "queued", "agent_id": target, "room_id": room,
                                        "wait": wait}, text, task=task_id)  # fmt: skip

    async def _expire(self, message: Any, task_id: str) -> None:
        """A queued command whose agent did not come back in time: refused, and never sent."""
        self._offline_timers.pop(task_id, None)
        if self.pending.pop(task_id, None) is None:
            return
        self._pending_for.pop(task_id, None)
        logger.warning("command %s expired: its agent did not come back within %.0f s", task_id,
                       self.settings.offline_wait)  # fmt: skip
        await self._relay_fail(
            message,
            "AGENT_OFFLINE",
            self.chat._("The agent stayed offline; the command was not sent. Send it again later."),
        )

    async def _relay_fail(self, message: Any, code: str, text: str) -> None:
        """The relay's own final answer to a command it will not deliver (docs/protocol.md, relay codes)."""
        if not isinstance(message, dict):
            return
        answer = {"event": "TASK_FINISHED", "room_id": message.get("room_id"), "task_id": message.get("task_id"),
                  "msg_id": "relay-" + secrets.token_hex(12), "from_relay": True,
                  "payload": {"status": "FAIL", "data": {}, "error": {"code": code, "message": text},
                              "text": f"❌ {text} ({code})"}}  # fmt: skip
        await self._to_operators(json.dumps(answer, ensure_ascii=False))


async def _answers(connection: ServerConnection) -> bool:
    """Whether an agent connection still answers a ping."""
    try:
        waiter = await connection.ping()
        await asyncio.wait_for(waiter, LIVENESS_TIMEOUT)
    except (ConnectionClosed, TimeoutError, RuntimeError):
        return False
    return True


def _json(frame: str | bytes) -> Any:
    """The frame's JSON value, or None for anything that is not JSON (deep nesting included)."""
    try:
        return json.loads(frame)
    except (ValueError, RecursionError):
        return None


def _unauthorized() -> Response:
    headers = Headers([("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
    return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, b"bad or missing token\n")
