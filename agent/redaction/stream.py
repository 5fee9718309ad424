"""Redaction of output that arrives in chunks (:class:`StreamRedactor`), and of output capped to a size, head and
tail kept (:class:`CappedRedactor`, :func:`cap_output`).

Exactness: every rule's match is bounded, so whether a position is masked depends only on ``Redactor.window`` bytes
around it. :class:`StreamRedactor` releases complete lines at once and, of a longer line, all but that window, and
gives exactly what ``Redactor.redact_bytes`` gives for the whole text. :class:`CappedRedactor` redacts and caps one
stream, keeping head and tail, and redacts only what it keeps.
"""

from __future__ import annotations

from typing import Protocol

from agent.redaction.handlers import pem_begin_end
from agent.redaction.normalise import ANSI, ANSI_MAX
from agent.redaction.patterns import LOOKBEHIND
from agent.redaction.rules import MASK_TOKEN, PEM_END, PEM_END_MAX, PEM_MARKER, SECRET_MASK, Finding

#: The longest a partial line may grow before the stream releases part of it anyway (see :class:`StreamRedactor`).
MAX_HOLD = 64 * 1024


class WholeTextRedactor(Protocol):
    """What a stream needs of :class:`agent.redaction.redactor.Redactor` (named by shape: the redactor's
    ``stream()`` makes a :class:`StreamRedactor`, so the two modules cannot import each other)."""

    @property
    def multiline_secrets(self) -> list[bytes]: ...

    @property
    def max_multiline(self) -> int: ...

    def stream(self) -> StreamRedactor: ...

    def _process(
        self, data: bytes, begin: int, partial: bool, findings: list[Finding] | None
    ) -> tuple[bytes, int]: ...

    def _next_multiline(self, data: bytes, pos: int) -> tuple[int, int] | None: ...


