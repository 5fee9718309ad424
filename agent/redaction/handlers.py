"""What each rule does with a candidate: a handler per rule name (:data:`HANDLERS`), deciding and building the mask.

A handler takes ``(data, start, end)``, the candidate ``data[start:end]`` its rule's bounded pattern matched, and
returns ``(replacement, end)`` (it may mask further than the match: a token's tail, a key block to its END) or None to
leave the candidate as it is, so that a later rule may take it. Mask formats are one per kind, whatever separator the
input used; credential rules keep their label (``password=[REDACTED]``).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.redaction.patterns import (
    BLOCK_LOOKBEHIND,
    COMMAND_START,
    COOKIE_JAR,
    CREDENTIAL_NAME,
    ECHO_PIPE,
    FLAG_SPECS,
    HTPASSWD,
    KEY_BODY_WIDTHS,
    KEY_ENDS_LINE,
    LOOKBEHIND,
    NAME_FIELD,
    NAME_VALUE,
    NET_USE,
    NETRC,
    NETRC_CONTEXT,
    NEXT_LINE_VALUE,
    NEXT_PAIR,
    NOT_A_VALUE,
    OPENSSL_PASSWD,
    ORACLE_LOGON,
    PGPASS,
    PLAIN_SECURE_STRING,
    RABBITMQ_USER,
    REDIS_AUTH,
    REDIS_CONF,
    REG_VALUE,
    SET_PASSWORD,
    SETTING_WORD,
    SQL_PASSWORD,
    TEMPORARY_PASSWORD,
    TOOL_FLAG_DETAIL,
    USER_PASS_DETAIL,
    USER_PASS_TOOLS,
    USERINFO,
    XML_KEYED,
)
from agent.redaction.rules import (
    AUTHORIZATION,
    BEARER,
    COOKIE,
    COOKIE_LABEL,
    CURL_USER,
    FLAG_VALUE,
    IDENTIFIED_BY,
    IP_MASK,
    JDBC_ORACLE,
    KEY_VALUE,
    KOREAN_LABEL,
    PEM_BEGIN_RE,
    PEM_END,
    SLACK_WEBHOOK,
    TOKEN_EXTEND,
    URL_CREDENTIALS,
    XML_ELEMENT,
    Rule,
)
from agent.redaction.values import (
    HEX_OCTET,
    INTERNAL_V4,
    Octets,
    is_card_number,
    is_korean_barcode,
    is_timestamp,
    starts_with_a_date,
    v4_internal,
    v4_readings,
    v6_embedded_v4,
    v6_internal,
)

Handler = Callable[[bytes, int, int], tuple[bytes, int] | None]

_TOKEN_CHARS = re.compile(rb"[A-Za-z0-9_+/=.~-]{0,%d}" % TOKEN_EXTEND)
_TOKEN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+/=.~-")
_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = b"0123456789"
_HEX_OR_COLON = frozenset(bytes([c]) for c in b"0123456789abcdefABCDEF:")
_LABELLED_NUMBER = re.compile(rb"(?:[A-Za-z]{0,2}[0-9]|[0-9])[0-9 -]*[0-9]$|[A-Z][0-9]{3}[A-Z][0-9]{4}$")
_PHONE_HEAD = re.compile(rb"\+82[- ]?(?:\(0\))?1[016789]|01[016789]|0(?:2|50[0-9]|[3-7][0-9])")


# -- fixed masks, labels kept ------------------------------------------------------------------------------------


def _token_end(data: bytes, end: int) -> int:
    """Past the end of a token's pattern, the rest of a longer token (bounded by :data:`TOKEN_EXTEND`)."""
    if end < len(data) and data[end] in _TOKEN_BYTES:
        match = _TOKEN_CHARS.match(data, end)
        if match is not None:
            key = data.find(b"-----BEGIN", end, match.end())  # a key block is the PEM rule's
            return match.end() if key == -1 else key
    return end


def fixed(mask: bytes, extend: bool = False) -> Handler:
    """The whole match becomes ``mask`` (with ``extend``, and the rest of a longer token)."""
    if extend:
        return lambda data, start, end: (mask, _token_end(data, end))
    return lambda data, start, end: (mask, end)


