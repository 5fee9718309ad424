"""Every command, given bad input at the command line, answers one clear line and its documented exit code, never a
traceback; ``--json`` commands answer errors as one JSON object.

Each case runs the installed console script as a subprocess, as a newcomer would type it (all cases start at once,
a few at a time, so the suite stays quick).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config.envfile import InvalidEnvFile, parse_env

ROOT = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / "agent"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str = ""  # a phrase the answer must contain
    json: bool = False


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cases(w: Path, busy_port: int) -> dict[str, Case]:
    """w: a folder with the bundled catalog; busy_port: a loopback port something already listens on."""
    # Its own folder: the other cases run from w, and their refused runs are audited into w/var.
    quiet = str(_write(w / "quiet" / "agent.toml", 'agent_id = "a1"\n'))
    unknown_key = str(_write(w / "bad.toml", 'agent_id = "a1"\nbogus = 1\n'))
    remote_ws = str(_write(w / "ws.toml", '[relay]\nurl = "ws://192.0.2.10:8765/agent"\n'))
    remote_ws_ok = str(
        _write(w / "ws_ok.toml", '[relay]\nurl = "ws://192.0.2.10:8765/agent"\nallow_insecure = true\n')
    )
    loopback_ws = str(_write(w / "ws_lo.toml", '[relay]\nurl = "ws://127.0.0.1:8765/agent"\n'))
    no_catalog = str(_write(w / "nocat" / "agent.toml", '[catalog]\ndir = "missing"\n'))
    bad_env = str(_write(w / "bad.env", "EXTERNAL_WS_URL wss://x\n"))
    _write(w / "existing", "x")
    missing = str(w / "missing")
    return {
        "keys into a missing folder": Case(("keys", "generate", f"{missing}/alice", "--no-passphrase"), 2,
                                           "does not exist"),
        "keys under a file": Case(("keys", "generate", f"{w}/existing/alice", "--no-passphrase"), 2, "does not exist"),
        "keys over an existing file": Case(("keys", "generate", f"{w}/existing", "--no-passphrase"), 2,
                                           "already exists"),
        "keys without a path": Case(("keys", "generate"), 2, "Missing argument"),
        "keys, no terminal for the passphrase": Case(("keys", "generate", f"{w}/bob"), 2, "no terminal"),
        "chat over plain ws:// off loopback": Case(
            ("chat", "--relay", "ws://192.0.2.10:8765/operator", "--room", "ops", "--user", "kim", "help"), 2,
            "loopback"),
        "relay on port 99999": Case(("relay", "--port", "99999"), 2, "0<=x<=65535"),
        "relay on port -1": Case(("relay", "--port", "-1"), 2, "0<=x<=65535"),
        "relay on port abc": Case(("relay", "--port", "abc"), 2, "not a valid integer"),
        "relay on a busy port": Case(("relay", "--host", "127.0.0.1", "--port", str(busy_port)), 2, "in use"),
        "relay on an address not here": Case(("relay", "--host", "192.0.2.1", "--port", "0"), 2, "assign"),
        "a missing config": Case(("-c", missing, "runbooks", "verify"), 2, "cannot read"),
        "a missing config, json": Case(("-c", missing, "runbooks", "verify", "--json"), 2, "not valid", json=True),
        "a folder as config": Case(("-c", str(w), "runbooks", "list"), 2, "is a directory"),
        "unknown config key": Case(("-c", unknown_key, "config", "check"), 2, "bogus"),
        "plain ws:// to a remote relay": Case(("-c", remote_ws, "config", "check"), 2, "allow_insecure"),
        "plain ws:// refused by run too": Case(("-c", remote_ws, "run"), 2, "allow_insecure"),
        "unknown runbook": Case(("runbooks", "show", "nope"), 1, "no runbook named 'nope'"),
        "unknown runbook, json": Case(("runbooks", "show", "nope", "--json"), 1, "no runbook named", json=True),
        "show without a name, json": Case(("runbooks", "show", "--json"), 2, "Missing argument", json=True),
        "run an unknown runbook": Case(("runbooks", "run", "nope", "--host", "h"), 1, "refused"),
        "run with a bad --arg": Case(("runbooks", "run", "disk_usage", "--host", "h", "--arg", "x"), 2, "KEY=VALUE"),
        "run on an unknown host, json": Case(("runbooks", "run", "disk_usage", "--host", "nohost", "--json"), 1,
                                             "refused", json=True),
        "sign with a missing key": Case(("runbooks", "sign", f"{missing}/key"), 2, "does not exist"),
        "lock signed with a missing key": Case(("runbooks", "lock", "--sign", f"{missing}/key"), 2, "does not exist"),
        "lint a missing catalog": Case(("-c", no_catalog, "runbooks", "lint"), 2, "does not exist"),
        "lint, json, missing catalog": Case(("-c", no_catalog, "runbooks", "lint", "--json"), 2, "does not exist",
                                            json=True),
        "audit a missing file": Case(("audit", "verify", "--file", f"{missing}/audit.jsonl"), 2, "does not exist"),
        "audit with no log": Case(("-c", quiet, "audit", "verify"), 2, "no audit log"),
        "audit a folder": Case(("audit", "verify", "--file", str(w)), 2, "is a directory"),
        "unknown check": Case(("checks", "run", "nope"), 2, "no check named"),
        "unknown check, json": Case(("checks", "run", "nope", "--json"), 2, "no check named", json=True),
        "redact with an unknown runbook": Case(("redact", "--runbook", "nope"), 2, "no runbook named"),
        "a missing env file": Case(("--env-file", f"{missing}/x.env", "runbooks", "list"), 2, "cannot read"),
        "a bad env file": Case(("--env-file", bad_env, "runbooks", "list"), 2, "line 1"),
        "unknown command": Case(("bogus",), 2, "No such command"),
        "unknown option": Case(("runbooks", "verify", "--bogus"), 2, "No such option"),
        "demo with an unknown option": Case(("demo", "--bogus"), 2, "No such option"),
        "service install without a config": Case(("service", "install", "--env", f"{missing}/x.env"), 2, "-c PATH"),
        "service install, missing files": Case(("-c", f"{missing}/a.toml", "service", "install", "--env",
                                                f"{missing}/x.env", "--platform", "linux"), 2, "does not exist"),
        "service status, bad name": Case(("service", "status", "--name", "bad name!", "--platform", "linux"), 2,
                                         "service name"),
        # Controls: the same checks pass what they should (so the refusals above are about the input).
        "control: plain ws:// allowed on purpose": Case(("-c", remote_ws_ok, "config", "check"), 0),
        "control: plain ws:// to loopback": Case(("-c", loopback_ws, "config", "check"), 0),
        "control: verify": Case(("runbooks", "verify"), 0),
    }  # fmt: skip


@pytest.fixture(scope="module")
def answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[Case, subprocess.CompletedProcess[str]]]]:
    work = tmp_path_factory.mktemp("cli")
    shutil.copytree(ROOT / "runbooks", work / "runbooks")
    shutil.copy2(ROOT / "runbooks.lock", work / "runbooks.lock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "EXTERNAL_WS_URL", "DB_"))}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        table = cases(work, busy.getsockname()[1])

        def run(case: Case) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(AGENT), *case.args], capture_output=True, text=True, timeout=120,
                stdin=subprocess.DEVNULL, cwd=work, env=env, check=False, encoding="utf-8",
            )  # fmt: skip

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(zip(table, pool.map(run, table.values()), strict=True))
    yield {name: (table[name], results[name]) for name in table}


def _names() -> list[str]:
    # The table's keys, without touching the disk: build it in a throwaway folder.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return list(cases(Path(tmp), 1))


@pytest.mark.parametrize("name", _names())
def test_bad_input_gets_one_clear_line_and_its_exit_code(
    answers: dict[str, tuple[Case, subprocess.CompletedProcess[str]]], name: str
) -> None:
    case, done = answers[name]
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == case.code, output
    if case.code == 0:
        return
    if case.json:
        answer = json.loads(done.stdout)  # exactly one JSON document on stdout
        assert answer["exit_code"] == case.code
        assert case.says in answer["error"] + " ".join(answer.get("problems", []))
        return
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert lines and lines[0].startswith("error: "), output
    assert all(line.startswith("  ") for line in lines[1:]), output  # details, if any, indented under it
    assert case.says in done.stderr, output


@given(st.text(max_size=300))
def test_an_env_file_parses_or_is_refused_with_line_numbers_and_no_values(text: str) -> None:
    try:
        parsed = parse_env(text)
    except InvalidEnvFile as exc:
        assert exc.problems and all(p.startswith("line ") for p in exc.problems)
        return
    for key, value in parsed.items():
        assert key.isascii() and "=" not in key
        assert not any(ord(c) < 32 for c in value)


def test_env_file_values_never_appear_in_its_errors() -> None:
    secret = "pw-\x01-91f2c"
    with pytest.raises(InvalidEnvFile) as caught:
        parse_env(f"# secrets\nDB_PASSWORD={secret}\nNOEQUALS\n1BAD=x\n")
    assert caught.value.problems == [
        "line 2: the value of DB_PASSWORD has a control character",
        "line 3: expected KEY=VALUE",
        "line 4: '1BAD' is not a variable name (letters, digits, _)",
    ]
    assert "91f2c" not in str(caught.value)
    assert parse_env("export A = 'x y'\nB=\"q\"\nA=z\n") == {"A": "z", "B": "q"}
