"""The hash locks agree with pyproject.toml, and the environment running the tests holds exactly the locked versions.

Offline: no index is asked. When a test here fails, the fix is ``scripts/lock`` (then commit the locks).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PLATFORMS = {"linux": "linux", "windows": "win32"}  # lock name -> sys.platform it is for
FIX = "run scripts/lock and commit the locks"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a uv/pip-compile lock; every pin must carry at least one sha256."""
    pins: dict[str, str] = {}
    text = path.read_text(encoding="utf-8")
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = _PIN.match(block)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{path.name}: {match[1]} has no hash; {FIX}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _environment(platform: str) -> dict[str, str]:
    return {"sys_platform": platform, "platform_system": "Windows" if platform == "win32" else "Linux",
            "os_name": "nt" if platform == "win32" else "posix", "python_version": "3.11"}  # fmt: skip


def disagreements(requirements: list[str], pins: dict[str, str], platform: str, extra: str = "") -> list[str]:
    """What in ``requirements`` the pins do not satisfy (missing, or a version outside the specifier)."""
    found = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**_environment(platform), "extra": extra}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            found.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            found.append(f"{req.name}=={pinned} is outside {req.specifier}")
    return found


@pytest.mark.parametrize("name", sorted(PLATFORMS))
def test_locks_satisfy_pyproject_and_agree_with_each_other(name: str) -> None:
    platform = PLATFORMS[name]
    runtime = read_lock(REQUIREMENTS / f"{name}.lock")
    test = read_lock(REQUIREMENTS / f"test-{name}.lock")
    problems = [
        f"{name}.lock: {p}" for p in disagreements(PYPROJECT["project"]["dependencies"], runtime, platform)
    ]
    for lock, pins in ((f"test-{name}.lock", test),):
        deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]
        problems += [f"{lock}: {p}" for p in disagreements(deps, pins, platform, extra="test")]
    problems += [
        f"test-{name}.lock pins {pkg}=={test.get(pkg)} but {name}.lock pins {version}"
        for pkg, version in runtime.items()
        if test.get(pkg) != version
    ]
    assert not problems, f"pyproject.toml and the locks disagree ({FIX}):\n" + "\n".join(problems)


def test_build_lock_is_the_build_system_of_pyproject() -> None:
    declared = sorted(str(Requirement(r)) for r in PYPROJECT["build-system"]["requires"])
    lines = (REQUIREMENTS / "build.in").read_text(encoding="utf-8").splitlines()
    listed = sorted(str(Requirement(line)) for line in lines if line.strip() and not line.startswith("#"))
    assert listed == declared, f"requirements/build.in must list [build-system] requires {declared}; {FIX}"
    problems = disagreements(declared, read_lock(REQUIREMENTS / "build.lock"), "linux")
    assert not problems, f"build.lock: {problems}; {FIX}"


def test_disagreement_is_found_for_a_missing_pin_and_a_version_outside_the_range() -> None:
    pins = {"websockets": "16.0", "click": "8.5.1"}
    assert disagreements(["websockets>=17.0", "click>=8.1", "asyncssh>=2.17"], pins, "linux") == [
        "websockets==16.0 is outside >=17.0",
        "asyncssh is not in the lock",
    ]
    assert disagreements(['pywin32>=306; sys_platform == "win32"'], {}, "linux") == []
    assert disagreements(['pywin32>=306; sys_platform == "win32"'], {}, "win32") == [
        "pywin32 is not in the lock"
    ]


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not running in a virtual environment")
def test_the_environment_running_the_tests_holds_exactly_the_locked_versions() -> None:
    """What scripts/test and scripts/test-windows install: the test lock of this platform, nothing newer."""
    name = "windows" if sys.platform == "win32" else "linux"
    pins = read_lock(REQUIREMENTS / f"test-{name}.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {
        pkg: (version, installed.get(pkg)) for pkg, version in pins.items() if installed.get(pkg) != version
    }
    assert not wrong, f"installed versions differ from test-{name}.lock (locked, installed): {wrong}"
