"""Logs an operator reads: library chatter kept at WARNING unless DEBUG, and one start-up line that says what runs
without saying any credential."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__
from agent.catalog.store import Catalog
from agent.config.environment import Environment
from agent.config.schema import AgentConfig
from agent.redaction import Redactor
from agent.shell.logsetup import configure_logging, log_startup, relay_display

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
    for name in ("asyncssh", "apscheduler.scheduler", "websockets.client", "agent.shell.link"):
        logging.getLogger(name).info("info from %s", name)
        logging.getLogger(name).warning("warning from %s", name)


def test_libraries_log_warnings_only_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Redactor(), "INFO")
    emit_all()
    err = capsys.readouterr().err
    assert "info from agent.shell.link" in err
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
    log_startup(Environment(config, os.environ), report)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "starting" in line]
    assert f"guardia-agent {__version__}" in line and "agent agent-42" in line
    assert f"catalog {report.lock.catalog_sha256[:16]} (8 of 8 runbooks runnable)" in line
    assert line.endswith("relay wss://relay.example.org/agent")
    assert "s3cret" not in line and "t0k3n" not in line


async def test_agent_run_logs_its_start_up_line_first_and_no_library_info(tmp_path: Path) -> None:
    """The real `agent run`, dialling a loopback port nobody listens on: the start-up line comes first, the scheduler
    starts, the link retries, and not one INFO line of a library is among them."""
    import asyncio
    import os
    import shutil
    import signal
    import sys

    from tests.sshd import free_port

    shutil.copytree(ROOT / "runbooks", tmp_path / "runbooks")
    shutil.copy2(ROOT / "runbooks.lock", tmp_path / "runbooks.lock")
    (tmp_path / "agent.toml").write_text('agent_id = "agent-42"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "EXTERNAL_WS_URL"))}
    env["EXTERNAL_WS_URL"] = f"ws://agent:pw-77d1@127.0.0.1:{free_port()}/agent"
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "agent"), "-c", str(tmp_path / "agent.toml"), "run",
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("reconnecting in" in line for line in lines):
                raw = await process.stderr.readline()
                assert raw, "agent run ended early:\n" + "\n".join(lines)
                lines.append(raw.decode().rstrip())
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await process.wait()
    assert "INFO    agent.shell.logsetup: starting guardia-agent" in lines[0], lines
    # the relay host as the log shows it: through the redaction filter, which masks a loopback/internal address
    assert "agent agent-42" in lines[0] and "relay ws://[IP]:" in lines[0]
    assert not any("pw-77d1" in line for line in lines)
    assert any("relay connection failed" in line for line in lines)
    library_info = [
        line for line in lines if " INFO " in line and (" asyncssh" in line or " apscheduler" in line)
    ]
    assert library_info == []
