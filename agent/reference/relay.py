"""The reference relay: the executable form of docs/protocol.md, used by the demo and the tests.

Agents connect on ``/agent`` (``Authorization: Bearer TOKEN`` checked when a token is set); operators (a chat
bridge, the demo, a test) connect on ``/operator``. The relay:

* acknowledges every agent message that has a ``msg_id`` and forwards it to every operator once (a message sent
  again after a reconnect is acknowledged again but not forwarded twice);
* forwards operator frames to the agent verbatim (signed first when it has the command key), and keeps each command (by ``task_id``) until the agent has said
  anything about that task, sending the unanswered ones again when the agent reconnects;
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
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.command_auth import sign

logger = logging.getLogger(__name__)

AGENT_PATH = "/agent"
OPERATOR_PATH = "/operator"
#: Frames the relay accepts from either side (larger than the agent's own limit, so tests can exceed that).
RELAY_MAX_FRAME = 16 * 1024 * 1024
SEEN_MSG_IDS = 100_000


class Relay:
    """One relay. ``hold_acks`` (tests only) withholds ACKs, as a relay that crashes before acknowledging would."""

    def __init__(
        self,
        agent_token: str | None = None,
        operator_token: str | None = None,
        hold_acks: bool = False,
        command_key: str | None = None,
    ) -> None:
        self.agent_token = agent_token
        self.operator_token = operator_token
        self.hold_acks = hold_acks
        #: With a key, every command from an operator is signed before it goes to the agent (docs/protocol.md).
        self.command_key = command_key
        self.agent: ServerConnection | None = None
        self.operators: set[ServerConnection] = set()
        self.pending: OrderedDict[str, str] = OrderedDict()  # task_id -> command frame
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
        self.agent = None
        self.agent_connected.clear()

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
        if self.agent is not None:
            await self.agent.close(4000, "replaced by a new agent connection")
        self.agent = connection
        self.agent_connected.set()
        logger.info("agent connected")
        for pending in list(self.pending.values()):
            await connection.send(pending)
        try:
            async for frame in connection:
                await self._from_agent(connection, frame)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1009 and self._last_to_agent is not None:
                # The agent refused the last command as too large: sending it again would only repeat that.
                logger.warning(
                    "the agent refused command %s as too large; not sending it again", self._last_to_agent
                )
                self.pending.pop(self._last_to_agent, None)
        finally:
            if self.agent is connection:
                self.agent = None
                self.agent_connected.clear()
            logger.info("agent disconnected")

    async def _from_agent(self, connection: ServerConnection, frame: str | bytes) -> None:
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
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        for operator in list(self.operators):
            try:
                await operator.send(text)
            except ConnectionClosed:
                self.operators.discard(operator)

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
        if self.command_key is not None and isinstance(message, dict) and "action" in message:
            try:
                frame = json.dumps(
                    sign(self.command_key, message, int(time.time()), secrets.token_urlsafe(18))
                )
            except ValueError:
                logger.warning("not forwarding a command that cannot be signed (floating-point numbers)")
                return
        if isinstance(task_id, str) and isinstance(frame, str):
            self.pending[task_id] = frame
        self._last_to_agent = task_id if isinstance(task_id, str) else None
        if self.agent is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.agent.send(frame)


def _json(frame: str | bytes) -> Any:
    """The frame's JSON value, or None for anything that is not JSON (deep nesting included)."""
    try:
        return json.loads(frame)
    except (ValueError, RecursionError):
        return None


def _unauthorized() -> Response:
    headers = Headers([("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
    return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, b"bad or missing token\n")
