"""The audit log: append-only JSON lines, each entry chained to the one before it by hash.

Every entry has ``seq`` (1, 2, 3, …), ``ts``, ``kind``, its own fields, ``prev`` (the previous entry's hash, or
64 zeros) and ``hash``: the sha256 of the entry's canonical JSON without ``hash``. :func:`verify_chain` finds any
edited, removed, inserted or reordered entry. Removing entries from the *end* leaves a valid shorter chain: record
the head (``agent audit verify`` prints it) somewhere else to detect that too. Entries are redacted before they are
written, like everything else the agent emits. The file is 0600 in a 0700 folder whatever the umask.

Several processes may append (the service and ``agent runbooks run``): each entry follows the file's last whole
entry. A line cut short by a crash mid-write is passed over (the next entry starts a line of its own) and
:func:`verify_chain` names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.state.files import open_private, private_dir

GENESIS = "0" * 64


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


class AuditLog:
    """Appends chained entries to a JSON-lines file; continues the chain of an existing file."""

    def __init__(self, path: Path, redact: Callable[[Any], Any] = lambda value: value) -> None:
        private_dir(path.parent)
        self.path = path
        self._redact = redact
        self._lock = threading.Lock()
        #: The file, opened on the first append and kept open: opening it for every entry cost ~0.4 ms each while
        #: the outbox's fsync held the file system's journal, on the event loop. A stat of the path (no journal)
        #: finds a file moved or deleted meanwhile, and the entry goes to the path, as when it was opened each time.
        self._fd: int | None = None
        #: The file's size after this log's last write: another size means another writer (the CLI beside the
        #: service, say) appended meanwhile, and the chain goes on from its last entry.
        self._end = -1
        self.seq, self.head = 0, GENESIS

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one entry and return it.

        Other processes may append to the same file (``agent runbooks run`` while ``agent run`` serves): each entry
        is chained to the file's last whole entry, read again from the open file whenever it grew meanwhile; an
        exclusive lock (``flock`` on POSIX, a byte-range lock on Windows) makes that read and the write one step.
        The path is checked again under the lock, so a writer that waited while the file was rotated writes to the
        new file, not the old one. A new (empty) file after a rotation or deletion starts its own chain with a
        ``continued`` entry that records the head this log had written before, so each file verifies on its own and
        the files can be tied together.
        """
        fields = self._redact(fields)
        with self._lock:
            attempts = 100  # should the path keep being replaced, the last file opened takes the entry
            for attempt in range(1, attempts + 1):
                fd = self._open()
                with _exclusive(fd):
                    if attempt == attempts or self._still_at_path(fd):
                        return self._append_locked(fd, kind, fields)
                # Moved or deleted (a log rotation, an operator): write where the path is now.
                os.close(fd)
                self._fd = None
            raise AssertionError("unreachable: the last attempt appends")

    def ready(self) -> None:
        """Open the file now, so that a log that cannot be written stops a run before it starts, not after.

        Raises:
            OSError: the file cannot be opened for appending (permissions, a link, a full or read-only disk).
        """
        with self._lock:
            self._open()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
        return self._fd

    def _append_locked(self, fd: int, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        size = os.fstat(fd).st_size
        entries: list[dict[str, Any]] = []
        lead = b""
        if size != self._end:
            previous, whole = _tail(fd, size)
            lead = b"" if whole else b"\n"  # after a torn line (a crash mid-write), a line of its own
            if previous is not None:
                self.seq, self.head = previous
            elif self.head != GENESIS:
                # A new file after a rotation or deletion: a chain of its own, tied to the one this log wrote.
                entries.append({"kind": "continued", "previous_seq": self.seq, "previous_head": self.head})
                self.seq, self.head = 0, GENESIS
        entries.append({"kind": kind, **fields})
        data = bytearray(lead)
        for fields_of in entries:
            entry = {"seq": self.seq + 1, "ts": round(time.time(), 3), **fields_of, "prev": self.head}
            try:
                entry["hash"] = entry_hash(entry)
            except UnicodeEncodeError:  # a lone surrogate (a CLI argument of non-UTF-8 bytes): U+FFFD instead
                entry = _scrubbed(entry)
                entry["hash"] = entry_hash(entry)
            data += _canonical(entry) + b"\n"
            self.seq, self.head = entry["seq"], entry["hash"]
        line = memoryview(data)
        while line:
            line = line[os.write(fd, line) :]
        self._end = size + len(data)
        return entry

    def _still_at_path(self, fd: int) -> bool:
        try:
            named, held = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def close(self) -> None:
        """Close the file (the next append opens it again)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


if sys.platform == "win32":  # pragma: no cover - runs under scripts/test-windows
    import msvcrt

    #: The byte Windows writers lock (mandatory byte-range locks: one past any real log, below 2 GiB because Wine's
    #: and older CRTs' ``_locking`` take a 32-bit offset). Writers append at the end, so none writes there.
    _LOCK_AT = 0x7FFFFFF0

    @contextlib.contextmanager
    def _exclusive(fd: int) -> Iterator[None]:
        """Windows has no flock: an exclusive lock on one byte beyond the log, waited for as long as it takes."""
        while True:
            os.lseek(fd, _LOCK_AT, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                time.sleep(0.002)
        try:
            yield
        finally:
            os.lseek(fd, _LOCK_AT, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    @contextlib.contextmanager
    def _exclusive(fd: int) -> Iterator[None]:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _tail(fd: int, end: int) -> tuple[tuple[int, str] | None, bool]:
    """``(seq, hash)`` of the last whole entry in the first ``end`` bytes of the open file (None: none), and
    whether those bytes end with a line feed.

    Read backwards in growing steps, so an entry of any length is found (a run on a thousand hosts lists every
    host). A last line cut short by a crash mid-write is passed over: the chain goes on from the entry before it,
    and ``verify_chain`` names the cut line.
    """
    tail, start, step = b"", end, 65536
    while start > 0:
        start, step = max(0, end - step), step * 2
        os.lseek(fd, start, os.SEEK_SET)  # the file is O_APPEND: writes still go to its end
        tail = _read_exactly(fd, end - start)
        lines = tail.split(b"\n")[1 if start else 0 :]  # the first may have been cut by the read
        for line in reversed(lines):
            found = _seq_and_hash(line)
            if found is not None:
                return found, tail.endswith(b"\n")
    return None, end == 0 or tail.endswith(b"\n")


def _read_exactly(fd: int, count: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = os.read(fd, count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrubbed(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD, which UTF-8 can carry."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value


def _seq_and_hash(line: bytes) -> tuple[int, str] | None:
    """``(seq, hash)`` of a line that is a whole entry whose hash matches its content (as verify checks it)."""
    try:
        entry = json.loads(line)
        seq, stored_hash = entry["seq"], entry["hash"]
        whole = "prev" in entry and entry_hash(entry) == stored_hash
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return (seq, stored_hash) if whole and type(seq) is int and isinstance(stored_hash, str) else None


@dataclass(frozen=True)
class ChainReport:
    entries: int
    head: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(path: Path) -> ChainReport:
    """Check every entry's hash and link. Problems name the line and what is wrong."""
    problems: list[str] = []
    prev, expected_seq, count = GENESIS, 1, 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            count += 1
            try:
                entry = json.loads(line)
                seq, stored_hash, link = entry["seq"], entry["hash"], entry["prev"]
            # RecursionError: a line nested 100,000 deep; it is not an entry either.
            except (ValueError, KeyError, TypeError, RecursionError):
                problems.append(f"line {number}: not an audit entry")
                continue
            if entry_hash(entry) != stored_hash:
                problems.append(f"line {number} (seq {seq}): content does not match its hash (edited)")
            if link != prev:
                problems.append(
                    f"line {number} (seq {seq}): does not follow the previous entry (removed or reordered)"
                )
            if seq != expected_seq:
                problems.append(f"line {number}: seq {seq} where {expected_seq} was expected")
            prev, expected_seq = stored_hash, (seq if isinstance(seq, int) else expected_seq) + 1
    return ChainReport(entries=count, head=prev, problems=problems)
