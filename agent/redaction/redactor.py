"""The :class:`Redactor`: the rules of :mod:`agent.redaction.rules` compiled into one search, applied to a text.

Every rule is one alternative of a single RE2 search (:mod:`agent.redaction.search`); Python code runs only on the
candidates it finds, where the rule's bounded pattern and its handler (:mod:`agent.redaction.handlers`) decide and
build the mask. The text is matched normalised (:mod:`agent.redaction.normalise`) and masked as written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import re2

from agent.redaction.handlers import HANDLERS, Addresses, Handler, Tools, fixed, pem_begin_end
from agent.redaction.normalise import (
    ANSI,
    NEEDS_NORMALISING,
    NORMALISE_MARGIN,
    Decoded,
    Normalised,
    is_utf8,
)
from agent.redaction.rules import (
    FIRST_OCTETS,
    LOOKAROUND,
    MAX_RULE_WIDTH,
    PEM_BEGIN_RE,
    PEM_END,
    RULES,
    SECRET_MASK,
    TOKEN_EXTEND,
    ExtraRule,
    Finding,
    check_rule,
    max_width,
)
from agent.redaction.search import Engine, Spans, Which, finder, no_captures, relax, starting, with_context
from agent.redaction.stream import StreamRedactor
from agent.redaction.values import secret_forms

#: After a rejected candidate, how far past the widest rule the next search looks at first (then twice as far
#: each time it finds nothing there), instead of to the end of the text.
REJECTED_REACH = 64
#: After this many masks on one line, the rest of it is searched cut short as after a rejected candidate.
MASKS_BEFORE_CUT = 16
#: :meth:`Redactor.redact` remembers texts up to this many characters that needed nothing masked, up to this many.
CLEAN_MEMO_LENGTH = 64
CLEAN_MEMO_SIZE = 4096
#: The rules applied to what a credential rule keeps of its match (see :meth:`Redactor._kept`).
_IN_KEPT_LABELS = frozenset({"secret", "host_name", "ipv4_hex_name", "ipv4_dashed", "ipv4", "ipv6"})
#: Skipped in a Cookie header's parts that are not pairs: they are searched with every other rule.
_COOKIE_RULE = frozenset({"cookie"})

_ONE_LINE = re2.Options()
_ONE_LINE.log_errors = False
_ONE_LINE.never_nl = True

#: ``(data, pos, cut)`` -> the next candidate's span first (``(-1, -1)``: none), and with the groups, its group.
Find = Callable[[bytes, int, int], Any]
Decided = tuple[str, tuple[bytes, int]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A rule ready to compile: its pattern as this redactor matches it, its handler and its widest match."""

    name: str
    pattern: bytes
    handler: Handler
    width: int
    extra: bool = False


def _own_patterns(
    single_line: list[bytes], names: Mapping[bytes, bytes]
) -> dict[str, tuple[bytes, int] | None]:
    """The patterns (and widest matches) of the rules each redactor builds: its secrets', its host names'."""
    own: dict[str, tuple[bytes, int] | None] = {"secret": None, "host_name": None}
    if single_line:
        own["secret"] = (b"|".join(re.escape(f) for f in single_line), max(len(form) for form in single_line))
    if names:
        host_names = sorted(names, key=lambda n: (-len(n), n))
        pattern = rb"\b(?i:" + b"|".join(re.escape(n) for n in host_names) + rb")\b"
        own["host_name"] = (pattern, max(len(name) for name in names))
    return own


def _builtin(tools: Tools, single_line: list[bytes]) -> list[_Prepared]:
    """The rules of :data:`RULES` as this redactor matches them, each with its handler from :data:`HANDLERS`."""
    own = _own_patterns(single_line, tools.addresses.names)
    first = b"|".join(str(octet).encode() for octet in tools.addresses.first_octets())
    prepared = []
    for rule in RULES:
        if rule.pattern is None:
            built = own[rule.name]
            if built is None:
                continue  # no secrets, no host names: no rule
            pattern, width = built
        else:
            pattern = rule.pattern.replace(FIRST_OCTETS, first)
            width = max_width(pattern) or 0
            assert width > 0, rule.name
        prepared.append(_Prepared(rule.name, pattern, HANDLERS[rule.name](rule, tools), width))
    return prepared


