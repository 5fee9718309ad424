"""The command line a host's sshd runs for one runbook run: clean environment, time limit, no survivors. Pure.

sshd hands the command line to the login user's shell (``sh -c``), as ``ssh host CMD`` does. The line is a
small, fixed POSIX sh program run by that shell in place, followed by quoted words (:func:`shlex.quote` for every
one of them, including each argv element): nothing of a request is ever parsed as shell text.

**What every mode guarantees** (the inner program, :data:`WRAPPER`):

1. the interpreter (``bash -s -- ARG…``, the script's verified bytes arrive on stdin) starts through ``env -i``
   with only ``PATH``, ``LC_ALL``, ``LANG`` and the run's marker ``GUARDIA_RUN=<random>``;
2. a watchdog (a ``sleep`` beside the script) signals the wrapper at the time limit: then ``TERM`` goes to every
   process of the run, the script gets up to ``kill_grace`` seconds to end, then ``KILL``, and the run exits 124
   (as coreutils ``timeout`` does);
3. when the script has ended, nothing the run started is left (except with ``leaves_daemon``, below);
4. it exits with the script's status (a script killed by a signal is passed on as that signal).
5. with ``persistence`` (:data:`PERSISTENCE`, what the executor always asks for), it fingerprints the login
   user's persistence points (crontab and ``at`` spools, ``~/.ssh/rc``, ``authorized_keys``, systemd user units,
   shell rc files: :data:`PERSISTENCE_POINTS`) before the script starts and after everything of the run has ended
   (the time limit included), and names what changed on a last stderr line keyed by a secret from stdin
   (:class:`PersistenceTrailer`). Two ``ls`` per run; it never changes the run's status.

The wrapper does not depend on the SSH channel: when the connection drops, the time limit and the clean-up still
happen on the host.

**How "nothing is left" is made true: the containment mode** (:class:`Containment`), the strongest the host
offers, found once per connection by :data:`PROBE` (:func:`parse_probe`) and chosen per run by :func:`choose`:

* ``namespace``: the wrapper runs as PID 1 of a new PID namespace (``unshare --map-current-user --pid --fork
  --kill-child``, util-linux >= 2.38, unprivileged user namespaces allowed). At the time limit ``kill -1`` reaches
  exactly the run's processes; when the wrapper exits, the kernel kills whatever is left in the namespace before
  ``unshare`` returns. Exact, and no ``/proc`` scan. Inside, the script is in a user namespace that maps only the
  login user: setuid programs (``sudo``, ``su``) do not gain privileges, other users' processes and files show as
  ``nobody`` (``ps -o user``, ``ls -l``), and ``kill PID`` cannot reach a process the run did not start. A runbook
  that needs any of those says ``host_view = true`` in its manifest and never gets this mode.
* ``subreaper``: the host's ``perl`` (Essential on Debian and Ubuntu; on RHEL where perl-interpreter is
  installed) makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, one ``syscall``) and runs the wrapper
  as its child, so every process the run orphans (``&``, ``nohup``, ``setsid``, double forks, ``env -i``) is
  re-parented to it. When the wrapper has ended, "nothing left" is one ``waitpid(-1, WNOHANG)`` answering
  ``ECHILD`` in the common case; otherwise it kills its children (``/proc/PID/task/PID/children``) and reaps,
  until ``ECHILD``. Exact. At the time limit, ``TERM`` goes to the run's marked processes (one ``/proc`` scan,
  only then).
* ``sweep``: today's marker sweep, for hosts with neither: every process of the login user whose environment
  carries the run's marker is killed, repeatedly until two scans in a row find none (two ``grep`` scans of
  ``/proc/*/environ`` after a normal run). A process that clears its own environment (``env -i cmd &``) is not
  found by it: approved runbooks are reviewed, and that is what review is for.
* ``none``: a runbook whose manifest says ``leaves_daemon = true``: nothing is killed on a normal exit, and at its
  time limit only the script's own process is signalled.

Cost on the host, against a plain ``bash -s``: one exec of ``env`` before the script (the clean environment; in
``sweep`` and ``none`` the wrapper itself runs in the login shell sshd already started, so it costs no exec), one
``sleep`` started beside the script (off the critical path); then ``namespace`` adds ``unshare`` and a ``sh``
(two execs and the namespace), ``subreaper`` adds ``perl`` and a ``sh``, ``sweep`` the two ``grep`` scans after
the script. ``python -m benchmarks executor`` measures each.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

#: PATH of the clean environment the script runs in on the host (also the wrapper's own PATH).
REMOTE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Name of the environment variable that marks every process of a run.
MARKER_NAME = "GUARDIA_RUN"
#: Exit status of the wrapper when the time limit was hit (as coreutils ``timeout``), and 128 + KILL.
TIMEOUT_EXIT_CODES = frozenset({124, 137})
#: How many times the sweep looks again for marked processes (a process forking while it is swept).
SWEEP_ROUNDS = 20

_RUN_ID = re.compile(r"[0-9a-f]{16,64}")


class Containment(StrEnum):
    """How a run's processes are kept from outliving it on the host (strongest first); recorded in each result."""

    NAMESPACE = "namespace"  # a PID namespace: the kernel kills what is left
    SUBREAPER = "subreaper"  # perl as child subreaper: every orphan comes back to it, killed and reaped
    SWEEP = "sweep"  # the run's environment marker, found in /proc/*/environ
    NONE = "none"  # leaves_daemon: nothing is killed on a normal exit


