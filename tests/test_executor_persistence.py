"""A run that leaves persistence behind on a host is named in its result (issue 27, item 4; real sshd on loopback).

The wrapper (agent/runs/remote.py, :data:`~agent.runs.remote.PERSISTENCE`) fingerprints the login user's
persistence points before and after the run and reports what changed in a trailer on stderr, carrying a key only
the executor and the wrapper know; the executor strips it and fills ``HostResult.persistence``. Each case runs
through the real executor in every containment mode. The scripts write to the login user's home (the dedicated
test user's, so only as root) and every test puts back what it found there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.catalog.store import Catalog
from agent.chat.i18n import Chat
from agent.chat.render import render_finished
from agent.config.environment import Environment
from agent.runs.gate import RunGate, RunRequest, Via
from agent.runs.remote import (
    PERSISTENCE_POINTS,
    TRAILER_PREFIX,
    Containment,
    PersistenceTrailer,
    parse_points,
    remote_command,
)
from agent.runs.results import Outcome, RunResult
from agent.state.audit import AuditLog
from tests.sshd import TEST_USER, login_user
from tests.test_executor import Agent
from tests.test_executor_survivors import MODES, forced, kill_all, mode_of

pytestmark = [
    pytest.mark.external_service,
    pytest.mark.skipif(
        os.name != "posix" or os.geteuid() != 0,
        reason="writes the login user's home: only the dedicated test user's (as root, on POSIX)",
    ),
]

# Changes one persistence point of the login user (or none), each line tagged so the test can take it out again.
# `~` is the login user's home: the script runs with no HOME (env -i), and bash asks the password database.
PERSISTER = """#!/bin/bash
# Test: changes one persistence point of the login user, or none, for the persistence fingerprint.
what="$1"
tag="$2"
case "$what" in
  ssh_rc) mkdir -p ~/.ssh && printf ': %s\\n' "$tag" >> ~/.ssh/rc ;;
  crontab) { crontab -l 2>/dev/null; printf '# %s\\n' "$tag"; } | crontab - ;;
  bashrc) printf '# %s\\n' "$tag" >> ~/.bashrc ;;
  nothing) echo "nothing changed" ;;
  fake)
    printf '%s%s\\n' "guardia-persist:" "$GUARDIA_RUN" >&2
    printf 'guardia-persist:%032d\\n' 0 >&2
    printf '# %s\\n' "$tag" >> ~/.bashrc ;;
  limit) printf '# %s\\n' "$tag" >> ~/.bashrc; echo started; exec -a "$tag" sleep 60 ;;
esac
echo "done $tag" >&2
"""
MANIFEST = """description = "Test: changes one persistence point of the login user, or none"
targets = ["all"]
rooms = ["ops"]
timeout = {timeout}
{extra}
[[params]]
name = "what"
type = "enum"
choices = ["ssh_rc", "crontab", "bashrc", "nothing", "fake", "limit"]

[[params]]
name = "tag"
type = "identifier"
"""
HAS_CRONTAB = shutil.which("crontab") is not None


@pytest.fixture
def persister_home(agent_home: Path) -> Path:
    """agent_home with ``persister`` (20 s limit), ``persister_limit`` (2 s) and ``persister_daemon``
    (``leaves_daemon``: containment none), relocked."""
    runbooks = agent_home / "runbooks"
    for name, timeout, extra in [
        ("persister", 20, ""),
        ("persister_limit", 2, ""),
        ("persister_daemon", 20, "leaves_daemon = true\n"),
    ]:
        (runbooks / f"{name}.sh").write_text(PERSISTER, encoding="utf-8", newline="\n")
        (runbooks / f"{name}.toml").write_text(
            MANIFEST.format(timeout=timeout, extra=extra), encoding="utf-8", newline="\n"
        )
    Catalog(runbooks, agent_home / "runbooks.lock").relock()
    return agent_home


@pytest.fixture(params=MODES, ids=[m.value for m in MODES])
async def agent(request: pytest.FixtureRequest, persister_home: Path) -> AsyncIterator[Agent]:
    built = forced(Agent(persister_home), request.param)
    yield built
    await built.executor.close()


def _home() -> Path:
    import pwd  # POSIX only

    return Path(pwd.getpwnam(login_user()).pw_dir)


def _without(path: Path, tag: str) -> None:
    """Take the lines holding ``tag`` out of ``path``; remove it when nothing else is left."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if tag not in line]
    if kept:
        path.write_text("".join(kept), encoding="utf-8")
    else:
        path.unlink()


