"""``disk`` checks: free space of a path on the agent PC (shutil.disk_usage works on Windows too)."""

from __future__ import annotations

import shutil
import time

from agent.chat.i18n import Msg
from agent.checks import CheckResult, CheckStatus
from agent.config.schema import DiskCheck


async def run(spec: DiskCheck) -> CheckResult:
    started = time.monotonic()
    try:
        usage = shutil.disk_usage(spec.path)
    except OSError as exc:
        return CheckResult(CheckStatus.ERROR, Msg("cannot read the disk usage ({error})", error=exc.strerror))
    # As df counts it: blocks reserved for root are neither used nor free to the agent, so the percentage is of
    # used + free, and used_bytes + free_bytes can be less than total_bytes.
    usable = usage.used + usage.free
    used = 100.0 * usage.used / usable if usable else 0.0
    data = {"path": str(spec.path), "used_percent": round(used, 1), "used_bytes": usage.used, "free_bytes": usage.free,
            "total_bytes": usage.total, "warn_percent": spec.warn_percent, "critical_percent": spec.critical_percent}  # fmt: skip
    free_gib = usage.free / 1024**3
    values = {"used": used, "free": free_gib}
    if used >= spec.critical_percent:
        status = CheckStatus.DOWN
        message = Msg("used {used:.1f}%, over the critical {limit:g}% ({free:.1f} GiB free)",
                      limit=spec.critical_percent, **values)  # fmt: skip
    elif used >= spec.warn_percent:
        status = CheckStatus.WARN
        message = Msg("used {used:.1f}%, over the warning {limit:g}% ({free:.1f} GiB free)",
                      limit=spec.warn_percent, **values)  # fmt: skip
    else:
        status, message = CheckStatus.OK, Msg("used {used:.1f}% ({free:.1f} GiB free)", **values)
    return CheckResult(status, message, data, time.monotonic() - started)
