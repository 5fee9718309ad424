"""Redaction against an attacker's corpus: real tools' output that must be masked, and output that must stay exact.

tests/data/redaction/leaks.toml holds what ``ps -ef``, ``history``, ``set -x``, config dumps, credential files, key
files, HTTP traces and Korean admin screens print with a password, key or personal number in them; keep.toml holds
output an operator needs byte for byte (barcodes, lots, hashes, ports, ``password_policy=strict``). Each leak row is
pushed through every path the engine offers — the whole text, a stream fed in small random chunks, the capped
output with the row kept in its head and in its tail — and no secret may survive, not even four characters of it in
a row. Each keep row must come out of every path as it went in, and redacting any row twice must change nothing more.

The redactor is the one the agent builds when the config names no inventory, secrets or rules: only the built-in
rules, which are what stands between a host's output and the room.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.redaction import CappedRedactor, Redactor

DATA = Path(__file__).parent / "data" / "redaction"
#: The agent's redactor with an empty config.
REDACTOR = Redactor()
#: How many characters of a secret in a row count as a leak.
PART = 4
#: Mask tokens the engine writes (``[REDACTED]``, ``[IP]``, ``[PRIVATE KEY REDACTED]``, ``[DRIVER-LICENSE]``…): not
#: output the host wrote, so not searched for pieces of a secret (``[PASSPORT]`` holds ``PASS``).
MASK_TOKEN = re.compile(r"\[[A-Z][A-Z0-9 _-]*\]")
#: Chunk size ranges for the streaming path: byte by byte, then small random pieces.
CHUNKINGS = [(1, 1), (1, 7), (2, 64)]
#: The capped path's limit when the row must be truncated around: head a third, tail the rest.
CAP = 4096


@dataclass(frozen=True)
class Row:
    """One row of a corpus file: ``tool-N`` is its id, N its place in the file (from 1)."""

    tool: str
    number: int
    text: str
    secrets: tuple[str, ...] = ()
    encoding: str = "utf-8"
    why: str = ""
    #: For a leak row the engine does not mask yet: why (the test expects it to fail, and fails when it passes).
    left: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.tool}-{self.number}"

    def encode(self) -> bytes:
        return self.text.encode(self.encoding)

    def decode(self, data: bytes) -> str:
        return data.decode(self.encoding, "replace")


def load(name: str, table: str) -> list[Row]:
    with (DATA / name).open("rb") as file:
        raw = tomllib.load(file)[table]
    rows = []
    for number, item in enumerate(raw, 1):
        known = {"tool", "text", "secrets", "encoding", "why", "note", "left"}
        rows.append(
            Row(
                tool=item["tool"],
                number=number,
                text=item["text"],
                secrets=tuple(item.get("secrets", ())),
                encoding=item.get("encoding", "utf-8"),
                why=item.get("why", ""),
                left=item.get("left", ""),
                extra={k: v for k, v in item.items() if k not in known},
            )
        )
    return rows


LEAKS = load("leaks.toml", "leak")
KEEPS = load("keep.toml", "keep")


def params(rows: list[Row], known_leaks: bool = False) -> list[object]:
    """The rows as test parameters; with ``known_leaks``, a row marked ``left`` is expected to fail (strictly: once
    the engine masks it, the test fails until the mark is removed)."""
    return [
        pytest.param(row, id=row.id, marks=pytest.mark.xfail(strict=True, reason=row.left))
        if known_leaks and row.left
        else pytest.param(row, id=row.id)
        for row in rows
    ]


# -- the paths out --------------------------------------------------------------------------------------------------


def whole(row: Row) -> str:
    """The whole-text path: ``redact`` for UTF-8, ``redact_bytes`` on the host's bytes for another encoding."""
    if row.encoding == "utf-8":
        return REDACTOR.redact(row.text)
    return row.decode(REDACTOR.redact_bytes(row.encode()))


def chunks(data: bytes, low: int, high: int, seed: str) -> Iterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(low, high)
        yield data[pos : pos + size]
        pos += size


def streamed(row: Row, low: int, high: int) -> str:
    stream = REDACTOR.stream()
    out = [stream.feed(piece) for piece in chunks(row.encode(), low, high, f"{row.id}/{low}-{high}")]
    out.append(stream.finish())
    return row.decode(b"".join(out))


def capped(row: Row, data: bytes, limit: int) -> tuple[str, bool]:
    """The capped path as the executor drives it: small chunks in, ``(text, truncated)`` out.

    It decodes as UTF-8 (U+FFFD for what is not), as the room gets it: on a cp949 row it can only show the ASCII
    of a secret, so the host's bytes are checked on the whole and streaming paths.
    """
    capper = CappedRedactor(REDACTOR, limit)
    for piece in chunks(data, 1, 97, f"{row.id}/capped"):
        capper.feed(piece)
    text, truncated, _cut = capper.result()
    return text, truncated


#: Lines around a row on the capped path: no digit or letter a secret could share four of in a row.
FILLER = b"-- -- -- -- -- -- -- --\n"
#: The capped path's own line where it cut, with its count of bytes.
CUT_LINE = re.compile(r"\n?… [0-9]+ bytes cut …\n?")


