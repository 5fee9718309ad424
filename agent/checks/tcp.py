"""``tcp`` checks: does a port answer within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time

from agent.chat.i18n import Msg
from agent.checks import CheckResult, CheckStatus
from agent.config.schema import TcpCheck


async def run(spec: TcpCheck) -> CheckResult:
    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.timeout):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
    except TimeoutError:
        return CheckResult(
            CheckStatus.DOWN,
            Msg("timeout (no answer within {timeout:g} s)", timeout=spec.timeout),
            {"reason": "TIMEOUT"},
            time.monotonic() - started,
        )
    except ConnectionRefusedError:
        return CheckResult(CheckStatus.DOWN, Msg("connection refused"), {"reason": "CONNECTION_REFUSED"},
                           time.monotonic() - started)  # fmt: skip
    except OSError as exc:
        return CheckResult(CheckStatus.DOWN, Msg("cannot connect ({error})", error=exc.strerror or type(exc).__name__),
                           {"reason": "CONNECT_FAILED"}, time.monotonic() - started)  # fmt: skip
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    duration = time.monotonic() - started
    return CheckResult(
        CheckStatus.OK, Msg("port answers ({ms:.0f} ms)", ms=duration * 1000), {"port": spec.port}, duration
    )
