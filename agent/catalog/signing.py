"""Approver keys and signatures over the runbook lock (Ed25519, via ``cryptography``).

An approver's private key lives on the approver's own machine (PKCS#8 PEM, optionally passphrase-encrypted);
the agent's config lists only public keys, in the one-line OpenSSH form (``ssh-ed25519 AAAA… alice``).
Key ids are OpenSSH fingerprints (``SHA256:…``), the same string ``ssh-keygen -lf KEY.pub`` prints.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.catalog.lockfile import LockSignature
from agent.errors import SigningError


@dataclass(frozen=True)
class ApproverKey:
    """A public key allowed to approve the lock."""

    key: Ed25519PublicKey
    fingerprint: str
    comment: str

    @classmethod
    def parse(cls, line: str) -> ApproverKey:
        """Parse an ``ssh-ed25519 BASE64 [comment]`` line.

        Raises:
            SigningError: not an Ed25519 public key in OpenSSH form.
        """
        parts = line.strip().split(None, 2)
        if len(parts) < 2 or parts[0] != "ssh-ed25519":
            raise SigningError("not an 'ssh-ed25519 AAAA…' public key line")
        try:
            key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise SigningError("the ssh-ed25519 public key does not decode") from None
        if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - the prefix check makes this Ed25519
            raise SigningError("not an Ed25519 key")
        return cls(key=key, fingerprint=fingerprint(key), comment=parts[2] if len(parts) > 2 else "")

    def verifies(self, signature: LockSignature, message: bytes) -> bool:
        try:
            self.key.verify(base64.b64decode(signature.signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True


def fingerprint(key: Ed25519PublicKey) -> str:
    blob = base64.b64decode(public_line(key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def public_line(key: Ed25519PublicKey, comment: str = "") -> str:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".rstrip()


def generate_key_pair(private_path: Path, comment: str, passphrase: bytes | None) -> tuple[Path, str]:
    """Write a new approver key pair: ``PATH`` (private, mode 0600) and ``PATH.pub`` (the config line).

    Returns:
        The public key file's path and the public key line.

    Raises:
        SigningError: either file already exists.
    """
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path} already exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(pem)
    line = public_line(key.public_key(), comment)
    public_path.write_text(line + "\n", encoding="ascii")
    return public_path, line


def load_private_key(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    """Load an approver's private key (PKCS#8 PEM, or an unencrypted OpenSSH key).

    Raises:
        SigningError: unreadable, wrong passphrase, or not Ed25519.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read key file {path}: {exc.strerror}") from None
    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, passphrase)
        else:
            key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        raise SigningError(f"{path} is encrypted: give its passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(f"{path} is not a readable private key (or the passphrase is wrong)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 key")
    return key


def sign(key: Ed25519PrivateKey, message: bytes) -> LockSignature:
    return LockSignature(
        key=fingerprint(key.public_key()),
        signature=base64.b64encode(key.sign(message)).decode("ascii"),
    )


def check_signatures(
    signatures: list[LockSignature], approvers: list[ApproverKey], message: bytes, required: int
) -> str | None:
    """Return ``None`` when at least ``required`` distinct approvers signed ``message``, else the reason why not."""
    if not signatures:
        return "the lock is not signed, but approver keys are configured"
    by_fingerprint = {a.fingerprint: a for a in approvers}
    valid: set[str] = set()
    reasons: list[str] = []
    for signature in signatures:
        approver = by_fingerprint.get(signature.key)
        if approver is None:
            reasons.append(f"signature by {signature.key}, which is not a configured approver key")
        elif approver.verifies(signature, message):
            valid.add(signature.key)
        else:
            reasons.append(f"signature by {signature.key} does not match the lock's content")
    if len(valid) >= required:
        return None
    reasons.append(f"{len(valid)} valid approver signature(s), {required} required")
    return "; ".join(reasons)
