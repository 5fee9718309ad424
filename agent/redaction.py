"""Redaction: pure functions that mask what must not leave the agent. No I/O.

Everything the agent sends or logs passes a :class:`Redactor`. It masks:

* internal addresses: private, shared, loopback and link-local IPv4 (also ``ip-10-0-0-1`` host names), ULA,
  link-local (with zone) and IPv4-mapped IPv6. An address the inventory knows becomes its host alias
  (``10.100.10.10:8080`` → ``was01:8080``); any other internal one becomes ``[IP]``. Public addresses pass.
* credentials: ``key=value`` / ``key: value`` for password-like labels (also 비밀번호, 패스워드, 암호), the password
  of ``scheme://user:password@``, ``Authorization`` headers and bare ``Bearer`` tokens, JWTs, PEM private key blocks
  (a block that never ends is masked to the end), well-known token shapes (AWS, GitHub, GitLab, Slack, Google);
* the agent's own secrets, as given and base64- (three alignments, standard and URL-safe), URL-, JSON- and
  shell-encoded, longest first; secrets shorter than :data:`MIN_SECRET_LENGTH` are not used for substring masking;
* Korean personal data: resident/foreigner registration numbers, mobile and landline numbers (also +82), and
  passport, driver's licence, business registration and bank account numbers where a label says what they are;
* whatever extra rules the config and the runbook's manifest add.

Mask formats (one per kind): ``[IP]`` or the alias; credentials ``[REDACTED]`` (the label stays: ``password=[REDACTED]``);
private keys ``[PRIVATE KEY REDACTED]``; the agent's secrets ``[SECRET]``; registration numbers keep the birth date
(``901010-*******``); phone numbers keep the first group (``010-****-****``); labelled numbers ``[PASSPORT]``,
``[DRIVER-LICENSE]``, ``[BIZ-NO]``, ``[ACCOUNT]``; extra rules their own replacement (default ``[REDACTED]``).

Terminal escape sequences are removed before matching so colour codes cannot split a secret. Full-width digits are
matched as ASCII digits while the text around them is kept as it was.

How it is fast: every rule is one alternative of a single regular expression run by RE2 over bytes; Python code
runs only on the (rare) candidates, to validate them and build the mask. :class:`StreamRedactor` does the same for
output that arrives in chunks, holding back only the current line (and, for secrets that contain a line break,
as many bytes as the longest one). :class:`CappedRedactor` redacts and caps one stream, keeping head and tail,
and redacts only what it keeps.
"""

from __future__ import annotations

import base64
import bisect
import ipaddress
import json
import re
import shlex
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import re2

MIN_SECRET_LENGTH = 6
IP_MASK = b"[IP]"
CREDENTIAL_MASK = b"[REDACTED]"
PEM_MASK = b"[PRIVATE KEY REDACTED]"
SECRET_MASK = b"[SECRET]"
#: The longest a held-back partial line may grow before it is processed anyway (see :class:`StreamRedactor`).
MAX_HOLD = 64 * 1024
#: When a line is longer than MAX_HOLD, this much of its end is kept back for the next chunk.
HOLD_OVERLAP = 4096

_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])?")
_FULLWIDTH = str.maketrans(
    {chr(0xFF10 + d): str(d) for d in range(10)} | {"\uff0d": "-", "\u2010": "-", "\u2212": "-"}
)
_FULLWIDTH_MARKERS = (b"\xef\xbc", b"\xe2\x80\x90", b"\xe2\x88\x92")
_PEM_BEGIN = rb"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----"
_PEM_END = re.compile(rb"-----END[ A-Z0-9]*PRIVATE KEY-----")
_PEM_MARKER = re.compile(rb"-----(BEGIN|END)[ A-Z0-9]*PRIVATE KEY-----")
#: What a mask token looks like, so a cut never lands inside one.
MASK_TOKEN = re.compile(rb"\[[A-Z][A-Z -]{1,30}\]|[0-9]{6}[- ]?\*{7}|\*{4}[- .]?\*{4}")


_QUIET = re2.Options()
_QUIET.log_errors = False


class InvalidRule(ValueError):
    """An extra redaction rule whose pattern RE2 cannot compile."""


@dataclass(frozen=True)
class ExtraRule:
    """A redaction rule from config or a manifest: a regular expression (RE2 syntax) and its mask."""

    name: str
    pattern: str
    replacement: str = "[REDACTED]"


