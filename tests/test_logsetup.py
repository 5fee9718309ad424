"""Logs an operator reads: library chatter kept at WARNING unless DEBUG, and one start-up line that says what runs
without saying any credential."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__
from agent.catalog import Catalog
from agent.config import AgentConfig
from agent.logsetup import configure_logging, log_startup, relay_display
from agent.redaction import Redactor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {n: logging.getLogger(n).level for n in ("asyncssh", "apscheduler", "websockets")}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in libraries.items():
        logging.getLogger(name).setLevel(old)


def emit_all() -> None:
    for name in ("asyncssh", "apscheduler.scheduler", "websockets.client", "agent.link"):
        logging.getLogger(name).info("info from %s", name)
        logging.getLogger(name).warning("warning from %s", name)


def test_libraries_log_warnings_only_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Redactor(), "INFO")
    emit_all()
    err = capsys.readouterr().err
    assert "info from agent.link" in err
    for name in ("asyncssh", "apscheduler.scheduler", "websockets.client"):
        assert f"info from {name}" not in err
        assert f"warning from {name}" in err


def test_debug_lets_the_libraries_speak(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Redactor(), "DEBUG")
    emit_all()
    err = capsys.readouterr().err
    for name in ("asyncssh", "apscheduler.scheduler", "websockets.client"):
        assert f"info from {name}" in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "wss://agent:s3cret-pw@relay.example.org:8443/agent?token=t0k3n",
            "wss://relay.example.org:8443/agent",
        ),
        ("ws://127.0.0.1:8765/agent", "ws://127.0.0.1:8765/agent"),
        ("wss://[2001:db8::1]/agent#frag", "wss://[2001:db8::1]/agent"),
        ("wss://relay.example.org:99999/x", "(unparsable URL)"),
    ],
)
def test_the_relay_is_shown_without_credentials(url: str, shown: str) -> None:
    assert relay_display(url) == shown


def test_start_up_line_names_version_agent_catalog_and_relay_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTERNAL_WS_URL", "wss://agent:s3cret-pw@relay.example.org/agent?token=t0k3n")
    config = AgentConfig(agent_id="agent-42", base_dir=ROOT)
    report = Catalog(ROOT / "runbooks", ROOT / "runbooks.lock").verify()
    assert report.lock is not None
    configure_logging(Redactor(), "INFO")
    log_startup(config, report)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "starting" in line]
    assert f"guardia-agent {__version__}" in line and "agent agent-42" in line
    assert f"catalog {report.lock.catalog_sha256[:16]} (8 of 8 runbooks runnable)" in line
    assert line.endswith("relay wss://relay.example.org/agent")
    assert "s3cret" not in line and "t0k3n" not in line
