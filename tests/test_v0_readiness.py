"""``agent config check`` in v0 mode tells whether the original agent's three actions would work (issue 25): each
tried as it would run, against a real PostgreSQL and a real HTTP server on loopback; not ready is NOT OK, exit 1,
every problem listed at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.services import HealthServer
from tests.sshd import free_port

pytestmark = pytest.mark.external_service

Cli = Callable[..., Result]
DB_ENV = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME")


def configure(folder: Path, text: str, protocol: str = "v0") -> None:
    (folder / "agent.toml").write_text(f'[relay]\nprotocol = "{protocol}"\n\n' + text, encoding="utf-8",
                                       newline="\n")  # fmt: skip


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("EXTERNAL_WS_URL", "ws://127.0.0.1:9/v0")
    monkeypatch.setenv("AGENT_RELAY_TOKEN", "t0ken-123456")
    for name in DB_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_a_was_check_or_db_settings_v0_is_not_ok(
    agent_cli: Cli, catalog_dir: Path, environment: pytest.MonkeyPatch
) -> None:
    configure(catalog_dir, "")
    result = agent_cli("-c", "agent.toml", "config", "check")
    assert result.exit_code == 1 and "OK:" not in result.stdout
    assert "error: v0 FETCH_MES_QC: not ready: DB_HOST, DB_USER, DB_NAME not set" in result.stderr
    assert "error: v0 CHECK_INTERNAL_WAS_STATUS: not ready: no WAS check: set [actions] was_status_check" in (
        result.stderr
    )
    assert "v0 CHECK_DISK_SPACE: ready (no disk check: the system drive" in result.stdout
    assert "NOT OK: agent guardia-agent" in result.stderr
    assert "2 of the original agent's 3 actions not ready in v0 mode" in result.stderr
    # The same config in protocol 1: these actions answer NOT_AVAILABLE / CHECK_FAILED by design; it starts OK.
    configure(catalog_dir, "", protocol="v1")
    assert agent_cli("-c", "agent.toml", "config", "check").exit_code == 0


def test_every_action_ready_against_a_real_database_and_was(
    agent_cli: Cli,
    catalog_dir: Path,
    environment: pytest.MonkeyPatch,
    postgres: dict[str, str],
    health: HealthServer,
) -> None:
    for name, value in postgres.items():
        environment.setenv(name, value)
    (catalog_dir / "data").mkdir()
    configure(catalog_dir, f"""
[checks.was]
kind = "http"
url = "{health.url("/down")}"
timeout = 2
[checks.data_disk]
kind = "disk"
path = "data"
[actions]
was_status_check = "was"
""")  # fmt: skip
    result = agent_cli("-c", "agent.toml", "config", "check")
    assert result.exit_code == 0, result.stderr
    # A WAS that answers its health JSON, DOWN or not, is one CHECK_INTERNAL_WAS_STATUS can report on.
    assert (
        "v0 CHECK_INTERNAL_WAS_STATUS: ready (check 'was' answered: DOWN, HTTP 503, status DOWN)"
        in result.stdout
    )
    assert "v0 FETCH_MES_QC: ready (tb_mes_wrk_prc_i is readable" in result.stdout
    assert f"v0 CHECK_DISK_SPACE: ready (data_disk {catalog_dir / 'data'})" in result.stdout
    assert "OK: agent guardia-agent" in result.stdout and "error:" not in result.stderr


def test_every_problem_is_listed_at_once(
    agent_cli: Cli,
    catalog_dir: Path,
    environment: pytest.MonkeyPatch,
    postgres: dict[str, str],
    health: HealthServer,
) -> None:
    # A database without the table; a WAS URL that answers a web page; a disk path that does not exist.
    for name, value in {**postgres, "DB_NAME": "postgres"}.items():
        environment.setenv(name, value)
    configure(catalog_dir, f"""
