"""Waiting in tests for what another task or process makes true: one helper, never a fixed sleep.

What is awaited here has no event to wait on (another process's files, a log line, the relay's table), so
:func:`eventually` looks again every few milliseconds until it holds, and fails with what it waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], T], timeout: float = 20.0, what: str = "", every: float = 0.02
) -> T:
    """The first true value of ``condition()``, looked at every ``every`` s for up to ``timeout`` s.

    Raises:
        TimeoutError: it never held; the message says ``what`` was awaited.
    """
    try:
        async with asyncio.timeout(timeout):
            while not (value := condition()):
                await asyncio.sleep(every)
    except TimeoutError:
        raise TimeoutError(f"still not true after {timeout:g} s: {what or condition}") from None
    return value


def settled(condition: Callable[[], T], timeout: float, every: float = 0.05) -> T:
    """For a test without an event loop: ``condition()`` once it is true, or its last value after ``timeout`` s
    (for the test to report, and clean up, what never settled)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(every)
    return value
