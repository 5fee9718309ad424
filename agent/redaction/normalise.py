"""What the rules match instead of the text as written: escapes removed, look-alike characters as ASCII.

Terminal escape sequences are removed before matching so colour codes cannot split a secret. Full-width digits,
every kind of dash and the full stops of CJK text are matched as ASCII, invisible formatting characters (zero-width
space, joiners, bidi marks, BOM, soft hyphen, …) as nothing, while the text outside a mask is kept as it was
(:class:`Normalised` maps offsets both ways). Bytes that are not UTF-8 are read as CP949 (EUC-KR's superset:
legacy Korean hosts) where they are that, else matched as ``?``, one for one (:class:`Decoded`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator

import re2

#: Terminal escape sequences (bounded, never across a line feed), removed before matching.
ANSI = re.compile(rb"\x1b(?:\[[0-?]{0,32}[ -/]{0,8}[@-~]|\][^\x07\x1b\n]{0,256}(?:\x07|\x1b\\)?|[@-Z\\-_])?")
ANSI_MAX = 264
#: A run of invisible formatting characters longer than this is kept as it is (not removed before matching).
MAX_INVISIBLE_RUN = 16
#: Bytes at the end of a held-back buffer whose normalisation is not yet decided (a split character or run).
NORMALISE_MARGIN = 64

_DASHES = "\u3161\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d"
_INVISIBLES = "\u00ad\u034f\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
_NORMAL_CHARS: dict[bytes, bytes] = {chr(0xFF10 + d).encode(): str(d).encode() for d in range(10)}
_NORMAL_CHARS |= {c.encode(): b"-" for c in _DASHES}
# Full-width, half-width and ideographic full stops.
_NORMAL_CHARS |= {c.encode(): b"." for c in "\uff0e\uff61\u3002"}
_INVISIBLE = b"(?:" + b"|".join(re.escape(c.encode()) for c in _INVISIBLES) + b")"
_NORMALISE = re.compile(
    b"(" + _INVISIBLE + b"+)|" + b"|".join(re.escape(k) for k in sorted(_NORMAL_CHARS, reverse=True))
)
NEEDS_NORMALISING = re2.compile(
    _INVISIBLE + b"|" + b"|".join(re.escape(k) for k in sorted(_NORMAL_CHARS, reverse=True))
)
_LONE_SURROGATE = re.compile("[\udc80-\udcff]")


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def stray_bytes_marked(data: bytes) -> bytes:
    """``data`` with every byte that is not part of a valid UTF-8 sequence made ``?``: same length, same offsets."""
    return _LONE_SURROGATE.sub("?", data.decode("utf-8", "surrogateescape")).encode("utf-8")


class _OffsetMap:
    """Text with some spans replaced (``data``), and the maps of offsets between it and the original both ways."""

    __slots__ = ("_deletion", "_norm_ends", "_orig_ends", "_shrink", "data")

    def __init__(self, data: bytes, replacements: Iterable[tuple[int, int, bytes]]) -> None:
        """``replacements``: ``(start, end, bytes)``, in order and not overlapping, spans of ``data`` replaced."""
        out: list[bytes] = []
        orig_ends: list[int] = []
        norm_ends: list[int] = []
        shrink: list[int] = [0]
        deletion: list[bool] = []
        last = 0
        length = 0
        for start, end, replacement in replacements:
            out.append(data[last:start])
            length += start - last
            out.append(replacement)
            length += len(replacement)
            last = end
            orig_ends.append(end)
            norm_ends.append(length)
            shrink.append(shrink[-1] + (end - start) - len(replacement))
            deletion.append(not replacement)
        out.append(data[last:])
        self.data = b"".join(out)
        self._orig_ends = orig_ends
        self._norm_ends = norm_ends
        self._shrink = shrink
        self._deletion = deletion

    def to_normal(self, position: int) -> int:
        """A position of the original (at a character boundary) in the normalised data."""
        return position - self._shrink[bisect.bisect_right(self._orig_ends, position)]

    def to_original(self, position: int, *, end: bool) -> int:
        """A position of the normalised data in the original; removed characters at it stay outside the span."""
        if end:
            index = bisect.bisect_left(self._norm_ends, position)
            if (
                index < len(self._norm_ends)
                and self._norm_ends[index] == position
                and not self._deletion[index]
            ):
                index += 1
        else:
            index = bisect.bisect_right(self._norm_ends, position)
        return position + self._shrink[index]


def _normalising(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    for match in _NORMALISE.finditer(data):
        if match.group(1) is not None:
            if len(match.group(1).decode("utf-8", "replace")) > MAX_INVISIBLE_RUN:
                continue  # a long run of invisible characters is content, not an obfuscated secret
            yield match.start(), match.end(), b""
        else:
            yield match.start(), match.end(), _NORMAL_CHARS[match.group()]


class Normalised(_OffsetMap):
    """``data`` with full-width digits and dashes made ASCII and invisible characters removed, and the offset maps."""

    __slots__ = ()

    def __init__(self, data: bytes) -> None:
        super().__init__(data, _normalising(data))


#: Non-ASCII runs longer than this that are not UTF-8 are not read as CP949 (so that what a stream decides about
#: a byte depends only on bytes near it).
MAX_LEGACY_RUN = 1024
_NON_ASCII_RUN = re.compile(rb"[\x80-\xff]+")


def _legacy(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Each character of a non-ASCII run that is not UTF-8 but is CP949 (EUC-KR's superset, legacy Korean hosts),
    as UTF-8; the bytes of a run that is neither as ``?`` (one for one)."""
    for match in _NON_ASCII_RUN.finditer(data):
        run = match.group()
        try:
            run.decode("utf-8")
            continue
        except UnicodeDecodeError:
            pass
        position = match.start()
        try:
            text = run.decode("cp949") if len(run) <= MAX_LEGACY_RUN else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            yield position, match.end(), stray_bytes_marked(run)
            continue
        for char in text:
            width = len(char.encode("cp949"))
            yield position, position + width, char.encode("utf-8")
            position += width


class Decoded:
    """Text that is not UTF-8 as the rules match it: CP949 runs as UTF-8 (Korean labels are found in a legacy
    host's output too), other stray bytes as ``?``, then normalised (:class:`Normalised`); offsets map both ways."""

    __slots__ = ("_first", "_second", "data")

    def __init__(self, data: bytes) -> None:
        self._first = _OffsetMap(data, _legacy(data))
        self._second = Normalised(self._first.data)
        self.data = self._second.data

    def to_normal(self, position: int) -> int:
        return self._second.to_normal(self._first.to_normal(position))

    def to_original(self, position: int, *, end: bool) -> int:
        return self._first.to_original(self._second.to_original(position, end=end), end=end)


def visible_length(secret: str) -> int:
    """How many characters of ``secret`` are matched (invisible formatting characters are not)."""
    return len(Normalised(secret.encode("utf-8", "surrogatepass")).data.decode("utf-8", "replace"))
