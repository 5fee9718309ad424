"""Rules that keep the agent the same program on Windows as on Linux, checked over the source itself."""

from __future__ import annotations

import ast
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT_IO = {"read_text", "write_text"}


def unencoded_text_io(source: str, filename: str) -> list[str]:
    """Calls that read or write text in the platform's default encoding (the ANSI code page on Windows).

    ``Path.read_text``/``write_text``, ``open``/``Path.open`` in a text mode and ``subprocess.*(text=True)`` must
    name ``encoding=``.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg for k in node.keywords}
        if "encoding" in keywords:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os":
            continue  # os.open: a file descriptor, bytes
        text_kw = any(
            k.arg in ("text", "universal_newlines")
            and isinstance(k.value, ast.Constant)
            and k.value.value is True
            for k in node.keywords
        )
        if text_kw:
            found.append(f"{filename}:{node.lineno} {name}(text=True) without encoding=")
        elif name in TEXT_IO:
            found.append(f"{filename}:{node.lineno} {name}() without encoding=")
        elif name == "open":
            mode_node = (
                node.args[1]
                if len(node.args) > 1
                else next((k.value for k in node.keywords if k.arg == "mode"), None)
            )
            if isinstance(func, ast.Attribute) and mode_node is None and node.args:
                mode_node = node.args[0]  # Path.open(mode)
            mode = mode_node.value if isinstance(mode_node, ast.Constant) else "r"
            if isinstance(mode, str) and "b" not in mode:
                found.append(f"{filename}:{node.lineno} open() in text mode without encoding=")
    return found


def test_every_text_file_the_agent_reads_or_writes_names_its_encoding() -> None:
    """The agent, its tests and benchmarks alike: a test that reads in the ANSI code page fails under Windows."""
    found = [
        problem
        for folder in ("agent", "tests", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for problem in unencoded_text_io(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not found, "Windows would use its ANSI code page here:\n" + "\n".join(found)


def test_the_rule_finds_each_kind_of_unencoded_text_io() -> None:
    source = (
        "p.write_text(s)\np.read_text()\nopen(f)\nopen(f, 'w')\np.open('a')\n"
        "p.write_text(s, encoding='utf-8')\nopen(f, 'rb')\np.open('rb')\nos.open(f, 1)\nopen(f, encoding='utf-8')\n"
        "run(a, text=True)\nrun(a, text=True, encoding='utf-8')\nrun(a, capture_output=True)\n"
    )
    found = [line.split()[0] for line in unencoded_text_io(source, "x")]
    assert found == ["x:1", "x:2", "x:3", "x:4", "x:5", "x:11"]


def _python(code: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *kwargs.pop("path", [])])}  # type: ignore[list-item]
    env.pop("PYTHONUTF8", None)
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, env=env, check=False, **kwargs
    )  # type: ignore[call-overload, no-any-return]


def test_stdin_from_nul_is_no_terminal_to_prompt_on() -> None:
    """What a service, a scheduled task and CI give a process; on Windows isatty() is true for NUL."""
    done = _python(
        "from agent.shell.startup import stdin_is_terminal; print(stdin_is_terminal())",
        stdin=subprocess.DEVNULL,
    )
    assert done.stdout.strip() == b"False", done.stderr


def test_korean_and_emoji_reach_a_pipe_as_utf8_whatever_the_code_page() -> None:
    line = "비밀번호: Sup3r-Secret ✅ 점검 완료\n"
    done = subprocess.run(
        [sys.executable, "-m", "agent", "redact"], input=line.encode(), capture_output=True, timeout=120,
        cwd=ROOT / "runbooks", env={k: v for k, v in os.environ.items() if k not in ("PYTHONUTF8", "PYTHONIOENCODING")},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    out = done.stdout.decode("utf-8")
    assert "✅ 점검 완료" in out and "Sup3r-Secret" not in out


def test_a_libraries_warning_goes_to_the_debug_log_and_the_agents_own_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "noisylib.py").write_text(
        "import warnings\nwarnings.warn('DSA is deprecated', UserWarning)\n", encoding="utf-8", newline="\n"
    )
    code = (
        "import logging, sys, warnings, agent.shell.startup as s\n"
        "if sys.argv[1:] == ['debug']: logging.basicConfig(level=logging.DEBUG)\n"
        "s.prepare_process()\nimport noisylib\n"
        "warnings.warn_explicit('the agent speaks', UserWarning, s.__file__, 1)\n"
    )
    quiet = _python(code, path=[str(tmp_path)])
    assert quiet.returncode == 0 and b"the agent speaks" in quiet.stderr, quiet.stderr
    assert b"DSA" not in quiet.stderr
    debug = subprocess.run(
        [sys.executable, "-c", code, "debug"], capture_output=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])},
    )  # fmt: skip
    assert b"agent.library_warnings" in debug.stderr and b"DSA is deprecated" in debug.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="Wine shows Windows processes no links")
def test_the_windows_link_check_refuses_a_link_and_lets_a_file_or_nothing_pass(tmp_path: Path) -> None:
    from agent.state.files import _refuse_link

    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError) as caught:
        _refuse_link(tmp_path / "link")
    assert caught.value.errno == errno.ELOOP
    assert _refuse_link(tmp_path / "real") is not None and _refuse_link(tmp_path / "none") is None


def test_the_demo_host_runs_commands_with_a_posix_sh_never_the_platform_shell(tmp_path: Path) -> None:
    """On Windows create_subprocess_shell would hand the agent's bash line to cmd.exe (a false success there)."""
    from agent.reference.demo_host import NoShellError, find_shell

    assert find_shell({}, platform="linux") == "/bin/sh"
    with pytest.raises(NoShellError) as caught:
        find_shell({"PATH": str(tmp_path)}, platform="win32")
    assert "Git for Windows" in str(caught.value)
    shell = tmp_path / "sh.exe"
    shell.write_bytes(b"")
    assert find_shell({"AGENT_DEMO_SHELL": str(shell)}, platform="win32") == str(shell)
    with pytest.raises(NoShellError):
        find_shell({"AGENT_DEMO_SHELL": str(tmp_path / "missing.exe")}, platform="win32")
