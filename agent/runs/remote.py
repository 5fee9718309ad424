"""The command line a host's sshd runs for one runbook run: clean environment, time limit, no survivors. Pure.

sshd hands the command line to the login user's shell (``sh -c``), as ``ssh host CMD`` does. The line is a
small, fixed POSIX sh program (:data:`WRAPPER`) run by that shell in place, followed by quoted words
(:func:`shlex.quote` for every one of them, including each argv element): nothing of a request is ever parsed
as shell text. What it does on the host:

1. starts the interpreter (``bash -s -- ARG…``, the script's verified bytes arrive on stdin) through
   ``env -i`` with only ``PATH``, ``LC_ALL``, ``LANG`` and the run's marker ``GUARDIA_RUN=<random>``;
2. starts a watchdog (a ``sleep`` carrying the marker) that signals the wrapper at the time limit;
3. when the script exits, or at the time limit (``TERM`` to every marked process, up to ``kill_grace`` for the
   script to end, then ``KILL``), *sweeps*: every process of the login user whose environment carries the
   run's marker is killed, repeatedly until none is left. ``setsid``, double forks, ``nohup`` and ``&`` keep
   the environment, so nothing the run started outlives it, whether it left the process group or not;
4. exits with the script's status (124 when the time limit was hit, as coreutils ``timeout`` does).

The wrapper does not depend on the SSH channel: when the connection drops, the time limit and the sweep still
happen. A runbook whose manifest says ``leaves_daemon = true`` gets no sweep on a normal exit (at its time limit
only the script's own process is signalled).

Cost on the host, against a plain ``bash -s``: one exec of ``env`` before the script (the clean environment;
the wrapper itself runs in the login shell sshd already started, so it costs no exec), one ``sleep`` started
beside the script (off the critical path), and after it, normally two ``grep`` scans of ``/proc/*/environ`` (the
sweep stops after two empty scans in a row).
A process that clears its own environment (``env -i cmd &``) is not found by the sweep: approved runbooks are
reviewed, and that is what review is for.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

#: PATH of the clean environment the script runs in on the host (also the wrapper's own PATH).
REMOTE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Name of the environment variable that marks every process of a run.
MARKER_NAME = "GUARDIA_RUN"
#: Exit status of the wrapper when the time limit was hit (as coreutils ``timeout``), and 128 + KILL.
TIMEOUT_EXIT_CODES = frozenset({124, 137})
#: How many times the sweep looks again for marked processes (a process forking while it is swept).
SWEEP_ROUNDS = 20

_RUN_ID = re.compile(r"[0-9a-f]{16,64}")

# Positional words after the wrapper: $1 run id, $2 limit, $3 grace, $4 sweep (1/0), then the interpreter argv.
# f SIGNAL PATTERN [all]: the sweep (signal every process of this user whose environment holds PATTERN; with
# "all", look again until two scans in a row find none: a process in the middle of execve shows an empty
# environment for an instant, and a child forked after the glob by a parent that exits before its file is read
# is in neither list, so one empty scan could miss either). grep runs with LC_ALL=C (the pattern is ASCII).
# One empty scan is not enough even when no pid was handed out while it ran: an outside review found chains of
# execs at a script's end (`nohup env sleep N &`) that one scan missed in 1-3% of runs and two never did.
# d SECONDS: the watchdog (pid w), a subshell that signals USR1 to the wrapper when its `sleep` ends; that sets t
# and makes `wait` return early (TERM/HUP/INT set t too: stop now). TERM to the watchdog kills its sleep: the
# trap runs between commands, so either before the sleep is started ($! is still o, what the subshell inherited)
# or after $! names it. It kills the sleep with KILL: a forked child keeps the shell's TERM handler until it has
# exec'd `sleep`, and a TERM caught in that instant was lost, leaving a `sleep LIMIT` behind (dash: about one
# quick run in seventy). A TERM that arrives before the subshell has replaced the handler it inherited from the
# wrapper is lost too (on a busy host, about one quick run in fifty): the wrapper sends it only after reaping the
# script, so a watchdog that finds the script (pid c) gone once its trap is set ends by itself instead of holding
# the run for its whole time limit.
# Once its time is up the watchdog signals USR1 again every second until it is stopped: a USR1 whose trap ran
# just before the wrapper entered `wait` would otherwise be lost, and so would the time limit. It signals when
# its sleep ends however it ended: a script's `pkill sleep` ends the run at once rather than its time limit.
# At the end a status of 129-143 (a script killed by HUP..TERM, as the shell reports it) is passed on as that
# signal, with core dumps off; any other status, 147 (STOP) among them, is passed on as a status.
# The wrapper keeps the channel's stdout/stderr open (as fds 4 and 5) until it exits, so sshd sends the streams'
# EOF and the exit status together: with a gap between them (the sweep), sshd's Nagle held the exit status back
# for the agent's delayed ACK, ~40 ms a run. Its own fds 1 and 2 go to /dev/null, which keeps the shell's job
# messages ("Killed") out of the script's stderr; its children get neither 4 nor 5.
WRAPPER = (
    "PATH=" + REMOTE_PATH + "\n"
    "IFS=' \t\n'\n"
    "r=$1 l=$2 g=$3 s=$4 t= x=0\n"
    "shift 4\n"
    "m=" + MARKER_NAME + "=$r\n"
    "f(){\n"
    " n=0 e=0\n"
    " while [ $n -lt " + str(SWEEP_ROUNDS) + " ];do\n"
    '  p=$(LC_ALL=C grep -lsaF -e "$2" /proc/[0-9]*/environ 4>&- 5>&-)\n'
    '  if [ -n "$p" ];then e=0;for q in $p;do q=${q#/proc/};kill -s "$1" "${q%/environ}" 2>/dev/null;done\n'
    "  else e=$((e+1));fi\n"
    '  [ "$3" = all ]&&[ $e -lt 2 ]||return 0\n'
    "  n=$((n+1))\n"
    " done\n"
    "}\n"
    "d(){\n"
    " (o=$!;trap '[ $! = $o ]||kill -s KILL $! 2>/dev/null;exit' TERM\n"
    '  kill -0 $c 2>/dev/null||exit;sleep "$1"& wait $!\n'
    "  while kill -s USR1 $$ 2>/dev/null;do sleep 1& wait $!;done) 4>&- 5>&- &\n"
    " w=$!\n"
    "}\n"
    "trap t=1 USR1 TERM HUP INT\n"
    "exec 3<&0 4>&1 5>&2 </dev/null >/dev/null 2>&1\n"
    "env -i PATH=" + REMOTE_PATH + ' LC_ALL=C.UTF-8 LANG=C.UTF-8 "$m" "$@" <&3 >&4 2>&5 3<&- 4>&- 5>&- &\n'
    "c=$!\n"
    "exec 3<&-\n"
    'd "$l"\n'
    "wait $c;x=$?\n"
    'if [ -n "$t" ];then\n'
    " t=\n"
    ' if [ "$s" = 1 ];then f TERM "$m";else kill -s TERM $c 2>/dev/null;fi\n'
    " kill -s TERM $w 2>/dev/null\n"
    ' d "$g"\n'
    " wait $c\n"
    " kill -s KILL $c 2>/dev/null\n"
    " x=124\n"
    "fi\n"
    "kill -s TERM $w 2>/dev/null\n"
    'if [ "$s" = 1 ];then f KILL "$m" all;fi\n'
    "wait\n"
    "if [ $x -gt 128 ]&&[ $x -le 143 ];then trap - USR1 TERM HUP INT;ulimit -c 0;kill -$((x-128)) $$;fi\n"
    "exit $x\n"
)


def new_run_id(random_bytes: bytes) -> str:
    """The marker value of one run on one host, from at least 8 random bytes (the caller's ``os.urandom``)."""
    if len(random_bytes) < 8:
        raise ValueError("a run id needs at least 8 random bytes")
    return random_bytes.hex()


def remote_command(
    interpreter: str,
    argv: Sequence[str],
    time_limit: float,
    kill_grace: float,
    run_id: str,
    sweep: bool = True,
) -> str:
    """The command line for the host's sshd.

    Args:
        interpreter: ``bash`` or ``sh`` (from the manifest); it reads the script on stdin (``-s``).
        argv: the runbook's arguments, one word each.
        time_limit: seconds before every process of the run is told to stop.
        kill_grace: seconds between ``TERM`` and ``KILL`` at the time limit.
        run_id: this run's marker value (:func:`new_run_id`): lower-case hex, 16 to 64 digits.
        sweep: kill whatever the run left behind when it ends (``False`` for ``leaves_daemon`` runbooks).

    Returns:
        ``sh``-syntax text: the fixed :data:`WRAPPER` followed by quoted words.

    Raises:
        ValueError: a malformed run id or a limit that is not positive.
    """
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError("run id must be 16 to 64 lower-case hex digits")
    if not time_limit > 0 or not kill_grace >= 0:
        raise ValueError("time limit must be positive and kill grace not negative")
    words = [
        run_id, f"{time_limit:g}", f"{kill_grace:g}", "1" if sweep else "0",
        interpreter, "-s", "--", *argv,
    ]  # fmt: skip
    # `set -- WORDS` then the wrapper: the login shell is the wrapper, no extra exec for it.
    return "set -- " + shlex.join(words) + "\n" + WRAPPER
