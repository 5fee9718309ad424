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
* keeps each agent's audit head (``payload.audit_head`` of its AGENT_HELLO and final answers, in ``state_file`` too)
  and tells its rooms when a head goes backwards or forks (:func:`audit_head_change`): the anchor off the agent's
  PC that ``agent audit verify`` cannot be, since whoever rewrites the log there may rewrite its head file too;
* logs who connected and what went where.

It is small on purpose; a production relay adds the messenger integration and persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import ssl
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine, Mapping
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
#: The relay keeps the newest frames agents sent up to this many bytes of UTF-8 (:attr:`Relay.log`).
LOG_BYTES = 8 * 1024 * 1024
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

    #: The chat rooms this agent (site) serves: their commands go to it, its notices go to them; a frame it sends
    #: for any other room is dropped and logged.
    rooms: list[str] = Field(min_length=1)
    #: The environment variable holding this agent's own token: a connection presenting it is this agent_id and no
    #: other, and no other token may connect as this agent_id.
    token_env: str | None = None


class OperatorCredential(BaseModel):
    """Who may connect on /operator (a messenger bridge, a person's ``agent chat``): the rooms it reads and speaks
    in, and optionally the user_ids it may speak as."""

    model_config = ConfigDict(extra="forbid")

    #: The environment variable holding its token (the token itself never goes in the config).
    token_env: str
    #: The rooms whose frames it receives and to which it may send commands; ``["*"]``: every room.
    rooms: list[str] = Field(min_length=1)
    #: The user_ids its commands may carry (None: any; a bridge vouches for its messenger's users).
    users: list[str] | None = None

    def sees(self, room: object) -> bool:
        return "*" in self.rooms or (isinstance(room, str) and room in self.rooms)


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
    #: Where the relay remembers each agent's catalog digest, approver keys and audit head (None: in memory only).
    state_file: Path | None = None
    agents: dict[str, AgentRoute] = Field(default_factory=dict)
    #: Operator credentials by name (none: the one $AGENT_OPERATOR_TOKEN, every room).
    operators: dict[str, OperatorCredential] = Field(default_factory=dict)
    #: A connection with this many frames, or bytes, waiting to be written does not read: it is dropped (with the
    #: reason logged, and told to an operator credential when it connects again), never allowed to hold up others.
    peer_queue_frames: int = Field(default=10_000, ge=1)
    peer_queue_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    #: Commands waiting for one agent (offline, or not yet answered): at most this many, and bytes; beyond, the
    #: room is answered RELAY_FULL.
    pending_per_agent: int = Field(default=5000, ge=1)
    pending_bytes_per_agent: int = Field(default=64 * 1024 * 1024, ge=1024)

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


class _Peer:
    """One connection's outgoing side: a bounded queue and the one task that writes it.

    Nothing the relay does waits on a peer: :meth:`put` queues or, when the peer has let ``max_frames`` frames or
    ``max_bytes`` bytes pile up (it does not read), drops the connection with the reason logged. So one chat client
    that never reads cannot hold up another room's answers or an agent's ACKs (it froze the whole relay before).
    """

    def __init__(self, ws: ServerConnection, name: str, max_frames: int, max_bytes: int,
                 on_drop: Callable[[str, int, int], None] | None = None,
                 drop_when_full: bool = True) -> None:  # fmt: skip
        self.ws = ws
        #: False (an agent: slow, not gone): a frame over the bounds is refused (put returns False), and the
        #: connection kept; the caller answers the room.
        self.drop_when_full = drop_when_full
        self.name = name
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._on_drop = on_drop
        self.dropped: str | None = None
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def put(self, frame: str) -> bool:
        """Queue ``frame``; False when the peer is gone or was just dropped for not reading."""
        if self.dropped is not None:
            return False
        size = len(frame)
        if len(self._queue) >= self.max_frames or self._bytes + size > self.max_bytes:
            if self.drop_when_full:
                self.drop(f"it does not read: {len(self._queue)} frames ({self._bytes} bytes) wait for it")
            else:
                logger.warning("%s reads slower than it is sent to: %d frames (%d bytes) wait; one refused",
                               self.name, len(self._queue), self._bytes)  # fmt: skip
            return False
        self._queue.append(frame)
        self._bytes += size
        self._wake.set()
        return True

    def drop(self, reason: str) -> None:
        if self.dropped is not None:
            return
        self.dropped = reason
        logger.warning("dropped %s: %s", self.name, reason)
        waiting, size = len(self._queue), self._bytes
        self._queue.clear()
        self._writer.cancel()
        # Policy violation; the closing handshake waits at most close_timeout, then the TCP connection is cut.
        asyncio.get_running_loop().create_task(self.ws.close(1008, reason[:120]))
        if self._on_drop is not None:
            self._on_drop(reason, waiting, size)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    frame = self._queue.popleft()
                    self._bytes -= len(frame)
                    await self.ws.send(frame)

    def close(self) -> None:
        self._writer.cancel()