def keep_label(
    detail: re.Pattern[bytes],
    mask: bytes,
    kept: Callable[[bytes], bytes],
    suffix: bytes = b"",
    extend: bool = False,
) -> Handler:
    """The value (``detail``'s group 2) becomes ``mask``, in its quotes; the label (group 1) stays, passed through
    ``kept`` (which masks addresses, host names and secrets in it), and ``suffix`` after the value."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        match = detail.fullmatch(data, start, end)
        if match is None:  # pragma: no cover - the alternation matched this same pattern
            return mask, end
        value = match.group(2)
        quote = value[:1] if len(value) > 1 and value[:1] in (b'"', b"'") and value[-1:] == value[:1] else b""
        if extend and not suffix:
            end = _token_end(data, end)
        return kept(match.group(1)) + quote + mask + quote + suffix, end

    return handler


def after_context(inner: Handler, own: bytes) -> Handler:
    """For a rule that may match one byte of left context (RE2 has no look-behind): keep that byte as it is.

    ``own``: the bytes that, first in the match, are the match's own (a flag's ``-``, an address's digit).
    """

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        if data[start] in own:
            return inner(data, start, end)
        result = inner(data, start + 1, end)
        return (data[start : start + 1] + result[0], result[1]) if result else None

    return handler


def glued_before(inner: Handler) -> Handler:
    """For a rule that may match one "_" or letter after its own text (RE2 has no look-ahead): leave it alone.

    A letter that ends a whole hex octet (``10.0.0.0xab``) is the octet's own; in ``10.0.0.0x`` it is not.
    """

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        last = data[end - 1]
        if last == 0x5F or (
            last in _LETTERS and not HEX_OCTET.fullmatch(data, data.rfind(b".", start, end) + 1, end)
        ):
            # Left in the text: the next search starts at it, and an address glued after it
            # (10.0.0.5_10.0.0.6, from10.0.0.5to10.0.0.6) takes it as its own left context.
            return inner(data, start, end - 1)
        return inner(data, start, end)

    return handler


def pem(mask: bytes) -> Handler:
    """A private key block, to its END marker or, with none, to the end of the text."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int]:
        close = PEM_END.search(data, end)
        return mask, close.end() if close else len(data)

    return handler


def pem_begin_end(data: bytes, start: int) -> int:
    """Where the private key BEGIN marker at ``start`` ends (the END search starts there)."""
    match = PEM_BEGIN_RE.match(data, start)
    return match.end() if match else start


# -- a value read by a shared reader, confirmed by what comes before ---------------------------------------------

#: ``(data, start, match)`` -> whether a candidate is sensitive (what its trigger alone could not say).
Check = Callable[[bytes, int, "re.Match[bytes]"], bool]


