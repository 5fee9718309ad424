"""The agent's state folder on disk: private files (0600) and folders (0700), whatever the process umask.

Everything the agent keeps (the outbox database and its ``-wal``/``-shm`` companions, the audit log, kept output)
is no looser on disk than on the wire. Files are created with an explicit mode, never by a plain ``open()``, so a
umask of 0 cannot widen them; an existing file or folder the agent owns is narrowed when it is opened again.
On Windows the POSIX mode bits mean little (only read-only); there the state folder's ACL (inherited from where the
service installer puts it) is what protects it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
#: Windows has no O_NOFOLLOW: there a link (a reparse point) is refused by lstat before and after opening.
_NO_NOFOLLOW = not hasattr(os, "O_NOFOLLOW")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and any missing parents) as 0700 folders; narrow ``path`` itself to 0700 if it exists.

    Parents that already exist are left as they are (they may be shared folders the agent does not own).
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, DIR_MODE)
    _narrow(path, DIR_MODE)
    _refuse_foreign(path)
    return path


class StateNotPrivate(PermissionError):
    """A state folder another user owns or may write: the agent will not keep its outbox or audit log there."""


def _refuse_foreign(path: Path) -> None:
    """Raise :class:`StateNotPrivate` when ``path`` (or what a link there names) is owned by another user or is
    writable by group or others after narrowing (it was made in advance by someone else, who could then delete
    unacknowledged results or swap in a rebuilt audit chain). POSIX only: on Windows the folder's ACL, set by the
    service installer, is what protects it."""
    if os.name != "posix":
        return
    found = path.stat()
    euid = os.geteuid()
    if found.st_uid == euid and not found.st_mode & 0o022:
        return
    import pwd  # POSIX only

    who = "another user" if found.st_uid != euid else "group or others (it cannot be narrowed)"
    try:
        me = pwd.getpwuid(euid).pw_name
    except KeyError:
        me = str(euid)
    raise StateNotPrivate(
        errno.EPERM,
        f"the state folder belongs to or is writable by {who}; remove it, or make it this user's alone "
        f"(chown {me} {path} && chmod 700 {path})",
        str(path),
    )


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a 0600 file (created empty if missing; narrowed if looser)."""
    os.close(open_private(path, os.O_WRONLY))
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates the file 0600 (and narrows an existing looser one); returns the descriptor.

    The file itself may not be a symbolic link (``O_NOFOLLOW``) and must be a regular file: narrowing follows
    what is opened, and a state file replaced by a link to ``/dev/null`` or ``/etc/passwd`` would have had that
    narrowed to 0600 (and written to) by an agent running as root. Its folder may be a link.

    Raises:
        OSError: as ``os.open``; ``ELOOP`` for a link, ``EINVAL`` for a device, a pipe or a folder.
    """
    flags |= os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    if _NO_NOFOLLOW:
        _refuse_link(path)
    fd = os.open(path, flags, FILE_MODE)
    try:
        opened = os.fstat(fd)
        mode = opened.st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if _NO_NOFOLLOW:
            named = _refuse_link(path)
            if named is not None and (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
                raise OSError(errno.ELOOP, "replaced while opening", str(path))
        if os.name == "posix" and mode & 0o777 & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_link(path: Path) -> os.stat_result | None:
    """The file's own ``lstat`` (None: there is none yet); ``ELOOP`` when it is a link or another reparse point."""
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(named.st_mode) or getattr(named, "st_file_attributes", 0) & 0x400:  # REPARSE_POINT
        raise OSError(errno.ELOOP, "a link in place of a state file", str(path))
    return named


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename), as a 0600 file."""
    temporary = path.with_name(path.name + ".tmp")
    fd = open_private(temporary, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _narrow(path: Path, mode: int) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