#: The prctl system call's number per ``uname -m`` (perl's ``syscall`` needs it; the probe checks it with
#: ``PR_GET_CHILD_SUBREAPER`` before it is trusted). An architecture not listed gets no subreaper.
PRCTL_SYSCALLS = {
    "x86_64": 157,
    "aarch64": 167,
    "riscv64": 167,
    "loongarch64": 167,
    "i686": 172,
    "i386": 172,
    "s390x": 172,
    "armv7l": 172,
    "ppc64le": 171,
    "ppc64": 171,
}

# Positional words after the wrapper: $1 run id, $2 limit, $3 grace, $4 the containment mode (Containment), then the
# interpreter argv. At the time limit, TERM goes to the run's processes: in namespace mode `kill -1` from PID 1 of
# the namespace (every process in it but the wrapper), in sweep and subreaper mode the marker sweep (once), in none
# mode the script alone. At the end, sweep mode sweeps until none is left; namespace mode sends KILL to the whole
# namespace (the kernel would, as PID 1 exits); subreaper mode leaves it to perl, the wrapper's parent.
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
    '[ -z "$Gp" ]||Gb\n'
    "trap t=1 USR1 TERM HUP INT\n"
    "exec 3<&0 4>&1 5>&2 </dev/null >/dev/null 2>&1\n"
    "env -i PATH=" + REMOTE_PATH + ' LC_ALL=C.UTF-8 LANG=C.UTF-8 "$m" "$@" <&3 >&4 2>&5 3<&- 4>&- 5>&- &\n'
    "c=$!\n"
    "exec 3<&-\n"
    'd "$l"\n'
    "wait $c;x=$?\n"
    'if [ -n "$t" ];then\n'
    " t=\n"
    ' case $s in sweep|subreaper)f TERM "$m";;namespace)kill -s TERM -- -1 2>/dev/null;;*)kill -s TERM $c 2>/dev/null;esac\n'
    " kill -s TERM $w 2>/dev/null\n"
    ' d "$g"\n'
    " wait $c\n"
    " kill -s KILL $c 2>/dev/null\n"
    " x=124\n"
    "fi\n"
    "kill -s TERM $w 2>/dev/null\n"
    'case $s in sweep)f KILL "$m" all;;namespace)kill -s KILL -- -1 2>/dev/null;esac\n'
    "wait\n"
    '[ -z "$Gp" ]||Ga\n'
    "if [ $x -gt 128 ]&&[ $x -le 143 ];then trap - USR1 TERM HUP INT;ulimit -c 0;kill -$((x-128)) $$;fi\n"
    "exit $x\n"
)