@dataclass
class _Operator:
    """An operator connection: what it may see and say."""

    peer: _Peer
    credential: OperatorCredential


#: An operator connection of the single $AGENT_OPERATOR_TOKEN (or of a relay with no operator token): every room.
EVERY_ROOM = OperatorCredential(token_env="AGENT_OPERATOR_TOKEN", rooms=["*"])  # noqa: S106 - a variable's name


def relay_problems(settings: RelaySettings, environ: Mapping[str, str], host: str) -> list[str]:
    """Everything in the relay's config and environment that would keep a part of it from working (``agent relay
    --check``): a credential whose token is not set, no authentication on an address others can reach, an operator
    room no agent serves, a state file that cannot be written."""
    problems: list[str] = []
    for agent, route in settings.agents.items():
        if route.token_env and not environ.get(route.token_env):
            problems.append(
                f"agents.{agent}.token_env: ${route.token_env} is not set: that agent cannot connect"
            )
    for name, credential in settings.operators.items():
        if not environ.get(credential.token_env):
            problems.append(f"operators.{name}.token_env: ${credential.token_env} is not set: nobody can connect "
                            "with it")  # fmt: skip
        served = {room for route in settings.agents.values() for room in route.rooms}
        stray = [r for r in credential.rooms if r != "*" and settings.agents and r not in served]
        if stray:
            problems.append(
                f"operators.{name}.rooms: no agent serves {', '.join(stray)} (commands there get NO_AGENT)"
            )
    loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if not loopback:
        if not environ.get("AGENT_RELAY_TOKEN") and not any(r.token_env for r in settings.agents.values()):
            problems.append(f"listening on {host} with no agent token ($AGENT_RELAY_TOKEN or [agents.ID] "
                            "token_env): anyone who reaches it could pose as an agent")  # fmt: skip
        if not environ.get("AGENT_OPERATOR_TOKEN") and not settings.operators:
            problems.append(f"listening on {host} with no operator credential ($AGENT_OPERATOR_TOKEN or "
                            "[operators.NAME]): anyone who reaches it could send commands")  # fmt: skip
    if settings.state_file is not None:
        folder = settings.state_file.parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)  # it makes the rest
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            problems.append(f"state_file: {folder} is not a folder the relay can write or make")
    return problems


