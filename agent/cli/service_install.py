"""``agent service install|uninstall|status``: the agent as a Windows service (NSSM) or a systemd unit.

Every external program is run with an argument list, never a shell string, and every exit code is checked. An
install is a list of :class:`Step`\\ s planned up front (``--dry-run`` prints them); when one fails, the steps done so
far are undone where they can be, and :class:`ServiceError` says which step failed, with the program's own words,
what was undone and what is left for a person to do.

Windows (NSSM): a virtual account ``NT SERVICE\\<name>`` by default (a dedicated account with ``--account``; never
LocalSystem), delayed automatic start, restart on failure after a delay, stdout/stderr to files rotated daily and at
10 MB, a graceful stop (Ctrl-C, then up to 60 s), and the secrets in an environment file that only the service
account (and Administrators/SYSTEM, who own the machine anyway) can read: icacls removes inherited access. The file
is read by ``agent --env-file`` at start, because NSSM's own environment setting lives in the registry, where any
local user can read it.

Linux (systemd): a hardened unit in ``/etc/systemd/system`` running as a dedicated user, the secrets in a root-only
environment file that systemd reads before dropping privileges, enabled and started with systemctl. ``root`` puts
everything under another folder (``systemctl --root``, for images and tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.config.envfile import read_env_file
from agent.errors import AgentError

DEFAULT_NAME = "guardia-agent"
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


#: Well-known SIDs, so that icacls works on every Windows display language (group names are translated).
def system_tool(name: str) -> str:
    """A Windows system program by its full path in System32 (on another OS, for dry runs and tests: its bare name).

    A bare ``icacls`` would be looked up by CreateProcess in the current folder before System32: an ``icacls.exe``
    planted in the agent's folder would run elevated, as the installing administrator.
    """
    if os.name != "nt":
        return name
    return str(Path(os.environ.get("SYSTEMROOT", r"C:\Windows")) / "System32" / f"{name}.exe")


#: icacls, as the install calls it (tests may point it elsewhere).
ICACLS = system_tool("icacls")
SID_ADMINISTRATORS = "*S-1-5-32-544"
SID_SYSTEM = "*S-1-5-18"
RESTART_DELAY_MS = 5000
STOP_TIMEOUT_MS = 60000
ROTATE_BYTES = 10 * 1024 * 1024
#: Characters a path may have inside a systemd unit line without quoting rules coming into play.
_UNIT_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._+@-]*")


class ServiceError(AgentError, RuntimeError):
    """A service could not be installed, removed or queried; the message says what was done and what is left."""


@dataclass(frozen=True)
class Step:
    """One thing an install does: a program run with ``argv``, or a local action (``action``) described by ``what``."""

    what: str
    argv: tuple[str, ...] = ()
    action: Callable[[], None] | None = field(default=None, compare=False)
    #: What undoes this step when a later one fails (None: nothing to undo).
    undo: Step | None = None
    #: Exit codes that count as success (nssm status of a missing service exits 3, for instance).
    ok_codes: tuple[int, ...] = (0,)

    def show(self) -> str:
        return subprocess.list2cmdline(self.argv) if self.argv else self.what


@dataclass(frozen=True)
class RelayListen:
    """``agent service install --relay``: the reference relay as the service (``agent relay``), listening here
    (behind a reverse proxy that terminates TLS: docs/install.md, "Deploying the relay")."""

    host: str = "127.0.0.1"
    port: int = 8765


@dataclass(frozen=True)
class ServiceSpec:
    """What to install, all paths absolute."""

    agent_exe: Path  # the console script: ...\\Scripts\\agent.exe or .../bin/agent
    config: Path  # agent.toml
    env_source: Path  # the KEY=VALUE file with the relay URL, DB_* and tokens
    name: str = DEFAULT_NAME
    #: Windows: None → the virtual account NT SERVICE\<name>; or DOMAIN\user / .\user. Linux: the user to run as.
    account: str | None = None
    password: str | None = None  # Windows, dedicated account only
    start: bool = True
    #: The relay instead of the agent (``config`` is then the relay's TOML).
    relay: RelayListen | None = None

    @property
    def what(self) -> str:
        """What runs: "agent" or "relay" (its display name is "GUARDiA <what>")."""
        return "relay" if self.relay is not None else "agent"

    def arguments(self, env_file: Path | None, config: str | None = None) -> list[str]:
        """The program's arguments as the service runs it (``env_file``: given with --env-file; None: the service
        manager sets the environment; ``config``: the config's path as the service manager writes it, a systemd
        unit's in POSIX form whatever the machine making it)."""
        env = ["--env-file", str(env_file)] if env_file is not None else []
        config = config or str(self.config)
        if self.relay is not None:
            return [
                *env,
                "relay",
                "--config",
                config,
                "--host",
                self.relay.host,
                "--port",
                str(self.relay.port),
            ]
        return ["-c", config, *env, "run", "--log-json"]

    def check_arguments(
        self, env_file: Path | None, before_start: bool, config: str | None = None
    ) -> list[str]:
        """The read-only check of the same config (``before_start``: the one the service runs before each start)."""
        env = ["--env-file", str(env_file)] if env_file is not None else []
        config = config or str(self.config)
        if self.relay is not None:
            return [*env, "relay", "--config", config, "--host", self.relay.host, "--check"]
        return ["-c", config, *env, "config", "check", *(["--before-start"] if before_start else [])]

    @property
    def app_dir(self) -> Path:
        return self.config.parent

    @property
    def state_dir(self) -> Path:
        return self.app_dir / "var"

    @property
    def log_dir(self) -> Path:
        return self.app_dir / "logs"


