"""``disk`` checks: free space of a path on the agent PC (shutil.disk_usage works on Windows too)."""

from __future__ import annotations

import shutil
import time

from agent.checks import CheckResult, CheckStatus
from agent.config import DiskCheck


async def run(spec: DiskCheck) -> CheckResult:
    started = time.monotonic()
    try:
        usage = shutil.disk_usage(spec.path)
    except OSError as exc:
        return CheckResult(CheckStatus.ERROR, f"cannot read the disk usage ({exc.strerror})")
    used = 100.0 * usage.used / usage.total if usage.total else 0.0
    data = {"path": str(spec.path), "used_percent": round(used, 1), "free_bytes": usage.free,
            "total_bytes": usage.total, "warn_percent": spec.warn_percent, "critical_percent": spec.critical_percent}  # fmt: skip
    free_gib = usage.free / 1024**3
    if used >= spec.critical_percent:
        status = CheckStatus.DOWN
        message = f"{used:.1f}% used, over the critical {spec.critical_percent:g}% ({free_gib:.1f} GiB free)"
    elif used >= spec.warn_percent:
        status = CheckStatus.WARN
        message = f"{used:.1f}% used, over the warning {spec.warn_percent:g}% ({free_gib:.1f} GiB free)"
    else:
        status, message = CheckStatus.OK, f"{used:.1f}% used ({free_gib:.1f} GiB free)"
    return CheckResult(status, message, data, time.monotonic() - started)