@dataclass
class _AgentState:
    """What the relay knows about one agent_id."""

    connection: ServerConnection | None = None
    peer: _Peer | None = None
    #: The largest frame the agent takes (its AGENT_HELLO's ``max_frame``; the protocol's 1 MiB until it says).
    max_frame: int = 1024 * 1024
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
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings or RelaySettings()
        environ = environ or {}
        #: Token → the agent_id it is bound to ([agents.ID] token_env).
        self._agent_tokens = {environ[route.token_env]: agent for agent, route in self.settings.agents.items()
                              if route.token_env and environ.get(route.token_env)}  # fmt: skip
        #: Token → the operator credential it proves ([operators.NAME]).
        self._operator_tokens = {environ[c.token_env]: (name, c) for name, c in self.settings.operators.items()
                                 if environ.get(c.token_env)}  # fmt: skip
        for name, credential in self.settings.operators.items():
            if not environ.get(credential.token_env):
                logger.warning("operator credential %r: $%s is not set; nobody can connect with it", name,
                               credential.token_env)  # fmt: skip
        #: Who each open connection is, from its token (set while the handshake is checked).
        self._who: dict[ServerConnection, tuple[str, OperatorCredential | str | None]] = {}
        #: Why an operator credential's last connection was dropped (told when it connects again).
        self._drop_reasons: dict[str, tuple[str, int, int]] = {}
        self._log_bytes = 0
        self.chat = Chat(self.settings.language, self.settings.timezone)
        self.agent_token = agent_token
        self.operator_token = operator_token
        self.hold_acks = hold_acks
        #: With a key, every command from an operator is signed before it goes to the agent (docs/protocol.md).
        self.command_key = command_key
        #: Per agent_id (``""``: an agent that sent no AGENT_HELLO) what the relay knows about it.
        self.agents: dict[str, _AgentState] = {}
        self.operators: dict[ServerConnection, _Operator] = {}
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
        #: Every frame agents sent, in order (for tests and debugging; the newest LOG_BYTES).
        self.log: deque[str] = deque()
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
            if state.peer is not None:
                state.peer.close()
                state.peer = None
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

    def _state_for(self, agent_id: str) -> _AgentState | None:
        """The connected agent serving ``agent_id`` (the one connected, for :data:`ANY_AGENT`)."""
        if agent_id == ANY_AGENT:
            return next((s for s in self.agents.values() if s.connection is not None), None)
        state = self.agents.get(agent_id)
        return state if state is not None and state.connection is not None else None

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Who connects, from the path and the token: refused (401) unless a configured token matches."""
        path = request.path.split("?", 1)[0]
        if path not in (AGENT_PATH, OPERATOR_PATH):
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown path\n")
        given = request.headers.get("Authorization", "")
        if path == AGENT_PATH:
            tokens: dict[str, Any] = dict(self._agent_tokens)
            if self.agent_token is not None:
                tokens[self.agent_token] = None  # shared: any agent_id without a token of its own
            open_ = not tokens
        else:
            tokens = dict(self._operator_tokens)
            if self.operator_token is not None:
                tokens[self.operator_token] = ("operator", EVERY_ROOM)
            open_ = not tokens
        if open_:  # no token configured: not checked (tests, the demo on loopback)
            self._who[connection] = ("open", None if path == AGENT_PATH else EVERY_ROOM)
            return None
        for token, who in tokens.items():  # every one compared, in constant time each
            if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                self._who[connection] = who if isinstance(who, tuple) else ("agent", who)
                return None
        logger.warning("refused a connection on %s: bad or missing token", path)
        return _unauthorized()

    async def _handle(self, connection: ServerConnection) -> None:
        path = connection.request.path.split("?", 1)[0] if connection.request else ""
        _, who = self._who.get(connection, ("open", None))
        try:
            if path == AGENT_PATH:
                await self._agent_session(connection, who if isinstance(who, str) else None)
            else:
                name = self._who.get(connection, ("operator", None))[0]
                await self._operator_session(connection, name, who if isinstance(who, OperatorCredential) else
                                             EVERY_ROOM)  # fmt: skip
        finally:
            self._who.pop(connection, None)

    def _peer(
        self,
        connection: ServerConnection,
        name: str,
        on_drop: Callable[[str, int, int], None] | None = None,
        agent: bool = False,
    ) -> _Peer:
        return _Peer(connection, name, self.settings.peer_queue_frames, self.settings.peer_queue_bytes, on_drop,
                     drop_when_full=not agent)  # fmt: skip

    async def _admit(
        self, connection: ServerConnection, bound: str | None
    ) -> tuple[str, _AgentState, str | bytes | None] | None:
        """Read the AGENT_HELLO, check who the connection may be, and make it the agent's connection: its id, its
        state and the first frame; None when it was refused (and closed)."""
        first: str | bytes | None = None
        try:
            first = await asyncio.wait_for(connection.recv(), HELLO_TIMEOUT)
        except TimeoutError:
            first = None
        except ConnectionClosed:
            return None
        hello = _json(first) if first is not None else None
        payload = (
            hello.get("payload") if isinstance(hello, dict) and hello.get("event") == "AGENT_HELLO" else None
        )
        payload = payload if isinstance(payload, dict) else {}
        named = payload.get("agent_id")
        agent_id = named if isinstance(named, str) and named else ""
        refusal = self._agent_identity_problem(agent_id, bound)
        if refusal is not None:
            logger.error("refused an agent connection: %s", refusal)
            await connection.close(1008, refusal[:120])
            return None
        state = self.agents.setdefault(agent_id, _AgentState())
        if state.connection is not None and state.connection is not connection:
            if await _answers(state.connection):
                logger.error(
                    "refused a second connection for agent_id %r: an agent with that id is connected and "
                    "answering (closed with %d); two agents share one agent_id, or one runs twice",
                    agent_id, CLOSE_DUPLICATE_AGENT,
                )  # fmt: skip
                await connection.close(CLOSE_DUPLICATE_AGENT, "agent_id already connected")
                return None
            logger.warning(
                "agent %r reconnected; its old connection no longer answers and is replaced", agent_id
            )
            with contextlib.suppress(ConnectionClosed):
                await state.connection.close(4000, "replaced by a new agent connection")
        if state.peer is not None:
            state.peer.close()
        state.connection = connection
        state.peer = self._peer(connection, f"agent {agent_id or '(no hello)'}", agent=True)
        max_frame = payload.get("max_frame")
        if isinstance(max_frame, int) and not isinstance(max_frame, bool) and max_frame > 0:
            state.max_frame = max_frame
        if state.notice_timer is not None:
            state.notice_timer.cancel()
            state.notice_timer = None
        self.agent_connected.set()
        logger.info("agent %r connected", agent_id or "(no hello)")
        return agent_id, state, first

    async def _agent_session(self, connection: ServerConnection, bound: str | None) -> None:
        """``bound``: the agent_id its token belongs to (None: a shared token, or none configured)."""
        admitted = await self._admit(connection, bound)
        if admitted is None:
            return
        agent_id, state, first = admitted
        try:
            if first is not None:
                await self._from_agent(state.peer, first, agent_id)
            await self._agent_back(agent_id, state)
            async for frame in connection:
                await self._from_agent(state.peer, frame, agent_id)
                await asyncio.sleep(
                    0
                )  # let the writers run: a queue measures a peer not reading, not a burst
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
                if state.peer is not None:
                    state.peer.close()
                state.peer = None
                state.offline_since = time.time()
                self._arm_offline_notice(agent_id, state)
            if self.agent is None:
                self.agent_connected.clear()
            logger.info("agent %r disconnected", agent_id or "(no hello)")

    def _agent_identity_problem(self, agent_id: str, bound: str | None) -> str | None:
        """Why a connection may not be ``agent_id`` (None: it may)."""
        if bound is not None and agent_id != bound:
            return f"its token belongs to agent {bound!r}, but it says it is {agent_id or '(no hello)'!r}"
        if bound is None and agent_id in self.settings.agents and self.settings.agents[agent_id].token_env:
            return f"agent {agent_id!r} has a token of its own; a shared token cannot connect as it"
        return None

    async def _agent_back(self, agent_id: str, state: _AgentState) -> None:
        """Send the commands that waited for this agent; tell its rooms it is back if they heard it was gone."""
        delivered = 0
        for task_id, pending in list(self.pending.items()):
            if self._pending_for.get(task_id) in (agent_id, ANY_AGENT):
                timer = self._offline_timers.pop(task_id, None)
                if timer is not None:
                    timer.cancel()
                    delivered += 1
                if state.peer is not None:
                    state.peer.put(pending)
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
            self._to_operators(json.dumps(message, ensure_ascii=False), room)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _to_operators(self, text: str, room: object) -> None:
        """Queue ``text`` for every operator connection that sees ``room`` (a frame without a room: only those
        that see every room). Never waits: a connection that does not read is dropped, not waited for."""
        for operator in list(self.operators.values()):
            if operator.credential.sees(room):
                operator.peer.put(text)

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
        self.known[agent_id] = {**(before or {}), **now}
        self._save_known()
        if before is None or all(before.get(k) == v for k, v in now.items()):
            return
        before = {k: before.get(k) for k in now}
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

    async def _audit_head(self, agent_id: str, payload: dict[str, Any], fresh: bool) -> None:
        """Keep the agent's audit head (``payload.audit_head``); tell its rooms when it went backwards or forked.

        ``fresh``: the head of an AGENT_HELLO, read from the log at connect. A final answer's head is as old as the
        answer (one kept in the outbox over a reconnect comes after a newer HELLO): it moves the kept head forward
        only, and counts only for a fork.
        """
        now = _valid_head(payload.get("audit_head"))
        if now is None or not agent_id:
            return
        known = self.known.setdefault(agent_id, {})
        before = _valid_head(known.get("audit_head"))
        change = audit_head_change(before, now, fresh)
        if fresh or before is None or now["seq"] > before["seq"]:
            known["audit_head"] = now
            self._save_known()
        if change is None or before is None:
            return
        if change == "backwards":
            text = self.chat._(
                "⚠️ The audit log of agent {agent} went backwards: it now ends at entry {seq}, but it had reported "
                "entry {before}. Entries were removed or the log was replaced: check the agent PC (agent audit verify)."
            ).format(agent=agent_id, seq=now["seq"], before=before["seq"])
        else:
            text = self.chat._(
                "⚠️ The audit log of agent {agent} forked: its entry {seq} is not the one it reported before. The log "
                "was rewritten: check the agent PC (agent audit verify)."
            ).format(agent=agent_id, seq=now["seq"])
        logger.warning("agent %r: audit head %s (seq %d -> %d)", agent_id, change, before["seq"], now["seq"])
        await self._notice(agent_id, {"kind": "audit_head", "agent_id": agent_id, "change": change,
                                      "before": before, "after": now}, text)  # fmt: skip

    def _keep_log(self, text: str) -> None:
        self.log.append(text)
        self._log_bytes += _size(text)
        while self._log_bytes > LOG_BYTES and len(self.log) > 1:
            self._log_bytes -= _size(self.log.popleft())

    async def _from_agent(self, peer: _Peer | None, frame: str | bytes, agent_id: str = "") -> None:
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        self._keep_log(text)
        message = _json(frame)
        if message is None:
            logger.warning("agent sent a frame that is not JSON; dropped")
            return
        if not isinstance(message, dict):
            return
        room = message.get("room_id")
        if self.settings.agents and room is not None and room not in self.settings.rooms_of(agent_id or None):
            logger.warning("agent %r sent a %s for room %r, which is not routed to it; dropped (forged or "
                           "misconfigured)", agent_id or "(no hello)", message.get("event"), room)  # fmt: skip
            return
        msg_id = message.get("msg_id")
        task_id = message.get("task_id")
        if isinstance(task_id, str):
            self.pending.pop(task_id, None)
            self._pending_for.pop(task_id, None)  # (it grew by one entry per command, forever)
        if message.get("event") == "AGENT_HELLO":
            self.hello = message
            if agent_id and isinstance(message.get("payload"), dict):
                await self._identity(agent_id, message["payload"])
        if message.get("event") in ("AGENT_HELLO", "TASK_FINISHED") and isinstance(
            message.get("payload"), dict
        ):
            await self._audit_head(agent_id, message["payload"], fresh=message.get("event") == "AGENT_HELLO")
        if isinstance(msg_id, str):
            self.received[msg_id] += 1
            if len(self.received) > SEEN_MSG_IDS:  # the oldest first (a dict keeps insertion order)
                del self.received[next(iter(self.received))]
        if isinstance(msg_id, str) and not self.hold_acks and peer is not None:
            peer.put(json.dumps({"event": "ACK", "msg_id": msg_id}))
        if isinstance(msg_id, str):
            if msg_id in self.seen:
                return
            self.seen[msg_id] = None
            if len(self.seen) > SEEN_MSG_IDS:
                self.seen.popitem(last=False)
        self._to_operators(text, room)

    async def _operator_session(self, connection: ServerConnection, name: str,
                                credential: OperatorCredential) -> None:  # fmt: skip
        def dropped(reason: str, waiting: int, size: int) -> None:
            self._drop_reasons[name] = (reason, waiting, size)

        peer = self._peer(connection, f"operator {name!r}", dropped)
        operator = _Operator(peer, credential)
        self.operators[connection] = operator
        logger.info("operator %r connected (rooms: %s)", name, ", ".join(credential.rooms))
        before = self._drop_reasons.pop(name, None)
        if before is not None:
            reason, waiting, size = before
            text = self.chat._(
                "⚠️ The relay dropped this client's previous connection: it did not read ({n} messages, {size} "
                "waiting). What was sent to it meanwhile was lost; 'history' shows the results."
            ).format(n=waiting, size=self.chat.size(size))
            rooms: list[str | None] = [r for r in credential.rooms if r != "*"] or [None]
            for room in rooms:  # each room it serves is told (an every-room credential: once, without a room)
                peer.put(json.dumps({"event": "RELAY_NOTICE", "room_id": room, "task_id": None,
                                     "payload": {"kind": "dropped_before", "reason": reason, "text": text}},
                                    ensure_ascii=False))  # fmt: skip
        try:
            async for frame in connection:
                await self._from_operator(frame, operator)
                await asyncio.sleep(0)  # as for agents: the writers run between frames
        except ConnectionClosed:
            pass
        finally:
            peer.close()
            self.operators.pop(connection, None)

    def _may_send(self, message: Any, operator: _Operator | None) -> str | None:
        """Why ``operator`` may not send ``message`` (None: it may)."""
        if operator is None or not isinstance(message, dict):
            return None
        room, user = message.get("room_id"), message.get("user_id")
        credential = operator.credential
        if not credential.sees(room):
            return self.chat._("This connection may not speak in that room.")
        if credential.users is not None and user not in credential.users:
            return self.chat._("This connection may not speak as that user.")
        return None

    async def _from_operator(self, frame: str | bytes, operator: _Operator | None = None) -> None:
        message = _json(frame)
        task_id = message.get("task_id") if isinstance(message, dict) else None
        room = message.get("room_id") if isinstance(message, dict) else None
        refused = self._may_send(message, operator)
        if refused is not None and operator is not None:
            logger.warning("operator connection refused: command %s for room %r as user %r: %s", task_id, room,
                           message.get("user_id"), refused)  # fmt: skip
            operator.peer.put(self._fail_frame(message, "NOT_ALLOWED", refused))
            return
        target = self.settings.agent_for(room) if isinstance(room, str) else ANY_AGENT
        if target is None:
            logger.warning("no agent serves room %r; command %s refused", room, task_id)
            await self._relay_fail(message, "NO_AGENT", self.chat._("No agent serves this room."))
            return
        if self.command_key is not None and isinstance(message, dict) and "action" in message:
            # Signed for this agent: another agent sharing the key refuses it (docs/protocol.md, "Signed commands").
            addressed = {**message, "agent_id": target} if target else message
            try:
                frame = json.dumps(
                    sign(self.command_key, addressed, int(time.time()), secrets.token_urlsafe(18))
                )
            except ValueError:
                logger.warning("not forwarding a command that cannot be signed (floating-point numbers)")
                return
        if isinstance(frame, bytes):
            frame = frame.decode("utf-8", "replace")
        if await self._refused_before_queueing(message, target, frame):
            return
        state = self._state_for(target)
        if state is None and isinstance(task_id, str) and self.settings.offline_wait == 0:
            await self._relay_fail(
                message, "AGENT_OFFLINE", self.chat._("The agent is offline; send it again later.")
            )
            return
        if isinstance(task_id, str):
            self.pending[task_id] = frame
            self._pending_for[task_id] = target
        self._last_to_agent = task_id if isinstance(task_id, str) else None
        if state is not None and state.peer is not None:
            if not state.peer.put(frame):  # the agent reads slower than commands come: this one is refused
                if isinstance(task_id, str):
                    self.pending.pop(task_id, None)
                    self._pending_for.pop(task_id, None)
                await self._relay_fail(message, "RELAY_FULL", self.chat._(
                    "The agent is busy reading earlier commands; send this one again shortly."))  # fmt: skip
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

    async def _refused_before_queueing(self, message: Any, target: str, frame: str) -> bool:
        """A command the agent could not take (over its frame limit) or the relay cannot keep (the agent's queue is
        full): answered to the room, never queued or sent again."""
        if not isinstance(message, dict) or "action" not in message:
            return False
        known = self._state_for(target) or self.agents.get(target)
        limit = known.max_frame if known is not None else _AgentState.max_frame
        size = _size(frame)
        if size > limit:
            logger.warning("command %s is %d bytes, over the agent's %d; refused", message.get("task_id"), size,
                           limit)  # fmt: skip
            await self._relay_fail(message, "TOO_LARGE", self.chat._(
                "The command is too large for the agent ({size} bytes; it takes at most {limit})."
            ).format(size=size, limit=limit))  # fmt: skip
            return True
        waiting = [t for t, agent in self._pending_for.items() if agent == target and t in self.pending]
        waiting_bytes = sum(len(self.pending[t]) for t in waiting)
        if (
            len(waiting) >= self.settings.pending_per_agent
            or waiting_bytes + size > self.settings.pending_bytes_per_agent
        ):
            logger.warning("agent %r has %d commands (%d bytes) waiting; command %s refused", target or "(any)",
                           len(waiting), waiting_bytes, message.get("task_id"))  # fmt: skip
            await self._relay_fail(message, "RELAY_FULL", self.chat._(
                "Too many commands wait for this agent; send it again once they are answered."))  # fmt: skip
            return True
        return False

    def _fail_frame(self, message: Any, code: str, text: str) -> str:
        answer = {"event": "TASK_FINISHED", "room_id": message.get("room_id"), "task_id": message.get("task_id"),
                  "msg_id": "relay-" + secrets.token_hex(12), "from_relay": True,
                  "payload": {"status": "FAIL", "data": {}, "error": {"code": code, "message": text},
                              "text": f"❌ {text} ({code})"}}  # fmt: skip
        return json.dumps(answer, ensure_ascii=False)

    async def _relay_fail(self, message: Any, code: str, text: str) -> None:
        """The relay's own final answer to a command it will not deliver (docs/protocol.md, relay codes)."""
        if not isinstance(message, dict):
            return
        self._to_operators(self._fail_frame(message, code, text), message.get("room_id"))


