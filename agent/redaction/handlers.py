"""What each rule does with a candidate: a handler per rule name (:data:`HANDLERS`), deciding and building the mask.

A handler takes ``(data, start, end)``, the candidate ``data[start:end]`` its rule's bounded pattern matched, and
returns ``(replacement, end)`` (it may mask further than the match: a token's tail, a key block to its END) or None to
leave the candidate as it is, so that a later rule may take it. Mask formats are one per kind, whatever separator the
input used; credential rules keep their label (``password=[REDACTED]``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


def rrn(mask: bytes) -> Handler:
    """A registration number keeps its first six digits (the birth date): ``901010`` + ``mask``."""

    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        digits = data[start:end]
        return (digits[:6] + mask, end) if starts_with_a_date(digits) else None

    return handler


def card(mask: bytes) -> Handler:
    def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        digits = data[start:end].replace(b"-", b"").replace(b" ", b"")
        return (mask, end) if is_card_number(digits) else None

    return handler


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
    "url_credentials": lambda rule, tools: keep_label(URL_CREDENTIALS, rule.mask, tools.kept, b"@"),
    "jdbc_oracle": lambda rule, tools: keep_label(JDBC_ORACLE, rule.mask, tools.kept, b"@"),
    "authorization": lambda rule, tools: keep_label(AUTHORIZATION, rule.mask, tools.kept, extend=True),
    "cookie": lambda rule, tools: cookie(rule.mask, tools.nested),
    "bearer": lambda rule, tools: keep_label(BEARER, rule.mask, tools.kept, extend=True),
    "slack_webhook": lambda rule, tools: keep_label(SLACK_WEBHOOK, rule.mask, tools.kept, extend=True),
    "jwt": lambda rule, tools: fixed(rule.mask, extend=True),
    "token": lambda rule, tools: fixed(rule.mask, extend=True),
    "identified_by": lambda rule, tools: keep_label(IDENTIFIED_BY, rule.mask, tools.kept),
    "xml_secret": lambda rule, tools: keep_label(XML_ELEMENT, rule.mask, tools.kept, b"</"),
    "flag_value": lambda rule, tools: after_context(keep_label(FLAG_VALUE, rule.mask, tools.kept), b"-"),
    "curl_user": lambda rule, tools: after_context(keep_label(CURL_USER, rule.mask, tools.kept), b"-"),
    "key_value": lambda rule, tools: keep_label(KEY_VALUE, rule.mask, tools.kept),
    "ipv4_hex_name": lambda rule, tools: tools.addresses.ipv4_hex_name,
    "ipv4_dashed": lambda rule, tools: after_context(glued_before(tools.addresses.ipv4_dashed), _DIGITS),
    "ipv4": lambda rule, tools: after_context(glued_before(tools.addresses.ipv4), _DIGITS),
    "ipv6": lambda rule, tools: tools.addresses.ipv6,
    "rrn": lambda rule, tools: rrn(rule.mask),
    "card": lambda rule, tools: card(rule.mask),
    "phone": lambda rule, tools: phone(rule.mask),
    "passport": lambda rule, tools: labelled(rule.mask),
    "driver_license": lambda rule, tools: not_a_timestamp(labelled(rule.mask)),
    "biz_no": lambda rule, tools: labelled(rule.mask),
    "account": lambda rule, tools: labelled(rule.mask),
}
