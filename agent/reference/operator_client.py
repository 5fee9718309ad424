"""A client for the relay's operator side: send command packets, wait for the agent's events.

What a chat bridge does on the messenger side of the reference relay; the demo and the tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

Predicate = Callable[[dict[str, Any]], bool]


def finished(task_id: str) -> Predicate:
    """Matches the TASK_FINISHED of ``task_id``."""
    return lambda event: event.get("event") == "TASK_FINISHED" and event.get("task_id") == task_id


class OperatorClient:
    """Collects every event the relay forwards; ``on_event`` sees each as it arrives."""

    def __init__(
        self, ws: ClientConnection, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._on_event = on_event
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, on_event: Callable[[dict[str, Any]], None] | None = None, token: str | None = None
    ) -> OperatorClient:
        """Connect to the relay's operator side; ``token`` is sent as ``Authorization: Bearer``."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return cls(await connect(url, max_size=None, additional_headers=headers), on_event)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                event = json.loads(frame)
                self.events.append(event)
                self._arrived.set()
                if self._on_event is not None:
                    self._on_event(event)

    async def send(self, packet: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(packet if isinstance(packet, str | bytes) else json.dumps(packet))

    async def wait_for(self, predicate: Predicate, timeout: float = 20.0) -> dict[str, Any]:
        """The first event (received so far or later) that matches. Raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_beyond(self, count: int) -> None:
        """Wait until more than ``count`` events have arrived."""
        while len(self.events) <= count:
            self._arrived.clear()
            await self._arrived.wait()

    async def finished(self, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.wait_for(finished(task_id), timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
