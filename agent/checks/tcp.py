"""``tcp`` checks: does a port answer within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time

from agent.checks import CheckResult, CheckStatus
from agent.config import TcpCheck


async def run(spec: TcpCheck) -> CheckResult:
    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.timeout):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
    except TimeoutError:
        return CheckResult(
            CheckStatus.DOWN, f"no answer within {spec.timeout:g} s", duration=time.monotonic() - started
        )
    except ConnectionRefusedError:
        return CheckResult(CheckStatus.DOWN, "connection refused", duration=time.monotonic() - started)
    except OSError as exc:
        return CheckResult(CheckStatus.DOWN, f"cannot connect ({exc.strerror or type(exc).__name__})",
                           duration=time.monotonic() - started)  # fmt: skip
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    duration = time.monotonic() - started
    return CheckResult(
        CheckStatus.OK, f"port answers ({duration * 1000:.0f} ms)", {"port": spec.port}, duration
    )