def _valid_head(value: Any) -> dict[str, Any] | None:
    """An audit head as the protocol has it (``{"seq": int >= 0, "hash": str}``), or None."""
    if not isinstance(value, dict):
        return None
    seq, digest = value.get("seq"), value.get("hash")
    if type(seq) is not int or seq < 0 or not isinstance(digest, str) or not 0 < len(digest) <= 128:
        return None
    return {"seq": seq, "hash": digest}


def audit_head_change(
    before: Mapping[str, Any] | None, now: Mapping[str, Any], fresh: bool = True
) -> str | None:
    """What a new audit head says about the chain, given the last one kept (``before``).

    Returns:
        ``"backwards"``: a fresh head (a HELLO's) of an earlier entry than ``before``: entries were removed or the
        log replaced. ``"forked"``: the same entry as ``before`` with another hash: rewritten. None otherwise: the
        first head, the same one, a later entry, or an older answer's head (``fresh`` false) of an earlier entry.
        A rewrite that ends past the kept head shows to ``agent audit verify`` on the PC, not to the relay.
    """
    if before is None:
        return None
    if now["seq"] < before["seq"]:
        return "backwards" if fresh else None
    if now["seq"] == before["seq"] and not hmac.compare_digest(
        str(now["hash"]).encode(), str(before["hash"]).encode()
    ):
        return "forked"
    return None


async def _answers(connection: ServerConnection) -> bool:
    """Whether an agent connection still answers a ping."""
    try:
        waiter = await connection.ping()
        await asyncio.wait_for(waiter, LIVENESS_TIMEOUT)
    except (ConnectionClosed, TimeoutError, RuntimeError):
        return False
    return True


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _json(frame: str | bytes) -> Any:
    """The frame's JSON value, or None for anything that is not JSON (deep nesting included)."""
    try:
        return json.loads(frame)
    except (ValueError, RecursionError):
        return None


def _unauthorized() -> Response:
    headers = Headers([("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
    return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, b"bad or missing token\n")
