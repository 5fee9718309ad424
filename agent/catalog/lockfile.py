"""The ``runbooks.lock`` format: per-runbook hashes, a catalog digest, approver signatures. Pure, no I/O.

The file is JSON, two-space indented with sorted keys, so it is deterministic and diffs line by line::

    {
      "catalog_sha256": "…",
      "format": "guardia-runbooks-lock/1",
      "runbooks": {
        "disk_usage": {"manifest_sha256": "…", "script_sha256": "…"}
      },
      "signatures": [{"key": "SHA256:…", "signature": "…"}]
    }

``catalog_sha256`` is the sha256 of :func:`catalog_digest_input`: the format line followed by one line
``NAME SP MANIFEST_SHA256 SP SCRIPT_SHA256 LF`` per runbook in byte order of NAME. A lock whose stored digest
differs from the one recomputed from its entries was edited by hand. Signatures are Ed25519 over
:func:`signed_message` (which commits to the catalog digest, hence to every entry).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from agent.catalog.manifest import NAME_PATTERN, format_validation_error
from agent.errors import InvalidLock

FORMAT = "guardia-runbooks-lock/1"
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class LockEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest_sha256: Sha256
    script_sha256: Sha256


class LockSignature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The approver key's fingerprint, ``SHA256:`` + unpadded base64, as ``ssh-keygen -l`` prints it.
    key: Annotated[str, StringConstraints(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")]
    #: Base64 of the 64-byte Ed25519 signature.
    signature: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]


class Lock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    catalog_sha256: Sha256
    runbooks: dict[Annotated[str, StringConstraints(pattern=NAME_PATTERN)], LockEntry]
    signatures: list[LockSignature] = Field(default_factory=list)

    def recomputed_digest(self) -> str:
        return catalog_digest(self.runbooks)

    def signed_message(self) -> bytes:
        return signed_message(self.catalog_sha256)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def catalog_digest_input(entries: Mapping[str, LockEntry]) -> bytes:
    lines = [FORMAT + "\n"]
    for name in sorted(entries):
        entry = entries[name]
        lines.append(f"{name} {entry.manifest_sha256} {entry.script_sha256}\n")
    return "".join(lines).encode("ascii")


def catalog_digest(entries: Mapping[str, LockEntry]) -> str:
    """The digest over the whole catalog that the lock records and approvers sign."""
    return sha256_hex(catalog_digest_input(entries))


def signed_message(catalog_sha256: str) -> bytes:
    """The exact bytes an approver signs: a domain-separating prefix and the catalog digest."""
    return f"{FORMAT} catalog {catalog_sha256}\n".encode("ascii")


def make_lock(entries: Mapping[str, LockEntry], signatures: list[LockSignature] | None = None) -> Lock:
    return Lock(
        catalog_sha256=catalog_digest(entries),
        runbooks=dict(sorted(entries.items())),
        signatures=signatures or [],
    )


def render_lock(lock: Lock) -> str:
    """The lock file's text: stable for the same content, so a re-lock of an unchanged tree diffs empty."""
    body = lock.model_dump(mode="json")
    body["signatures"] = sorted(body["signatures"], key=lambda s: s["key"])
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def parse_lock(text: bytes, source: str) -> Lock:
    """Parse lock file bytes.

    Raises:
        InvalidLock: the file is not JSON, has the wrong shape, or names an unknown format.
    """
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidLock(f"{source}: not valid JSON ({exc})") from None
    if isinstance(raw, dict) and raw.get("format") != FORMAT:
        raise InvalidLock(f"{source}: unknown format; expected {FORMAT!r}")
    try:
        return Lock.model_validate(raw)
    except ValidationError as exc:
        raise InvalidLock(f"{source}: " + "; ".join(format_validation_error(exc))) from None
