"""``http`` checks: GET a health URL with requests in a worker thread; the address never reaches the message.

A health endpoint that does not answer is DOWN with ``data["reason"]`` saying why, in the words the original agent
used in chat: ``CONNECTION_REFUSED`` (연결 거부: nothing listens, the host said so at once) apart from ``TIMEOUT``
(타임아웃: no connection, or no answer, within the timeout), and ``CONNECT_FAILED``/``TLS_FAILED`` for the rest. One that
answers is judged by :func:`judge`: only the health JSON saying UP is OK.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.chat.i18n import Msg
from agent.checks import CheckResult, CheckStatus
from agent.config.schema import HttpCheck


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
        return CheckResult(CheckStatus.DOWN, Msg("timeout (no connection within {timeout:g} s)", timeout=spec.timeout),
                           {"reason": "TIMEOUT"}, time.monotonic() - started)  # fmt: skip
    except requests.exceptions.ReadTimeout:
        return CheckResult(CheckStatus.DOWN, Msg("timeout (no answer within {timeout:g} s)", timeout=spec.timeout),
                           {"reason": "TIMEOUT"}, time.monotonic() - started)  # fmt: skip
    except requests.exceptions.SSLError:
        return CheckResult(CheckStatus.DOWN, Msg("TLS handshake failed (certificate?)"), {"reason": "TLS_FAILED"},
                           time.monotonic() - started)  # fmt: skip
    except requests.exceptions.ConnectionError as exc:
        if _refused(exc):
            return CheckResult(CheckStatus.DOWN, Msg("connection refused"), {"reason": "CONNECTION_REFUSED"},
                               time.monotonic() - started)  # fmt: skip
        if isinstance(exc.args[0] if exc.args else None, TimeoutError) or "timed out" in str(exc).lower():
            return CheckResult(CheckStatus.DOWN, Msg("timeout (no answer within {timeout:g} s)", timeout=spec.timeout),
                               {"reason": "TIMEOUT"}, time.monotonic() - started)  # fmt: skip
        return CheckResult(CheckStatus.DOWN, Msg("cannot connect"), {"reason": "CONNECT_FAILED"},
                           time.monotonic() - started)  # fmt: skip
    except requests.exceptions.RequestException as exc:
        return CheckResult(CheckStatus.ERROR, Msg("request failed ({error})", error=type(exc).__name__),
                           duration=time.monotonic() - started)  # fmt: skip
    finally:
        session.close()
    duration = time.monotonic() - started
    return judge(response.status_code, _health_json(response), duration)


def _health_json(response: Any) -> Any:
    """The answer's JSON whatever its Content-Type says (the original agent read ``r.json()``), or None."""
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON (an HTML page, a bare "ok"), or nested beyond reason
        return None


def judge(code: int, health: Any, duration: float = 0.0) -> CheckResult:
    """The one verdict on a health answer, which every rendering of it follows (``data``, the room text, v0).

    OK only for an answer below 400 that is a JSON object with ``"status": "UP"``. Anything else is DOWN: 400 and
    above; another ``status``; and an answer without the health JSON at all (an HTML page, a login redirect, a bare
    ``ok``, JSON without ``status``), ``data.reason`` ``NOT_HEALTH_JSON``: a health endpoint that does not say
    its health has not said the WAS is up.
    """
    data: dict[str, Any] = {"http_status": code}
    has_status = isinstance(health, dict) and "status" in health
    if isinstance(health, dict):
        data["body"] = health_body(health)
        data["health"] = {"status": health.get("status")}
        components = health.get("components")
        if isinstance(components, dict):
            data["health"]["components"] = {
                str(name): part.get("status") for name, part in components.items() if isinstance(part, dict)
            }
    reported = data.get("health", {}).get("status")
    if code >= 400:
        message = (Msg("HTTP {code}, status {status}", code=code, status=str(reported)) if reported
                   else Msg("HTTP {code}", code=code))  # fmt: skip
        return CheckResult(CheckStatus.DOWN, message, data, duration)
    if not has_status:
        data["reason"] = "NOT_HEALTH_JSON"
        return CheckResult(
            CheckStatus.DOWN,
            Msg("HTTP {code}, not a health answer (no JSON status)", code=code),
            data,
            duration,
        )
    if reported != "UP":
        return CheckResult(CheckStatus.DOWN, Msg("status {status}", status=str(reported)), data, duration)
    return CheckResult(CheckStatus.OK, Msg("HTTP {code}, UP", code=code), data, duration)


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
