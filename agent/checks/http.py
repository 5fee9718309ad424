"""``http`` checks: GET a health URL with requests in a worker thread; the address never reaches the message."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.checks import CheckResult, CheckStatus
from agent.config import HttpCheck


def _get(spec: HttpCheck) -> CheckResult:
    # Imported on first use: an agent without HTTP checks never loads requests (about 15 MiB).
    import requests

    started = time.monotonic()
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc from the environment for internal health URLs
    try:
        response = session.get(spec.url, timeout=spec.timeout, verify=str(spec.verify_tls)
                               if not isinstance(spec.verify_tls, bool) else spec.verify_tls,
                               allow_redirects=False)  # fmt: skip
    except requests.exceptions.ConnectTimeout:
        return CheckResult(CheckStatus.DOWN, "connect timed out", {"reason": "timeout"},
                           time.monotonic() - started)  # fmt: skip
    except requests.exceptions.ReadTimeout:
        return CheckResult(CheckStatus.DOWN, f"no answer within {spec.timeout:g} s", {"reason": "timeout"},
                           time.monotonic() - started)  # fmt: skip
    except requests.exceptions.SSLError:
        return CheckResult(CheckStatus.DOWN, "TLS handshake failed (certificate?)", {"reason": "tls"},
                           time.monotonic() - started)  # fmt: skip
    except requests.exceptions.ConnectionError as exc:
        refused = _refused(exc)
        return CheckResult(CheckStatus.DOWN, "connection refused" if refused else "cannot connect",
                           {"reason": "refused" if refused else "unreachable"}, time.monotonic() - started)  # fmt: skip
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
        data["body"] = health_body(health)
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


#: Keys of a health answer that name where something is (dropped from ``body``; redaction masks the rest).
ADDRESS_KEYS = frozenset(
    {"url", "jdbcurl", "host", "hostname", "address", "ip", "location", "endpoint", "server"}
)
#: ``body`` keeps at most this many levels and keys per object.
MAX_DEPTH, MAX_KEYS = 6, 100


def health_body(value: Any, depth: int = 0) -> Any:
    """The WAS's health JSON as it said it (status, components, details), without address-like keys, bounded."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return {}
        kept = [(str(k), v) for k, v in value.items() if str(k).lower().replace("_", "") not in ADDRESS_KEYS]
        return {k: health_body(v, depth + 1) for k, v in kept[:MAX_KEYS]}
    if isinstance(value, list):
        return [health_body(v, depth + 1) for v in value[:MAX_KEYS]] if depth < MAX_DEPTH else []
    return value


def _refused(exc: BaseException) -> bool:
    """Whether the connection was refused (ECONNREFUSED, found in the chain of causes, not in the message text)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        for arg in current.args:
            if isinstance(arg, BaseException) and _refused(arg):
                return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and reason is not current and _refused(reason):
            return True
        current = current.__cause__ or current.__context__
    return "refused" in str(exc).lower()


async def run(spec: HttpCheck) -> CheckResult:
    return await asyncio.to_thread(_get, spec)
