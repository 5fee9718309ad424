"""The host-side command line (agent/runs/remote.py): quoting, refusals, and the wrapper under real POSIX shells."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.runs.remote import WRAPPER, new_run_id, remote_command
from tests.test_executor_survivors import live_processes
from tests.waiting import settled

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


@pytest.mark.parametrize("shell", SHELLS)
def test_a_quick_script_never_waits_for_its_time_limit(shell: str) -> None:
    """The watchdog is stopped however early the script ends, even before the watchdog has set itself up.

    A script that ends at once, on a busy host, used to reach the wrapper's "stop the watchdog" before the
    watchdog's subshell had installed its handler: the signal was lost and the run waited out its whole time
    limit (about one run in fifty with eight at a time on a 2-core machine). Here the time limit is an hour, so
    a run that waits for it fails on the 60-second guard with a clear message rather than passing by luck.
    """

    def one(index: int) -> int:
        run_id = new_run_id(index.to_bytes(16))  # each run its own marker: a sweep kills only its own run
        command = remote_command("bash", [], 3600, 1, run_id)
        try:
            done = subprocess.run([shell, "-c", command], input=b"true\n", capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("a run of `true` waited for its time limit: the watchdog missed its stop signal")
        return done.returncode

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(200))) == {0}


def sleeping(seconds: int) -> list[int]:
    """Pids of live (not zombie) ``sleep SECONDS`` processes on this machine."""
    return [pid for pid, _ in live_processes(f"sleep {seconds}")]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_watchdogs_sleep_never_outlives_a_quick_run(shell: str) -> None:
    """The wrapper's own ``sleep LIMIT`` ends with the run, however early the script ends.

    Stopping the watchdog sent TERM to its sleep; a sleep still between fork and exec kept the shell's TERM
    handler, caught the signal and lost it, and a ``sleep LIMIT`` outlived the run by its whole time limit (under
    dash about one quick run in seventy). The limit here is a number no other test uses.
    """
    limit = 3593
    with ThreadPoolExecutor(8) as pool:
        codes = pool.map(
            lambda i: subprocess.run(
                [shell, "-c", remote_command("bash", [], limit, 1, new_run_id(i.to_bytes(16)))],
                input=b"true\n", capture_output=True, timeout=60,
            ).returncode,
            range(300),
        )  # fmt: skip
        assert set(codes) == {0}
    # A KILL already sent takes effect at once; the wait only covers a slow reaper.
    settled(lambda: not sleeping(limit), 10)
    left = sleeping(limit)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"{len(left)} watchdog sleeps outlived their runs"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_status_that_reads_as_a_stop_signal_is_passed_on_as_a_status(shell: str) -> None:
    """From the outside review: ``exit 147`` made the wrapper send itself SIGSTOP, and the run never ended."""
    for status in (145, 146, 147, 148, 149, 150, 151, 159, 255):
        assert run(shell, f"exit {status}").returncode == status
    assert run(shell, "exit 143").returncode == -15  # 129-143: the signals a shell reports as 128+N


@pytest.mark.parametrize("shell", SHELLS)
def test_killing_the_watchdogs_sleep_ends_the_run_instead_of_lifting_its_time_limit(shell: str) -> None:
    """From the outside review: a script's ``pkill sleep`` killed the watchdog's timer and the run never ended."""
    script = (
        "for w in $(pgrep -P $PPID); do pkill -x sleep -P $w; done; trap '' TERM; while :; do sleep 1; done"
    )
    done = run(shell, script, time_limit=600, kill_grace=0.5)  # the 60 s guard fails the test if it hangs
    assert done.returncode == 124


@pytest.mark.parametrize("shell", SHELLS)
def test_children_started_as_the_script_ends_are_swept(shell: str) -> None:
    """Children that a script starts with its last line, still in fork or execve when the script is gone.

    From the outside review: a sweep that trusted one empty scan when no pid had been handed out while it ran
    missed the exec chain (``nohup env sleep``) in about one run in forty under dash; two scans in a row do not.
    Each script starts just one child (with more, the first scan finds some and the sweep looks again anyway),
    one run at a time (a quiet host).
    """
    limit = 3592  # in no other test: the survivors are found by this number
    lines = ["nohup sleep {n}", "setsid sleep {n}", "(exec sleep {n})", "nohup env sleep {n}"]
    quiet = " >/dev/null 2>&1 &"  # a survivor must not hold the output pipe open: the test would wait on it
    for line in lines:
        for _ in range(60):
            done = subprocess.run(
                [shell, "-c", remote_command("bash", [], 60, 1, new_run_id(os.urandom(16)))],
                input=(line.format(n=limit) + quiet + "\n").encode(), capture_output=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done
    left = sleeping(limit)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"{len(left)} of 240 children outlived their runs"
