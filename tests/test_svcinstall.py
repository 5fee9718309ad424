"""`agent service install|uninstall|status`: the exact nssm and icacls calls (a recording fake of each, since the
Windows service manager cannot run here), a failure at every step undone and said, and the systemd unit checked by
systemd's own `systemd-analyze verify`.

The agent runs as a real subprocess (its console script), so what is tested is what an administrator types.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import service_install as svcinstall
from agent.cli.service_install import (
    ServiceError,
    ServiceSpec,
    carry_out,
    systemd_unit,
    windows_install_steps,
)
from tests.fake_service_tools import install_fakes

ROOT = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / ("agent.exe" if sys.platform == "win32" else "agent")


def write_fakes(bin_dir: Path) -> None:
    """The recording fakes of nssm and icacls (tests/fake_service_tools.py says what they do)."""
    install_fakes(bin_dir)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An agent folder (with a space in its path, as C:\\Program Files would have), a secrets file, and the fakes
    first on PATH. Returns the folder."""
    app = tmp_path / "guardia agent"
    app.mkdir()
    shutil.copytree(ROOT / "runbooks", app / "runbooks")
    shutil.copy2(ROOT / "runbooks.lock", app / "runbooks.lock")
    (app / "agent.toml").write_text('agent_id = "agent-07"\n', encoding="utf-8")
    (tmp_path / "secrets.env").write_text(
        "EXTERNAL_WS_URL=wss://relay.example.org/agent\nAGENT_RELAY_TOKEN=tok-3f9a1c77e2\nDB_PASSWORD='p w'\n",
        encoding="utf-8",
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fakes(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_STATE", str(tmp_path / "services.txt"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for name in (
        "FAKE_FAIL_AT",
        "FAKE_FAIL_PREFIX",
        "FAKE_REMOVE_EXIT",
        "EXTERNAL_WS_URL",
        "AGENT_RELAY_TOKEN",
        "AGENT_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    return app


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(AGENT), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def calls(site: Path) -> list[list[str]]:
    log = site.parent / "calls.log"
    return [line.split("\t") for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def services(site: Path) -> list[str]:
    state = site.parent / "services.txt"
    return sorted(state.read_text(encoding="utf-8").split()) if state.exists() else []


def install(site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return agent(
        "-c", str(site / "agent.toml"), "service", "install", "--platform", "windows",
        "--env", str(site.parent / "secrets.env"), *extra,
    )  # fmt: skip


def expected_windows_calls(
    site: Path, account: str = "NT SERVICE\\guardia-agent", agent_exe: Path = AGENT
) -> list[list[str]]:
    exe, cfg, env = str(agent_exe), str(site / "agent.toml"), str(site / "guardia-agent.env")
    logs, var = site / "logs", site / "var"
    name = "guardia-agent"
    return [
        ["nssm", "status", name],
        ["nssm", "install", name, exe],
        # one argument for nssm, quoted by Windows rules: the folder has a space
        ["nssm", "set", name, "AppParameters", f'-c "{cfg}" --env-file "{env}" run --log-json'],
        ["nssm", "set", name, "AppDirectory", str(site)],
        ["nssm", "set", name, "DisplayName", "GUARDiA agent"],
        ["nssm", "set", name, "Description", "GUARDiA agent: sandboxed runbook executor"],
        ["nssm", "set", name, "Start", "SERVICE_DELAYED_AUTO_START"],
        ["nssm", "set", name, "ObjectName", account],
        ["nssm", "set", name, "AppExit", "Default", "Restart"],
        ["nssm", "set", name, "AppRestartDelay", "5000"],
        ["nssm", "set", name, "AppStopMethodSkip", "6"],
        ["nssm", "set", name, "AppStopMethodConsole", "60000"],
        ["nssm", "set", name, "AppStdout", str(logs / f"{name}.out.log")],
        ["nssm", "set", name, "AppStderr", str(logs / f"{name}.log")],
        ["nssm", "set", name, "AppStdoutCreationDisposition", "4"],
        ["nssm", "set", name, "AppStderrCreationDisposition", "4"],
        ["nssm", "set", name, "AppRotateFiles", "1"],
        ["nssm", "set", name, "AppRotateOnline", "1"],
        ["nssm", "set", name, "AppRotateSeconds", "86400"],
        ["nssm", "set", name, "AppRotateBytes", str(10 * 1024 * 1024)],
        ["icacls", env, "/inheritance:r", "/grant:r", "*S-1-5-32-544:(F)", "/grant:r", "*S-1-5-18:(F)",
         "/grant:r", f"{account}:(R)"],
        ["icacls", str(var), "/grant:r", f"{account}:(OI)(CI)M"],
        ["icacls", str(logs), "/grant:r", f"{account}:(OI)(CI)M"],
        ["nssm", "start", name],
    ]  # fmt: skip


#: On Windows the command calls icacls from System32 by its full path (never a look-up that the current folder could
#: answer), so the recording fake can stand in for it only in-process; the command's own calls are checked on Linux.
icacls_from_system32 = pytest.mark.posix_only(
    reason="icacls comes from System32 there; the fake cannot stand in"
)


@icacls_from_system32
def test_windows_install_asks_nssm_and_icacls_exactly_this(site: Path) -> None:
    done = install(site)
    assert done.returncode == 0, done.stderr
    assert calls(site) == expected_windows_calls(site)
    assert services(site) == ["guardia-agent"]
    env = site / "guardia-agent.env"
    assert env.read_bytes() == (site.parent / "secrets.env").read_bytes()
    assert (site / "var").is_dir() and (site / "logs").is_dir()
    assert "tok-3f9a1c77e2" not in done.stdout + done.stderr


def test_windows_install_with_a_dedicated_account_passes_its_password_to_nssm_only(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SERVICE_PASSWORD", "svc-pw-81c2")
    done = install(site, "--account", "CORP\\svc-guardia", "--no-start")
    assert done.returncode == 0, done.stderr
    recorded = calls(site)
    assert ["nssm", "set", "guardia-agent", "ObjectName", "CORP\\svc-guardia", "svc-pw-81c2"] in recorded
    assert ["nssm", "start", "guardia-agent"] not in recorded
    assert "svc-pw-81c2" not in done.stdout + done.stderr


def test_windows_install_refuses_an_account_without_a_password_when_nobody_can_be_asked(site: Path) -> None:
    done = install(site, "--account", "CORP\\svc-guardia")
    assert done.returncode == 2
    assert "AGENT_SERVICE_PASSWORD" in done.stderr
    assert calls(site) == []


def spec_for(site: Path, agent_exe: Path = AGENT) -> ServiceSpec:
    return ServiceSpec(
        agent_exe=agent_exe, config=site / "agent.toml", env_source=site.parent / "secrets.env"
    )


# Every call of the install, failing in turn: 2 = nssm install, ..., the last = nssm start (1 is the status check
# the command makes before it plans the install).
STEPS = len(expected_windows_calls(Path("/x")))
#: Every step on Linux; on Windows (a process start costs ~0.4 s under Wine) the first, the env file's and the last.
FAIL_AT = range(1, STEPS) if sys.platform != "win32" else [1, 20, STEPS - 1]


@pytest.mark.parametrize("fail_at", FAIL_AT)
def test_a_failing_step_is_named_undone_and_leaves_no_service_or_secrets_behind(
    site: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """In-process, with a stand-in for the config check (the real one is tested through the command below)."""
    monkeypatch.setenv("FAKE_FAIL_AT", str(fail_at))
    monkeypatch.setattr(svcinstall, "ICACLS", shutil.which("icacls", path=str(site.parent / "bin")))
    checker = install_fakes(site.parent / "bin", "agent")["agent"]
    steps = windows_install_steps(spec_for(site, checker), "nssm")
    with pytest.raises(ServiceError) as caught:
        carry_out(steps, echo=lambda _: None)
    message = str(caught.value)
    failed = expected_windows_calls(site, agent_exe=checker)[fail_at]
    assert calls(site)[fail_at - 1] == failed
    assert (
        f"exited 5: {failed[0]}: simulated failure" in message and failed[0] in message.split(" exited 5")[0]
    )
    assert "\n" not in message
    if fail_at == 1:  # nssm install itself failed: nothing to undo
        assert message.endswith("; nothing had been changed")
    else:
        undone = message.split("; undone: ")[1]
        assert undone.endswith("remove service guardia-agent")
        assert calls(site)[-1] == ["nssm", "remove", "guardia-agent", "confirm"]
        assert ("guardia-agent.env" in undone) == (
            fail_at >= 20
        )  # the env file exists from the icacls step on
    assert "NOT undone" not in message
    assert services(site) == []
    assert not (site / "guardia-agent.env").exists()


@icacls_from_system32
@pytest.mark.parametrize("fail_at", [2, 10, STEPS])
def test_the_command_answers_a_failed_step_in_one_line_with_exit_1(
    site: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT", str(fail_at))
    done = install(site)
    assert done.returncode == 1
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr
    assert "exited 5" in error[0]
    assert services(site) == []
    assert not (site / "guardia-agent.env").exists()


def test_an_undo_that_fails_too_is_said_with_the_command_to_finish_by_hand(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL_PREFIX", "nssm set guardia-agent AppRestartDelay")
    monkeypatch.setenv("FAKE_REMOVE_EXIT", "7")
    done = install(site)
    assert done.returncode == 1
    nssm = shutil.which("nssm", path=str(site.parent / "bin"))
    assert f"NOT undone, do it by hand: {nssm} remove guardia-agent confirm" in done.stderr
    assert services(site) == ["guardia-agent"]  # the fake's service is indeed left, as the message says


def test_install_checks_the_config_first_and_touches_nothing_when_it_is_bad(site: Path) -> None:
    (site / "agent.toml").write_text('agent_id = "agent-07"\nbogus = 1\n', encoding="utf-8")
    done = install(site)
    assert done.returncode == 1
    assert "check the config" in done.stderr and "nothing had been changed" in done.stderr
    assert calls(site) == [["nssm", "status", "guardia-agent"]]


def test_install_refuses_plain_ws_to_a_remote_relay_before_anything(site: Path) -> None:
    (site.parent / "secrets.env").write_text(
        "EXTERNAL_WS_URL=ws://relay.example.org/agent\n", encoding="utf-8"
    )
    done = install(site)
    assert done.returncode == 1
    assert "allow_insecure" in done.stderr
    assert services(site) == []


@pytest.mark.parametrize(
    ("env_text", "message"),
    [
        ("AGENT_RELAY_TOKEN=x\n", "sets no EXTERNAL_WS_URL"),
        ("EXTERNAL_WS_URL wss://relay.example.org/agent\n", "line 1: expected KEY=VALUE"),
    ],
)
def test_a_bad_environment_file_is_refused_before_any_call(site: Path, env_text: str, message: str) -> None:
    (site.parent / "secrets.env").write_text(env_text, encoding="utf-8")
    done = install(site)
    assert done.returncode == 2
    assert message in done.stderr
    assert calls(site) == []


def test_install_over_an_existing_service_is_refused(site: Path) -> None:
    assert install(site).returncode == 0
    done = install(site)
    assert done.returncode == 1
    assert "already exists" in done.stderr


def test_status_and_uninstall(site: Path) -> None:
    status = agent("service", "status", "--platform", "windows")
    assert (status.returncode, status.stdout.strip()) == (1, "guardia-agent: not installed")
    assert install(site).returncode == 0
    status = agent("service", "status", "--platform", "windows")
    assert (status.returncode, status.stdout.strip()) == (1, "guardia-agent: SERVICE_STOPPED")
    done = agent("-c", str(site / "agent.toml"), "service", "uninstall", "--platform", "windows")
    assert done.returncode == 0, done.stderr
    assert calls(site)[-2:] == [
        ["nssm", "stop", "guardia-agent"],
        ["nssm", "remove", "guardia-agent", "confirm"],
    ]
    assert services(site) == [] and not (site / "guardia-agent.env").exists()
    again = agent("service", "uninstall", "--platform", "windows")
    assert again.returncode == 1 and "no service named guardia-agent" in again.stderr


@icacls_from_system32
def test_env_naming_the_services_own_file_keeps_its_secrets(site: Path) -> None:
    """The README's layout: the secrets file is written where the service keeps its copy, and --env names it."""
    own = site / "guardia-agent.env"
    shutil.copy2(site.parent / "secrets.env", own)
    secrets = own.read_bytes()
    done = agent(
        "-c", str(site / "agent.toml"), "service", "install", "--platform", "windows", "--env", str(own)
    )
    assert done.returncode == 0, done.stderr
    assert own.read_bytes() == secrets  # it was emptied, then filled from itself: nothing, before


def test_uninstall_without_the_config_says_the_secrets_file_stays(site: Path) -> None:
    """Without -c the environment file cannot be found: the uninstall says so instead of claiming it deleted it."""
    assert install(site).returncode == 0
    done = agent("service", "uninstall", "--platform", "windows")
    assert done.returncode == 0, done.stderr
    assert "guardia-agent.env" in done.stderr and "not deleted" in done.stderr
    assert (site / "guardia-agent.env").exists() and services(site) == []


def test_keep_env_keeps_exactly_the_environment_file_step_out(tmp_path: Path) -> None:
    kept = [step.what for step in svcinstall.linux_uninstall_steps("guardia-agent", tmp_path, keep_env=True)]
    removed = [step.what for step in svcinstall.linux_uninstall_steps("guardia-agent", tmp_path)]
    env = str(tmp_path / "etc/guardia-agent.env")
    assert [w for w in removed if w not in kept] == [f"delete {env}"] and all(env not in w for w in kept)


@icacls_from_system32
def test_dry_run_prints_the_argument_lists_and_calls_nothing(site: Path) -> None:
    done = install(site, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "ok: check the config with the service's environment" in done.stdout
    assert "nssm set guardia-agent AppRestartDelay 5000" in done.stdout
    assert calls(site) == []


def test_dry_run_says_when_the_config_check_would_stop_the_install(site: Path) -> None:
    (site / "agent.toml").write_text(
        'agent_id = "agent-07"\n[executor]\nmax_concurency = 4\n', encoding="utf-8"
    )
    done = install(site, "--dry-run")
    assert done.returncode == 1, done.stdout
    assert "the install would stop at its first step" in done.stderr and "max_concurency" in done.stderr
    assert "nssm" not in done.stdout and calls(site) == []


def test_without_nssm_the_answer_says_where_to_put_it(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(shutil.which("nssm", path=str(site.parent / "bin")) or "nssm").unlink()
    monkeypatch.setenv("PATH", str(site.parent / "bin"))
    done = install(site)
    assert done.returncode == 2
    assert "nssm not found" in done.stderr


# -- Linux ---------------------------------------------------------------------------------------------------


@pytest.mark.posix_only(reason="a systemd install is made on Linux")
def test_linux_install_refuses_a_path_a_unit_line_would_split(site: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = agent(
        "-c", str(site / "agent.toml"), "service", "install", "--platform", "linux", "--root", str(root),
        "--env", str(site.parent / "secrets.env"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "guardia agent" in done.stderr and "quoted" in done.stderr
    assert not root.exists()


@pytest.mark.posix_only(reason="a systemd install is made on Linux")
def test_linux_install_and_uninstall_with_systemctl_root(tmp_path: Path) -> None:
    app = tmp_path / "opt-guardia"
    app.mkdir()
    shutil.copytree(ROOT / "runbooks", app / "runbooks")
    shutil.copy2(ROOT / "runbooks.lock", app / "runbooks.lock")
    (app / "agent.toml").write_text('agent_id = "agent-07"\n', encoding="utf-8")
    secrets = tmp_path / "secrets.env"
    secrets.write_text("EXTERNAL_WS_URL=wss://relay.example.org/agent\n", encoding="utf-8")
    root = tmp_path / "root"
    done = agent(
        "-c", str(app / "agent.toml"), "service", "install", "--platform", "linux", "--root", str(root),
        "--env", str(secrets),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit = root / "etc/systemd/system/guardia-agent.service"
    env = root / "etc/guardia-agent.env"
    assert env.stat().st_mode & 0o777 == 0o600 and env.read_bytes() == secrets.read_bytes()
    assert (root / "etc/systemd/system/multi-user.target.wants/guardia-agent.service").is_symlink()
    text = unit.read_text(encoding="utf-8")
    assert f"ExecStart={AGENT} -c {app / 'agent.toml'} run --log-json" in text
    assert f"ReadWritePaths={app / 'var'}" in text
    assert "EnvironmentFile=/etc/guardia-agent.env" in text
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        encoding="utf-8",
    )
    assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify.stdout + verify.stderr

    removed = agent("service", "uninstall", "--platform", "linux", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists() and not env.exists()


@pytest.mark.posix_only(reason="a systemd install is made on Linux")
def test_linux_install_without_its_user_says_how_to_make_it(tmp_path: Path) -> None:
    secrets = _write_env(tmp_path)
    (tmp_path / "agent.toml").write_text('agent_id = "a"\n', encoding="utf-8", newline="\n")
    done = agent(
        "-c", str(tmp_path / "agent.toml"), "service", "install", "--platform", "linux",
        "--account", "nosuchuser7", "--env", str(secrets),
    )  # fmt: skip
    assert done.returncode == 2
    assert "user nosuchuser7 does not exist: useradd --system" in done.stderr
    dry = agent(
        "-c", str(tmp_path / "agent.toml"), "service", "install", "--platform", "linux",
        "--account", "nosuchuser7", "--env", str(secrets), "--dry-run",
    )  # fmt: skip
    assert (dry.returncode, dry.stderr) == (
        done.returncode,
        done.stderr,
    )  # the dry run stops where the install would


def test_the_relay_url_may_come_from_the_config_instead_of_the_environment_file(site: Path) -> None:
    (site.parent / "secrets.env").write_text("AGENT_RELAY_TOKEN=tok-3f9a1c77e2\n", encoding="utf-8")
    (site / "agent.toml").write_text(
        'agent_id = "agent-07"\n[relay]\nurl = "wss://relay.example.org/agent"\n', encoding="utf-8"
    )
    done = install(site, "--dry-run")
    assert done.returncode == 0, done.stderr


def _write_env(folder: Path) -> Path:
    path = folder / "secrets.env"
    path.write_text("EXTERNAL_WS_URL=wss://relay.example.org/agent\n", encoding="utf-8")
    return path


def test_the_unit_in_deploy_is_the_one_the_agent_writes() -> None:
    spec = ServiceSpec(
        agent_exe=Path("/opt/guardia/.venv/bin/agent"),
        config=Path("/opt/guardia/agent.toml"),
        env_source=Path("/dev/null"),
    )
    assert (ROOT / "deploy/guardia-agent.service").read_text(encoding="utf-8") == systemd_unit(
        spec, Path("/etc/guardia-agent.env")
    )


@pytest.mark.posix_only(reason="a systemd install is made on Linux")
def test_systemd_analyze_finds_fault_with_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: the same verify on a unit with a typo'd key and a missing program does."""
    spec = ServiceSpec(agent_exe=AGENT, config=tmp_path / "agent.toml", env_source=Path("/dev/null"))
    broken = systemd_unit(spec, Path("/etc/guardia-agent.env")).replace(
        "UMask=0077", "UMask=0077\nProtectSytem=yes"
    )
    unit = tmp_path / "broken.service"
    unit.write_text(broken.replace(str(AGENT), "/nonexistent/agent"), encoding="utf-8", newline="\n")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        encoding="utf-8",
    )
    assert verify.returncode != 0
    assert "ProtectSytem" in verify.stdout + verify.stderr


def relay_site(tmp_path: Path) -> tuple[Path, Path]:
    app = tmp_path / "opt-guardia-relay"
    app.mkdir()
    (app / "relay.toml").write_text('state_file = "var/relay-state.json"\n[agents.site-a]\nrooms = ["ops"]\n'
                                    'token_env = "SITE_A_TOKEN"\n', encoding="utf-8", newline="\n")  # fmt: skip
    secrets = tmp_path / "relay.env"
    secrets.write_text("SITE_A_TOKEN=tok-site-a-3f9a1c77e2\n", encoding="utf-8")
    return app, secrets


@icacls_from_system32
def test_the_relay_installs_as_its_own_service_with_its_own_check(tmp_path: Path) -> None:
    app, secrets = relay_site(tmp_path)
    root = tmp_path / "root"
    done = agent(
        "-c", str(app / "relay.toml"), "service", "install", "--relay", "--platform", "linux", "--root", str(root),
        "--env", str(secrets),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit = root / "etc/systemd/system/guardia-relay.service"
    text = unit.read_text(encoding="utf-8")
    assert f"ExecStartPre={AGENT} relay --config {app / 'relay.toml'} --host 127.0.0.1 --check" in text
    assert f"ExecStart={AGENT} relay --config {app / 'relay.toml'} --host 127.0.0.1 --port 8765" in text
    assert "EnvironmentFile=/etc/guardia-relay.env" in text and f"ReadWritePaths={app / 'var'}" in text
    assert (root / "etc/guardia-relay.env").read_bytes() == secrets.read_bytes()
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False,
                            encoding="utf-8")  # fmt: skip
    assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify.stdout + verify.stderr
    # Its check runs first, with the service's environment: a token the config names but the file lacks stops it.
    secrets.write_text("OTHER=1\n", encoding="utf-8")
    refused = agent(
        "-c", str(app / "relay.toml"), "service", "install", "--relay", "--platform", "linux",
        "--root", str(tmp_path / "root2"), "--env", str(secrets),
    )  # fmt: skip
    assert refused.returncode == 1 and "$SITE_A_TOKEN is not set" in refused.stderr
    assert not (tmp_path / "root2" / "etc/systemd/system/guardia-relay.service").exists()


def test_the_relay_on_windows_is_nssm_running_agent_relay(site: Path, tmp_path: Path) -> None:
    app, secrets = relay_site(tmp_path)
    done = agent(
        "-c", str(app / "relay.toml"), "service", "install", "--relay", "--platform", "windows", "--dry-run",
        "--env", str(secrets), "--port", "9443",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ok: check the relay's config with the service's environment" in done.stdout
    env = app / "guardia-relay.env"
    params = subprocess.list2cmdline(["--env-file", str(env), "relay", "--config", str(app / "relay.toml"),
                                      "--host", "127.0.0.1", "--port", "9443"])  # fmt: skip
    assert f"AppParameters {params}" in done.stdout.replace("\n    ", " ") or params in done.stdout
    assert "GUARDiA relay" in done.stdout and "guardia-relay" in done.stdout


def test_the_relay_unit_in_deploy_is_the_one_the_agent_writes() -> None:
    spec = ServiceSpec(
        agent_exe=Path("/opt/guardia-relay/.venv/bin/agent"),
        config=Path("/opt/guardia-relay/relay.toml"),
        env_source=Path("/dev/null"),
        name="guardia-relay",
        relay=svcinstall.RelayListen(),
    )
    assert (ROOT / "deploy/guardia-relay.service").read_text(encoding="utf-8") == systemd_unit(
        spec, Path("/etc/guardia-relay.env")
    )