[checks.was]
kind = "http"
url = "{health.url("/html")}"
[checks.gone]
kind = "disk"
path = "no/such/folder"
[actions]
was_status_check = "was"
disk_space_checks = ["gone"]
""")  # fmt: skip
    result = agent_cli("-c", "agent.toml", "config", "check")
    assert result.exit_code == 1 and "OK:" not in result.stdout
    stderr = result.stderr
    assert (
        "v0 FETCH_MES_QC: not ready: cannot read tb_mes_wrk_prc_i: the query failed (SQLSTATE 42P01: no such table)"
        in stderr
    )
    assert (
        "v0 CHECK_INTERNAL_WAS_STATUS: not ready: check 'was': the URL answers HTTP 200, but not with the "
        in (stderr)
    )
    assert (
        f"v0 CHECK_DISK_SPACE: not ready: check 'gone': {catalog_dir / 'no/such/folder'} does not exist"
        in stderr
    )
    assert "3 of the original agent's 3 actions not ready in v0 mode" in stderr


def unreachable_database(environment: pytest.MonkeyPatch, port: int) -> None:
    """DB_* set, naming a port where nothing listens."""
    for name, value in {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(port),
        "DB_USER": "u",
        "DB_NAME": "mes",
    }.items():
        environment.setenv(name, value)


def test_an_unreachable_was_and_database_are_not_ready_within_their_timeouts(
    agent_cli: Cli, catalog_dir: Path, environment: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    unreachable_database(environment, closed)
    configure(catalog_dir, f"""
[checks.was]
kind = "http"
url = "http://127.0.0.1:{closed}/actuator/health"
timeout = 1
[actions]
was_status_check = "was"
""")  # fmt: skip
    result = agent_cli("-c", "agent.toml", "config", "check")
    assert result.exit_code == 1
    assert "v0 CHECK_INTERNAL_WAS_STATUS: not ready: check 'was': no answer (connection refused)" in (
        result.stderr
    )
    assert "v0 FETCH_MES_QC: not ready: cannot read tb_mes_wrk_prc_i: connection refused" in result.stderr
    assert "127.0.0.1" not in result.stderr


def test_a_was_that_does_not_answer_within_the_checks_timeout_is_not_ready(
    agent_cli: Cli, catalog_dir: Path, environment: pytest.MonkeyPatch, health: HealthServer
) -> None:
    configure(catalog_dir, f'[checks.was]\nkind = "http"\nurl = "{health.url("/slow")}"\ntimeout = 0.3\n'
                           '[actions]\nwas_status_check = "was"\n')  # fmt: skip
    result = agent_cli("-c", "agent.toml", "config", "check")
    assert result.exit_code == 1
    assert (
        "v0 CHECK_INTERNAL_WAS_STATUS: not ready: check 'was': no answer (timeout (no answer within 0.3 s))"
        in (result.stderr)
    )


def test_before_start_tries_no_connection_and_lets_the_agent_start_to_report_what_is_missing(
    agent_cli: Cli, catalog_dir: Path, environment: pytest.MonkeyPatch
) -> None:
    """The service runs `config check --before-start` before each start (deploy/guardia-agent.service): the agent
    must start while the WAS or the database is down, or a setting is missing, since reporting that is its job."""
    closed = free_port()
    configure(catalog_dir, f'[checks.was]\nkind = "http"\nurl = "http://127.0.0.1:{closed}/health"\n'
                           '[actions]\nwas_status_check = "was"\n')  # fmt: skip
    unreachable_database(environment, closed)
    offline = agent_cli("-c", "agent.toml", "config", "check", "--before-start")
    assert offline.exit_code == 0, offline.stderr
    assert (
        "v0 CHECK_INTERNAL_WAS_STATUS: ready (http check 'was' (not tried: --before-start))" in offline.stdout
    )
    assert (
        "v0 FETCH_MES_QC: ready (DB_HOST, DB_USER, DB_NAME set (the table not tried: --before-start))"
        in offline.stdout
    )
    assert agent_cli("-c", "agent.toml", "config", "check").exit_code == 1  # tried: neither answers
    environment.delenv("DB_NAME")
    missing = agent_cli("-c", "agent.toml", "config", "check", "--before-start")
    assert missing.exit_code == 0 and "v0 FETCH_MES_QC: not ready: DB_NAME not set" in missing.stderr
    assert (
        "OK to start" in missing.stderr and "1 of the original agent's 3 actions not ready" in missing.stderr
    )
    assert agent_cli("-c", "agent.toml", "config", "check").exit_code == 1