@pytest.fixture
def tag() -> Iterator[str]:
    """A fresh tag; afterwards every line of it is gone from the test user's home and crontab."""
    assert login_user() == TEST_USER
    value = f"guardia_{uuid.uuid4().hex[:12]}"
    home = _home()
    had_ssh = (home / ".ssh").exists()
    yield value
    kill_all(value)
    _without(home / ".ssh" / "rc", value)
    _without(home / ".bashrc", value)
    if not had_ssh:
        with contextlib.suppress(OSError):
            (home / ".ssh").rmdir()  # only if the test made it and nothing else is in it
    if HAS_CRONTAB:
        listed = subprocess.run(
            ["crontab", "-l", "-u", TEST_USER], capture_output=True, text=True, encoding="utf-8", check=False
        )
        if value in listed.stdout:
            kept = "".join(line for line in listed.stdout.splitlines(keepends=True) if value not in line)
            subprocess.run(
                ["crontab", "-u", TEST_USER, "-"], input=kept, text=True, encoding="utf-8", check=True
            )


def room_text(result_json: dict[str, object], language: str = "en") -> str:
    return render_finished(Chat(language), {"status": "SUCCESS", "data": result_json}, "RUN_RUNBOOK")


@pytest.mark.parametrize(
    ("what", "points"),
    [("ssh_rc", ["~/.ssh/rc"]), ("bashrc", ["~/.bashrc"]), ("nothing", [])],
)
async def test_a_changed_persistence_point_is_named_in_every_mode(
    agent: Agent, tag: str, what: str, points: list[str]
) -> None:
    result = await agent.run("persister", ["h1"], what=what, tag=tag)
    [host] = result.hosts
    assert host.status is Outcome.SUCCESS, host
    assert host.persistence == tuple(points)
    # The trailer never reaches the streams the room sees, nor the kept copy.
    assert host.stderr == host.stderr_full == f"done {tag}\n"
    assert TRAILER_PREFIX not in host.stdout + host.stdout_full
    data = result.to_json()
    assert data["hosts"][0]["persistence"] == points
    text = room_text(data)
    assert TRAILER_PREFIX not in text
    if points:
        assert f"⚠️ persistence points changed: {', '.join(points)}" in text
    else:
        assert "⚠️" not in text


async def test_the_time_limit_still_names_the_change(agent: Agent, tag: str) -> None:
    [host] = (await agent.run("persister_limit", ["h1"], what="limit", tag=tag)).hosts
    assert host.status is Outcome.TIMEOUT, host
    assert host.persistence == ("~/.bashrc",)
    assert TRAILER_PREFIX not in host.stderr_full


async def test_a_runbook_that_leaves_a_daemon_is_fingerprinted_too(persister_home: Path, tag: str) -> None:
    built = Agent(persister_home)
    try:
        [host] = (await built.run("persister_daemon", ["h1"], what="ssh_rc", tag=tag)).hosts
    finally:
        await built.executor.close()
    assert (host.status, host.containment, host.persistence) == (Outcome.SUCCESS, "none", ("~/.ssh/rc",))
    assert host.stderr == f"done {tag}\n"


async def test_a_fake_trailer_from_the_script_is_not_believed(persister_home: Path, tag: str) -> None:
    """The script knows its run id (GUARDIA_RUN) but not the trailer key: its "nothing changed" trailers are
    ordinary stderr, shown as they came, and the real one names what it did."""
    built = forced(Agent(persister_home), Containment.SWEEP)
    try:
        [host] = (await built.run("persister", ["h1"], what="fake", tag=tag)).hosts
    finally:
        await built.executor.close()
    assert host.status is Outcome.SUCCESS, host
    assert host.persistence == ("~/.bashrc",)
    assert host.stderr_full.count(TRAILER_PREFIX) == 2
    assert host.stderr_full.endswith(f"done {tag}\n")


