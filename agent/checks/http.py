"""``http`` checks: GET a health URL with requests in a worker thread; the address never reaches the message."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import requests

from agent.checks import CheckResult, CheckStatus
from agent.config import HttpCheck


def _get(spec: HttpCheck) -> CheckResult:
    started = time.monotonic()
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc from the environment for internal health URLs
    try:
        response = session.get(spec.url, timeout=spec.timeout, verify=str(spec.verify_tls)
                               if not isinstance(spec.verify_tls, bool) else spec.verify_tls,
                               allow_redirects=False)  # fmt: skip
    except requests.exceptions.ConnectTimeout:
        return CheckResult(CheckStatus.DOWN, "connect timed out", duration=time.monotonic() - started)
    except requests.exceptions.ReadTimeout:
        return CheckResult(
            CheckStatus.DOWN, f"no answer within {spec.timeout:g} s", duration=time.monotonic() - started
        )
    except requests.exceptions.SSLError:
        return CheckResult(
            CheckStatus.DOWN, "TLS handshake failed (certificate?)", duration=time.monotonic() - started
        )
    except requests.exceptions.ConnectionError as exc:
        text = str(exc).lower()
        reason = "connection refused" if "refused" in text else "cannot connect"
        return CheckResult(CheckStatus.DOWN, reason, duration=time.monotonic() - started)
    except requests.exceptions.RequestException as exc:
        return CheckResult(CheckStatus.ERROR, f"request failed ({type(exc).__name__})",
                           duration=time.monotonic() - started)  # fmt: skip
    finally:
        session.close()
    duration = time.monotonic() - started
    data: dict[str, Any] = {"http_status": response.status_code}
    health: Any = None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            health = response.json()
        except ValueError:
            health = None
    if isinstance(health, dict):
        data["health"] = {"status": health.get("status")}
        components = health.get("components")
        if isinstance(components, dict):
            data["health"]["components"] = {
                str(name): part.get("status") for name, part in components.items() if isinstance(part, dict)
            }
    reported = data.get("health", {}).get("status")
    if response.status_code >= 400:
        return CheckResult(CheckStatus.DOWN, f"HTTP {response.status_code}" + (f", status {reported}" if reported else ""),
                           data, duration)  # fmt: skip
    if reported is not None and reported != "UP":
        return CheckResult(CheckStatus.DOWN, f"status {reported}", data, duration)
    return CheckResult(
        CheckStatus.OK, f"HTTP {response.status_code}" + (", UP" if reported else ""), data, duration
    )


async def run(spec: HttpCheck) -> CheckResult:
    return await asyncio.to_thread(_get, spec)