def _extra(rules: Sequence[ExtraRule]) -> list[_Prepared]:
    prepared = []
    for rule in rules:
        check_rule(rule)
        handler = fixed(rule.replacement.encode())
        prepared.append(_Prepared(f"extra:{rule.name}", rule.pattern.encode(), handler, MAX_RULE_WIDTH, True))
    return prepared


#: ``(pos, last, masked)`` -> the next candidate ``(start, end, group)`` (start -1: none); see :func:`_candidates`.
NextCandidate = Callable[[int, int, int], tuple[int, int, int]]


def _candidates(
    data: bytes, find: Find, which: Which | None, widest: int, cuts: bool
) -> tuple[NextCandidate, Callable[[int], None]]:
    """The candidates of one text, leftmost first: ``next_candidate(pos, last, masked)`` is the first that starts
    from ``pos`` on and before ``last``, as ``(start, end, group)`` (start -1: none; ``masked``: where the one before
    started, if it was masked, else -1), and ``rejected(start)`` says that the one at ``start`` was not sensitive.

    After a rejected candidate the search looks only ``reach`` bytes past what the widest rule can match, further
    each time it finds nothing there, until the end of that line: the relaxed search finds candidates far longer
    than any rule accepts (a user name running to a ":" 50 KB on), and one from each next byte made a hostile line
    cost time quadratic in its length. Python's re reads the end of a cut text as the end of the text, so with
    ``cuts`` false (the "re" engine, the baseline) every search goes to the end. (Two closures over the search's
    state rather than an object: they run once per candidate, and attribute lookups showed in the benchmark.)
    """
    size = len(data)
    view = memoryview(data)
    rejected_reach = REJECTED_REACH if cuts else 0
    reach = 0  # > 0: the search is cut short, this far past the widest rule
    line_end = -1  # the end of the line where searches are cut short
    masks, counted_to = 0, -1  # masks on the line that ends at counted_to

    def next_candidate(pos: int, last: int, masked: int) -> tuple[int, int, int]:
        nonlocal reach, masks, counted_to, line_end
        if masked != -1 and rejected_reach:
            if reach:
                # Still on the line of a rejected candidate: such a candidate starts again wherever its rule's
                # start does (=-u=10.1.2.3 repeated, then a ":" far on), so a search to the end after each masked
                # address cost the rest of the line every time. No candidate runs past a line feed.
                reach = rejected_reach
            else:
                # A candidate that never completes (=-u=10.1.2.3 repeated with no ":" at all) is never rejected,
                # yet keeps every search running to the end of the line: after MASKS_BEFORE_CUT masks on one line
                # (an access log has two or three) the rest of it is searched cut short as well.
                if masked > counted_to:
                    counted_to, masks = data.find(b"\n", masked), 0
                    counted_to = size if counted_to == -1 else counted_to
                masks += 1
                if masks > MASKS_BEFORE_CUT:
                    reach, line_end = rejected_reach, counted_to
        while pos < last:
            if reach and (pos + widest + reach >= size or pos > line_end):
                reach = 0  # the cut would reach the end of the text, or this is past the line
            cut = pos + widest + reach if reach else size
            found = find(data, pos, cut)
            start, end = found[0]
            if reach and (start == -1 or start > cut - widest):
                # Every match a rule can accept is at most `widest` long, and RE2 decides assertions at the cut
                # from the bytes after it: one that starts at or before cut - widest would have been found.
                pos = cut - widest + 1
                reach *= 2
                continue
            if start == -1 or start >= last:
                break
            if which is None:
                return start, end, found[1]
            # The rules that match exactly this span, with one byte of context on each side (a line feed stands
            # in for the start or end of the text); the first of them is the one the search took.
            span = view[start - 1 : end + 1] if start > 0 and end < size else with_context(data, start, end)
            return start, end, min(which(span)) + 1
        return -1, -1, 0

    def rejected(start: int) -> None:
        nonlocal reach, line_end
        if rejected_reach:
            reach = rejected_reach
            if line_end < start:
                line_end = data.find(b"\n", start)
                line_end = size if line_end == -1 else line_end

    return next_candidate, rejected