def check_rule(rule: ExtraRule) -> None:
    """Raise :class:`InvalidRule` unless RE2 compiles the rule and it cannot match the empty string."""
    try:
        compiled = re2.compile(rule.pattern.encode(), _QUIET)
    except re2.error as exc:
        raise InvalidRule(f"redaction rule {rule.name!r}: pattern does not compile ({exc})") from None
    if compiled.search(b"") is not None:
        raise InvalidRule(f"redaction rule {rule.name!r}: pattern matches the empty string")


# -- the rules ------------------------------------------------------------------------------------------------

_LABEL = (
    rb"(?i:passwd|password|passphrase|pwd|secret|client[_-]?secret|access[_-]?token|refresh[_-]?token|auth[_-]?token"
    rb"|token|api[_-]?key|apikey|secret[_-]?key|private[_-]?key|credentials?)"
    + "|비밀번호|패스워드|암호".encode()
)
_VALUE = rb"(?:\"[^\"\r\n]+\"|'[^'\r\n]+'|[^ \t\r\n\"',;&<>]+)"
_KEY_VALUE = re.compile(rb"((?:" + _LABEL + rb")[\"']?[ \t]*[:=][ \t]*)(" + _VALUE + rb")")
_URL_CREDENTIALS = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]{0,20}://[^/ \t\r\n:@\"'<>]*:)([^/ \t\r\n@\"'<>]+)@")
_JDBC_ORACLE = re.compile(rb"(jdbc:oracle:[a-z]+:[^/ \t\r\n@:\"']+/)([^@ \t\r\n\"']+)@")
_AUTHORIZATION = re.compile(
    rb"((?i:proxy-authorization|authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?:(?i:bearer|basic|token|digest|negotiate)[ \t]+)?)"
    rb"([A-Za-z0-9._~+/=-]+)"
)
_BEARER = re.compile(rb"(\b(?i:bearer)[ \t]+)([A-Za-z0-9._~+/-]{8,}=*)")

_RULES: list[tuple[str, bytes]] = [
    ("pem", _PEM_BEGIN),
    ("url_credentials", _URL_CREDENTIALS.pattern),
    ("jdbc_oracle", _JDBC_ORACLE.pattern),
    ("authorization", _AUTHORIZATION.pattern),
    ("bearer", _BEARER.pattern),
    ("jwt", rb"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    (
        "token",
        rb"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"
        rb"|glpat-[A-Za-z0-9_-]{20,64}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b",
    ),
    ("key_value", _KEY_VALUE.pattern),
    ("ipv4_hostname", rb"\bip-[0-9]{1,3}-[0-9]{1,3}-[0-9]{1,3}-[0-9]{1,3}\b"),
    # The first octet is filled in per redactor: the internal ranges' and the inventory's (see _ipv4_pattern).
    ("ipv4", rb"\b(?:%s)\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"),
    (
        "ipv6",
        rb"(?i:::ffff:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"
        rb"|\b(?:f[cd][0-9a-f]{2}|fe[89ab][0-9a-f])(?::[0-9a-f]{0,4}){1,7}(?:%[A-Za-z0-9_.-]{1,32})?"
        rb"|\[::1\])",
    ),
    ("rrn", rb"\b[0-9]{6}[- ]?[1-8][0-9]{6}\b"),
    (
        "phone",
        rb"(?:\+82[- ]?(?:\(0\))?1[016789]|\b01[016789]|\b0(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|50[0-9]))"
        rb"[- .)]?[0-9]{3,4}[- .]?[0-9]{4}\b",
    ),
    (
        "passport",
        "(?:여권번호|여권|(?i:passport)(?:[ _-]?(?i:no\\.?|number|num))?)[ \\t]*[:=]?[ \\t]*[A-Za-z]{1,2}[0-9]{7,8}\\b".encode(),
    ),
    (
        "driver_license",
        "(?:운전면허번호|운전면허|(?i:driver'?s?[ _-]?licen[cs]e)(?:[ _-]?(?i:no\\.?|number))?)[ \\t]*[:=]?[ \\t]*"
        "[0-9]{2}-?[0-9]{2}-?[0-9]{6}-?[0-9]{2}\\b".encode(),
    ),
    (
        "biz_no",
        "(?:사업자등록번호|사업자번호|(?i:business[ _-]?registration)(?:[ _-]?(?i:no\\.?|number))?)[ \\t]*[:=]?[ \\t]*"
        "[0-9]{3}-?[0-9]{2}-?[0-9]{5}\\b".encode(),
    ),
    (
        "account",
        "(?:계좌번호|계좌|(?i:bank[ _-]?account|account[ _-]?(?:no\\.?|number)))[ \\t]*[:=]?[ \\t]*"
        "[0-9][0-9-]{6,22}[0-9]\\b".encode(),
    ),
]
_LABELLED_MASKS = {
    "passport": b"[PASSPORT]",
    "driver_license": b"[DRIVER-LICENSE]",
    "biz_no": b"[BIZ-NO]",
    "account": b"[ACCOUNT]",
}
_LABELLED_NUMBER = re.compile(rb"[A-Za-z]{0,2}[0-9][0-9-]*[0-9]$")