# The outer programs of the namespace and subreaper modes, run by the login shell in place: they start the
# WRAPPER (a quoted word of their own text) under `unshare` or perl as a job, wait for it and pass its status on
# (129-143 as that signal, as the WRAPPER does). Their fds 1 and 2 go to /dev/null (the shell's job messages) and
# the channel's streams stay open, as fds 4 and 5, until they exit. A TERM, HUP or INT (sshd's signal when the
# agent gives up on the run, or a script's `kill 0`) is passed on as TERM to the WRAPPER, which stops as at its
# time limit: to perl, which passes it on; in a namespace to unshare's child, PID 1 there (`unshare` itself
# ignores TERM), or, should /proc/PID/task/PID/children not be there, as KILL to `unshare` (its child dies with it,
# and the kernel kills the rest). `wait` interrupted by that trap is waited on again, until the job is reaped.
_OUTER_TAIL = (
    '[ -z "$Gp" ]||Gb\n'
    "exec 3<&0 4>&1 5>&2 </dev/null >/dev/null 2>&1\n"
    '"$@" <&3 >&4 2>&5 3<&- 4>&- 5>&- &\n'
    "u=$!\n"
    "exec 3<&-\n"
    "x=\n"
    'while [ -z "$x" ]||kill -0 $u 2>/dev/null;do wait $u;x=$?;done\n'
    '[ -z "$Gp" ]||Ga\n'
    "if [ $x -gt 128 ]&&[ $x -le 143 ];then trap - TERM HUP INT;ulimit -c 0;kill -$((x-128)) $$;fi\n"
    "exit $x\n"
)

#: The namespace mode's outer program: the WRAPPER as PID 1 of a new PID namespace (in a user namespace that maps
#: only the login user). ``--kill-child``: if ``unshare`` dies, its child is killed, and with it the namespace.
NAMESPACE_WRAPPER = (
    "PATH=" + REMOTE_PATH + "\n"
    "IFS=' \t\n'\n"
    "trap 'k=;read -r k </proc/$u/task/$u/children;[ -n \"$k\" ]&&kill -s TERM $k||kill -s KILL $u' TERM HUP INT\n"
    "set -- unshare --map-current-user --pid --fork --kill-child sh -c "
    + shlex.quote(WRAPPER)
    + ' sh "$@"\n'
    + _OUTER_TAIL
)

# The subreaper: perl, given the prctl syscall number and the WRAPPER's command line. It makes itself a child
# subreaper (PR_SET_CHILD_SUBREAPER = 36), forks the WRAPPER and reaps every child until the WRAPPER has ended
# (orphans of the run that end meanwhile are reaped as they end: no zombies pile up); then it reaps what has
# ended and, while children are left, KILLs them all and reaps again, until waitpid says ECHILD (10). Children of
# a killed child are re-parented to it and found in the next round; /proc/PID/task/PID/children lists them
# (CONFIG_PROC_CHILDREN), else a scan of /proc/*/stat for its pid as parent. Exit: the WRAPPER's status, 128+N
# for a signal N (the outer program passes 129-143 on as that signal). Should the prctl fail (the probe found it
# working, so only if the host changed since), the WRAPPER runs in sweep mode instead ($ARGV[7] is its mode).
# Perl-base only: no module is loaded. A TERM, HUP or INT is passed to the WRAPPER as TERM.
REAPER = (
    'my$n=shift;$ARGV[7]="sweep"if syscall($n,36,1,0,0,0);'
    'my$c=fork;defined$c or die"fork: $!\\n";'
    '$c or exec{$ARGV[0]}@ARGV or die"exec: $!\\n";'
    "$SIG{$_}=sub{kill TERM=>$c}for qw(TERM HUP INT);"
    "my$x;while(!defined$x){my$p=waitpid(-1,0);$x=$? if$p==$c;last if$p<0&&$!+0!=4}"
    '$SIG{$_}="IGNORE"for qw(TERM HUP INT);'
    'sub k{my($f,$d,$s);if(open($f,"<","/proc/$$/task/$$/children")){return split" ",join"",<$f>}'
    'opendir($d,"/proc")or return;'
    'grep{open($s,"<","/proc/$_/stat")&&(split" ",(split/\\) /,<$s>)[-1])[1]==$$}grep/^\\d+$/,readdir$d}'
    "for(;;){my$p=waitpid(-1,1);next if$p>0;last if$p<0&&$!+0==10;"
    "my@k=k();if(@k){kill KILL=>@k;waitpid(-1,0)}else{select(undef,undef,undef,.01)}}"
    "exit($x&127?128+($x&127):$x>>8)"
)