def _decode(data: bytes) -> str:
    """nssm writes UTF-16 when its output is not a console; everything else writes the local code page or UTF-8."""
    if len(data) >= 2 and (data[1:2] == b"\x00" or data.startswith(b"\xff\xfe")):
        return data.decode("utf-16-le", errors="replace").lstrip("\ufeff")
    return data.decode("utf-8", errors="replace")


Runner = Callable[[Sequence[str]], "tuple[int, str]"]


def run_program(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv`` (no shell) and return its exit code and combined, decoded output.

    Raises:
        ServiceError: the program is missing or cannot be started.
    """
    try:
        done = subprocess.run(list(argv), capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} not found") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc}") from None
    return done.returncode, (_decode(done.stdout) + _decode(done.stderr)).strip()


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def carry_out(
    steps: Sequence[Step], runner: Runner = run_program, echo: Callable[[str], None] = print
) -> None:
    """Do each step in order; on a failure undo the done ones (newest first) and raise one clear error.

    Raises:
        ServiceError: names the failed step, the program's exit code and last output line, what was undone, and
            what could not be undone.
    """
    done: list[Step] = []
    for step in steps:
        try:
            if step.action is not None:
                step.action()
            else:
                code, output = runner(step.argv)
                if code not in step.ok_codes:
                    raise ServiceError(f"{step.what}: {step.argv[0]} exited {code}: {_last_line(output)}")
        except (ServiceError, OSError) as exc:
            detail = str(exc) if isinstance(exc, ServiceError) else f"{step.what}: {exc.strerror or exc}"
            raise ServiceError(detail + _undo(done, runner)) from None
        echo(f"  ok: {step.what}")
        done.append(step)


def _undo(done: list[Step], runner: Runner) -> str:
    undone: list[str] = []
    left: list[str] = []
    for step in reversed(done):
        if step.undo is None:
            continue
        try:
            if step.undo.action is not None:
                step.undo.action()
                ok = True
            else:
                ok = runner(step.undo.argv)[0] in step.undo.ok_codes
        except (ServiceError, OSError):
            ok = False
        (undone if ok else left).append(step.undo.show() if not ok else step.undo.what)
    note = ""
    if undone:
        note += "; undone: " + ", ".join(undone)
    if left:
        note += "; NOT undone, do it by hand: " + " ; ".join(left)
    if not undone and not left:
        note += "; nothing had been changed"
    return note


# -- Windows (NSSM) ---------------------------------------------------------------------------------------------


def windows_account(spec: ServiceSpec) -> str:
    return spec.account or f"NT SERVICE\\{spec.name}"


def windows_env_path(config: Path, name: str) -> Path:
    """The service's own copy of its environment (its secrets): ``NAME.env`` beside the config."""
    return config.absolute().parent / f"{name}.env"


def config_check_step(spec: ServiceSpec) -> Step:
    """The first step of every install: ``agent config check`` as the service will run, before anything changes."""
    argv = (str(spec.agent_exe), *spec.check_arguments(spec.env_source, before_start=False))
    whose = "the config" if spec.relay is None else "the relay's config"
    return Step(f"check {whose} with the service's environment", argv)


def windows_install_steps(spec: ServiceSpec, nssm: str) -> list[Step]:
    """The install, as argument lists for nssm and icacls; the config check runs first, so nothing is left
    behind by a config that would not start."""
    name, account = spec.name, windows_account(spec)
    env_path = windows_env_path(spec.config, name)
    params = subprocess.list2cmdline(spec.arguments(env_path))
    display = "GUARDiA agent: sandboxed runbook executor" if spec.relay is None else (
        "GUARDiA relay: between the messenger and the agents")  # fmt: skip

    def nssm_set(what: str, *args: str) -> Step:
        return Step(what, (nssm, "set", name, *args))

    secrets: list[bytes] = []

    def create_env() -> None:
        # Read first: --env may name this very file (the README's layout); emptying it would lose the secrets.
        secrets.append(spec.env_source.read_bytes())
        env_path.write_bytes(b"")

    def fill_env() -> None:
        env_path.write_bytes(secrets.pop())

    def remove_env() -> None:
        env_path.unlink(missing_ok=True)

    def make_dirs() -> None:
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        spec.log_dir.mkdir(parents=True, exist_ok=True)

    restrict_env = (
        ICACLS, str(env_path), "/inheritance:r",
        "/grant:r", f"{SID_ADMINISTRATORS}:(F)",
        "/grant:r", f"{SID_SYSTEM}:(F)",
        "/grant:r", f"{account}:(R)",
    )  # fmt: skip
    object_name = (account,) if spec.password is None else (account, spec.password)
    steps = [
        config_check_step(spec),
        Step(
            f"install service {name}",
            (nssm, "install", name, str(spec.agent_exe)),
            undo=Step(f"remove service {name}", (nssm, "remove", name, "confirm")),
        ),
        nssm_set(f"set the {spec.what}'s arguments", "AppParameters", params),
        nssm_set("set the working folder", "AppDirectory", str(spec.app_dir)),
        nssm_set("set the display name", "DisplayName", f"GUARDiA {spec.what}"),
        nssm_set("set the description", "Description", display),
        nssm_set("start automatically (delayed, after the network)", "Start", "SERVICE_DELAYED_AUTO_START"),
        nssm_set(f"run as {account}", "ObjectName", *object_name),
        nssm_set("restart on any exit", "AppExit", "Default", "Restart"),
        nssm_set("wait before a restart", "AppRestartDelay", str(RESTART_DELAY_MS)),
        nssm_set("stop with Ctrl-C only (running tasks finish)", "AppStopMethodSkip", "6"),
        nssm_set("give a stop 60 s", "AppStopMethodConsole", str(STOP_TIMEOUT_MS)),
        nssm_set("stdout to a file", "AppStdout", str(spec.log_dir / f"{name}.out.log")),
        nssm_set("stderr (the agent's log) to a file", "AppStderr", str(spec.log_dir / f"{name}.log")),
        nssm_set("append to the log files", "AppStdoutCreationDisposition", "4"),
        nssm_set("append to the log files", "AppStderrCreationDisposition", "4"),
        nssm_set("rotate the log files", "AppRotateFiles", "1"),
        nssm_set("rotate while running", "AppRotateOnline", "1"),
        nssm_set("rotate daily", "AppRotateSeconds", "86400"),
        nssm_set("rotate at 10 MB", "AppRotateBytes", str(ROTATE_BYTES)),
        # Empty first, locked down, then filled: the secrets never sit in a file others may read.
        Step(
            f"create {env_path} (empty)",
            action=create_env,
            undo=Step(f"delete {env_path}", action=remove_env),
        ),
        Step(f"make {env_path.name} readable by {account} only (and Administrators, SYSTEM)", restrict_env),
        Step(f"write the environment into {env_path.name}", action=fill_env),
        Step(f"create {spec.state_dir} and {spec.log_dir} (kept on uninstall)", action=make_dirs),
        Step(
            f"let {account} write {spec.state_dir.name}\\",
            (ICACLS, str(spec.state_dir), "/grant:r", f"{account}:(OI)(CI)M"),
        ),
        Step(
            f"let {account} write {spec.log_dir.name}\\",
            (ICACLS, str(spec.log_dir), "/grant:r", f"{account}:(OI)(CI)M"),
        ),
    ]
    if spec.start:
        steps.append(Step(f"start service {name}", (nssm, "start", name)))
    return steps


def windows_uninstall_steps(name: str, nssm: str, env_path: Path | None) -> list[Step]:
    steps = [
        # nssm stop exits non-zero for a service that is already stopped; the remove below is what must succeed.
        Step(f"stop service {name}", (nssm, "stop", name), ok_codes=tuple(range(0, 256))),
        Step(f"remove service {name}", (nssm, "remove", name, "confirm")),
    ]
    if env_path is not None:
        steps.append(Step(f"delete {env_path}", action=lambda: env_path.unlink(missing_ok=True)))
    return steps


# -- Linux (systemd) --------------------------------------------------------------------------------------------


def _unit_path(value: Path, what: str) -> str:
    text = value.as_posix()
    if not _UNIT_SAFE_PATH.fullmatch(text):
        raise ServiceError(
            f"{what} {text!r} has characters a unit file would need quoted (use letters, digits, / . _ + @ -)"
        )
    return text


def systemd_unit(spec: ServiceSpec, env_path: Path) -> str:
    """The hardened unit: a dedicated user, the secrets from a root-only file, only var/ writable, no capabilities.

    Raises:
        ServiceError: a path that cannot go into a unit line as it is.
    """
    user = spec.account or "guardia"
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise ServiceError(f"{user!r} is not a Linux user name")
    exe = _unit_path(spec.agent_exe, "the agent program")
    config = _unit_path(spec.config, "the config")
    app = _unit_path(spec.app_dir, "the agent's folder")
    state = _unit_path(spec.state_dir, "the state folder")
    env = _unit_path(env_path, "the environment file")
    in_home = any(p.startswith(("/home/", "/root/")) for p in (exe, app))
    for value, what in ((spec.relay.host, "the relay's address"),) if spec.relay else ():
        if not re.fullmatch(r"[A-Za-z0-9.:_-]+", value):
            raise ServiceError(f"{what} {value!r} cannot go into a unit line as it is")
    check = " ".join(spec.check_arguments(None, before_start=True, config=config))
    run = " ".join(spec.arguments(None, config=config))
    if spec.relay is None:
        head = "the GUARDiA agent"
        description = "GUARDiA agent (sandboxed runbook executor)"
        secrets = "EXTERNAL_WS_URL, AGENT_RELAY_TOKEN, DB_*, key passphrases"
        stopping = (
            "# SIGTERM: stop taking tasks, let running ones finish (tasks.shutdown_grace), flush the outbox."
        )
        reads = "the agent reads its folder, writes var/, and dials out"
    else:
        head = "the GUARDiA relay"
        description = "GUARDiA relay (between the messenger and the agents)"
        secrets = "the agents' and operators' tokens, AGENT_COMMAND_KEY"
        stopping = "# SIGTERM: stop listening and close the connections (the agents keep their answers and dial again)."
        reads = "the relay reads its folder, writes var/ (state_file), and listens"
    return f"""\
# systemd unit for {head}, written by `agent service install{" --relay" if spec.relay else ""}` (re-run it rather than editing this).
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
WorkingDirectory={app}
# {secrets}: root-only, read by systemd before dropping privileges.
EnvironmentFile={env}
ExecStartPre={exe} {check}
ExecStart={exe} {run}
{stopping}
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec={RESTART_DELAY_MS // 1000}

# Hardening: {reads}. Nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={"read-only" if in_home else "yes"}
ReadWritePaths={state}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=
AmbientCapabilities=
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def _under(root: Path | None, path: Path) -> Path:
    return path if root is None else root / path.relative_to(path.anchor)


def linux_paths(name: str, root: Path | None) -> tuple[Path, Path, Path]:
    """(unit file, environment file as the unit names it, environment file as written here)."""
    unit = _under(root, Path(f"/etc/systemd/system/{name}.service"))
    env = Path(f"/etc/{name}.env")
    return unit, env, _under(root, env)


def linux_install_steps(spec: ServiceSpec, root: Path | None) -> list[Step]:
    unit_path, env_named, env_path = linux_paths(spec.name, root)
    unit = systemd_unit(spec, env_named)
    user = spec.account or "guardia"
    systemctl: tuple[str, ...] = ("systemctl",) if root is None else ("systemctl", f"--root={root}")

    def write_env() -> None:
        secrets = spec.env_source.read_bytes()  # before the truncation below: --env may name this very file
        env_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets)
        os.chmod(env_path, 0o600)

    def write_unit() -> None:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        unit_path.write_text(unit, encoding="utf-8")
        os.chmod(unit_path, 0o644)

    def make_state() -> None:
        state = _under(root, spec.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        if root is None and hasattr(os, "chown"):
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(state, entry.pw_uid, entry.pw_gid)
        os.chmod(state, 0o700)

    steps = [
        config_check_step(spec),
        Step(f"create {spec.state_dir} for user {user}", action=make_state),
        Step(
            f"write {env_path} (mode 0600, root only)",
            action=write_env,
            undo=Step(f"delete {env_path}", action=lambda: env_path.unlink(missing_ok=True)),
        ),
        Step(
            f"write {unit_path}",
            action=write_unit,
            undo=Step(f"delete {unit_path}", action=lambda: unit_path.unlink(missing_ok=True)),
        ),
    ]
    if root is None:
        steps.append(Step("reload systemd", ("systemctl", "daemon-reload")))
    enable = ("enable", "--now", spec.name) if spec.start and root is None else ("enable", spec.name)
    steps.append(
        Step(
            f"enable{' and start' if 'now' in ' '.join(enable) else ''} {spec.name}",
            (*systemctl, *enable),
            undo=Step(f"disable {spec.name}", (*systemctl, "disable", spec.name)),
        )
    )
    return steps


def linux_uninstall_steps(name: str, root: Path | None, keep_env: bool = False) -> list[Step]:
    """Stop, disable and delete the unit, and its environment file (the secrets) unless ``keep_env``."""
    unit_path, _, env_path = linux_paths(name, root)
    systemctl: tuple[str, ...] = ("systemctl",) if root is None else ("systemctl", f"--root={root}")
    disable = ("disable", "--now", name) if root is None else ("disable", name)
    steps = [
        Step(f"stop and disable {name}", (*systemctl, *disable)),
        Step(f"delete {unit_path}", action=lambda: unit_path.unlink(missing_ok=True)),
    ]
    if not keep_env:
        steps.append(Step(f"delete {env_path}", action=lambda: env_path.unlink(missing_ok=True)))
    if root is None:
        steps.append(Step("reload systemd", ("systemctl", "daemon-reload")))
    return steps


# -- checks shared by both --------------------------------------------------------------------------------------


def check_spec(spec: ServiceSpec) -> list[str]:
    """Everything wrong with a spec before anything is touched (empty: fine)."""
    problems: list[str] = []
    if not NAME_PATTERN.fullmatch(spec.name):
        problems.append(f"service name {spec.name!r}: letters, digits, _ and -, starting with a letter")
    if not spec.agent_exe.is_file():
        problems.append(f"the agent program {spec.agent_exe} does not exist")
    if not spec.config.is_file():
        problems.append(f"the config {spec.config} does not exist (agent -c PATH service install …)")
    if not spec.env_source.is_file():
        problems.append(
            f"the environment file {spec.env_source} does not exist (see deploy/guardia-agent.env.example)"
        )
    else:
        try:
            env = read_env_file(spec.env_source)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if spec.relay is None and "EXTERNAL_WS_URL" not in env and not _relay_in_config(spec.config):
                problems.append(
                    f"{spec.env_source} sets no EXTERNAL_WS_URL and the config no [relay] url (the relay the "
                    "service dials)"
                )
    return problems


def _relay_in_config(config: Path) -> bool:
    """True when the config names the relay itself (``[relay] url``); a config that does not load is the config
    check's to report."""
    from agent.config.schema import load_config
    from agent.errors import ConfigError

    try:
        return load_config(config).relay.url is not None
    except ConfigError:
        return False


def check_linux_host(spec: ServiceSpec) -> list[str]:
    """What stops a real (not ``--root``) Linux install: not root, or the service user missing."""
    problems: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        problems.append("installing a systemd unit needs root (sudo)")
    user = spec.account or "guardia"
    try:
        import pwd

        pwd.getpwnam(user)
    except (ImportError, KeyError):
        problems.append(
            f"user {user} does not exist: useradd --system --home-dir {spec.app_dir} --shell /usr/sbin/nologin {user}"
        )
    return problems


def find_nssm(explicit: str | None) -> str:
    """Raises: ServiceError when nssm is neither given nor on PATH."""
    found = explicit or shutil.which("nssm")
    if not found:
        raise ServiceError("nssm not found: put nssm.exe on PATH or give --nssm C:\\tools\\nssm.exe")
    return found


def windows_status(name: str, nssm: str, runner: Runner = run_program) -> str | None:
    """The service's state as nssm says it (SERVICE_RUNNING, SERVICE_STOPPED, …), or None when not installed."""
    code, output = runner((nssm, "status", name))
    if code != 0:
        return None
    return _last_line(output)


def linux_status(name: str, runner: Runner = run_program) -> str | None:
    """``active``, ``inactive``, ``failed``, … or None when the unit does not exist."""
    code, output = runner(("systemctl", "show", "--property=LoadState,ActiveState", "--value", name))
    lines = output.split()
    if code != 0 or not lines or lines[0] == "not-found":
        return None
    return lines[-1]