class StreamRedactor:
    """Redacts output that arrives in chunks, giving exactly what :meth:`Redactor.redact_bytes` gives for the
    whole text, whatever the chunking and the line length, in bounded memory.

    Two stages. Terminal escapes are removed first; an escape is at most :data:`ANSI_MAX` bytes, so only that much
    is held back. Then the rules: no rule matches across a line feed (private key blocks are tracked as state), so
    everything up to the last line feed is final and is released at once. A line longer than :data:`MAX_HOLD` is
    released up to where a match could still depend on what has not arrived: every rule's match is bounded
    (``Redactor.window`` bytes, look-around included), so all but that much of the line's end is final. When one of
    the agent's secrets itself contains a line feed, as many bytes as its longest form are held back too.
    """

    #: Bytes of already released text kept before the undecided part, for look-behind (``\b``, ``ip-``).
    CONTEXT = LOOKBEHIND + 8

    def __init__(self, redactor: WholeTextRedactor, in_key_block: bool = False) -> None:
        self._redactor = redactor
        self._raw = b""  # not yet through the escape stage
        self._buffer = b""  # escape-free; _buffer[:_begin] is context, the rest undecided
        self._begin = 0
        self._in_pem = in_key_block
        #: How many spans each rule masked so far.
        self.counts: dict[str, int] = {}

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk; return the redacted bytes that are now final (possibly empty)."""
        return self._release(self._strip(bytes(chunk), final=False), final=False)

    def finish(self) -> bytes:
        """End of stream: redact and return whatever is still held back."""
        return self._release(self._strip(b"", final=True), final=True)

    def detach(self) -> tuple[bytes, bool]:
        """Stop here: return the raw bytes still held back (unredacted) and whether a key block is open."""
        held = self._buffer[self._begin :] + self._raw
        self._buffer, self._begin, self._raw = b"", 0, b""
        return held, self._in_pem

    def _strip(self, chunk: bytes, final: bool) -> bytes:
        """The escape stage: remove terminal escapes, holding back one that may not be complete."""
        if not self._raw and b"\x1b" not in chunk:
            return chunk
        data = self._raw + chunk
        cut = len(data)
        if not final:
            undecided = len(data) - ANSI_MAX
            for match in ANSI.finditer(data, data.find(b"\x1b")):
                if match.start() >= undecided:
                    cut = match.start()
                    break
        self._raw = data[cut:]
        return ANSI.sub(b"", data[:cut])

    def _count(self, findings: list[Finding]) -> None:
        for finding in findings:
            self.counts[finding.rule] = self.counts.get(finding.rule, 0) + 1

    def _keep(self, data: bytes, position: int) -> None:
        """Go on from ``data[position:]``, keeping a little context before it."""
        context = max(0, position - self.CONTEXT)
        self._buffer, self._begin = data[context:], position - context

    def _release(self, chunk: bytes, final: bool) -> bytes:
        redactor = self._redactor
        self._buffer += chunk
        out: list[bytes] = []
        while True:
            data, begin = self._buffer, self._begin
            if self._in_pem:
                close = PEM_END.search(data, begin)
                if close is None:
                    # Drop what is surely inside the block; keep a tail that could hold a split END marker.
                    keep = len(data) if final else max(begin, len(data) - PEM_END_MAX)
                    self._buffer, self._begin = data[keep:], 0
                    break
                self._in_pem = False
                self._keep(data, close.end())
                continue
            hard = len(data)
            if redactor.multiline_secrets:
                if not final:
                    hard = max(begin, len(data) - redactor.max_multiline + 1)
                span = redactor._next_multiline(data, begin)
                if span is not None and span[0] < hard:
                    if self._piece(data[: span[0]], begin, False, out):
                        continue
                    out.append(SECRET_MASK)
                    self._count([Finding("secret", *span, SECRET_MASK)])
                    self._keep(data, span[1])
                    continue
            if final:
                self._piece(data, begin, False, out)
                if not self._in_pem:
                    self._buffer, self._begin = b"", 0
                    break
                continue
            line = data.rfind(b"\n", begin, hard)
            if line != -1:
                if not self._piece(data[: line + 1], begin, False, out):
                    self._keep(data, line + 1)
                continue
            if hard - begin > MAX_HOLD and self._piece(data[:hard], begin, True, out):
                continue
            break
        return b"".join(out)

    def _piece(self, data: bytes, begin: int, partial: bool, out: list[bytes]) -> bool:
        """Redact ``data`` from ``begin`` into ``out``; True when a private key block was left open (the buffer is
        then positioned for the END search). Otherwise, for a partial piece, the buffer goes on where it stopped."""
        findings: list[Finding] = []
        redacted, stop = self._redactor._process(data, begin, partial, findings)
        out.append(redacted)
        self._count(findings)
        if findings and findings[-1].open:
            self._in_pem = True
            self._buffer, self._begin = self._buffer[pem_begin_end(self._buffer, findings[-1].start) :], 0
            return True
        if partial:
            if stop == begin:
                return False
            self._keep(self._buffer, stop)
            return True
        return False


class CappedRedactor:
    """Redacts one output stream and caps it, keeping head and tail; only what is kept is ever redacted.

    The head is redacted as it streams in. Once it is full, raw bytes are only counted, scanned for private key
    markers, and kept in a ring the size of the tail; at the end the tail is redacted from its first line
    feed on (no rule crosses one), starting inside a key block if one was open there. So memory and CPU per
    stream are bounded by the cap, whatever the host prints. A tail with no line feed to start from is dropped
    rather than risk starting in the middle of a secret.
    """

    #: Raw bytes kept before the tail window, to find a line feed to start redacting from.
    TAIL_CONTEXT = 4096
    #: Extra redacted head kept so the cut can find a line feed.
    SLACK = 512

    def __init__(self, redactor: WholeTextRedactor, limit: int) -> None:
        self.limit = limit
        self.head_limit = limit // 3
        self.tail_limit = limit - self.head_limit
        self._redactor = redactor
        self._stream: StreamRedactor | None = redactor.stream()
        self._head = bytearray()
        self._ring = bytearray()
        self._ring_start = 0  # stream offset of _ring[0]
        self._middle_from = 0  # stream offset where the head stopped
        self._dropped = False
        self._key_open_before_ring = False
        self._markers: list[tuple[int, bool]] = []  # (stream offset, True for BEGIN) inside the ring
        self._scan_tail = b""
        self._last_marker = -1
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        offset = self.total
        self.total += len(chunk)
        if self._stream is not None:
            self._head += self._stream.feed(chunk)
            if len(self._head) > self.head_limit + self.SLACK:
                held, self._key_open_before_ring = self._stream.detach()
                self._stream = None
                self._middle_from = self._ring_start = self.total - len(held)
                self._ring = bytearray(held)
                self._scan(held, self._ring_start)
            return
        self._scan(chunk, offset)
        self._ring += chunk
        excess = len(self._ring) - (self.tail_limit + self.TAIL_CONTEXT)
        if excess > 64 * 1024:  # trim in steps, not on every chunk
            self._trim(excess)

    def _scan(self, chunk: bytes, offset: int) -> None:
        """Note private key markers in the raw middle, including one split over two chunks."""
        window = self._scan_tail + chunk
        base = offset - len(self._scan_tail)
        self._scan_tail = window[-64:]
        if (
            b"PRIVATE KEY" not in window and b"Private-" not in window
        ):  # PEM, PGP, SSH2; PuTTY's Private-Lines
            return
        for match in PEM_MARKER.finditer(window):
            position = base + match.start()
            if position > self._last_marker:
                self._markers.append((position, match.group(1) is not None))
                self._last_marker = position

    def _trim(self, count: int) -> None:
        self._dropped = True
        new_start = self._ring_start + count
        gone = [is_begin for position, is_begin in self._markers if position < new_start]
        if gone:
            self._key_open_before_ring = gone[-1]
        self._markers = [m for m in self._markers if m[0] >= new_start]
        del self._ring[:count]
        self._ring_start = new_start

    @property
    def truncated(self) -> bool:
        return self._stream is None and (
            self._dropped or len(self._ring) > self.tail_limit + self.TAIL_CONTEXT
        )

    def result(self) -> tuple[str, bool, int]:
        """``(text, truncated, bytes_cut)``; invalid UTF-8 becomes U+FFFD."""
        if self._stream is not None:
            whole = bytes(self._head) + self._stream.finish()
            return _decode(whole), False, 0
        if not self.truncated:  # the tail follows the head directly: go on redacting where the head stopped
            stream = StreamRedactor(self._redactor, self._key_open_before_ring)
            whole = bytes(self._head) + _feed_in_slices(stream, self._ring) + stream.finish()
            return _decode(whole), False, 0
        ring = bytes(self._ring)
        window_start = max(0, len(ring) - self.tail_limit)
        line = ring.rfind(b"\n", 0, window_start + 1)
        if line == -1 or window_start - line > self.TAIL_CONTEXT:
            line = ring.find(b"\n", window_start)
        tail = b""
        if line != -1:
            start = line + 1
            key_open = self._key_open_before_ring
            for position, is_begin in self._markers:
                if position < self._ring_start + start:
                    key_open = is_begin
            stream = StreamRedactor(self._redactor, key_open)
            tail = _feed_in_slices(stream, memoryview(ring)[start:]) + stream.finish()
            tail = tail[_safe_cut(tail, len(tail) - self.tail_limit, backwards=False) :]
        head = bytes(self._head)
        head = head[: _safe_cut(head, self.head_limit, backwards=True)]
        cut = max(0, self.total - len(head) - len(tail))
        text = _decode(head).rstrip("\n") + f"\n… {cut} bytes cut …\n" + _decode(tail).lstrip("\n")
        return text, True, cut


def _feed_in_slices(
    stream: StreamRedactor, data: bytes | bytearray | memoryview, size: int = 64 * 1024
) -> bytes:
    """Redact a large buffer piece by piece, so the work's temporaries stay the size of one piece."""
    view = memoryview(data)
    return b"".join(stream.feed(bytes(view[i : i + size])) for i in range(0, len(view), size))


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _safe_cut(data: bytes, index: int, *, backwards: bool) -> int:
    """A position near ``index`` that is a line break if one is close, never inside a mask token or a character."""
    index = max(0, min(index, len(data)))
    window = 256
    if backwards:
        line = data.rfind(b"\n", max(0, index - window), index)
        if line != -1:
            return line + 1
    else:
        line = data.find(b"\n", index, index + window)
        if line != -1:
            return line + 1
    for token in MASK_TOKEN.finditer(data, max(0, index - 40), min(len(data), index + 40)):
        if token.start() < index < token.end():
            index = token.start() if backwards else token.end()
    while 0 < index < len(data) and (data[index] & 0xC0) == 0x80:
        index += -1 if backwards else 1
    return index


def cap_output(data: bytes, limit: int) -> tuple[str, bool, int]:
    """Cap a complete, already redacted output: ``(text, truncated, bytes_cut)``, head and tail kept."""
    if len(data) <= limit:
        return _decode(data), False, 0
    head_limit = limit // 3
    head = data[: _safe_cut(data, head_limit, backwards=True)]
    tail = data[_safe_cut(data, len(data) - (limit - head_limit), backwards=False) :]
    cut = len(data) - len(head) - len(tail)
    return _decode(head).rstrip("\n") + f"\n… {cut} bytes cut …\n" + _decode(tail).lstrip("\n"), True, cut
