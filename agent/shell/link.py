"""The reverse link: the agent dials out to the relay over a WebSocket and keeps dialling, forever.

The only module that imports websockets. On every connect it sends AGENT_HELLO, then every unacknowledged message
of the outbox in order, then new ones as they are queued; frames from the relay go to the ``on_frame`` callback.
Every failure is logged at ERROR with its cause and retried, whatever it is: with jittered exponential backoff
(:func:`backoff`); a connection that stayed up a while is retried at once (with a little jitter), so a relay
restart costs well under two seconds; an authentication refusal, an untrusted certificate or a relay that refuses
a second agent with the same agent_id (close 4409) is retried at the longest delay, never in a tight loop. The link never returns before ``stop`` is set: if it did, the agent would be
headless, so :class:`agent.shell.app.App` treats that as fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent.session.protocol import MAX_FRAME, encode
from agent.session.wire import WireProtocol
from agent.state.outbox import Outbox

logger = logging.getLogger(__name__)

#: A connection that lasted this long resets the backoff (a relay that accepts and drops at once does not).
STABLE_AFTER = 5.0
#: First delay after a connection that was stable drops: a relay restart is back within ~2 s.
RETRY_AFTER_STABLE = 0.2
#: WebSocket close code the agent uses when it stops (1001: going away).
CLOSE_GOING_AWAY = 1001
#: Close code of a relay that refuses this connection because an agent with the same agent_id is connected
#: (docs/protocol.md). Retried at the longest backoff, never in a tight loop: two agents sharing an id must not
#: knock each other off.
CLOSE_DUPLICATE_AGENT = 4409


def backoff(
    initial: float = 0.5, cap: float = 60.0, factor: float = 2.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Delays before each reconnection attempt: full jitter over an exponentially growing bound.

    The first is at most ``initial`` seconds; the bound doubles up to ``cap``. Pure; ``rng`` for tests.
    """
    rand = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    bound = initial
    while True:
        yield rand.uniform(bound / 2, bound)
        bound = min(cap, bound * factor)