#: The subreaper mode's outer program: ``$1`` is the prctl syscall number (:data:`PRCTL_SYSCALLS`), the rest is the
#: WRAPPER's words.
SUBREAPER_WRAPPER = (
    "PATH=" + REMOTE_PATH + "\n"
    "IFS=' \t\n'\n"
    "trap 'kill -s TERM $u' TERM HUP INT\n"
    "n=$1\n"
    "shift\n"
    "set -- perl -e "
    + shlex.quote(REAPER)
    + ' -- "$n" sh -c '
    + shlex.quote(WRAPPER)
    + ' sh "$@"\n'
    + _OUTER_TAIL
)

#: The persistence points of the run's user that the wrapper fingerprints around each run (names as the room shows
#: them): what a runbook could leave behind to run again later, outside any run and its containment. Files (the
#: file a link points to), folders (the folder, what is in it and one level below), and the ``crontab`` and ``at``
#: queues. ``~``: something changed that could not be told apart (a home folder whose name ``ls`` escapes).
PERSISTENCE_FILES = (
    "~/.ssh/rc", "~/.ssh/environment", "~/.ssh/authorized_keys", "~/.ssh/authorized_keys2",
    "~/.bashrc", "~/.bash_profile", "~/.profile", "~/.bash_logout", "~/.zshrc",
)  # fmt: skip
PERSISTENCE_FOLDERS = ("~/.config/systemd/user", "~/.config/autostart")
#: The queues, by the spool folders their tools write (a user cannot read another's crontab, nor the spool, but
#: can see a spool folder change): Debian's ``crontab`` replaces a file in ``/var/spool/cron/crontabs`` and
#: touches it, RHEL's (cronie) in ``/var/spool/cron``; ``at`` adds a job to ``/var/spool/cron/atjobs`` (Debian) or
#: ``/var/spool/at`` (RHEL). A spool is shared by the host's users: another user's ``crontab -e`` in the same
#: seconds is named too (so a change is never missed, at worst named once too often).
PERSISTENCE_QUEUES = {
    "crontab": ("/var/spool/cron/crontabs", "/var/spool/cron"),
    "at": ("/var/spool/cron/atjobs", "/var/spool/at"),
}
PERSISTENCE_POINTS = (*PERSISTENCE_QUEUES, *PERSISTENCE_FILES, *PERSISTENCE_FOLDERS, "~")
#: How the wrapper's last line on stderr starts (then the run's trailer key, then the changed points): stripped by
#: the executor (:class:`PersistenceTrailer`), never shown.
TRAILER_PREFIX = "guardia-persist:"


def _home(point: str) -> str:
    return '"$HOME"' + shlex.quote(point[1:])


def _listed() -> str:
    """The operands of the fingerprint's one ``ls``: every file, every folder with two levels of globs, the spools."""
    words = [_home(p) for p in PERSISTENCE_FILES]
    for folder in PERSISTENCE_FOLDERS:
        words += [_home(folder), _home(folder) + "/*", _home(folder) + "/*/*"]
    words += [shlex.quote(path) for paths in PERSISTENCE_QUEUES.values() for path in paths]
    return " ".join([*words, "/"])  # `/` is always there: an empty listing means this `ls` cannot do it


