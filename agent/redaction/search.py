"""The one search over every rule: how the rules become a single RE2 alternation, and how it names a match's rule.

Every rule is one alternative of a single regular expression run by RE2 over bytes, without capturing groups (long
repeats relaxed, since bounded counters cost RE2's DFA dearly); an RE2 set names the rule of each candidate span,
and Python code runs only on the candidates, to check the bounded rule, validate and build the mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import re2


class Engine(Protocol):
    """A compiled pattern, from RE2 or Python's ``re``."""

    def search(self, data: bytes, pos: int) -> Any: ...

    def match(self, data: bytes, pos: int, endpos: int = ...) -> Any: ...


#: ``(data, pos, end)`` -> the spans of the match in ``data[pos:end]`` (whole match first; ``(-1, -1)``: none).
Spans = Callable[[bytes, int, int], list[tuple[int, int]]]
#: A span with one byte of context either side -> the indexes of the rules that match exactly it.
Which = Callable[[bytes | memoryview], list[int]]


def no_captures(pattern: bytes) -> bytes:
    """``pattern`` with its capturing groups made non-capturing: RE2 pays for every group on every match."""
    out = bytearray()
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == 0x5C:  # an escape: copy it and the escaped byte
            out += pattern[i : i + 2]
            i += 2
            continue
        if in_class:
            in_class = c != 0x5D
        elif c == 0x5B:
            in_class = True
            out.append(c)
            i += 1
            for special in (0x5E, 0x5D):  # [^ and a leading ] belong to the class
                if i < len(pattern) and pattern[i] == special:
                    out.append(special)
                    i += 1
            continue
        elif c == 0x28 and pattern[i + 1 : i + 2] != b"?":
            out += b"(?:"
            i += 1
            continue
        elif c == 0x28 and (
            pattern[i + 1 : i + 4] == b"?P<"
            or (pattern[i + 1 : i + 3] == b"?<" and pattern[i + 3 : i + 4] not in (b"=", b"!"))
        ):
            out += b"(?:"  # a named group: drop its name
            i = pattern.index(b">", i) + 1
            continue
        out.append(c)
        i += 1
    return bytes(out)


#: Long repeats that stay bounded in RE2's search all the same (see :func:`relax`).
_KEPT_BOUNDED = (rb"[A-Za-z0-9_.-]{0,32}",)  # a label's suffix: password_db_admin=, token.value:
_KEPT = re.compile(b"(" + b"|".join(re.escape(kept) for kept in _KEPT_BOUNDED) + b")")


def relax(pattern: bytes) -> bytes:
    """``pattern`` with every long bounded repeat (``{m,n}``, n >= 8) made open-ended (``{m,}``), but a label's.

    RE2 pays dearly for counted repeats (in program size and in DFA states, which the agent keeps in memory), so
    the search finds candidates with them open and the bounded rule decides. A label's ``{0,32}`` suffix stays
    bounded: relaxed, it let a line of repeated labels (``pwdpwdpwd…=``) make every position a candidate running
    to the end of the line, each rejected in turn, in time quadratic in the line (9 s for 100 KB; the outside
    review's hostile log line). Bounding every repeat up to 32 would have cost the daemon ~15 MiB of DFA states.
    """
    pieces = _KEPT.split(pattern)
    return b"".join(
        piece if index % 2 else re.sub(rb"\{([0-9]+),([0-9]+)\}", _open_ended, piece)
        for index, piece in enumerate(pieces)
    )


def _open_ended(match: re.Match[bytes]) -> bytes:
    return match[0] if int(match[2]) < 8 else b"{%s,}" % match[1]


#: Zero-width assertions that look further than one byte either side, or at the whole text: with one of these in
#: a rule, which rule matched is read from the capturing groups instead (see :func:`finder`).
_FAR_ASSERTIONS = re.compile(rb"\\[AzZ]|(?<!\(\?m:)[\^$]")
#: Character classes and escaped bytes: what is left of a pattern without them can be scanned for syntax.
_CLASS_OR_ESCAPE = re.compile(rb"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]", re.DOTALL)


def _keep_anchor(match: re.Match[bytes]) -> bytes:
    """For :data:`_CLASS_OR_ESCAPE`: drop a class or an escaped byte, keep the text anchors ``\\A``/``\\z``/``\\Z``."""
    return match[0] if match[0] in (rb"\A", rb"\z", rb"\Z") else b""


def finder(parts: Sequence[bytes], options: Any) -> tuple[Spans | None, Which | None]:
    """A search for any rule without capturing groups, and an RE2 set that names the rule of a span it found.

    RE2 pays for capturing groups on every match: with 27 rules, finding which one matched that way costs about
    four times the search. Instead the search returns only the span, and a set of the same rules, each anchored
    at both ends of ``\\C(?:RULE)\\C`` (``\\C``: any one byte), is matched against the span with one byte of
    context either side: the first rule in the set's answer is the one the alternation took (leftmost-first: an
    earlier rule matching there would have been taken). One byte of context decides every assertion the rules
    use (``\\b``, ``(?m:^)``, ``(?m:$)``); with any other (a manifest rule's ``^``, say) both are ``None`` and the
    groups are read instead.
    """
    if any(_FAR_ASSERTIONS.search(_CLASS_OR_ESCAPE.sub(_keep_anchor, part)) for part in parts):
        return None, None
    search = re2.compile(b"|".join(b"(?:" + part + b")" for part in parts), options)._regexp
    set_options = re2.Options()
    set_options.max_mem = options.max_mem
    set_options.log_errors = (
        False  # never_nl stays off: the context bytes may be line feeds, the span has none
    )
    rules = re2._re2.Set(re2._re2.RE2.Anchor.ANCHOR_BOTH, set_options)
    for part in parts:
        if rules.Add(rb"\C(?:" + part + rb")\C") < 0:  # pragma: no cover - each compiled in the search
            return None, None
    if not rules.Compile():  # pragma: no cover - out of memory
        return None, None
    unanchored = re2._re2.RE2.Anchor.UNANCHORED
    return (lambda data, pos, end: search.Match(unanchored, data, pos, end)), rules.Match


def with_context(data: bytes, start: int, end: int) -> bytes:
    """``data[start:end]`` with the byte before and after it, a line feed standing in where the text ends."""
    before = data[start - 1 : start] if start else b"\n"
    after = data[end : end + 1] or b"\n"
    return before + data[start:end] + after


#: ``(data, start, stop)`` -> the indexes of the rules that may match at ``start`` (any end before ``stop``).
Starting = Callable[[bytes, int, int], list[int]]


def starting(parts: Sequence[bytes], options: Any) -> Starting | None:
    """An RE2 set of the rules anchored at their start, with one byte of context before: which rules may match at a
    position. When a candidate's rule turns it down, only these are tried there (one RE2 call instead of a Python
    match per later rule; a trigger such as ``-X`` that a tool's check turns down is common in ``ps`` output)."""
    set_options = re2.Options()
    set_options.max_mem = options.max_mem
    set_options.log_errors = False
    rules = re2._re2.Set(re2._re2.RE2.Anchor.ANCHOR_START, set_options)
    for part in parts:
        if rules.Add(rb"\C(?:" + part + rb")") < 0:  # pragma: no cover - each compiled in the search
            return None
    if not rules.Compile():  # pragma: no cover - out of memory
        return None

    def starts(data: bytes, start: int, stop: int) -> list[int]:
        context = data[start - 1 : start] if start else b"\n"
        return rules.Match(context + data[start:stop])  # type: ignore[no-any-return]

    return starts