def _changed_part(normal: bytes, finding: Finding) -> tuple[int, int, bytes]:
    """The part of a finding's span its replacement changes: what it keeps at either end (a label, quotes) stays as
    written (a CP949 label in CP949, a full-width digit full-width), cut at character boundaries."""
    start, end, replacement = finding.start, finding.end, finding.replacement
    span = normal[start:end]
    head = 0
    limit = min(len(span), len(replacement))
    while head < limit and span[head] == replacement[head]:
        head += 1
    while 0 < head < len(span) and span[head] & 0xC0 == 0x80:
        head -= 1  # not inside a character
    start, span, replacement = start + head, span[head:], replacement[head:]
    tail = 0
    limit = min(len(span), len(replacement))
    while tail < limit and span[-1 - tail] == replacement[-1 - tail]:
        tail += 1
    while 0 < tail < len(span) and span[len(span) - tail] & 0xC0 == 0x80:
        tail -= 1
    return start, end - tail, replacement[: len(replacement) - tail]


class Redactor:
    """A compiled set of redaction rules. Immutable and safe to share between tasks.

    Args:
        secrets: the agent's own secret values (DB password, relay token, key passphrases, …).
        known_hosts: internal address or host name → the alias shown instead (from the inventory).
        extra_rules: rules from config and manifest.
        engine: ``"re2"`` (the default) or ``"re"`` (the same rules through Python's ``re``: a slow baseline
            for the benchmark and a cross-check in tests).

    Raises:
        InvalidRule: an extra rule does not compile or is unbounded.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        known_hosts: Mapping[str, str] | None = None,
        extra_rules: Sequence[ExtraRule] = (),
        engine: Literal["re2", "re"] = "re2",
    ) -> None:
        #: Short texts known to need nothing masked (only those: nothing sensitive is kept). Outbound messages
        #: repeat the same keys and values (``status``, ``SUCCESS``, host aliases) in every answer.
        self._clean: set[str] = set()
        #: The same for the pieces of matches that nested passes search (see :meth:`_pass`).
        self._clean_labels: set[bytes] = set()
        self._clean_parts: set[bytes] = set()
        forms = secret_forms(secrets)
        # No rule of the main expression matches across a line feed (RE2's never_nl), which is what lets a
        # stream release every complete line at once. Secrets that contain one are found by a literal pass.
        self.multiline_secrets = [form for form in forms if b"\n" in form]
        self.max_multiline = max((len(f) for f in self.multiline_secrets), default=0)
        single_line = [form for form in forms if b"\n" not in form]
        tools = Tools(self._kept, self._nested, Addresses(known_hosts or {}))
        self._compile([*_builtin(tools, single_line), *_extra(extra_rules)], engine)

    def _compile(self, rules: list[_Prepared], engine: Literal["re2", "re"]) -> None:
        """One alternation; remember which top-level group index belongs to which rule. RE2 finds candidates
        with the long repeats relaxed (bounded repeats cost it dearly); the bounded rule decides (:meth:`_decide`)."""
        parts: list[bytes] = []
        self._by_group: dict[int, tuple[str, Handler, int, bool]] = {}
        self._rules: list[tuple[str, Handler, Engine | None]] = []
        for index, rule in enumerate(rules):
            relaxed = rule.pattern if rule.extra or engine == "re" else relax(rule.pattern)
            bounded: Engine | None = None
            if rule.extra:
                bounded = re2.compile(
                    rule.pattern, _ONE_LINE
                )  # as in the search: a rule never spans a line feed
            elif relaxed != rule.pattern:
                bounded = re.compile(rule.pattern)
            self._rules.append((rule.name, rule.handler, bounded))
            parts.append(no_captures(relaxed))
            self._by_group[index + 1] = (rule.name, rule.handler, index, relaxed != rule.pattern)
        widest = max(rule.width for rule in rules)
        #: The most bytes (of the normalised text) a decision about one position can depend on: a stream holds
        #: back this much of a long line, and everything before it is final.
        self.window = widest + TOKEN_EXTEND + LOOKAROUND
        #: The longest span any rule's bounded pattern can match: a candidate that needs more is rejected anyway.
        self.widest = widest
        self._exact: dict[str, Any] = {
            rule.name: re.compile(rule.pattern) for rule in rules if not rule.extra
        }
        self.pattern = b"|".join(b"(" + part + b")" for part in parts)
        options = re2.Options()
        options.max_mem = 64 << 20
        options.log_errors = False
        options.never_nl = True
        self._options, self._engine = options, engine
        self._find, self._which = finder(parts, options) if engine == "re2" else (None, None)
        self._starts = starting(parts, options) if self._which is not None else None

    @functools.cached_property
    def _regex(self) -> Engine:
        """The alternation with a capturing group per rule: for the ``re`` engine, or where :func:`finder` can't."""
        if self._engine == "re2":
            return re2.compile(self.pattern, self._options)  # type: ignore[no-any-return]
        return re.compile(self.pattern)

    @functools.cached_property
    def _spans(self) -> Spans | None:
        """The spans of every group of :attr:`_regex`, straight from the RE2 binding's compiled expression.

        Its Python layer (match objects, lastindex) costs as much per match as the search itself.
        """
        raw = getattr(self._regex, "_regexp", None)
        if raw is None or not hasattr(raw, "Match"):
            return None
        unanchored = re2._re2.RE2.Anchor.UNANCHORED
        return lambda data, pos, end: raw.Match(unanchored, data, pos, end)

    @functools.cached_property
    def _groups(self) -> tuple[Find, bool]:
        """The search that reads a candidate's rule from the capturing groups (when :func:`finder` can't), and
        whether it may be cut short (RE2's may: the "re" engine's reads the end of a cut text as its end)."""
        spans = self._spans
        if spans is not None:

            def find_spans(data: bytes, pos: int, cut: int) -> tuple[tuple[int, int], int]:
                found = spans(data, pos, cut)
                # The one alternative that matched spans the whole match.
                return found[0], found.index(found[0], 1) if found[0][0] != -1 else 0

            return find_spans, True
        search = self._regex.search

        def find_match(data: bytes, pos: int, cut: int) -> tuple[tuple[int, int], int]:
            match = search(data, pos)
            return (match.span(), match.lastindex) if match is not None else ((-1, -1), 0)

        return find_match, False

    # -- nested passes over what a rule keeps of its match ------------------------------------------------------

    def _kept(self, label: bytes) -> bytes:
        """What a rule keeps of its match (a flag, a user name, a cookie's name), with the addresses, host names and
        secrets in it masked: the user of ``rsync -u 10.0.0.5:/data`` or ``http://10.0.0.5:8443@x`` is an address.
        Only those rules: a label is not a value (``Authorization: Bearer`` stays). Shorter than the match, so this
        ends."""
        return self._pass(label, self._clean_labels, only=_IN_KEPT_LABELS)

    def _nested(self, part: bytes) -> bytes:
        """A part of a Cookie header redacted with every rule but the cookie rule."""
        return self._pass(part, self._clean_parts, skip=_COOKIE_RULE)

    def _pass(
        self,
        text: bytes,
        clean: set[bytes],
        only: frozenset[str] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> bytes:
        """``text`` (a piece of a match) redacted by a nested pass with some of the rules. Pieces with nothing to
        mask are remembered in ``clean`` (only those: token=, Authorization: Bearer, a cookie's name)."""
        if text in clean:
            return text
        redacted = self._apply(text, 0, None, None, only, skip)[0]
        if redacted is text:
            if len(clean) >= CLEAN_MEMO_SIZE:
                clean.clear()
            clean.add(text)
        return redacted

    # -- applying ----------------------------------------------------------------------------------------------

    def _apply(
        self,
        data: bytes,
        begin: int,
        limit: int | None,
        findings: list[Finding] | None,
        only: frozenset[str] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> tuple[bytes, int]:
        """Redact ``data[begin:stop]``; ``data[:begin]`` is context. Returns the redacted bytes and ``stop``.

        With ``limit`` None the data is complete (``stop == len(data)``). Otherwise only matches that start before
        ``limit`` are taken (the caller guarantees they and their look-around lie in ``data``), and ``stop`` is
        where the next call must go on: every byte before it is decided. Rules not in ``only`` (when given) and
        rules in ``skip`` are passed over as if they matched nothing (a nested pass over what a rule keeps).
        """
        nested = only is not None or bool(skip)
        out: list[bytes] = []
        emitted = pos = begin  # data[:emitted] is decided; the next search starts at pos
        last = len(data) if limit is None else limit
        by_group = self._by_group
        find, which = self._find, self._which
        if find is None or which is None:
            (find, cuts), which = self._groups, None
        else:
            cuts = True
        next_candidate, rejected = _candidates(data, find, which, self.widest, cuts)
        masked = -1  # where the last candidate started, if it was masked
        while pos < last:
            start, end, group = next_candidate(pos, last, masked)
            if start == -1:
                break
            masked = -1
            name, handler, index, relaxed = by_group[group]
            # A rule passed over here lets _decide pick among the rules allowed here, from this one on.
            relaxed = relaxed or (nested and (name in skip or (only is not None and name not in only)))
            result = None if relaxed else handler(data, start, end)
            if result is None:
                # The bounded rule decides; a candidate it rejects leaves the later rules a chance.
                decided = self._decide(data, start, index if relaxed else index + 1, only, skip)
                if decided is None:
                    # Not sensitive: look again from the next byte, not after the candidate.
                    pos = start + 1
                    rejected(start)
                    continue
                name, result = decided
            key = data.find(b"-----BEGIN", start + 1, result[1]) if name != "pem" else -1
            if key != -1:
                decided = self._short_of_key(data, start, index, key, (name, result), only, skip)
                if decided is None:
                    pos = start + 1
                    continue
                name, result = decided
            masked = start
            replacement, end = result
            out.append(data[emitted:start])
            out.append(replacement)
            if findings is not None:
                is_open = name == "pem" and end == len(data) and PEM_END.search(data, start) is None
                findings.append(Finding(name, start, end, replacement, is_open))
            emitted = pos = max(end, start + 1)
        stop = len(data) if limit is None else max(emitted, last)
        if not out and begin == 0 and stop == len(data):
            return data, stop
        out.append(data[emitted:stop])
        return b"".join(out), stop

    def _short_of_key(
        self,
        data: bytes,
        start: int,
        index: int,
        key: int,
        decided: Decided,
        only: frozenset[str] | None,
        skip: frozenset[str],
    ) -> Decided | None:
        """A value that runs into a private key block that goes on past it (IDENTIFIED BY '-----BEGIN …,
        sk-…-----BEGIN): decided on the text before the block, which the PEM rule then masks to its END."""
        end = decided[1][1]
        if PEM_BEGIN_RE.match(data, key) and not PEM_END.search(data, key, end):
            return self._decide(data, start, index, only, skip, endpos=key)
        return decided

    def _decide(
        self,
        data: bytes,
        start: int,
        index: int,
        only: frozenset[str] | None = None,
        skip: frozenset[str] = frozenset(),
        endpos: int | None = None,
    ) -> Decided | None:
        """The first rule from ``index`` on (of ``only``, not of ``skip``) whose bounded pattern matches at ``start``
        (before ``endpos``, when given) and whose handler masks."""
        rules = self._rules[index:]
        if only is not None or skip:
            rules = [rule for rule in rules if rule[0] not in skip and (only is None or rule[0] in only)]
        stop = len(data) if endpos is None else endpos
        may: set[int] | None = None
        for offset, (name, handler, bounded) in enumerate(rules, index):
            if offset > index and self._starts is not None and only is None and not skip:
                # The candidate's own rule turned it down: of the rest, only those that may match here are tried.
                if may is None:
                    may = set(self._starts(data, start, min(stop, start + self.widest + LOOKAROUND)))
                if offset not in may:
                    continue
            match = (bounded or self._exact[name]).match(data, start, stop)
            if match is not None and match.end() > start:
                result = handler(data, start, match.end())
                if result is not None:
                    return name, result
        return None

    def _process(
        self, data: bytes, begin: int, partial: bool, findings: list[Finding] | None
    ) -> tuple[bytes, int]:
        """Redact ``data[begin:stop]`` (``data[:begin]`` is context), matching the normalised text.

        ``partial``: ``data`` is the start of a longer text; everything whose outcome could depend on what
        follows is left for later (``stop`` is where to go on). Otherwise ``data`` is complete.
        """
        ascii_only = data.isascii()
        valid = ascii_only or is_utf8(data)
        if ascii_only or (valid and NEEDS_NORMALISING.search(data) is None):
            limit = None
            if partial:
                limit = len(data) - NORMALISE_MARGIN - self.window
                if limit <= begin:
                    return b"", begin
            return self._apply(data, begin, limit, findings)
        # RE2 reads UTF-8: a byte that is not part of a character (EUC-KR or CP949 from a legacy host, binary)
        # would end a value such as password=…, unmasked. CP949 is matched as the UTF-8 it stands for (비밀번호:
        # is a label there too), any other such byte as "?", so a value runs on through it.
        normal = Normalised(data) if valid else Decoded(data)
        nbegin = normal.to_normal(begin)
        nlimit = None
        if partial:
            nlimit = normal.to_normal(len(data) - NORMALISE_MARGIN) - self.window
            if nlimit <= nbegin:
                return b"", begin
        found: list[Finding] = []
        _, nstop = self._apply(normal.data, nbegin, nlimit, found)
        stop = len(data) if nlimit is None else normal.to_original(nstop, end=False)
        out, last = [], begin
        for finding in found:
            # Text that is not UTF-8 keeps what a mask keeps as it was written (a CP949 label stays CP949); the
            # one-format masks of UTF-8 text (901010-*******, whatever the dash) are written as they are.
            start, end, replacement = (
                (finding.start, finding.end, finding.replacement)
                if valid
                else _changed_part(normal.data, finding)
            )
            if start == end and not replacement:
                continue  # taken as it was (a value already masked)
            first = normal.to_original(start, end=False)
            after = normal.to_original(end, end=True)
            out.append(data[last:first])
            out.append(replacement)
            last = after
            if findings is not None:
                findings.append(Finding(finding.rule, first, after, replacement, finding.open))
        out.append(data[last:stop])
        return b"".join(out), stop

    def multiline_spans(self, data: bytes) -> list[tuple[int, int]]:
        """Where the secrets that contain a line feed occur in ``data`` (leftmost first, longest at a tie)."""
        spans: list[tuple[int, int]] = []
        pos = 0
        while (span := self._next_multiline(data, pos)) is not None:
            spans.append(span)
            pos = span[1]
        return spans

    def _next_multiline(self, data: bytes, pos: int) -> tuple[int, int] | None:
        if not self.multiline_secrets:
            return None
        hits = [(i, -len(f)) for f in self.multiline_secrets if (i := data.find(f, pos)) != -1]
        if not hits:
            return None
        start, negative_length = min(hits)
        return start, start - negative_length

    def redact_bytes(self, data: bytes, findings: list[Finding] | None = None) -> bytes:
        """Redact a complete piece of output (not a chunk of a stream: see :meth:`stream`).

        This is the reference: a :class:`StreamRedactor` gives exactly these bytes, however the data is chunked.
        """
        if b"\x1b" in data:
            data = ANSI.sub(b"", data)
        if not self.multiline_secrets:
            return self._process(data, 0, False, findings)[0]
        out: list[bytes] = []
        pos = 0
        while True:
            span = self._next_multiline(data, pos)
            piece_end = len(data) if span is None else span[0]
            found: list[Finding] = []
            out.append(self._process(data[:piece_end], pos, False, found)[0])
            if findings is not None:
                findings.extend(found)
            if found and found[-1].open:  # a private key block goes on past a multi-line secret
                close = PEM_END.search(data, pem_begin_end(data, found[-1].start))
                if close is None:
                    break
                pos = close.end()
                continue
            if span is None:
                break
            out.append(SECRET_MASK)
            if findings is not None:
                findings.append(Finding("secret", span[0], span[1], SECRET_MASK))
            pos = span[1]
        return b"".join(out)

    def redact(self, text: str) -> str:
        """Redact a complete text."""
        short = len(text) <= CLEAN_MEMO_LENGTH
        if short and text in self._clean:
            return text
        data = text.encode("utf-8", "surrogatepass")
        redacted = self.redact_bytes(data)
        if redacted is not data:
            try:
                return redacted.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                # A mask ended inside the three bytes of a lone surrogate: what is left of them is replaced.
                return redacted.decode("utf-8", "replace")
        if short:
            if len(self._clean) >= CLEAN_MEMO_SIZE:
                self._clean.clear()
            self._clean.add(text)
        return text

    def redact_json(self, value: Any) -> Any:
        """Redact every string (keys included) of a JSON-like structure: the one choke point for outbound messages."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact_json(k): self.redact_json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_json(v) for v in value]
        return value

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)