class Link:
    """Dials ``url`` and carries messages both ways until :meth:`run`'s stop event is set."""

    def __init__(
        self,
        url: str,
        outbox: Outbox,
        on_frame: Callable[[str | bytes], None],
        hello: Callable[[], dict[str, Any]],
        queued: asyncio.Event,
        acked: asyncio.Event,
        token: str | None = None,
        ca_file: Path | None = None,
        proxy: str | None = None,
        ping_interval: float = 20.0,
        open_timeout: float = 10.0,
        max_backoff: float = 60.0,
        max_frame: int = MAX_FRAME,
        protocol: WireProtocol | None = None,
        after_frame: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.outbox = outbox
        self._on_frame = on_frame
        #: Awaited after each frame is handed over, before the next is read (the runtime's head start for the
        #: commands that frame started: :meth:`agent.shell.runtime.Runtime.head_start`).
        self._after_frame = after_frame
        self._hello = hello
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl: ssl.SSLContext | None = None
        if url.startswith("wss://"):
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._proxy = proxy
        self._ping_interval = ping_interval
        self._open_timeout = open_timeout
        self._max_backoff = max_backoff
        self._max_frame = max_frame
        #: What the relay speaks (:mod:`agent.session.wire`): whether a HELLO opens the connection, how a stored message goes
        #: on the wire, and whether the relay ACKs (if not, what was sent counts as delivered once a ping sent after
        #: it is answered).
        self._protocol = protocol or WireProtocol()
        self._wakeup = queued
        self._acked = acked
        #: Set while a connection is open (for tests, the benchmark and shutdown).
        self.connected = asyncio.Event()
        self.connects = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect; return once ``stop`` is set."""
        delays = backoff(cap=self._max_backoff)
        while not stop.is_set():
            started = time.monotonic()
            delay: float | None = None
            try:
                async with connect(
                    self.url,
                    additional_headers=self._headers,
                    ssl=self._ssl,
                    proxy=self._proxy,
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    max_size=self._max_frame,
                    close_timeout=2,
                ) as ws:
                    self.connects += 1
                    logger.info("connected to the relay")
                    await self._serve(ws, stop)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    logger.error(
                        "the relay refused the agent's credentials (HTTP %d); check AGENT_RELAY_TOKEN", status
                    )
                    delay = self._max_backoff
                else:  # 503 and every other status: a relay that is not ready; the normal backoff
                    logger.error("the relay answered HTTP %d to the handshake", status)
            except ssl.SSLCertVerificationError as exc:
                logger.error(
                    "the relay's TLS certificate is not trusted (%s); check relay.ca_file", exc.verify_message
                )
                delay = self._max_backoff
            except ConnectionClosed as exc:
                if exc.sent is not None and exc.sent.code == 1009:
                    logger.error(
                        "the relay sent a frame over %d bytes; connection closed (1009)", self._max_frame
                    )
                elif exc.rcvd is not None and refused_by_policy(exc.rcvd.code):
                    hint = (
                        "; another agent with the same agent_id is connected: give each agent its own agent_id"
                        if exc.rcvd.code == CLOSE_DUPLICATE_AGENT
                        else ""
                    )
                    logger.error(
                        "the relay refused this connection (close code %d: %s)%s; retrying in %.0f s",
                        exc.rcvd.code, exc.rcvd.reason[:200] or "no reason given", hint, self._max_backoff,
                    )  # fmt: skip
                    delay = self._max_backoff
                else:
                    logger.error("relay connection lost: %s", _cause(exc))
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                logger.error("relay connection failed: %s", _cause(exc))
            except Exception as exc:
                logger.error("relay connection failed unexpectedly: %s", _cause(exc), exc_info=True)
            finally:
                self.connected.clear()
            if stop.is_set():
                break
            if time.monotonic() - started > STABLE_AFTER:
                # Up a while: the relay probably restarted. Try again at once (jittered), then back off.
                delays = backoff(initial=RETRY_AFTER_STABLE, cap=self._max_backoff)
            wait = delay if delay is not None else next(delays)
            logger.info("reconnecting in %.1f s", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _serve(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        if self._protocol.says_hello:
            await ws.send(encode(self._hello()))
        self.connected.set()
        writer = asyncio.create_task(self._write(ws))
        stopper = asyncio.create_task(stop.wait())
        reader = asyncio.create_task(self._read(ws))
        try:
            done, _ = await asyncio.wait({writer, stopper, reader}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                await ws.close(CLOSE_GOING_AWAY, "agent stopping")
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in (writer, stopper, reader):
                task.cancel()
            await asyncio.gather(writer, stopper, reader, return_exceptions=True)

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("< %s", frame[:2000])
            self._on_frame(frame)
            # websockets hands over frames already received without suspending: without a pause here, a burst of
            # N commands is parsed, audited and recorded before the first one's task may start (and answer).
            await (self._after_frame() if self._after_frame is not None else asyncio.sleep(0))

    async def _write(self, ws: ClientConnection) -> None:
        """Send every unacknowledged message in order, then each new one as it is queued."""
        last = 0
        confirming: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wakeup.clear()
                sent = last
                for seq, body in self.outbox.pending(after=last):
                    frame = self._protocol.frame(body)
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("> %s", frame[:2000])
                    await ws.send(frame)
                    last = seq
                if not self._protocol.acknowledged and last > sent:
                    # No ACKs (v0): the relay's pong to a ping sent after these frames shows it read them (in
                    # order). Never waited for here: the pong comes behind every command the relay sent before
                    # it, so a burst of 100 commands held every answer until the agent had read the last command.
                    # Or, when the relay would rather lose an answer than see it twice, written is delivered.
                    if self._protocol.resends_unread:
                        confirm = asyncio.create_task(self._confirm(await ws.ping(), last))
                        confirming.add(confirm)
                        confirm.add_done_callback(confirming.discard)
                    elif self.outbox.ack_through(last):
                        self._acked.set()
                    continue
                await self._wakeup.wait()
        finally:
            for confirm in confirming:
                confirm.cancel()

    async def _confirm(self, pong: Awaitable[float], seq: int) -> None:
        """Count every message up to ``seq`` delivered once ``pong`` came (v0); nothing if the connection died."""
        with contextlib.suppress(ConnectionClosed):
            await pong
            if self.outbox.ack_through(seq):
                self._acked.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (all acknowledged) or ``timeout`` passes; True if it emptied."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.outbox.count():
                    self._acked.clear()
                    await self._acked.wait()
        return self.outbox.count() == 0


def refused_by_policy(code: int) -> bool:
    """A close that says "not you, not now" (1008, or an application code 4000-4999, such as a second connection
    with the same agent_id): retried at the longest backoff, like a refused token, never in a tight loop."""
    return code == 1008 or 4000 <= code <= 4999


def _cause(exc: BaseException) -> str:
    """What failed, for the log: the exception's class and its text, and the cause's (never just a class name)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    inner = exc.__cause__ or exc.__context__
    if inner is not None and inner is not exc and str(inner) and str(inner) not in text:
        text += f" (caused by {type(inner).__name__}: {inner})"
    return text