def _compare(point: str, paths: str, tree: str) -> str:
    return f'  [ "$(Gs "$GB" {tree} {paths})" = "$(Gs "$Gl" {tree} {paths})" ]||Go="$Go {point}"\n'


# The persistence fingerprint, defined ahead of the program of any mode when asked for (Gp=1); the top-level program
# (the WRAPPER in sweep and none mode, the outer program in namespace and subreaper mode: outside the namespace)
# calls Gb before it starts the run and Ga after everything of the run has ended (the time limit included), just
# before it exits. The inner WRAPPER of namespace and subreaper mode is a new shell without Gp and does neither.
# Every name starts with G (the programs' own one-letter names stay theirs).
# Gb: the first line of stdin is the run's trailer key (lower-case hex, sent by the executor ahead of the script and
# never on the command line or in the script's environment, so a script cannot forge the trailer); without one,
# nothing is fingerprinted. Gf: the fingerprint, one `ls -d` of every point (one line each: ctime, which no
# unprivileged `touch` can set back, size, mode, owner, to the nanosecond; -L: a file written through a link
# counts). Ga: the same again; only when the listing differs does Gs (builtins only) pick each point's lines out
# of both, by words (`ls` pads its columns to the widest entry), to name which changed (a change of `/` alone, the
# sentinel, names nothing). No listing at all (an `ls` without these options, BusyBox): no trailer, so the result
# says "not checked" rather than "nothing changed". The trailer goes to the
# channel's stderr (fd 5) as one line: PREFIX KEY then " point" for each change. Nothing here changes the run's
# status; errors go to /dev/null.
PERSISTENCE = (
    "Gp=1\n"
    "Gb(){\n"
    " IFS= read -r Gk||Gk=\n"
    ' case $Gk in *[!0-9a-f]*|"")Gk=;return 0;;esac\n'
    " Gf;GB=$Gl\n"
    "}\n"
    "Gf(){\n"
    " Gl=$(LC_ALL=C ls -lncdLb --full-time -- " + _listed() + " 2>/dev/null </dev/null 4>&- 5>&-)\n"
    "}\n"
    # Gs TEXT t|x PATH...: the lines of TEXT about each PATH (t: or anything under it).
    "Gs(){\n"
    " Gt=$1 Gu=$2 Gr=\n"
    " shift 2\n"
    " for Gq;do\n"
    "  while IFS=' ' read -r G1 G2 G3 G4 G5 G6 G7 G8 Gv;do\n"
    '   case $Gu/$Gv in "x/$Gq"|"t/$Gq"|"t/$Gq"/*)Gr="$Gr$G1 $G2 $G3 $G4 $G5 $G6 $G7 $G8 $Gv/";;esac\n'
    "  done <<G\n"
    "$Gt\n"
    "G\n"
    " done\n"
    ' printf %s "$Gr"\n'
    "}\n"
    "Ga(){\n"
    ' [ -n "$Gk" ]&&[ -n "$GB" ]||return 0\n'
    " Gf;Go=\n"
    ' if [ "$Gl" != "$GB" ];then\n'
    + "".join(
        _compare(point, " ".join(shlex.quote(p) for p in paths), "x")
        for point, paths in PERSISTENCE_QUEUES.items()
    )
    + "".join(_compare(point, '"$HOME"' + shlex.quote(point[1:]), "t") for point in PERSISTENCE_FILES)
    + "".join(_compare(point, '"$HOME"' + shlex.quote(point[1:]), "t") for point in PERSISTENCE_FOLDERS)
    + '  [ -n "$Go" ]||[ "$(Gs "$GB" x /)" != "$(Gs "$Gl" x /)" ]||Go=" ~"\n'
    " fi\n"
    " printf '%s%s%s\\n' " + TRAILER_PREFIX + ' "$Gk" "$Go" >&5 2>/dev/null\n'
    " Gk=\n"
    "}\n"
)


