"""Logging for the agent: one redacting filter on every handler, text or JSON lines, optional rotating file.

Levels: ERROR a bug or a refused lock; WARNING a host down, a retry; INFO connect, reconnect, task accepted and
finished; DEBUG frames. Third-party libraries (asyncssh, APScheduler, websockets) log at WARNING and above unless the
level is DEBUG: their INFO lines would otherwise drown the agent's own. Every record passes :class:`RedactingFilter` on its way to any handler, so a log line can
never carry what a chat answer may not.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent import __version__
from agent.redaction import Redactor
from agent.state.files import open_private, private_dir

if TYPE_CHECKING:
    from agent.catalog.store import VerifyReport
    from agent.config.environment import Environment

#: Libraries whose INFO is noise to an operator (every SSH channel, every scheduler tick, every handshake).
QUIET_LIBRARIES = ("asyncssh", "apscheduler", "websockets")
logger = logging.getLogger(__name__)


class RedactingFilter(logging.Filter):
    """Formats the record's message, traceback and stack once, redacted, before any formatter sees them."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    redactor: Redactor,
    level: int | str = logging.INFO,
    json_lines: bool = False,
    file: Path | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
) -> None:
    """Send ``agent.*`` (and library) logs to stderr and optionally a rotating file, all through redaction."""
    formatter: logging.Formatter = (
        JsonLinesFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        private_dir(file.parent)
        handlers.append(
            PrivateRotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    redacting = RedactingFilter(redactor)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redacting)
        root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    debug = isinstance(numeric, int) and numeric <= logging.DEBUG
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file, the first and each after a rotation, is created 0600 whatever the umask."""

    def _open(self) -> io.TextIOWrapper:
        fd = open_private(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def relay_display(url: str) -> str:
    """The relay URL as a log may show it: scheme, host, port and path; never credentials or a query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def log_startup(environment: Environment, report: VerifyReport) -> None:
    """One INFO line saying what is starting: version, agent id, catalog digest and state, relay host."""
    try:
        relay = relay_display(environment.relay_url())
    except ValueError:
        relay = "(not set)"
    digest = report.lock.catalog_sha256[:16] if report.lock else "none"
    logger.info(
        "starting guardia-agent %s: agent %s, catalog %s (%d of %d runbooks runnable), relay %s",
        __version__,
        environment.config.agent_id,
        digest,
        len(report.runnable),
        len(report.runbooks),
        relay,
    )