#: Internal IPv4 ranges as (first octet, lowest second octet, highest second octet).
_INTERNAL_V4 = {10: (0, 255), 127: (0, 255), 172: (16, 31), 192: (168, 168), 100: (64, 127), 169: (254, 254)}
_INTERNAL_V6 = (
    ipaddress.IPv6Network("fc00::/7"),
    ipaddress.IPv6Network("fe80::/10"),
    ipaddress.IPv6Network("::1/128"),
)


def _v4_octets(text: bytes) -> tuple[int, int, int, int] | None:
    parts = text.split(b".")
    if len(parts) != 4:
        return None
    a, b, c, d = (int(part) for part in parts)
    if a > 255 or b > 255 or c > 255 or d > 255:
        return None
    return a, b, c, d


def _v4_internal(octets: tuple[int, int, int, int]) -> bool:
    bounds = _INTERNAL_V4.get(octets[0])
    return bounds is not None and bounds[0] <= octets[1] <= bounds[1]


def _v6_internal(address: ipaddress.IPv6Address) -> bool:
    if address.ipv4_mapped is not None:
        octets = _v4_octets(str(address.ipv4_mapped).encode())
        return octets is not None and _v4_internal(octets)
    return any(address in network for network in _INTERNAL_V6)


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
    """Every form of ``secret`` the redactor looks for: as given, base64, URL, JSON and shell encodings."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {
        raw,
        urllib.parse.quote(secret, safe="").encode(),
        urllib.parse.quote_plus(secret, safe="").encode(),
        urllib.parse.quote(secret).encode(),
        json.dumps(secret)[1:-1].encode(),
        json.dumps(secret, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"),
        shlex.quote(secret).encode("utf-8", "surrogatepass"),
    }
    forms |= _base64_fragments(raw)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


# -- the redactor ------------------------------------------------------------------------------------------------

Handler = Callable[[bytes, int, int], tuple[bytes, int] | None]


class _Engine(Protocol):
    def search(self, data: bytes, pos: int) -> Any: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One masked span of the input: which rule, where (byte offsets into the cleaned input)."""

    rule: str
    start: int
    end: int
    replacement: bytes
    #: A private key block with no END: it was masked to the end of the input and goes on in the next chunk.
    open: bool = False