def masked_value(
    detail: re.Pattern[bytes],
    mask: bytes,
    kept: Callable[[bytes], bytes],
    check: Check | None = None,
    group: int = 2,
    line_value: bool = False,
) -> Handler:
    """The value (``detail``'s ``group``) becomes ``mask``, in its quotes if it had both; what comes before it in the
    match stays, passed through ``kept`` (which masks addresses, host names and secrets in it), and so does what
    comes after it. ``check`` (when given) confirms the candidate first. A value that is no credential
    (:data:`~agent.redaction.patterns.NOT_A_VALUE`) is left as it is, its span taken. With ``line_value``, a bare
    value after a label that starts its line runs to the end of the line (``db.password = a b c``)."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        match = detail.fullmatch(data, start, end)
        if match is None or (check is not None and not check(data, start, match)):
            return None
        value_start, value_end = match.span(group)
        if data[value_start : value_start + 1] not in (b'"', b"'"):
            last = value_end == end  # the value ends the match: the match may end elsewhere
            if (
                line_value
                and last
                and _SPACED_EQUALS.search(data, start, value_start)
                and _KEY_PREFIX.fullmatch(_line_before(data, start))
            ):
                value_end = _line_end(data, value_end)
            else:
                value_end = _bare_value_end(data, start, value_start, value_end)
            if last:
                end = value_end
            value_end = min(value_end, end)
        value = data[value_start:value_end]
        before = kept(data[start:value_start])
        if NOT_A_VALUE.fullmatch(value):
            # Already masked (a second pass), a reference (${VAR}) or a switch: taken as it is, so that no other
            # rule reads a value inside it (redact(redact(x)) == redact(x)).
            return before + data[value_start:end], end
        quote = value[:1] if len(value) > 1 and value[:1] in (b'"', b"'") and value[-1:] == value[:1] else b""
        return before + quote + mask + quote + data[value_end:end], end

    return handler


def _bare_value_end(data: bytes, start: int, value_start: int, value_end: int) -> int:
    """Where a bare value really ends: at the next ``name=`` pair of a query or connection string (``&x=1``,
    ``;Timeout=30``), before a closing bracket it did not open (``(using password: YES)``), or, when the label opened
    a quote (``--user 'ops:a b'``), at that quote on the same line."""
    opened = data[start:value_start]
    for quote in (b"'", b'"'):
        if opened.count(quote) % 2:
            close = data.find(quote, value_start, value_start + 1000)
            line = data.find(b"\n", value_start, close if close != -1 else value_start)
            if close != -1 and line == -1:
                return close
    value = data[value_start:value_end]
    following = NEXT_PAIR.search(value)
    if following is not None and following.start() > 0:
        value = value[: following.start()]
    while value[-1:] in (b")", b"]", b"}") and value.count(value[-1:]) > value.count(_OPENING[value[-1:]]):
        value = value[:-1]
    return value_start + max(len(value), 1)


#: What may come before a label that starts a config line (``db.password = …``, ``  spring.datasource.password=…``).
_KEY_PREFIX = re.compile(rb"[ \t]*[A-Za-z0-9_.-]*")
#: ``key = value`` (INI, Java properties): a value there runs to the end of its line, spaces and all.
_SPACED_EQUALS = re.compile(rb"[ \t]=[ \t]")


def _line_end(data: bytes, position: int) -> int:
    """The end of the line at ``position`` (before a CR, trailing blanks left out), at most a value's length on."""
    stop = data.find(b"\n", position, position + 1000)
    stop = min(len(data), position + 1000) if stop == -1 else stop
    while stop > position and data[stop - 1] in b" \t\r":
        stop -= 1
    return stop


_OPENING = {b")": b"(", b"]": b"[", b"}": b"{"}


def _line_before(data: bytes, start: int) -> bytes:
    """What comes before ``start`` on its line, at most :data:`LOOKBEHIND` bytes."""
    floor = max(0, start - LOOKBEHIND)
    line = data.rfind(b"\n", floor, start)
    return data[(floor if line == -1 else line + 1) : start]


def _command_before(data: bytes, start: int) -> bytes:
    """The command a flag at ``start`` belongs to: its line before it, from the last ``|``, ``;``, ``&&`` or ``$(``."""
    line = _line_before(data, start)
    starts = [m.end() for m in COMMAND_START.finditer(line)]
    return line[starts[-1] :] if starts else line


