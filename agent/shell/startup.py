"""What the entry point sets up about the process before any command runs, the same on Linux and Windows.

* **UTF-8 out, whatever the code page.** On Windows a pipe or a file gets the ANSI code page (cp949 on a Korean PC,
  cp1252 elsewhere), where an emoji or, outside Korea, any Hangul raises ``UnicodeEncodeError``: stdout and stderr
  are made UTF-8 there (a real console already gets UTF-16 through ``WriteConsoleW``, which Python does itself).
* **Nothing but the agent's own words on the screen.** A warning raised from a library's code (asyncssh importing a
  deprecated cryptography name, say) goes to the ``agent.library_warnings`` logger at DEBUG instead of stderr; the
  agent's own warnings are shown as Python shows them. A warning is the library's when the code that raised it (the
  frame that ``stacklevel`` points to) is not under the ``agent`` package.
* :func:`stdin_is_terminal`: "is there a person to prompt?", which ``isatty()`` answers wrongly on Windows for
  ``NUL`` (a character device, what a service, a scheduled task and CI give a process).

Imports only the standard library: ``agent --version`` pays for nothing else.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

#: Where warnings from libraries' code go (DEBUG), instead of stderr.
LIBRARY_WARNINGS = "agent.library_warnings"
_PACKAGE = str(Path(__file__).resolve().parent)


def is_own_code(filename: str) -> bool:
    """True when ``filename`` (a warning's source file) is part of the agent package."""
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return resolved == _PACKAGE or resolved.startswith(_PACKAGE + os.sep)


def route_library_warnings() -> None:
    """Send warnings raised in third-party code to the DEBUG log; the agent's own still go to stderr.

    Wraps :func:`warnings.showwarning`, so the filters (``-W``, ``PYTHONWARNINGS``, pytest's ``filterwarnings``)
    still decide first whether a warning is shown at all: only where it is shown changes.
    """
    shown = warnings.showwarning
    if getattr(shown, "_agent_routes", False):
        return

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if is_own_code(filename):
            shown(message, category, filename, lineno, file, line)
            return
        logging.getLogger(LIBRARY_WARNINGS).debug(
            "%s: %s (%s:%d)", category.__name__, message, Path(filename).name, lineno
        )

    showwarning._agent_routes = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def utf8_streams(platform: str = sys.platform) -> None:
    """On Windows, make stdout and stderr UTF-8 where they are not a console (pipes and files); elsewhere nothing."""
    if platform != "win32":
        return
    for stream in (sys.stdout, sys.stderr):
        reconfigure: Any = getattr(stream, "reconfigure", None)
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if reconfigure is not None and encoding != "utf8":
            reconfigure(encoding="utf-8", errors="backslashreplace")


def stdin_is_terminal() -> bool:
    """True when a person can answer a prompt on stdin.

    On Windows ``isatty()`` is true for every character device, ``NUL`` included; only a console handle (one that
    ``GetConsoleMode`` accepts) counts there.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not os.isatty(fd):
        return False
    if sys.platform != "win32":
        return True
    import ctypes
    import msvcrt

    try:
        handle = msvcrt.get_osfhandle(fd)
    except OSError:
        return False
    mode = ctypes.c_ulong()
    return bool(ctypes.windll.kernel32.GetConsoleMode(ctypes.c_void_p(handle), ctypes.byref(mode)))


def prepare_process() -> None:
    """Everything above, once, at the console script's start."""
    utf8_streams()
    route_library_warnings()
