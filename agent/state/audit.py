"""The audit log: append-only JSON lines, each entry chained to the one before it by a keyed hash.

Every entry has ``seq`` (1, 2, 3, …), ``ts``, ``kind``, its own fields, ``prev`` (the previous entry's hash, or
64 zeros), ``chain`` (``hmac-sha256``) and ``hash``: the HMAC-SHA256 of the entry's canonical JSON without ``hash``,
with the key in ``audit.key`` beside the log (:mod:`agent.state.audit_key`), never in the log. :func:`verify_chain`
finds any edited, removed, inserted or reordered entry, and a log re-chained without the key (every line after an
edited ``user_id`` given a new plain hash) fails it. Entries cut from the *end* are found against the anchored head:
``audit.head`` beside the log (the last ``seq`` and ``hash`` written, with an HMAC), and, off the PC, the head the
relay keeps from the agent's HELLO and final answers (docs/protocol.md, "The audit head").

Entries of an older agent have no ``chain`` field and a plain sha256 ``hash``: they still verify, reported as
unkeyed (a re-chained copy of them would verify too); a keyed agent that finds such a log goes on with keyed entries
from its last one, and an unkeyed entry after a keyed one is a rewrite. Entries are redacted before they are
written, like everything else the agent emits. The file is 0600 in a 0700 folder whatever the umask.

Several processes may append (the service and ``agent runbooks run``): each entry follows the file's last whole
entry. A line cut short by a crash mid-write is passed over (the next entry starts a line of its own) and
:func:`verify_chain` names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.state.audit_key import (
    Head,
    HeadFileError,
    head_path,
    key_path,
    load_or_create_key,
    read_head,
    read_key,
)
from agent.state.files import open_private, private_dir

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
#: ``chain`` of a keyed entry: its ``hash`` is an HMAC-SHA256 with the audit key.
KEYED = "hmac-sha256"


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def entry_hash(entry: dict[str, Any], key: bytes | None = None) -> str:
    """The ``hash`` an entry must carry: an HMAC with ``key`` for a keyed entry (``chain`` set), else sha256.

    Raises:
        LookupError: a keyed entry and no key.
    """
    body = _canonical({k: v for k, v in entry.items() if k != "hash"})
    if entry.get("chain") == KEYED:
        if key is None:
            raise LookupError("a keyed entry needs the audit key")
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


class AuditLog:
    """Appends chained entries to a JSON-lines file; continues the chain of an existing file.

    ``key``: the chain's HMAC key (default: ``audit.key`` beside the log, made on first use).
    """

    def __init__(
        self, path: Path, redact: Callable[[Any], Any] = lambda value: value, key: bytes | None = None
    ) -> None:
        private_dir(path.parent)
        self.path = path
        self._redact = redact
        #: The chain's key: read (or made) with the file's first opening, so that a key that cannot be read stops
        #: a run where the log does (:meth:`ready`), not the construction of the parts.
        self._key = key
        #: The anchored head (``audit.head``), open while the log is, rewritten in place after each append.
        self._head_fd: int | None = None
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
        new file, not the old one. A new (empty) file after a rotation or deletion goes on with the chain (seq and
        ``prev``) from a ``continued`` entry that names the head written before (this log's, or ``audit.head``'s),
        so each file verifies on its own and :func:`verify_files` ties them together.
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

    def anchor(self) -> dict[str, Any]:
        """The chain's head as the agent sends it to the relay: ``{"seq": N, "hash": "…"}`` of the file's last
        whole entry (``seq`` 0 and 64 zeros for an empty log). Reads the file's tail only when another writer
        appended since this log's last write.

        Raises:
            OSError: the file cannot be opened.
        """
        with self._lock:
            fd = self._open()
            with _exclusive(fd):
                size = os.fstat(fd).st_size
                if size != self._end:
                    previous, _whole = _tail(fd, size, self.key)
                    if previous is not None:
                        self.seq, self.head = previous
                    self._end = size
            return {"seq": self.seq, "hash": self.head}

    @property
    def key(self) -> bytes:
        """The chain's HMAC key (``audit.key`` beside the log unless one was given).

        Raises:
            OSError: it cannot be read or made; AuditKeyError: the file there is not a key.
        """
        if self._key is None:
            self._key = load_or_create_key(key_path(self.path))
        return self._key

    def _open(self) -> int:
        _ = self.key  # first: without its key the log cannot be written
        if self._fd is None:
            self._fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
        return self._fd

    def _append_locked(self, fd: int, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        size = os.fstat(fd).st_size
        entries: list[dict[str, Any]] = []
        lead = b""
        if size != self._end:
            previous, whole = _tail(fd, size, self.key)
            lead = b"" if whole else b"\n"  # after a torn line (a crash mid-write), a line of its own
            if previous is not None:
                entries += self._against_anchor(*previous)
                self.seq, self.head = previous
            elif self.head == GENESIS and (anchored := self._anchored()) is not None:
                self.seq, self.head = anchored.seq, anchored.hash  # rotated while no writer had it open
            if previous is None and self.head != GENESIS:
                # A new file after a rotation or deletion: it goes on with the chain this log wrote (the same seq
                # numbers, ``prev`` the last hash), its first entry naming that head, so it verifies on its own and
                # the relay's anchored head never sees the chain go backwards.
                entries.append({"kind": "continued", "previous_seq": self.seq, "previous_head": self.head})
        entries.append({"kind": kind, **fields})
        data = bytearray(lead)
        for fields_of in entries:
            entry = {"seq": self.seq + 1, "ts": round(time.time(), 3), **fields_of, "prev": self.head,
                     "chain": KEYED}  # fmt: skip
            try:
                entry["hash"] = entry_hash(entry, self.key)
            except UnicodeEncodeError:  # a lone surrogate (a CLI argument of non-UTF-8 bytes): U+FFFD instead
                entry = _scrubbed(entry)
                entry["hash"] = entry_hash(entry, self.key)
            data += _canonical(entry) + b"\n"
            self.seq, self.head = entry["seq"], entry["hash"]
        line = memoryview(data)
        while line:
            line = line[os.write(fd, line) :]
        self._end = size + len(data)
        self._write_head()
        return entry

    def _against_anchor(self, seq: int, found: str) -> list[dict[str, Any]]:
        """An ``anchor_mismatch`` entry when the file ends before, or differs at, the head last written (the log
        was cut or rewritten since, or its last entries lost in a crash): written into the chain, so that the
        evidence survives the head's next rewrite (``agent audit verify`` names it)."""
        anchored = self._anchored()
        if anchored is None or anchored.seq < seq or (anchored.seq == seq and anchored.hash == found):
            return []
        logger.error("the audit log ends at seq %d, but seq %d had been written (audit.head): entries were removed "
                     "or rewritten, or lost in a crash; recorded in the log", seq, anchored.seq)  # fmt: skip
        return [{"kind": "anchor_mismatch", "anchored_seq": anchored.seq, "anchored_head": anchored.hash,
                 "found_seq": seq, "found_head": found}]  # fmt: skip

    def _anchored(self) -> Head | None:
        """The head in ``audit.head`` (None: none, or not one this key wrote)."""
        try:
            return read_head(head_path(self.path), self.key)
        except HeadFileError:
            return None

    def _write_head(self) -> None:
        """Rewrite ``audit.head`` in place (one fixed-size record; under the log's lock, so writers agree)."""
        record = Head(self.seq, self.head).record(self.key)
        if self._head_fd is None:
            self._head_fd = open_private(head_path(self.path), os.O_RDWR)
        if hasattr(os, "pwrite"):
            os.pwrite(self._head_fd, record, 0)
        else:  # pragma: no cover - Windows
            os.lseek(self._head_fd, 0, os.SEEK_SET)
            os.write(self._head_fd, record)

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
            if self._head_fd is not None:
                os.close(self._head_fd)
                self._head_fd = None


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