class PersistenceTrailer:
    """Strips the wrapper's persistence trailer off a run's stderr as it streams in, and reads it. Pure.

    The trailer is one line near the end of stderr carrying this run's trailer key (:func:`new_run_id`, sent on
    the script's stdin ahead of it, so only the wrapper knows it): the last :data:`HOLD` bytes are held back until
    :meth:`finish`, which removes the line and sets :attr:`points`. A line with any other key (a script printing a
    fake trailer) is ordinary output, passed on as it came.
    """

    #: Bytes held back from the end of the stream (the trailer and whatever a left daemon wrote after it).
    HOLD = 4096

    def __init__(self, key: str) -> None:
        self._marker = (TRAILER_PREFIX + key).encode()
        self._held = b""
        #: The changed points (:data:`PERSISTENCE_POINTS`, in that order); ``None`` until a trailer was read.
        self.points: tuple[str, ...] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take the next bytes of stderr; return those that can be passed on now."""
        data = self._held + chunk
        cut = max(0, len(data) - self.HOLD)
        self._held = data[cut:]
        return data[:cut]

    def finish(self) -> bytes:
        """The stream has ended: return the held bytes without the trailer, and read it into :attr:`points`."""
        data, self._held = self._held, b""
        at = data.rfind(self._marker)
        end = data.find(b"\n", at) if at >= 0 else -1
        if end < 0:
            return data
        self.points = parse_points(data[at + len(self._marker) : end])
        return data[:at] + data[end + 1 :]


def parse_points(words: bytes) -> tuple[str, ...]:
    """The points a trailer names, as :data:`PERSISTENCE_POINTS` (in that order); anything else is ignored."""
    named = set(words.decode("ascii", "replace").split())
    return tuple(p for p in PERSISTENCE_POINTS if p in named)


# The probe: what the host offers, asked once per connection. A PID namespace counts only if one can really be
# made (util-linux >= 2.38 for --map-current-user; user namespaces on, not blocked by AppArmor or SELinux); perl's
# subreaper only if prctl, called by the number for this architecture, sets the flag and reads it back.
_PRCTL_CHECK = (
    'my$b=pack("i",0);'
    'exit!(syscall($ARGV[0],36,1,0,0,0)==0&&syscall($ARGV[0],37,$b,0,0,0)==0&&unpack("i",$b)==1)'
)
#: The probe's command line (its output is read by :func:`parse_probe`). Costs a few execs, once per connection.
PROBE = (
    "PATH=" + REMOTE_PATH + "\n"
    "unshare --map-current-user --pid --fork --kill-child true </dev/null >/dev/null 2>&1&&echo namespace\n"
    "case $(uname -m) in\n"
    + "".join(f"{arch})n={number};;\n" for arch, number in PRCTL_SYSCALLS.items())
    + "*)n=;;\n"
    "esac\n"
    '[ -n "$n" ]&&perl -e '
    + shlex.quote(_PRCTL_CHECK)
    + ' -- "$n" </dev/null >/dev/null 2>&1&&echo "subreaper $n"\n'
    "exit 0\n"
)


@dataclass(frozen=True)
class HostSupport:
    """What containment a host offers (from :data:`PROBE`)."""

    #: A PID namespace can be made by the login user.
    namespace: bool = False
    #: perl can make itself a subreaper with this prctl syscall number; ``None``: no subreaper.
    prctl: int | None = None


def parse_probe(output: str) -> HostSupport:
    """What :data:`PROBE` printed, as a :class:`HostSupport`; anything unexpected counts as "not offered".

    Never raises: a host that printed something else (a login banner, a broken shell) gets the sweep.
    """
    namespace, prctl = False, None
    for line in output.splitlines():
        words = line.split()
        if words == ["namespace"]:
            namespace = True
        elif len(words) == 2 and words[0] == "subreaper" and words[1] in _PRCTL_NUMBERS:
            prctl = int(words[1])
    return HostSupport(namespace=namespace, prctl=prctl)


_PRCTL_NUMBERS = frozenset(str(n) for n in PRCTL_SYSCALLS.values())


def choose(
    support: HostSupport,
    *,
    leaves_daemon: bool,
    host_view: bool,
    forced: Containment | None = None,
) -> Containment:
    """The containment of one run: the strongest the host offers that the runbook allows.

    ``leaves_daemon`` runbooks get :attr:`Containment.NONE`; a PID namespace needs ``host_view`` off; then the
    subreaper; the sweep always works.

    Args:
        support: what the host offers (:func:`parse_probe`).
        leaves_daemon: the manifest's ``leaves_daemon``.
        host_view: the manifest's ``host_view`` (setuid programs, other users' names, signals to other processes).
        forced: this mode whatever the host offers (tests and benchmarks); still ``NONE`` for ``leaves_daemon``.

    Raises:
        ValueError: ``forced`` is a mode the host does not offer.
    """
    if leaves_daemon:
        return Containment.NONE
    if forced is not None:
        if (forced is Containment.NAMESPACE and not support.namespace) or (
            forced is Containment.SUBREAPER and support.prctl is None
        ):
            raise ValueError(f"containment {forced.value} is not available on this host")
        return forced
    if support.namespace and not host_view:
        return Containment.NAMESPACE
    if support.prctl is not None:
        return Containment.SUBREAPER
    return Containment.SWEEP


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
    containment: Containment = Containment.SWEEP,
    prctl: int | None = None,
    persistence: bool = False,
) -> str:
    """The command line for the host's sshd.

    Args:
        interpreter: ``bash`` or ``sh`` (from the manifest); it reads the script on stdin (``-s``).
        argv: the runbook's arguments, one word each.
        time_limit: seconds before every process of the run is told to stop.
        kill_grace: seconds between ``TERM`` and ``KILL`` at the time limit.
        run_id: this run's marker value (:func:`new_run_id`): lower-case hex, 16 to 64 digits.
        containment: how the run's processes are kept from outliving it (:func:`choose`);
            :attr:`Containment.NONE` for ``leaves_daemon`` runbooks.
        prctl: the host's prctl syscall number (:attr:`HostSupport.prctl`), for the subreaper only.
        persistence: fingerprint the persistence points around the run (:data:`PERSISTENCE`): the script's stdin
            then starts with a line holding the run's trailer key, and stderr ends with the trailer
            (:class:`PersistenceTrailer`).

    Returns:
        ``sh``-syntax text: ``set --`` with the quoted words, then (with ``persistence``) :data:`PERSISTENCE`,
        then the fixed program of the mode (:data:`WRAPPER`, :data:`NAMESPACE_WRAPPER` or
        :data:`SUBREAPER_WRAPPER`).

    Raises:
        ValueError: a malformed run id, a limit that is not positive, or a subreaper without a known prctl number.
    """
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError("run id must be 16 to 64 lower-case hex digits")
    if not time_limit > 0 or not kill_grace >= 0:
        raise ValueError("time limit must be positive and kill grace not negative")
    containment = Containment(containment)
    words = [
        run_id, f"{time_limit:g}", f"{kill_grace:g}", containment.value,
        interpreter, "-s", "--", *argv,
    ]  # fmt: skip
    program = WRAPPER
    if containment is Containment.NAMESPACE:
        program = NAMESPACE_WRAPPER
    elif containment is Containment.SUBREAPER:
        if prctl is None or str(prctl) not in _PRCTL_NUMBERS:
            raise ValueError("a subreaper needs the host's prctl syscall number")
        words.insert(0, str(prctl))
        program = SUBREAPER_WRAPPER
    # `set -- WORDS` then the program: the login shell runs it, no extra exec for it.
    return "set -- " + shlex.join(words) + "\n" + (PERSISTENCE if persistence else "") + program
