"""The audit chain's key and its anchored head, kept beside the log and never in it.

* **The key** (``audit.key``, 0600, 32 random bytes as hex): every entry's ``hash`` is an HMAC-SHA256 with it, so a
  log edited and re-chained by someone without the key fails verification. It is made on first use; every writer
  of a state folder (the service, ``agent runbooks run``) shares it. Keep a copy off the PC to verify a copy of the
  log elsewhere.
* **The anchored head** (``audit.head`` beside ``audit.jsonl``, 0600): the ``seq`` and ``hash`` of the last entry
  the agent wrote, with an HMAC of both, rewritten (one fixed-size record, in place) after every append. ``agent
  audit verify`` reads it to name a log that ends before it (truncated) or differs at it (rewritten). The relay
  keeps the same head, sent in the agent's HELLO and final answers, off the PC.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from agent.state.files import open_private

KEY_NAME = "audit.key"
#: Bytes of the key.
KEY_BYTES = 32
#: The head record's size on disk: written in place, always this long (padded with spaces).
HEAD_RECORD = 256


class AuditKeyError(OSError):
    """The audit key file exists but is not a key (edited, truncated, another file put in its place)."""


def key_path(log: Path) -> Path:
    """Where the key of the audit log at ``log`` is kept: ``audit.key`` in the log's folder."""
    return log.parent / KEY_NAME


def head_path(log: Path) -> Path:
    """Where the anchored head of the live log ``log`` is kept (``audit.jsonl`` → ``audit.head``)."""
    return log.parent / f"{log.stem}.head"


def read_key(path: Path) -> bytes | None:
    """The key at ``path``, or None when there is none.

    Raises:
        AuditKeyError: the file is there but is not a key.
    """
    try:  # not open_private: that would create it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    try:
        if os.name == "posix" and os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)  # an older copy left looser: narrowed, as every state file is when opened
        text = os.read(fd, 4 * KEY_BYTES).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise AuditKeyError(errno.EINVAL, "not an audit key (64 hex digits)", str(path))
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key at ``path``, made (0600, from :func:`secrets.token_bytes`) if there is none yet.

    Two processes starting at once share one key: the file is created exclusively, and the one that lost the race
    reads what the winner wrote.

    Raises:
        AuditKeyError: the file is there but is not a key.
        OSError: it cannot be read or created.
    """
    for _ in range(200):
        if path.exists() or path.is_symlink():
            try:
                key = read_key(path)
            except AuditKeyError:
                if _age(path) < 1.0:  # being written by another process right now
                    time.sleep(0.005)
                    continue
                raise
            if key is not None:
                return key
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = open_private(path, os.O_WRONLY | os.O_EXCL)
        except FileExistsError:
            continue
        try:
            os.write(fd, key.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    raise AuditKeyError(errno.EINVAL, "not an audit key (64 hex digits)", str(path))


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def mac(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` with ``key``, as hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    """The last entry of a chain: its ``seq`` and ``hash``."""

    seq: int
    hash: str

    def record(self, key: bytes) -> bytes:
        """The head as kept in ``audit.head``: JSON with an HMAC of both values, padded to :data:`HEAD_RECORD`."""
        body = {"seq": self.seq, "hash": self.hash, "mac": mac(key, _head_input(self.seq, self.hash))}
        data = json.dumps(body, separators=(",", ":")).encode("ascii")
        return data.ljust(HEAD_RECORD - 1) + b"\n"


def _head_input(seq: int, head: str) -> bytes:
    return f"guardia-audit-head:{seq}:{head}".encode("ascii", "replace")


class HeadFileError(ValueError):
    """``audit.head`` is unreadable, or its HMAC does not match the key (edited)."""


def read_head(path: Path, key: bytes) -> Head | None:
    """The anchored head at ``path`` (None: there is none).

    Raises:
        HeadFileError: it is not a head record, or its HMAC does not match ``key``.
    """
    try:
        raw = path.read_bytes()[: HEAD_RECORD * 2]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadFileError(f"cannot be read ({exc.strerror})") from None
    try:
        record = json.loads(raw)
        seq, value, given = record["seq"], record["hash"], record["mac"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise HeadFileError("not a head record") from None
    if type(seq) is not int or not isinstance(value, str) or not isinstance(given, str):
        raise HeadFileError("not a head record")
    if not hmac.compare_digest(given, mac(key, _head_input(seq, value))):
        raise HeadFileError("its HMAC does not match the key (edited)")
    return Head(seq, value)
