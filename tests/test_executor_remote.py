"""The host-side command line (agent/remote.py): quoting, refusals, and the wrapper under real POSIX shells."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.remote import WRAPPER, new_run_id, remote_command

RUN_ID = "0123456789abcdef0123456789abcdef"
SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"))))
def test_every_argument_is_one_quoted_word_before_the_fixed_wrapper(argv: list[str]) -> None:
    command = remote_command("bash", argv, 30, 5, RUN_ID)
    assert command.endswith("\n" + WRAPPER)
    words = shlex.split(command[: -len(WRAPPER)])
    assert words == ["set", "--", RUN_ID, "30", "5", "1", "bash", "-s", "--", *argv]


@given(st.text())
def test_a_run_id_is_hex_or_refused(run_id: str) -> None:
    try:
        command = remote_command("sh", [], 1, 0, run_id)
    except ValueError:
        assert not (16 <= len(run_id) <= 64 and all(c in "0123456789abcdef" for c in run_id))
    else:
        assert shlex.split(command[: -len(WRAPPER)])[2] == run_id


def test_run_ids_and_limits_are_checked() -> None:
    assert len(new_run_id(bytes(16))) == 32
    with pytest.raises(ValueError):
        new_run_id(b"short")
    with pytest.raises(ValueError):
        remote_command("bash", [], 0, 5, RUN_ID)
    with pytest.raises(ValueError):
        remote_command("bash", [], 5, -1, RUN_ID)


def run(
    shell: str, script: str, time_limit: float = 30, kill_grace: float = 1
) -> subprocess.CompletedProcess[bytes]:
    command = remote_command("bash", ["a b", "$(id)"], time_limit, kill_grace, new_run_id(bytes(range(16))))
    return subprocess.run([shell, "-c", command], input=script.encode(), capture_output=True, timeout=60)


@pytest.mark.parametrize("shell", SHELLS)
def test_status_arguments_and_streams_pass_through(shell: str) -> None:
    done = run(shell, 'printf "%s|%s\\n" "$1" "$2"; echo err >&2; exit 7')
    assert (done.returncode, done.stdout, done.stderr) == (7, b"a b|$(id)\n", b"err\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_a_script_killed_by_a_signal_is_reported_as_that_signal(shell: str) -> None:
    done = run(shell, "kill -KILL $$")
    assert done.returncode == -9 and done.stderr == b""  # no shell job message either


@pytest.mark.parametrize("shell", SHELLS)
def test_the_time_limit_ends_a_script_that_ignores_term(shell: str) -> None:
    done = run(shell, "trap '' TERM; echo started; while :; do sleep 1; done", time_limit=0.5, kill_grace=0.2)
    assert (done.returncode, done.stdout) == (124, b"started\n")