def _tail(fd: int, end: int, key: bytes | None) -> tuple[tuple[int, str] | None, bool]:
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
            found = _seq_and_hash(line, key)
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


def _seq_and_hash(line: bytes, key: bytes | None) -> tuple[int, str] | None:
    """``(seq, hash)`` of a line that is a whole entry whose hash matches its content (as verify checks it)."""
    try:
        entry = json.loads(line)
        seq, stored_hash = entry["seq"], entry["hash"]
        whole = "prev" in entry and hmac.compare_digest(entry_hash(entry, key), str(stored_hash))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, LookupError):
        return None
    return (seq, stored_hash) if whole and type(seq) is int and isinstance(stored_hash, str) else None


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: ``problems`` (empty: intact), the last entry's ``seq`` and ``head``, and
    ``notes``: what is worth knowing but not a fault (unkeyed entries of an older agent, no anchored head)."""

    entries: int
    head: str
    problems: list[str]
    seq: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


#: ``key``/``anchor`` of :func:`verify_chain`: the ones kept beside the log (``audit.key``, ``audit.head``).
BESIDE = "beside"


class _Walk:
    """One pass over a log's lines: checks each entry's hash (keyed or not), link and seq."""

    def __init__(self, key: bytes | None, anchor: Head | None) -> None:
        self.key, self.anchor = key, anchor
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.prev, self.expected_seq, self.count, self.last_seq = GENESIS, 1, 0, 0
        self.keyed_from: int | None = None
        self.unkeyed: list[int] = []
        self.unchecked = 0
        #: The hash of the entry at the anchored head's seq, as found in the file.
        self.at_anchor: str | None = None

    def line(self, number: int, line: bytes) -> None:
        self.count += 1
        try:
            entry = json.loads(line)
            seq, stored_hash, link = entry["seq"], entry["hash"], entry["prev"]
        # RecursionError: a line nested 100,000 deep; it is not an entry either.
        except (ValueError, KeyError, TypeError, RecursionError):
            self.problems.append(f"line {number}: not an audit entry")
            return
        if self.count == 1 and _continues(entry):
            self.prev, self.expected_seq = link, seq  # a rotated log's next file: the chain goes on
            self.notes.append(
                f"goes on from seq {seq - 1} of an earlier file (rotated): verify that file too"
            )
        self._hash(number, entry, seq, stored_hash)
        if entry.get("kind") == "anchor_mismatch":
            self.problems.append(
                f"line {number} (seq {seq}): the log had been cut or rewritten before it: it ended at seq "
                f"{entry.get('found_seq')}, but the agent had written up to seq {entry.get('anchored_seq')} "
                "(entries removed or rewritten, or lost in a crash)"
            )
        if link != self.prev:
            self.problems.append(
                f"line {number} (seq {seq}): does not follow the previous entry (removed or reordered)"
            )
        if seq != self.expected_seq:
            self.problems.append(f"line {number}: seq {seq} where {self.expected_seq} was expected")
        if self.anchor is not None and seq == self.anchor.seq:
            self.at_anchor = str(stored_hash)
        self.prev, self.expected_seq = stored_hash, (seq if isinstance(seq, int) else self.expected_seq) + 1
        self.last_seq = seq if isinstance(seq, int) else self.last_seq

    def _hash(self, number: int, entry: dict[str, Any], seq: Any, stored_hash: Any) -> None:
        keyed = entry.get("chain") == KEYED
        if keyed and self.keyed_from is None:
            self.keyed_from = seq
        if not keyed and self.keyed_from is not None:
            self.problems.append(f"line {number} (seq {seq}): not keyed, after the chain became keyed at seq "
                                 f"{self.keyed_from} (re-chained without the key)")  # fmt: skip
        elif not keyed:
            self.unkeyed.append(seq)
        if keyed and self.key is None:
            self.unchecked += 1
            return
        try:
            good = hmac.compare_digest(entry_hash(entry, self.key), str(stored_hash))
        except (UnicodeEncodeError, TypeError):
            good = False
        if not good:
            how = " (edited, or re-chained without the key)" if keyed else " (edited)"
            self.problems.append(f"line {number} (seq {seq}): content does not match its hash{how}")

    def finish(self) -> ChainReport:
        notes = self.notes
        if self.unchecked:
            self.problems.append(
                f"{self.unchecked} keyed entries not checked: no audit key ({KEY_NAME_HINT})"
            )
        if self.unkeyed and self.keyed_from is None and self.key is not None:
            self.problems.append("every entry is unkeyed, though the log has a key: re-chained without the key (an "
                                 "older agent's log is keyed from the first entry a keyed agent adds)")  # fmt: skip
        elif self.unkeyed:
            notes.append(f"{len(self.unkeyed)} entries (seq {self.unkeyed[0]}–{self.unkeyed[-1]}) are unkeyed, "
                         "written before the chain was keyed: a re-chained copy of them would verify too")  # fmt: skip
        self._against_anchor(notes)
        return ChainReport(self.count, self.prev, self.problems, self.last_seq, notes)

    def _against_anchor(self, notes: list[str]) -> None:
        anchor = self.anchor
        if anchor is None:
            return
        if anchor.seq > self.last_seq:
            self.problems.append(
                f"truncated: the log ends at seq {self.last_seq}, but the agent wrote up to seq {anchor.seq} "
                f"(its anchored head): entries {self.last_seq + 1}–{anchor.seq} are missing"
            )
        elif self.at_anchor is None:
            notes.append(
                f"the anchored head (seq {anchor.seq}) is before this file's first entry: not checked"
            )
        elif not hmac.compare_digest(self.at_anchor, anchor.hash):
            self.problems.append(
                f"forked: the entry at seq {anchor.seq} is not the one the agent wrote (its anchored head has "
                "another hash): the log was rewritten there or before"
            )
        else:
            notes.append(f"matches the anchored head (seq {anchor.seq})")


KEY_NAME_HINT = "audit.key beside the log"


def _continues(entry: dict[str, Any]) -> bool:
    """True for a ``continued`` entry that names the head it goes on from (a rotated log's next file)."""
    previous = entry.get("previous_seq")
    return (
        entry.get("kind") == "continued"
        and type(previous) is int
        and entry.get("seq") == previous + 1
        and entry.get("prev") == entry.get("previous_head")
    )


def verify_chain(
    path: Path, key: bytes | str | None = BESIDE, anchor: Head | str | None = BESIDE
) -> ChainReport:
    """Check every entry's hash (keyed with ``key``) and link, and the end of the log against ``anchor``.

    Args:
        path: the log.
        key: the audit key; :data:`BESIDE` (default): ``audit.key`` in the log's folder; None: none (keyed
            entries are then a problem: they cannot be checked).
        anchor: the head the agent last wrote; :data:`BESIDE`: ``audit.head`` beside ``path`` when there is one
            (only the live log has one); None: not checked.

    Returns:
        The report: problems name the line and what is wrong, truncation and a rewrite at the anchor included.
    """
    problems: list[str] = []
    chain_key = read_key(key_path(path)) if key == BESIDE else key
    if isinstance(chain_key, str):
        raise TypeError("key: bytes, None or BESIDE")
    head: Head | None = None
    if anchor == BESIDE:
        if chain_key is not None:
            try:
                head = read_head(head_path(path), chain_key)
            except HeadFileError as exc:
                problems.append(f"{head_path(path).name}: {exc}")
    elif isinstance(anchor, Head):
        head = anchor
    walk = _Walk(chain_key, head)
    walk.problems += problems
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            walk.line(number, line)
    return walk.finish()


def verify_files(paths: list[Path], key: bytes | str | None = BESIDE) -> ChainReport:
    """Verify a rotated log's files, oldest first, as one chain: each file on its own, and each next file's first
    entry a ``continued`` from the previous file's last. The anchored head is checked against the last file.

    Returns:
        One report: problems prefixed by the file's name, the entries of all, the last file's seq and head.
    """
    problems: list[str] = []
    notes: list[str] = []
    entries, last = 0, None
    for index, path in enumerate(paths):
        report = verify_chain(path, key, anchor=BESIDE if index == len(paths) - 1 else None)
        problems += [f"{path.name}: {p}" for p in report.problems]
        notes += [
            f"{path.name}: {n}" for n in report.notes if not (index and n.startswith("goes on from seq"))
        ]
        first = _first_entry(path)
        if last is not None and (first is None or not _continues(first) or
                                 (first.get("previous_seq"), first.get("previous_head")) != last):  # fmt: skip
            problems.append(f"{path.name}: does not go on from {paths[index - 1].name} (seq {last[0]}): a file "
                            "is missing between them, or they are out of order")  # fmt: skip
        entries += report.entries
        last = (report.seq, report.head)
    seq, head = last if last is not None else (0, GENESIS)
    return ChainReport(entries, head, problems, seq, notes)


def _first_entry(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as handle:
        line = handle.readline()
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None