class Redactor:
    """A compiled set of redaction rules. Immutable and safe to share between tasks.

    Args:
        secrets: the agent's own secret values (DB password, relay token, key passphrases, …).
        known_hosts: internal address or host name → the alias shown instead (from the inventory).
        extra_rules: rules from config and manifest.
        engine: ``"re2"`` (the default) or ``"re"`` (the same rules through Python's ``re``: a slow baseline
            for the benchmark and a cross-check in tests).

    Raises:
        InvalidRule: an extra rule does not compile.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        known_hosts: Mapping[str, str] | None = None,
        extra_rules: Sequence[ExtraRule] = (),
        engine: Literal["re2", "re"] = "re2",
    ) -> None:
        self._v4_aliases: dict[tuple[int, int, int, int], bytes] = {}
        self._v6_aliases: dict[ipaddress.IPv6Address, bytes] = {}
        names: dict[bytes, bytes] = {}
        for address, alias in (known_hosts or {}).items():
            try:
                parsed = ipaddress.ip_address(address.strip("[]"))
            except ValueError:
                names[address.lower().encode()] = alias.encode()
                continue
            if isinstance(parsed, ipaddress.IPv4Address):
                a, b, c, d = parsed.packed
                self._v4_aliases[(a, b, c, d)] = alias.encode()
            else:
                self._v6_aliases[parsed] = alias.encode()
        first_octets = sorted({*_INTERNAL_V4, *(octets[0] for octets in self._v4_aliases)}, reverse=True)
        forms = sorted(
            {
                form
                for secret in secrets
                if len(secret) >= MIN_SECRET_LENGTH
                for form in secret_variants(secret)
            },
            key=lambda form: (-len(form), form),
        )
        # No rule of the main expression matches across a line feed (RE2's never_nl), which is what lets a
        # stream release every complete line at once. Secrets that contain one are found by a literal pass.
        self.multiline_secrets = [form for form in forms if b"\n" in form]
        self.max_multiline = max((len(f) for f in self.multiline_secrets), default=0)
        single_line = [form for form in forms if b"\n" not in form]
        rules: list[tuple[str, bytes, Handler]] = []
        if single_line:
            rules.append(("secret", b"|".join(re.escape(f) for f in single_line), self._secret))
        if names:
            host_names = sorted(names, key=lambda n: (-len(n), n))
            pattern = rb"\b(?i:" + b"|".join(re.escape(n) for n in host_names) + rb")\b"
            rules.append(("host_name", pattern, self._host_name(names)))
        builtin: dict[str, Handler] = {
            "pem": self._pem,
            "url_credentials": self._keep_label(_URL_CREDENTIALS, b"@"),
            "jdbc_oracle": self._keep_label(_JDBC_ORACLE, b"@"),
            "authorization": self._keep_label(_AUTHORIZATION),
            "bearer": self._keep_label(_BEARER),
            "jwt": self._fixed(CREDENTIAL_MASK),
            "token": self._fixed(CREDENTIAL_MASK),
            "key_value": self._keep_label(_KEY_VALUE),
            "ipv4_hostname": self._ipv4_hostname,
            "ipv4": self._ipv4,
            "ipv6": self._ipv6,
            "rrn": self._rrn,
            "phone": self._phone,
        }
        for name, pattern in _RULES:
            if name == "ipv4":
                pattern = pattern % b"|".join(str(octet).encode() for octet in first_octets)
            handler = builtin.get(name) or self._labelled(_LABELLED_MASKS[name])
            rules.append((name, pattern, handler))
        for rule in extra_rules:
            check_rule(rule)
            rules.append(
                (f"extra:{rule.name}", rule.pattern.encode(), self._fixed(rule.replacement.encode()))
            )

        # One alternation; remember which top-level group index belongs to which rule.
        parts, self._by_group, group = [], {}, 1
        for name, pattern, handler in rules:
            parts.append(b"(" + pattern + b")")
            self._by_group[group] = (name, handler)
            group += 1 + re.compile(pattern).groups
        combined = b"|".join(parts)
        self.pattern = combined
        options = re2.Options()
        options.max_mem = 64 << 20
        options.log_errors = False
        options.never_nl = True
        self._regex: _Engine = re2.compile(combined, options) if engine == "re2" else re.compile(combined)

    # -- handlers: (data, start, end) -> (replacement, end) or None to keep the candidate as it is --------------

    def _secret(self, data: bytes, start: int, end: int) -> tuple[bytes, int]:
        return SECRET_MASK, end

    @staticmethod
    def _fixed(mask: bytes) -> Handler:
        return lambda data, start, end: (mask, end)

    @staticmethod
    def _keep_label(detail: re.Pattern[bytes], suffix: bytes = b"") -> Handler:
        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            match = detail.fullmatch(data, start, end)
            if match is None:  # pragma: no cover - the alternation matched this same pattern
                return CREDENTIAL_MASK, end
            value = match.group(2)
            quote = (
                value[:1] if len(value) > 1 and value[:1] in (b'"', b"'") and value[-1:] == value[:1] else b""
            )
            return match.group(1) + quote + CREDENTIAL_MASK + quote + suffix, end

        return handler

    @staticmethod
    def _labelled(mask: bytes) -> Handler:
        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            number = _LABELLED_NUMBER.search(data, start, end)
            return (data[start : number.start()] + mask, end) if number else None

        return handler

    def _pem(self, data: bytes, start: int, end: int) -> tuple[bytes, int]:
        close = _PEM_END.search(data, end)
        return PEM_MASK, close.end() if close else len(data)

    def _host_name(self, names: Mapping[bytes, bytes]) -> Handler:
        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            after = data[end : end + 1]
            longer = (start > 0 and data[start - 1] in b".-") or after == b"-"
            if longer or (after == b"." and data[end + 1 : end + 2].isalnum()):
                return None  # part of a longer name
            return names[data[start:end].lower()], end

        return handler

    def _v4_mask(self, octets: tuple[int, int, int, int]) -> bytes | None:
        alias = self._v4_aliases.get(octets)
        if alias is not None:
            return alias
        return IP_MASK if _v4_internal(octets) else None

    def _ipv4(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        # A dotted quad inside a longer dotted run is a version number, not an address.
        if (start >= 2 and data[start - 1] == 0x2E and 0x30 <= data[start - 2] <= 0x39) or (
            data[end : end + 1] == b"." and data[end + 1 : end + 2].isdigit()
        ):
            return None
        octets = _v4_octets(data[start:end])
        mask = self._v4_mask(octets) if octets else None
        return (mask, end) if mask else None

    def _ipv4_hostname(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        octets = _v4_octets(data[start + 3 : end].replace(b"-", b"."))
        mask = self._v4_mask(octets) if octets else None
        return (b"ip-" + mask, end) if mask else None

    def _ipv6(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        core = data[start:end].strip(b"[]").split(b"%", 1)[0]
        try:
            address = ipaddress.IPv6Address(core.decode("ascii"))
        except ValueError:
            return None
        alias = self._v6_aliases.get(address)
        if alias is None and address.ipv4_mapped is not None:
            alias = self._v4_aliases.get(_v4_octets(str(address.ipv4_mapped).encode()) or (0, 0, 0, 0))
        if alias is not None:
            return alias, end
        return (IP_MASK, end) if _v6_internal(address) else None

    @staticmethod
    def _rrn(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        digits = data[start:end]
        month, day = int(digits[2:4]), int(digits[4:6])
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return None
        return digits[:6] + re.sub(rb"[0-9]", b"*", digits[6:]), end

    @staticmethod
    def _phone(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        number = data[start:end]
        head = re.match(rb"\+82[- ]?(?:\(0\))?1[016789]|01[016789]|0(?:2|50[0-9]|[3-7][0-9])", number)
        keep = head.end() if head else 3
        return number[:keep] + re.sub(rb"[0-9]", b"*", number[keep:]), end

    # -- applying ----------------------------------------------------------------------------------------------

    def _apply(self, data: bytes, findings: list[Finding] | None = None) -> bytes:
        out: list[bytes] = []
        emitted = 0  # data[:emitted] is decided
        pos = 0  # where the next search starts
        search = self._regex.search
        by_group = self._by_group
        while True:
            match = search(data, pos)
            if match is None:
                break
            start, end = match.span()
            name, handler = by_group[match.lastindex]
            result = handler(data, start, end)
            if result is None:
                pos = start + 1  # not sensitive: look again from the next byte, not after the candidate
                continue
            replacement, end = result
            out.append(data[emitted:start])
            out.append(replacement)
            if findings is not None:
                is_open = name == "pem" and end == len(data) and _PEM_END.search(data, start) is None
                findings.append(Finding(name, start, end, replacement, is_open))
            emitted = pos = max(end, start + 1)
        if not out:
            return data
        out.append(data[emitted:])
        return b"".join(out)

    def _apply_normalised(self, data: bytes, findings: list[Finding] | None) -> bytes:
        """The slow path for text with full-width digits or dashes: match a normalised copy, mask the original.

        Normalising maps one character to one character, so character offsets carry over; byte offsets are
        mapped through them.
        """
        text = data.decode("utf-8", "surrogateescape")
        normal = text.translate(_FULLWIDTH)
        found: list[Finding] = []
        self._apply(normal.encode("utf-8", "surrogateescape"), found)
        if not found:
            return data
        offsets = [0]
        for char in normal:
            offsets.append(offsets[-1] + len(char.encode("utf-8", "surrogateescape")))
        out, last_char = [], 0
        for finding in found:
            first, stop = bisect.bisect_left(offsets, finding.start), bisect.bisect_left(offsets, finding.end)
            out.append(text[last_char:first].encode("utf-8", "surrogateescape"))
            out.append(finding.replacement)
            last_char = stop
        out.append(text[last_char:].encode("utf-8", "surrogateescape"))
        if findings is not None:
            findings.extend(found)
        return b"".join(out)

    def multiline_spans(self, data: bytes) -> list[tuple[int, int]]:
        """Where the secrets that contain a line feed occur in ``data`` (leftmost first, longest at a tie)."""
        spans: list[tuple[int, int]] = []
        pos = 0
        while self.multiline_secrets:
            hits = [(i, -len(f)) for f in self.multiline_secrets if (i := data.find(f, pos)) != -1]
            if not hits:
                break
            start, negative_length = min(hits)
            spans.append((start, start - negative_length))
            pos = start - negative_length
        return spans

    def redact_bytes(self, data: bytes, findings: list[Finding] | None = None) -> bytes:
        """Redact a complete piece of output (not a chunk of a stream: see :meth:`stream`)."""
        if b"\x1b" in data:
            data = _ANSI.sub(b"", data)
        spans = self.multiline_spans(data) if self.multiline_secrets else []
        if not spans:
            return self._redact_lines(data, findings)
        out, last = [], 0
        for start, end in spans:
            out.append(self._redact_lines(data[last:start], findings))
            out.append(SECRET_MASK)
            last = end
        out.append(self._redact_lines(data[last:], findings))
        return b"".join(out)

    def _redact_lines(self, data: bytes, findings: list[Finding] | None) -> bytes:
        if not data.isascii() and any(marker in data for marker in _FULLWIDTH_MARKERS):
            return self._apply_normalised(data, findings)
        return self._apply(data, findings)

    def redact(self, text: str) -> str:
        """Redact a complete text."""
        data = text.encode("utf-8", "surrogatepass")
        redacted = self.redact_bytes(data)
        return text if redacted is data else redacted.decode("utf-8", "surrogatepass")

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


class StreamRedactor:
    """Redacts output that arrives in chunks; a secret split over any chunk boundary is still masked.

    No rule matches across a line feed (except private key blocks, tracked as state), so everything up to the last
    line feed is final and is released at once; only the partial last line is held back. When one of the agent's
    secrets itself contains a line feed, as many bytes as its longest form are held back too. A line longer than
    :data:`MAX_HOLD` is processed anyway, keeping its last :data:`HOLD_OVERLAP` bytes back.
    """

    def __init__(self, redactor: Redactor, in_key_block: bool = False) -> None:
        self._redactor = redactor
        self._buffer = b""
        self._in_pem = in_key_block
        #: How many spans each rule masked so far.
        self.counts: dict[str, int] = {}

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk; return the redacted bytes that are now final (possibly empty)."""
        self._buffer += chunk
        return self._release(final=False)

    def finish(self) -> bytes:
        """End of stream: redact and return whatever is still held back."""
        return self._release(final=True)

    def detach(self) -> tuple[bytes, bool]:
        """Stop here: return the raw bytes still held back (unredacted) and whether a key block is open."""
        held, self._buffer = self._buffer, b""
        return held, self._in_pem

    def _cut(self) -> int:
        """How much of the buffer is final: up to the last line feed, never splitting a multi-line secret."""
        data = self._buffer
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > MAX_HOLD:
            cut = len(data) - HOLD_OVERLAP
        redactor = self._redactor
        if redactor.multiline_secrets:
            cut = min(cut, max(0, len(data) - redactor.max_multiline + 1))
            for start, end in redactor.multiline_spans(data):
                if start < cut < end:
                    cut = start
        return cut

    def _release(self, final: bool) -> bytes:
        out: list[bytes] = []
        while True:
            data = self._buffer
            if self._in_pem:
                close = _PEM_END.search(data)
                if close is None:
                    # Drop what is surely inside the block; keep a tail that could hold a split END marker.
                    self._buffer = b"" if final else data[max(0, len(data) - 64) :]
                    break
                self._buffer = data[close.end() :]
                self._in_pem = False
                continue
            cut = len(data) if final else self._cut()
            if cut <= 0:
                break
            head, self._buffer = data[:cut], data[cut:]
            if b"\x1b" in head:
                head = _ANSI.sub(b"", head)
            findings: list[Finding] = []
            redacted = self._redactor.redact_bytes(head, findings)
            if not final and findings and findings[-1].open:
                self._in_pem = True
            for finding in findings:
                self.counts[finding.rule] = self.counts.get(finding.rule, 0) + 1
            out.append(redacted)
            if not self._in_pem:
                break
        return b"".join(out)


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

    def __init__(self, redactor: Redactor, limit: int) -> None:
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
        if b"PRIVATE KEY-----" not in window:
            return
        for match in _PEM_MARKER.finditer(window):
            position = base + match.start()
            if position > self._last_marker:
                self._markers.append((position, match.group(1) == b"BEGIN"))
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
