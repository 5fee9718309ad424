"""Recording fakes of nssm.exe and icacls.exe, in Python so that they run as Windows processes too.

Installed by :func:`install_fakes` as console scripts (``nssm``/``icacls``; ``nssm.exe``/``icacls.exe`` with pip's
launcher on Windows), they record their argv ($FAKE_LOG, one call a line, arguments joined by TAB), keep which
services exist ($FAKE_STATE, one name a line), fail the Nth call over both programs (1-based, $FAKE_FAIL_AT) with exit
5, or every call whose argv starts with $FAKE_FAIL_PREFIX (space-joined), with a message as the real ones give;
``nssm remove`` exits $FAKE_REMOVE_EXIT when set. ``nssm status`` answers in UTF-16, as the real one does when its
output is not a console. ``ok`` is a program that exits 0 (a stand-in for the agent's config check).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROGRAMS = ("nssm", "icacls")


def _log_call(prog: str, args: list[str]) -> int:
    log = Path(os.environ["FAKE_LOG"])
    with log.open("a", encoding="utf-8", newline="\n") as out:
        out.write("\t".join([prog, *args]) + "\n")
    return len(log.read_text(encoding="utf-8").splitlines())


def main() -> None:
    prog = Path(sys.argv[0]).stem.lower()
    args = sys.argv[1:]
    calls = _log_call(prog, args)
    state = Path(os.environ["FAKE_STATE"])
    state.touch()
    prefix = os.environ.get("FAKE_FAIL_PREFIX")
    if str(calls) == os.environ.get("FAKE_FAIL_AT") or (
        prefix and " ".join([prog, *args]).startswith(prefix)
    ):
        sys.stderr.write(f"{prog}: simulated failure of call {calls}\n")
        sys.exit(5)
    if prog != "nssm":
        sys.exit(0)
    verb, name = args[0], args[1] if len(args) > 1 else ""
    names = state.read_text(encoding="utf-8").split()
    if verb == "install":
        state.write_text("".join(n + "\n" for n in [*names, name]), encoding="utf-8")
        sys.exit(0)
    if name not in names:
        sys.stderr.write("Can't open service!\n")
        sys.exit(3)
    if verb == "remove":
        if os.environ.get("FAKE_REMOVE_EXIT"):
            sys.exit(int(os.environ["FAKE_REMOVE_EXIT"]))
        state.write_text("".join(n + "\n" for n in names if n != name), encoding="utf-8")
    elif verb == "status":
        sys.stdout.buffer.write("SERVICE_STOPPED\r\n".encode("utf-16-le"))
        sys.stdout.flush()


def ok() -> None:
    sys.exit(0)


def install_fakes(bin_dir: Path, *names: str) -> dict[str, Path]:
    """Write console scripts for ``names`` (default: nssm and icacls) into ``bin_dir``; returns name -> path.

    The scripts import this module: the project folder must be on their PYTHONPATH.
    """
    from pip._vendor.distlib.scripts import ScriptMaker

    maker = ScriptMaker(None, str(bin_dir))
    maker.executable = sys.executable
    maker.variants = {""}
    made: dict[str, Path] = {}
    for name in names or PROGRAMS:
        function = "ok" if name not in PROGRAMS else "main"
        [path] = maker.make(f"{name} = tests.fake_service_tools:{function}")
        made[name] = Path(path)
    return made
