"""Streaming redaction is exact: the same bytes as redacting the whole text, whatever the line length and chunking.

The attack: a secret or a rule match straddling a point where the stream cuts a long line (or a chunk boundary, or
an escape sequence) used to come out in clear. Here lines are megabytes long, plants sit at every offset around the
stream's own cut points, and chunk sizes are arbitrary.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redaction import MAX_HOLD, CappedRedactor, ExtraRule, InvalidRule, Redactor, check_rule

SECRET = "s3cr3t-Relay-Tok3n"
MULTI = "first-line\nsecond-line"
R = Redactor(
    secrets=[SECRET, "DbPass!2026", MULTI],
    known_hosts={"10.100.10.10": "was01"},
    extra_rules=[ExtraRule("member", r"MBR[0-9]{8}", "[MEMBER]")],
)
#: Planted text, and what must not survive of it (None: the planted text itself).
PLANTS: list[tuple[str, str]] = [
    (SECRET, SECRET),
    (" " + SECRET.encode().hex() + " ", SECRET.encode().hex()),
    (" DbPass!2026 ", "DbPass!2026"),
    (" password=hunter22-long-value ", "hunter22"),
    (" 10.1.2.3 ", "10.1.2.3"),
    (" 10.100.10.10:8080 ", "10.100.10.10"),
    (" Authorization: Bearer abcdefgh12345678 ", "abcdefgh12345678"),
    (" rrn=901010-1234567 ", "1234567"),
    (" 010-1234-5678 ", "1234-5678"),
    (" MBR12345678 ", "MBR12345678"),
    (" -----BEGIN PRIVATE KEY-----MIIEvQIBADANBg-----END PRIVATE KEY----- ", "MIIEvQIBADANBg"),
    (" xoxb-1234567890-abcdefghij ", "xoxb-1234567890"),
    (" s3cr3t\u200b-Relay-Tok3n ", "Relay-Tok3n"),
    (MULTI, "second-line"),
]


def streamed(redactor: Redactor, data: bytes, sizes: list[int]) -> bytes:
    stream = redactor.stream()
    out, pos, index = [], 0, 0
    while pos < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        out.append(stream.feed(data[pos : pos + size]))
        pos += size
        index += 1
    out.append(stream.finish())
    return b"".join(out)


def plant(length: int, filler: bytes, plants: list[tuple[int, str]]) -> bytes:
    """A line of ``length`` filler bytes with the plants written over it at their offsets (no overlaps)."""
    line = bytearray(filler * length)
    free = 0
    for offset, text in sorted(plants):
        raw = text.encode()
        offset = max(offset, free)
        line[offset : offset + len(raw)] = raw
        free = offset + len(raw) + 1
    return bytes(line)


#: Long enough for every path of the stream: several hold thresholds (MAX_HOLD, 64 KiB) and cuts in one line. Ten
#: times longer reaches nothing more and costs minutes under Windows.
LONG = 5 * MAX_HOLD


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(0, LONG),
    filler=st.sampled_from([b"x", b" ", b"0", b".", b"-", "가".encode(), b"\xef\xbc\x90"]),
    planted=st.lists(st.tuples(st.integers(0, LONG), st.sampled_from(PLANTS)), max_size=12),
    sizes=st.lists(st.integers(1, LONG // 3), min_size=1, max_size=4),
    near_cuts=st.booleans(),
)
def test_a_long_line_streams_exactly_and_nothing_planted_survives(
    length: int,
    filler: bytes,
    planted: list[tuple[int, tuple[str, str]]],
    sizes: list[int],
    near_cuts: bool,
) -> None:
    if near_cuts:  # move every plant next to a chunk boundary or a hold threshold of the stream
        marks = [sum(sizes[: i + 1]) for i in range(len(sizes))] + [MAX_HOLD, MAX_HOLD - R.window]
        planted = [(marks[i % len(marks)] + (o % 64) - 32, p) for i, (o, p) in enumerate(planted)]
    plants = [(o % (length + 1), text) for o, (text, _) in planted]
    data = plant(length, filler, plants)
    whole = R.redact_bytes(data)
    assert streamed(R, data, sizes) == whole
    for _, (text, value) in planted:
        assert value.encode() not in whole, text


@pytest.mark.parametrize(("text", "value"), PLANTS, ids=[p[1][:16] for p in PLANTS])
def test_a_plant_at_every_offset_around_the_first_long_line_cut_is_masked(text: str, value: str) -> None:
    length = MAX_HOLD + 1000
    cut = len(R.stream().feed(b"x" * length))  # where the stream cuts a line of this length
    assert 0 < cut < length
    raw = text.encode()
    for offset in range(cut - len(raw) - 2, cut + 3):
        data = plant(length + 200, b"x", [(offset, text)])
        out = streamed(R, data, [length])
        assert out == R.redact_bytes(data)
        assert value.encode() not in out, offset


def test_escape_sequences_split_anywhere_are_removed_exactly() -> None:
    data = ("\x1b[31m" + SECRET[:5] + "\x1b]0;title\x07" + SECRET[5:] + "\x1b[0m x\n").encode() * 50
    whole = R.redact_bytes(data)
    assert SECRET.encode() not in whole and b"\x1b" not in whole
    for size in range(1, 40):
        assert streamed(R, data, [size]) == whole


def test_memory_stays_bounded_on_a_flood_without_line_feeds() -> None:
    stream = R.stream()
    released = 0
    for _ in range(200):  # 12.5 MiB in 64 KiB chunks
        released += len(stream.feed(b"A" * 65536))
        assert len(stream._buffer) < MAX_HOLD + 65536 + 2 * R.window
    assert released + len(stream.finish()) == 200 * 65536


def test_a_key_block_opened_on_a_long_line_stays_masked_until_its_end() -> None:
    data = (
        b"x" * 100_000
        + b" -----BEGIN PRIVATE KEY-----"
        + b"K" * 300_000
        + b"-----END PRIVATE KEY----- after\n"
    )
    whole = R.redact_bytes(data)
    assert whole.endswith(b" [PRIVATE KEY REDACTED] after\n") and b"KKK" not in whole
    for size in (1000, 65536, 77_777):
        assert streamed(R, data, [size]) == whole


def test_capped_output_of_a_long_line_equals_whole_redaction() -> None:
    data = plant(400_000, b"y", [(65_500, " password=hunter22 "), (131_000, SECRET)])
    capper = CappedRedactor(R, 1 << 20)
    for i in range(0, len(data), 4096):
        capper.feed(data[i : i + 4096])
    assert capper.result() == (R.redact_bytes(data).decode(), False, 0)


def test_agent_redact_cli_streams_a_multi_megabyte_line_exactly(
    agent_cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    plants = [
        (i * 45, (SECRET, " password=hunter22 ")[i % 2]) for i in range(66_000)
    ]  # cut points fall in them
    data = plant(3_000_000, b"z", plants) + b"\n"
    result = agent_cli("redact", input=data.decode())
    assert result.exit_code == 0
    expected = Redactor(secrets=[SECRET]).redact(data.decode())
    assert result.stdout == expected
    assert "hunter22" not in result.stdout and SECRET not in result.stdout


def test_an_unbounded_extra_rule_is_refused_with_a_clear_reason() -> None:
    with pytest.raises(InvalidRule, match="upper bound"):
        check_rule(ExtraRule("lot", r"LOT-[0-9]+"))
    check_rule(ExtraRule("lot", r"LOT-[0-9]{1,12}"))


def test_an_extra_rule_with_named_groups_keeps_the_rules_after_it_working() -> None:
    redactor = Redactor(extra_rules=[ExtraRule("lot", r"LOT-(?P<year>[0-9]{4})-([0-9]{1,6})", "[LOT]")])
    assert redactor.redact("LOT-2026-123 at 10.1.2.3") == "[LOT] at [IP]"
    assert (
        Redactor(engine="re", extra_rules=[ExtraRule("lot", r"LOT-(?P<y>[0-9]{4})", "[LOT]")]).redact(
            "LOT-2026 at 10.1.2.3"
        )
        == "[LOT] at [IP]"
    )