def filler(size: int) -> bytes:
    return FILLER * (size // len(FILLER) + 1)


def outputs(row: Row) -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every path out, the row redacted whole, streamed and capped."""
    yield "whole", whole(row)
    for low, high in CHUNKINGS:
        yield f"stream {low}-{high} bytes", streamed(row, low, high)
    data = row.encode()
    text, _truncated = capped(row, data, 1 << 20)
    yield "capped", text
    limit = max(CAP, 4 * len(data))
    for place, framed in [("head", data + filler(3 * limit)), ("tail", filler(3 * limit) + data)]:
        # Truncated unless a key block that never ends masks everything after it.
        text, _truncated = capped(row, framed, limit)
        yield f"capped, row in the {place}", CUT_LINE.sub("\n", text).replace(FILLER.decode(), "")


# -- what survives ----------------------------------------------------------------------------------------------------


def survivors(secret: str, source: str, output: str) -> list[str]:
    """The pieces of ``secret`` (``PART`` characters or the whole, if shorter) that ``output`` holds more often than
    ``source`` does outside the secret's own occurrences: masked text may keep what was there anyway."""
    if secret in output:
        return [secret]
    size = min(PART, len(secret))
    left = MASK_TOKEN.sub("\0", output)
    around = source.replace(secret, "\0")
    pieces = {secret[i : i + size] for i in range(len(secret) - size + 1)}
    return sorted(p for p in pieces if left.count(p) > around.count(p))


def report(row: Row, path: str, output: str, detail: str) -> str:
    return f"{row.id} ({path}): {detail}\n--- in ---\n{row.text}--- out ---\n{output}---"


# -- the corpus itself ------------------------------------------------------------------------------------------------


def test_the_corpus_is_as_large_as_promised() -> None:
    assert len(LEAKS) >= 150, len(LEAKS)
    assert len(KEEPS) >= 60, len(KEEPS)


@pytest.mark.parametrize("row", params(LEAKS))
def test_a_leak_row_is_well_formed(row: Row) -> None:
    """A secret that is not in its row would make the row pass by itself."""
    assert not row.extra, f"{row.id}: unknown fields {sorted(row.extra)}"
    assert row.secrets, f"{row.id}: no secrets"
    assert row.text.endswith("\n"), row.id
    data = row.encode()
    for secret in row.secrets:
        assert secret in row.text, f"{row.id}: {secret!r} is not in the text"
        assert secret.encode(row.encoding) in data, f"{row.id}: {secret!r} is not in the encoded text"


@pytest.mark.parametrize("row", params(KEEPS))
def test_a_keep_row_is_well_formed(row: Row) -> None:
    assert not row.extra, f"{row.id}: unknown fields {sorted(row.extra)}"
    assert row.why, f"{row.id}: no why"
    assert not row.secrets, f"{row.id}: a keep row has no secrets"
    assert row.text.endswith("\n"), row.id


def test_the_survival_check_catches_a_partial_mask() -> None:
    """The check itself: four characters of a secret left after a mask are a leak; text that was there is not."""
    source = "password=P@ss;word123 user=word\n"
    assert survivors("P@ss;word123", source, "password=[REDACTED];word123 user=word\n") == [
        ";wor",
        "d123",
        "ord1",
        "rd12",
        "word",
    ]
    assert survivors("P@ss;word123", source, "password=[REDACTED] user=word\n") == []
    assert survivors("P@ss;word123", source, source) == ["P@ss;word123"]
    assert survivors("837", "CVC 837\n", "CVC [REDACTED]\n") == []


# -- the rows ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", params(LEAKS, known_leaks=True))
def test_no_secret_of_a_leak_row_survives_any_path(row: Row) -> None:
    for path, output in outputs(row):
        for secret in row.secrets:
            left = survivors(secret, row.text, output)
            assert not left, report(row, path, output, f"{secret!r} survives as {left}")


@pytest.mark.parametrize("row", params(KEEPS))
def test_a_keep_row_comes_out_of_every_path_unchanged(row: Row) -> None:
    data = row.encode()
    checks = [
        ("whole", whole(row)),
        *((f"stream {low}-{high} bytes", streamed(row, low, high)) for low, high in CHUNKINGS),
    ]
    if row.encoding == "utf-8":  # the capped path decodes as UTF-8
        checks.append(("capped", capped(row, data, 1 << 20)[0]))
    for path, output in checks:
        assert output == row.text, report(row, path, output, "changed")


def check_idempotent(row: Row) -> None:
    """Bytes (the host's encoding) and, for UTF-8, text: a second pass finds nothing the first one left."""
    once = REDACTOR.redact_bytes(row.encode())
    twice = REDACTOR.redact_bytes(once)
    assert twice == once, report(row, "bytes, twice", row.decode(twice), f"once:\n{row.decode(once)}")
    if row.encoding == "utf-8":
        text = REDACTOR.redact(row.text)
        again = REDACTOR.redact(text)
        assert again == text, report(row, "text, twice", again, f"once:\n{text}")


@pytest.mark.parametrize("row", params(LEAKS))
def test_redacting_a_leak_row_twice_changes_nothing_more(row: Row) -> None:
    check_idempotent(row)


@pytest.mark.parametrize("row", params(KEEPS))
def test_redacting_a_keep_row_twice_changes_nothing_more(row: Row) -> None:
    check_idempotent(row)
