"""What decides whether a match is sensitive: the readings of an address, Luhn, dates, and the forms of a secret.

A rule's pattern finds a candidate; these decide on it. An address is internal if any reading a resolver may make of
it is (leading zeros also as octal, dotted hex); a card number passes Luhn and has a network's prefix; a registration
number starts with a date; the agent's own secrets are looked for in every encoding they may be printed in.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shlex
import urllib.parse
from collections.abc import Iterable

from agent.redaction.normalise import Normalised, visible_length

#: Secrets shorter than this many visible characters are not looked for (they would mask ordinary words).
MIN_SECRET_LENGTH = 6

#: Internal IPv4 ranges as (first octet, lowest second octet, highest second octet).
INTERNAL_V4 = {10: (0, 255), 127: (0, 255), 172: (16, 31), 192: (168, 168), 100: (64, 127), 169: (254, 254)}
_INTERNAL_V6 = (
    ipaddress.IPv6Network("fc00::/7"),
    ipaddress.IPv6Network("fe80::/10"),
    ipaddress.IPv6Network("fec0::/10"),
    ipaddress.IPv6Network("::1/128"),
)
HEX_OCTET = re.compile(rb"0[xX][0-9a-fA-F]{1,2}")
_CARD_PREFIX = re.compile(rb"3[0-9]|4|5[1-5]|2[2-7]|6|9")

Octets = tuple[int, int, int, int]


# -- addresses ---------------------------------------------------------------------------------------------------


def _octet_values(part: bytes) -> tuple[int, ...]:
    """How a resolver may read one part of a dotted address: hex, decimal, and (leading zero) octal (none: not
    a number)."""
    if part[:2] in (b"0x", b"0X"):
        return (int(part, 16),) if HEX_OCTET.fullmatch(part) else ()
    if not part.isdigit():
        return ()
    values = [int(part)]
    if len(part) > 1 and part[0] == 0x30 and all(0x30 <= c <= 0x37 for c in part):
        values.append(int(part, 8))
    return tuple(values)


def v4_readings(text: bytes, sep: bytes = b".") -> list[Octets]:
    """Every (a, b, c, d) a resolver may read ``text`` as (dotted decimal, leading zeros as octal, hex parts)."""
    parts = text.split(sep)
    if len(parts) != 4:
        return []
    choices = [_octet_values(part) for part in parts]
    readings = []
    for a in choices[0]:
        for b in choices[1]:
            for c in choices[2]:
                for d in choices[3]:
                    if a <= 255 and b <= 255 and c <= 255 and d <= 255:
                        readings.append((a, b, c, d))
    return readings


def v4_internal(octets: Octets) -> bool:
    bounds = INTERNAL_V4.get(octets[0])
    return bounds is not None and bounds[0] <= octets[1] <= bounds[1]


def v6_internal(address: ipaddress.IPv6Address) -> bool:
    v4 = v6_embedded_v4(address)
    if v4 is not None and v4_internal(v4):
        return True
    return any(address in network for network in _INTERNAL_V6)


def v6_embedded_v4(address: ipaddress.IPv6Address) -> Octets | None:
    """The IPv4 address in an IPv4-mapped (``::ffff:a.b.c.d``) or -compatible (``::a.b.c.d``) address."""
    packed = address.packed
    if packed[:10] == bytes(10) and packed[10:12] in (b"\xff\xff", b"\0\0") and packed[12:] != bytes(4):
        if packed[10:12] == b"\0\0" and packed[12:14] == b"\0\0":
            return None  # ::1 and other small numbers are not compatible addresses
        a, b, c, d = packed[12:]
        return a, b, c, d
    return None


# -- numbers -----------------------------------------------------------------------------------------------------


def luhn(digits: bytes) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = char - 0x30
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_card_number(digits: bytes) -> bool:
    """13 to 19 digits (separators removed) with a card network's prefix that pass the Luhn check."""
    return 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) is not None and luhn(digits)


def is_korean_barcode(digits: bytes) -> bool:
    """Thirteen digits that are an EAN-13 barcode of a Korean product (prefix 880) with a valid check digit."""
    if len(digits) != 13 or not digits.isdigit() or not digits.startswith(b"880"):
        return False
    total = sum((c - 0x30) * (3 if i % 2 else 1) for i, c in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == digits[12] - 0x30


def starts_with_a_date(number: bytes) -> bool:
    """A registration number's first six digits are a birth date (yymmdd): month and day must be plausible."""
    month, day = int(number[2:4]), int(number[4:6])
    return 1 <= month <= 12 and 1 <= day <= 31


def is_timestamp(text: bytes) -> bool:
    """Twelve digits that read as ``yyyymmddHHMM`` (19xx or 20xx)."""
    if len(text) == 12 and text.isdigit() and text[:2] in (b"19", b"20"):
        month, day, hour, minute = int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12])
        return 1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59
    return False


# -- secret variants ----------------------------------------------------------------------------------------------


def _base64_fragments(secret: bytes) -> set[bytes]:
    """The base64 characters that depend only on ``secret``'s bytes, at each of the three alignments."""
    fragments = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + secret + b"\0\0")
            first = -(-offset * 8 // 6)  # ceil: chars touched by the padding prefix are dropped
            last = (offset + len(secret)) * 8 // 6
            fragment = encoded[first:last]
            if len(fragment) >= MIN_SECRET_LENGTH:
                fragments.add(fragment)
    return fragments


def secret_variants(secret: str) -> set[bytes]:
    """Every form of ``secret`` the redactor looks for: as given, base64, hex, URL, JSON and shell encodings."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        urllib.parse.quote(secret, safe="").encode(),
        urllib.parse.quote_plus(secret, safe="").encode(),
        urllib.parse.quote(secret).encode(),
        json.dumps(secret)[1:-1].encode(),
        json.dumps(secret, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"),
        json.dumps(secret)[1:-1].replace("/", "\\/").encode(),  # PHP's json_encode escapes "/" by default
        shlex.quote(secret).encode("utf-8", "surrogatepass"),
        "".join(f"%{byte:02X}" for byte in raw).encode(),  # every byte percent-encoded
        "".join(f"%{byte:02x}" for byte in raw).encode(),
    }
    # Percent-encoding with lower-case hex digits (as some clients write it): %2f for %2F.
    forms |= {
        re.sub(rb"%[0-9A-F]{2}", lambda m: m.group(0).lower(), form) for form in list(forms) if b"%" in form
    }
    forms |= _base64_fragments(raw)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def secret_forms(secrets: Iterable[str]) -> list[bytes]:
    """Every variant of the secrets long enough to use, also as matched (normalised), longest first.

    Secrets shorter than :data:`MIN_SECRET_LENGTH` visible characters are not used.
    """
    forms = sorted(
        {
            form
            for secret in secrets
            if visible_length(secret) >= MIN_SECRET_LENGTH
            for form in secret_variants(secret)
        },
        key=lambda form: (-len(form), form),
    )
    # Text is matched normalised (full-width digits, dashes, invisible characters): so are the secrets.
    return sorted(
        {
            *forms,
            *(normal for form in forms if len(normal := Normalised(form).data) >= MIN_SECRET_LENGTH),
        },
        key=lambda form: (-len(form), form),
    )