def tool_flag(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """A flag of :data:`~agent.redaction.patterns.FLAG_TOOLS` whose command is one of its tools, the value following
    the flag as that tool reads it."""
    flag_and_separator = match.group(1)
    flag = flag_and_separator.rstrip(b" \t=")
    glued = flag == flag_and_separator
    command = _command_before(data, start)
    for tools, how in FLAG_SPECS.get(flag, ()):
        if (how == "glued") != glued and how != "both":
            continue
        if tools is None or tools.search(command):
            return True
    return False


def user_pass(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """``-U user%password`` of a Samba tool, ``-u user,password`` of lftp."""
    tools = USER_PASS_TOOLS[match.group(1)[-1:]]
    return tools.search(_command_before(data, start)) is not None


def credential_setting(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """A credential label's value, unless the label names a setting (``password_policy``, ``token_type``) or the
    value is no credential (already masked, ``${VAR}``, ``true``)."""
    label, value = match.group(1), match.group(2)
    if (
        SETTING_WORD.search(label) is not None
        or value in (b"{", b"[")
        or value[:2] in (b'{"', b"{'", b"[{", b'["')
    ):
        return False  # a setting about a credential, or an object or list (the pairs inside are searched)
    if label.lower().startswith(b"passwd:") and not _line_before(data, start).strip():
        return False  # "passwd: all authentication tokens updated" (the passwd program's messages)
    return not (label.lower().startswith(b"credentials") and value[:1] == b"/")  # mount's credentials=FILE


def _not_a_flag(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    return not match.group(2).startswith(b"-")


def _named_credential(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    return CREDENTIAL_NAME.search(match.group(2)) is not None and SETTING_WORD.search(match.group(2)) is None


def netrc(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """``password x`` in a ``.netrc`` record: a ``machine``, ``login`` or ``default`` word comes before it."""
    before = data[max(0, start - LOOKBEHIND) : start]
    return NETRC_CONTEXT.search(before) is not None


def named_value(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """The value of a name/value pair whose name (the last name field before it) names a credential."""
    before = data[max(0, start - LOOKBEHIND) : start]
    name = None
    for found in NAME_FIELD.finditer(before):
        name = found
    if name is None or NAME_VALUE.search(before, name.end()) is not None:
        return False  # no name, or the name's own value came before this one
    text = next(group for group in name.groups() if group is not None)
    return CREDENTIAL_NAME.search(text) is not None


def keyed_element(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """``<entry key="password">…</entry>``: the key names a credential."""
    return CREDENTIAL_NAME.search(match.group(2)) is not None


def next_line_value(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """One indented word on the line after a credential key with nothing after its colon (YAML)."""
    if start == 0 or data[start - 1] != 0x0A:
        return False
    line = _line_before(data, start - 1)
    key = KEY_ENDS_LINE.search(line)
    return (
        key is not None
        and CREDENTIAL_NAME.search(key.group(1)) is not None
        and SETTING_WORD.search(key.group(1)) is None
    )


_HEX_LINE = re.compile(rb"[0-9a-f]+|[0-9A-F]+")
_ARMOR = re.compile(rb"-----(BEGIN|END) [A-Z0-9 ]{1,40}-----|---- (BEGIN|END) SSH2 [A-Z ]{1,40}----")


def pem_base64(mask: bytes) -> Handler:
    """A base64-encoded PEM block that is a private key (what it decodes to says so)."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        head = data[start : start + 64]
        try:
            decoded = base64.b64decode(head[: len(head) // 4 * 4])
        except ValueError:
            return None
        return (mask, end) if b"PRIVATE KEY" in decoded or b"PRIVATE" in decoded[:40] else None

    return handler


def key_body(mask: bytes) -> Handler:
    """A line of base64 as wide as a key's body lines, or a shorter one right after such a line (a key's last)."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        markers = list(_ARMOR.finditer(data, max(0, start - BLOCK_LOOKBEHIND), start))
        marker = markers[-1] if markers else None
        if marker is not None and marker.group(1) == b"BEGIN" and b"PRIVATE" not in marker.group():
            return None  # a certificate's or a public key's body
        line = data[start:end].rstrip(b"\r=")
        if _HEX_LINE.fullmatch(line):
            return None  # a digest (sha256 is 64 hex digits), not base64
        if len(line) in KEY_BODY_WIDTHS or (
            any(c.isdigit() for c in line[:64].decode("ascii", "replace"))
            and start > 0
            and len(_line_before(data, start - 1).rstrip(b"\r=")) in KEY_BODY_WIDTHS
        ):
            return mask + data[start + len(data[start:end].rstrip(b"\r")) : end], end
        return None

    return handler


def korean_label(detail: re.Pattern[bytes], mask: bytes, kept: Callable[[bytes], bytes]) -> Handler:
    """After 비밀번호, 패스워드, 암호 or 비번: any value after ``:`` or ``=``; after a particle or a space only a
    value of printable ASCII (``비밀번호는 Abc123 입니다``, not ``비밀번호 변경 완료``)."""

    def check(data: bytes, start: int, match: re.Match[bytes]) -> bool:
        return b":" in match.group(1) or b"=" in match.group(1) or match.group(2).isascii()

    return masked_value(detail, mask, kept, check)


# -- cookies -----------------------------------------------------------------------------------------------------

#: In a Set-Cookie attribute's value, the start of another cookie joined on (Python and Go print several
#: Set-Cookie headers joined by ", " or " "): "Expires=Sun, 29 Nov 2026 00:00:00 GMT, SID=…".
_JOINED_PAIR = re.compile(rb"[ ,][ \t]*[^=\s,;]+=")
_COOKIE_PAIR = re.compile(rb"([ \t]*)([^=]*)=(.*)", re.DOTALL)
#: A Cookie header's pieces: quoted strings (a ";" inside stays), runs of other bytes, a lone quote, a ";".
_COOKIE_TOKEN = re.compile(rb"\"[^\"]*\"|'[^']*'|[^;\"']+|[;\"']")
_COOKIE_ATTRIBUTES = {b"path", b"domain", b"expires", b"max-age", b"samesite", b"priority", b"version"}


def _cookie_parts(region: bytes) -> list[bytes]:
    """``region`` split at each ";" outside quotes (``--password='se;cret'`` stays one part)."""
    parts: list[bytes] = []
    current: list[bytes] = []
    for token in _COOKIE_TOKEN.findall(region):
        if token == b";":
            parts.append(b"".join(current))
            current = []
        else:
            current.append(token)
    parts.append(b"".join(current))
    return parts


def _cookie_end(data: bytes, value_start: int, end: int) -> int:
    """Where a Cookie header's pairs end: at the end of its line, as far as a token's tail may go (what a stream
    holds back covers that much), before the next Cookie label or a private key block (the PEM rule's)."""
    line_end = data.find(b"\n", end, end + TOKEN_EXTEND)
    end = line_end if line_end != -1 else min(len(data), end + TOKEN_EXTEND)
    if data[end - 1 : end] == b"\r":
        end -= 1
    following = COOKIE_LABEL.search(data, value_start, end)
    if following is not None:
        end = following.start()
    key = PEM_BEGIN_RE.search(data, value_start, end)
    if key is not None:
        end = key.start()
    return end


def cookie(mask: bytes, nested: Callable[[bytes], bytes]) -> Handler:
    """Every value of a Cookie or Set-Cookie header becomes ``mask``; ``nested`` (every rule but this one) redacts
    the names, the attributes of a Set-Cookie header, and what is no pair."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int]:
        match = COOKIE.fullmatch(data, start, end)
        assert match is not None
        # A Cookie header is often longer than a value's bound (analytics cookies first): its pairs go on.
        end = _cookie_end(data, match.start(2), end)
        # Only a Set-Cookie header has attributes (Path=, Domain=…); in a Cookie header path=x is a cookie.
        attributes = _COOKIE_ATTRIBUTES if match.group(1)[:4].lower() == b"set-" else frozenset()
        pairs = []
        for index, pair in enumerate(_cookie_parts(data[match.start(2) : end])):
            found = _COOKIE_PAIR.fullmatch(pair)
            joined = b""
            if found is not None and index and found.group(2).strip().lower() in attributes:
                # An attribute, whose value is a path or a date: every rule but this one; a cookie joined on
                # after it is a pair again.
                after = _JOINED_PAIR.search(pair, found.start(3))
                if after is None:
                    pairs.append(nested(pair))
                    continue
                joined, pair = nested(pair[: after.start()]), pair[after.start() :]
                found = _COOKIE_PAIR.fullmatch(pair)
            if found is None and b"=" in match.group(1):
                pairs.append(joined + mask)  # cookie=VALUE: the value is the cookie
            elif found is None:
                # Not a pair (HttpOnly, the free text of a log line after "cookie:"): every rule but this one.
                pairs.append(joined + nested(pair))
            else:
                pairs.append(joined + found.group(1) + nested(found.group(2)) + b"=" + mask)
        return match.group(1) + b";".join(pairs), end

    return handler


# -- numbers -----------------------------------------------------------------------------------------------------


def labelled(mask: bytes) -> Handler:
    """A number after its label: the label stays, the number becomes ``mask``."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        number = _LABELLED_NUMBER.search(data, start, end)
        return (data[start : number.start()] + mask, end) if number else None

    return handler


def not_a_timestamp(inner: Handler) -> Handler:
    """An unlabelled, unseparated 12-digit licence number that reads as ``yyyymmddHHMM`` is a timestamp."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        return None if is_timestamp(data[start:end]) else inner(data, start, end)

    return handler


_RRN_LABEL = re.compile("(?i:주민|외국인|registration|rrn|resident)".encode())


def rrn(mask: bytes) -> Handler:
    """A registration number keeps its first six digits (the birth date): ``901010`` + ``mask``. Thirteen digits
    written together that are a valid Korean EAN-13 barcode (880…) are a barcode, unless a label before says not."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        digits = data[start:end]
        if not starts_with_a_date(digits):
            return None
        if is_korean_barcode(digits) and _RRN_LABEL.search(data, max(0, start - 24), start) is None:
            return None
        return (digits[:6] + mask, end)

    return handler


_CARD_GROUP_END = re.compile(rb"[- ]")


def card(mask: bytes) -> Handler:
    """A card number passing Luhn; written in groups, the longest run of its groups that does (what follows it,
    an expiry or a CVV, is not the number's)."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        ends = [end, *(m.start() for m in _CARD_GROUP_END.finditer(data, start, end))][::-1]
        for stop in sorted(ends, reverse=True):
            digits = data[start:stop].replace(b"-", b"").replace(b" ", b"")
            if is_card_number(digits):
                return mask, stop
        return None

    return handler


def authorization(mask: bytes, kept: Callable[[bytes], bytes]) -> Handler:
    """An Authorization header's credentials after its scheme, to the end of the line, or (a quoted label: JSON, a
    dict) to the closing quote."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        match = AUTHORIZATION.fullmatch(data, start, end)
        if match is None:  # pragma: no cover - the alternation matched this same pattern
            return None
        value_start, value_end = match.start(3), end
        # Quoted around the header ("-H 'Authorization: …'") or after its name (JSON): to the closing quote.
        quote = data[start - 1 : start] if start and data[start - 1] in b"\"'" else match.group(2)
        if quote:
            close = data.find(quote, value_start, end)
            value_end = close if close != -1 else end
        if data[value_start:value_end].strip() in (b"", mask):
            return None
        return kept(match.group(1)) + mask, value_end

    return handler


def _htpasswd_batch(data: bytes, start: int, match: re.Match[bytes]) -> bool:
    """``htpasswd`` with ``-b`` among its flags (the password on the command line)."""
    return re.search(rb"[ \t]-[A-Za-z]*b", match.group(1)) is not None


def phone(mask: bytes) -> Handler:
    """A phone number keeps its first group (``010``, ``02``, ``+82-10``) + ``mask``."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        number = data[start:end]
        head = _PHONE_HEAD.match(number)
        keep = head.group() if head else number[:3]
        return keep + mask, end

    return handler


# -- addresses and host names ------------------------------------------------------------------------------------


class Addresses:
    """The inventory (internal address or host name → alias) and the address rules' handlers: an address the
    inventory knows becomes its alias, any other internal one :data:`~agent.redaction.rules.IP_MASK`."""

    def __init__(self, known_hosts: Mapping[str, str]) -> None:
        self._v4_aliases: dict[Octets, bytes] = {}
        self._v6_aliases: dict[ipaddress.IPv6Address, bytes] = {}
        self._v4_cache: dict[bytes, bytes | None] = {}
        #: The inventory's host names (lower case) and their aliases.
        self.names: dict[bytes, bytes] = {}
        for address, alias in known_hosts.items():
            try:
                parsed = ipaddress.ip_address(address.strip("[]"))
            except ValueError:
                self.names[address.lower().encode()] = alias.encode()
                continue
            if isinstance(parsed, ipaddress.IPv4Address):
                a, b, c, d = parsed.packed
                self._v4_aliases[(a, b, c, d)] = alias.encode()
            else:
                self._v6_aliases[parsed] = alias.encode()

    def first_octets(self) -> list[int]:
        """The first octets of the addresses to look for (the internal ranges' and the inventory's), highest first."""
        return sorted({*INTERNAL_V4, *(octets[0] for octets in self._v4_aliases)}, reverse=True)

    def _v4_mask(self, text: bytes, sep: bytes = b".") -> bytes | None:
        """The alias or mask for an IPv4 address as written, if any reading of it is known or internal."""
        readings = v4_readings(text, sep)
        for octets in readings:
            alias = self._v4_aliases.get(octets)
            if alias is not None:
                return alias
        return IP_MASK if any(v4_internal(octets) for octets in readings) else None

    def ipv4(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        # A dotted quad inside a longer dotted run is a version number, not an address.
        if (start >= 2 and data[start - 1] == 0x2E and 0x30 <= data[start - 2] <= 0x39) or (
            data[end : end + 1] == b"." and data[end + 1 : end + 2].isdigit()
        ):
            return None
        text = data[start:end]
        cache = self._v4_cache
        if text in cache:
            mask = cache[text]
        else:
            mask = self._v4_mask(text)
            if len(cache) < 65536:
                cache[text] = mask
        return (mask, end) if mask else None

    def ipv4_dashed(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        # An address written with dashes or underscores inside a host name: after a name part (ip-, host_, app-)
        # or before a domain.
        named = start >= 3 and data[start - 1] in b"-_" and bytes(data[start - 3 : start - 1]).isalnum()
        domain = data[end : end + 1] == b"." and data[end + 1 : end + 2].isalpha()
        if not (named or domain):
            return None
        mask = self._v4_mask(data[start:end], b"_" if b"_" in data[start:end] else b"-")
        return (mask, end) if mask else None

    def ipv4_hex_name(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        a, b, c, d = bytes.fromhex(data[start : start + 8].decode())
        mask = self._v4_mask(b"%d.%d.%d.%d" % (a, b, c, d))
        return (mask + data[start + 8 : end], end) if mask else None

    def ipv6(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        if data[start : start + 2] == b"::" and start > 0 and data[start - 1 : start] in _HEX_OR_COLON:
            return None  # the tail of a longer address
        core = data[start:end].strip(b"[]").split(b"%", 1)[0]
        try:
            address = ipaddress.IPv6Address(core.decode("ascii"))
        except ValueError:
            return None
        alias = self._v6_aliases.get(address)
        embedded = v6_embedded_v4(address)
        if alias is None and embedded is not None:
            alias = self._v4_aliases.get(embedded)
        if alias is not None:
            return alias, end
        return (IP_MASK, end) if v6_internal(address) else None


def host_name(names: Mapping[bytes, bytes], mask: bytes) -> Handler:
    """A host name the inventory knows becomes its alias (``mask`` if only RE2's case folding found it)."""
    # RE2's (?i) folds case the Unicode way: "ſ" (long s) matches s, "K" (Kelvin sign) matches k.
    folded = {name.decode("utf-8", "replace").casefold(): alias for name, alias in names.items()}

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        after = data[end : end + 1]
        longer = (start > 0 and data[start - 1] in b".-") or after == b"-"
        if longer or (after == b"." and data[end + 1 : end + 2].isalnum()):
            return None  # part of a longer name
        name = data[start:end]
        alias = names.get(name.lower()) or folded.get(name.decode("utf-8", "replace").casefold())
        return (alias, end) if alias is not None else (mask, end)

    return handler


# -- the table: rule name -> its handler -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """What a redactor lends its handlers."""

    #: What a credential rule keeps of its match, with the addresses, host names and secrets in it masked.
    kept: Callable[[bytes], bytes]
    #: A part of a Cookie header, redacted with every rule but the cookie rule.
    nested: Callable[[bytes], bytes]
    addresses: Addresses


#: Every built-in rule's handler, made from the rule (its mask) and what the redactor lends (:class:`Tools`).
HANDLERS: dict[str, Callable[[Rule, Tools], Handler]] = {
    "secret": lambda rule, tools: fixed(rule.mask),
    "host_name": lambda rule, tools: host_name(tools.addresses.names, rule.mask),
    "pem": lambda rule, tools: pem(rule.mask),
    "key_body": lambda rule, tools: key_body(rule.mask),
    "url_credentials": lambda rule, tools: keep_label(URL_CREDENTIALS, rule.mask, tools.kept, b"@"),
    "jdbc_oracle": lambda rule, tools: keep_label(JDBC_ORACLE, rule.mask, tools.kept, b"@"),
    "authorization": lambda rule, tools: authorization(rule.mask, tools.kept),
    "cookie": lambda rule, tools: cookie(rule.mask, tools.nested),
    "cookie_jar": lambda rule, tools: masked_value(COOKIE_JAR, rule.mask, tools.kept),
    "bearer": lambda rule, tools: keep_label(BEARER, rule.mask, tools.kept, extend=True),
    "slack_webhook": lambda rule, tools: keep_label(SLACK_WEBHOOK, rule.mask, tools.kept, extend=True),
    "pem_base64": lambda rule, tools: pem_base64(rule.mask),
    "jwt": lambda rule, tools: fixed(rule.mask, extend=True),
    "token": lambda rule, tools: fixed(rule.mask, extend=True),
    "password_hash": lambda rule, tools: fixed(rule.mask),
    "identified_by": lambda rule, tools: masked_value(IDENTIFIED_BY, rule.mask, tools.kept),
    "sql_password": lambda rule, tools: masked_value(SQL_PASSWORD, rule.mask, tools.kept),
    "set_password": lambda rule, tools: masked_value(SET_PASSWORD, rule.mask, tools.kept),
    "xml_secret": lambda rule, tools: keep_label(XML_ELEMENT, rule.mask, tools.kept, b"</"),
    "xml_keyed": lambda rule, tools: masked_value(XML_KEYED, rule.mask, tools.kept, keyed_element, group=4),
    "name_value": lambda rule, tools: masked_value(NAME_VALUE, rule.mask, tools.kept, named_value),
    "redis_auth": lambda rule, tools: masked_value(REDIS_AUTH, rule.mask, tools.kept),
    "plain_secure_string": lambda rule, tools: masked_value(PLAIN_SECURE_STRING, rule.mask, tools.kept),
    "openssl_passwd": lambda rule, tools: masked_value(OPENSSL_PASSWD, rule.mask, tools.kept, _not_a_flag),
    "reg_value": lambda rule, tools: masked_value(
        REG_VALUE, rule.mask, tools.kept, _named_credential, group=3
    ),
    "temporary_password": lambda rule, tools: masked_value(TEMPORARY_PASSWORD, rule.mask, tools.kept),
    "flag_value": lambda rule, tools: after_context(masked_value(FLAG_VALUE, rule.mask, tools.kept), b"-"),
    "tool_flag": lambda rule, tools: after_context(
        masked_value(TOOL_FLAG_DETAIL, rule.mask, tools.kept, tool_flag), b"-"
    ),
    "user_pass": lambda rule, tools: after_context(
        masked_value(USER_PASS_DETAIL, rule.mask, tools.kept, user_pass), b"-"
    ),
    "curl_user": lambda rule, tools: after_context(masked_value(CURL_USER, rule.mask, tools.kept), b"-"),
    "oracle_logon": lambda rule, tools: masked_value(ORACLE_LOGON, rule.mask, tools.kept),
    "net_use": lambda rule, tools: masked_value(NET_USE, rule.mask, tools.kept),
    "htpasswd": lambda rule, tools: masked_value(HTPASSWD, rule.mask, tools.kept, _htpasswd_batch),
    "rabbitmq_user": lambda rule, tools: masked_value(RABBITMQ_USER, rule.mask, tools.kept),
    "echo_pipe": lambda rule, tools: masked_value(ECHO_PIPE, rule.mask, tools.kept),
    "userinfo": lambda rule, tools: keep_label(USERINFO, rule.mask, tools.kept, b"@"),
    "pgpass": lambda rule, tools: masked_value(PGPASS, rule.mask, tools.kept),
    "netrc": lambda rule, tools: masked_value(NETRC, rule.mask, tools.kept, netrc),
    "redis_conf": lambda rule, tools: masked_value(REDIS_CONF, rule.mask, tools.kept),
    "key_value": lambda rule, tools: masked_value(
        KEY_VALUE, rule.mask, tools.kept, credential_setting, line_value=True
    ),
    "korean_label": lambda rule, tools: korean_label(KOREAN_LABEL, rule.mask, tools.kept),
    "next_line_value": lambda rule, tools: masked_value(
        NEXT_LINE_VALUE, rule.mask, tools.kept, next_line_value
    ),
    "ipv4_hex_name": lambda rule, tools: tools.addresses.ipv4_hex_name,
    "ipv4_dashed": lambda rule, tools: after_context(glued_before(tools.addresses.ipv4_dashed), _DIGITS),
    "ipv4": lambda rule, tools: after_context(glued_before(tools.addresses.ipv4), _DIGITS),
    "ipv6": lambda rule, tools: tools.addresses.ipv6,
    "rrn": lambda rule, tools: rrn(rule.mask),
    "rrn_back": lambda rule, tools: labelled(rule.mask),
    "card": lambda rule, tools: card(rule.mask),
    "cvc": lambda rule, tools: labelled(rule.mask),
    "phone": lambda rule, tools: phone(rule.mask),
    "passport": lambda rule, tools: labelled(rule.mask),
    "driver_license": lambda rule, tools: not_a_timestamp(labelled(rule.mask)),
    "biz_no": lambda rule, tools: labelled(rule.mask),
    "account": lambda rule, tools: labelled(rule.mask),
}