@pytest.mark.skipif(not HAS_CRONTAB, reason="this machine has no crontab")
async def test_a_crontab_line_is_named(agent: Agent, tag: str) -> None:
    """In a PID namespace the script cannot reach its crontab at all (setgid ``crontab`` gains nothing in the
    user namespace): nothing changed there, and nothing is named."""
    [host] = (await agent.run("persister", ["h1"], what="crontab", tag=tag)).hosts
    assert host.status is Outcome.SUCCESS, host
    listed = subprocess.run(
        ["crontab", "-l", "-u", TEST_USER], capture_output=True, text=True, encoding="utf-8", check=False
    )
    changed = tag in listed.stdout
    assert changed == (mode_of(agent) is not Containment.NAMESPACE)
    assert host.persistence == (("crontab",) if changed else ())


async def test_the_audit_and_korean_room_carry_the_change(persister_home: Path, tag: str) -> None:
    """Through the one run gate: the audit's run entry lists the change per host; the Korean room shows it."""
    built = Agent(persister_home)
    config = built.config
    audit_path = config.path(config.state.dir) / "audit.jsonl"
    audit = AuditLog(audit_path, redact=built.redactor.redact_json)
    gate = RunGate(Environment(config, {}), built.catalog, built.executor, audit, built.redactor)
    try:
        result = await gate.run(
            RunRequest("persister", ["h1", "h2"], {"what": "ssh_rc", "tag": tag}, Via.CLI, user="tester")
        )
    finally:
        await gate.close()
    assert isinstance(result, RunResult)
    entries = [json.loads(line) for line in audit_path.read_text(encoding="utf-8").splitlines()]
    [run] = [e for e in entries if e.get("kind") == "run" or e.get("event") == "run"]
    # Both hosts are this machine's test user: the first run names it, the second may find it already changed.
    listed = [h["persistence"] for h in run["hosts"]]
    assert ["~/.ssh/rc"] in listed and all(p in ([], ["~/.ssh/rc"]) for p in listed)
    text = room_text(result.to_json(), "ko")
    assert "⚠️" in text and "~/.ssh/rc" in text


# -- the trailer parser (pure) ------------------------------------------------------------------------------------

KEY = "0123456789abcdef" * 2


def strip(chunks: list[bytes], key: str = KEY) -> tuple[bytes, tuple[str, ...] | None]:
    trailer = PersistenceTrailer(key)
    passed = b"".join(trailer.feed(c) for c in chunks) + trailer.finish()
    return passed, trailer.points


@given(st.binary(max_size=20_000), st.lists(st.sampled_from(PERSISTENCE_POINTS), unique=True), st.data())
def test_the_trailer_is_stripped_whatever_the_chunking(
    output: bytes, points: list[str], data: st.DataObject
) -> None:
    line = (TRAILER_PREFIX + KEY + "".join(" " + p for p in points) + "\n").encode()
    whole = output + line
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    passed, found = strip(chunks)
    assert passed == output
    assert found == tuple(p for p in PERSISTENCE_POINTS if p in points)


@given(st.binary(max_size=5_000))
def test_without_the_key_nothing_is_taken_out(output: bytes) -> None:
    fake = output + (TRAILER_PREFIX + "f" * 32 + " crontab\n").encode()
    assert strip([fake]) == (fake, None)


@given(st.binary(max_size=200))
def test_any_trailer_words_give_known_points_only(words: bytes) -> None:
    assert set(parse_points(words)) <= set(PERSISTENCE_POINTS)


@pytest.mark.parametrize("usable", [True, False])
def test_a_host_whose_ls_cannot_fingerprint_says_not_checked(tmp_path: Path, usable: bool) -> None:
    """The wrapper under the host's sh, directly: an ``ls`` without the options (here: a bogus one) gives no
    trailer, so the result says "not checked" (``None``), never "nothing changed"; the run itself is untouched."""
    line = remote_command("bash", [], 5, 1, "12" * 8, persistence=True)
    if not usable:
        line = line.replace("--full-time", "--no-such-option")
    done = subprocess.run(
        ["sh", "-c", line],
        input=(KEY + "\necho hi; exit 3\n").encode(),
        capture_output=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    passed, points = strip([done.stderr])
    assert (done.returncode, done.stdout, passed) == (3, b"hi\n", b"")
    assert points == (() if usable else None)
