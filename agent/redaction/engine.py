"""Redaction: pure functions that mask what must not leave the agent. No I/O.

Everything the agent sends or logs passes a :class:`Redactor`. It masks:

* internal addresses: private, shared, loopback and link-local IPv4 in every notation a resolver reads (leading
  zeros, also as octal; dotted hex), inside DNS names (``10.1.2.3.nip.io``, ``app-10-0-0-1.sslip.io``,
  ``host-192-168-1-10``, nip.io hex), ULA, link-local (with zone), site-local and IPv4-mapped/-compatible IPv6 (also
  in hex). An address the inventory knows becomes its host alias (``10.100.10.10:8080`` → ``was01:8080``); any other
  internal one becomes ``[IP]``. Public addresses pass.
* credentials: ``key=value`` / ``key: value`` for password-like labels (also ``*_PASS``, ``aws_secret_access_key``,
  session ids, 비밀번호, 패스워드, 암호), command-line flags (``--password x``, ``curl -u user:pw``), SQL
  ``IDENTIFIED BY``, XML elements (``<password>``), cookies, the password of ``scheme://user:password@``,
  ``Authorization`` headers and bare ``Bearer`` tokens, JWTs, PEM and PGP private key blocks (a block that never ends
  is masked to the end), well-known token shapes (after gitleaks' default rules: AWS incl. Bedrock, GitHub, GitLab,
  Slack incl. webhooks, Google, Vault, AI API keys, npm, PyPI, Artifactory, Azure client secrets);
* the agent's own secrets, as given and base64- (three alignments, standard and URL-safe), hex-, URL-, JSON- and
  shell-encoded, longest first; secrets shorter than :data:`MIN_SECRET_LENGTH` visible characters are not used;
* Korean personal data: resident/foreigner registration numbers, mobile and landline numbers (also +82), payment
  cards (Luhn), new-format passport and driver's licence numbers, and older passport, business registration and
  bank account numbers where a label says what they are;
* whatever extra rules the config and the runbook's manifest add.

Mask formats (one per kind, whatever separator the input used): ``[IP]`` or the alias; credentials ``[REDACTED]``
(the label stays: ``password=[REDACTED]``); private keys ``[PRIVATE KEY REDACTED]``; the agent's secrets
``[SECRET]``; registration numbers ``901010-*******``; phone numbers keep the first group (``010-****-****``); cards
``[CARD]``; labelled numbers ``[PASSPORT]``, ``[DRIVER-LICENSE]``, ``[BIZ-NO]``, ``[ACCOUNT]``; extra rules their own
replacement (default ``[REDACTED]``).

Terminal escape sequences are removed before matching so colour codes cannot split a secret. Full-width digits and
every kind of dash are matched as ASCII, invisible formatting characters as nothing, while the text outside a mask is
kept as it was.

Exactness: every rule's match is bounded (:data:`MAX_VALUE`, :data:`TOKEN_EXTEND`, :data:`MAX_RULE_WIDTH`), so
whether a position is masked depends only on ``Redactor.window`` bytes around it. :class:`StreamRedactor` releases
complete lines at once and, of a longer line, all but that window, and gives exactly what :meth:`Redactor.redact_bytes`
gives for the whole text. :class:`CappedRedactor` redacts and caps one stream, keeping head and tail, and redacts only
what it keeps.

How it is fast: every rule is one alternative of a single regular expression run by RE2 over bytes, without
capturing groups (long repeats relaxed, since bounded counters cost RE2's DFA dearly); an RE2 set names the rule of
each candidate span, and Python code runs only on the candidates, to check the bounded rule, validate and build the
mask. Bytes that are not UTF-8 (EUC-KR from legacy hosts) are matched as ``?``, one for one.
"""

from __future__ import annotations

import base64
import bisect
import functools
import importlib
import ipaddress
import json
import re
import shlex
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import re2

#: Python's own regular expression parser, used only to bound how long a rule's match can be.
_sre_parse: Any = importlib.import_module("re._parser")

MIN_SECRET_LENGTH = 6
IP_MASK = b"[IP]"
CREDENTIAL_MASK = b"[REDACTED]"
PEM_MASK = b"[PRIVATE KEY REDACTED]"
SECRET_MASK = b"[SECRET]"
CARD_MASK = b"[CARD]"
#: After a rejected candidate, how far past the widest rule the next search looks at first (then twice as far
#: each time it finds nothing there), instead of to the end of the text.
REJECTED_REACH = 64
#: After this many masks on one line, the rest of it is searched cut short as after a rejected candidate.
MASKS_BEFORE_CUT = 16
#: The longest a partial line may grow before the stream releases part of it anyway (see :class:`StreamRedactor`).
MAX_HOLD = 64 * 1024
#: :meth:`Redactor.redact` remembers texts up to this many characters that needed nothing masked, up to this many.
CLEAN_MEMO_LENGTH = 64
CLEAN_MEMO_SIZE = 4096
#: Kept for callers of the old API: the stream now holds back exactly what a match could still need.
HOLD_OVERLAP = 4096
#: The most bytes any built-in rule matches (values, tokens); a longer value is masked up to this many bytes.
MAX_VALUE = 1000
#: How far a token-like match may be extended past its pattern over the same alphabet (a longer token's tail).
TOKEN_EXTEND = 4096
#: An extra rule may match at most this many bytes (so that a stream can hold back enough to be exact).
MAX_RULE_WIDTH = 4096
#: Bytes of look-around the handlers use beyond a match (``\b``, a version string's next dot and digit, …).
LOOKAROUND = 8
#: A run of invisible formatting characters longer than this is kept as it is (not removed before matching).
MAX_INVISIBLE_RUN = 16
#: Bytes at the end of a held-back buffer whose normalisation is not yet decided (a split character or run).
NORMALISE_MARGIN = 64

#: Terminal escape sequences (bounded, never across a line feed), removed before matching.
_ANSI = re.compile(rb"\x1b(?:\[[0-?]{0,32}[ -/]{0,8}[@-~]|\][^\x07\x1b\n]{0,256}(?:\x07|\x1b\\)?|[@-Z\\-_])?")
ANSI_MAX = 264
_PEM_BEGIN = rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_PEM_BEGIN_RE = re.compile(_PEM_BEGIN)
_PEM_END = re.compile(rb"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
PEM_END_MAX = 80
_PEM_MARKER = re.compile(rb"-----(BEGIN|END)[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
#: What a mask token looks like, so a cut never lands inside one.
MASK_TOKEN = re.compile(rb"\[[A-Z][A-Z -]{1,30}\]|[0-9]{6}[- ]?\*{7}|\*{4}[- .]?\*{4}")

# Characters matched as something else: full-width digits, every dash and the full stops of CJK text as ASCII,
# invisible formatting characters (zero-width space, joiners, bidi marks, BOM, soft hyphen, …) as nothing. Text
# outside a mask keeps them.
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d"
_INVISIBLES = "\u00ad\u034f\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
_NORMAL_CHARS: dict[bytes, bytes] = {chr(0xFF10 + d).encode(): str(d).encode() for d in range(10)}
_NORMAL_CHARS |= {c.encode(): b"-" for c in _DASHES}
# Full-width, half-width and ideographic full stops.
_NORMAL_CHARS |= {c.encode(): b"." for c in "\uff0e\uff61\u3002"}
_INVISIBLE = b"(?:" + b"|".join(re.escape(c.encode()) for c in _INVISIBLES) + b")"
_NORMALISE = re.compile(
    b"(" + _INVISIBLE + b"+)|" + b"|".join(re.escape(k) for k in sorted(_NORMAL_CHARS, reverse=True))
)
_NEEDS_NORMALISING = re2.compile(
    _INVISIBLE + b"|" + b"|".join(re.escape(k) for k in sorted(_NORMAL_CHARS, reverse=True))
)


_QUIET = re2.Options()
_QUIET.log_errors = False
_ONE_LINE = re2.Options()
_ONE_LINE.log_errors = False
_ONE_LINE.never_nl = True


class InvalidRule(ValueError):
    """An extra redaction rule whose pattern RE2 cannot compile, or that could match unboundedly long text."""


@dataclass(frozen=True)
class ExtraRule:
    """A redaction rule from config or a manifest: a regular expression (RE2 syntax) and its mask."""

    name: str
    pattern: str
    replacement: str = "[REDACTED]"


@functools.lru_cache(maxsize=256)
def max_width(pattern: bytes | str) -> int | None:
    """The most bytes ``pattern`` can match (UTF-8, each character counted as 4), or None if unbounded/unknown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            width = _sre_parse.parse(pattern).getwidth()[1]
    except (re.error, ValueError, OverflowError, RecursionError):
        return None
    if width >= _sre_parse.MAXREPEAT:
        return None
    return int(width) * (4 if isinstance(pattern, str) else 1)


def _min_width(pattern: str) -> int | None:
    """The fewest characters ``pattern`` can match (0: an empty match, ``\\b`` alone, ``x?``), None if unknown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(_sre_parse.parse(pattern).getwidth()[0])
    except (re.error, ValueError, OverflowError, RecursionError):
        return None


def check_rule(rule: ExtraRule) -> None:
    """Raise :class:`InvalidRule` unless RE2 compiles the rule, it never matches nothing (anywhere), and its
    matches are bounded (at most :data:`MAX_RULE_WIDTH` bytes: every repeat needs an upper bound, ``{1,64}``)."""
    try:
        compiled = re2.compile(rule.pattern.encode(), _QUIET)
    except re2.error as exc:
        raise InvalidRule(f"redaction rule {rule.name!r}: pattern does not compile ({exc})") from None
    if compiled.search(b"") is not None or _min_width(rule.pattern) == 0:
        raise InvalidRule(f"redaction rule {rule.name!r}: pattern can match the empty string")
    width = max_width(rule.pattern)
    if width is None or width > MAX_RULE_WIDTH:
        raise InvalidRule(
            f"redaction rule {rule.name!r}: pattern may match more than {MAX_RULE_WIDTH} bytes;"
            " give every repeat an upper bound, e.g. {1,64} instead of + or *"
        )


# -- the rules ------------------------------------------------------------------------------------------------

_V = MAX_VALUE
_LABEL = (
    rb"(?i:passwd|password|passphrase|pass|pwd|pw|secret|client[_-]?secret|access[_-]?token|refresh[_-]?token"
    rb"|auth[_-]?token|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?"
    rb"|jsessionid|phpsessid|session(?:[_-]?(?:id|key|token))?)"
    rb"[A-Za-z0-9_.-]{0,32}" + "|비밀번호|패스워드|암호".encode()
)
_VALUE = rb"(?:\"[^\"\r\n]{1,%d}\"|'[^'\r\n]{1,%d}'|[^ \t\r\n\"',;&<>]{1,%d})" % (_V, _V, _V)
_KEY_VALUE = re.compile(rb"((?:" + _LABEL + rb")[\"']?[ \t]{0,8}[:=][ \t]{0,8})(" + _VALUE + rb")")
_FLAG_VALUE = re.compile(
    rb"((?<![A-Za-z0-9_-])--?(?i:password|passwd|pass|pwd|secret|token|api-key|client-secret|auth-token)"
    rb"(?:[ \t]{1,8}|=))(" + _VALUE + rb")"
)
_CURL_USER = re.compile(
    rb"((?<![A-Za-z0-9_-])(?:-u|--user|--proxy-user)(?:[ \t]{1,8}|=)[\"']?[^: \t\r\n\"']{0,256}:)"
    rb"([^ \t\r\n\"']{1,%d})" % _V
)
_IDENTIFIED_BY = re.compile(
    rb"((?i:identified)[ \t]{1,8}(?i:by)(?:[ \t]{1,8}(?i:password))?[ \t]{1,8})"
    rb"('[^'\r\n]{1,%d}'|\"[^\"\r\n]{1,%d}\"|[^ \t\r\n;]{1,%d})" % (_V, _V, _V)
)
_XML_ELEMENT = re.compile(
    rb"(<(?i:[a-z0-9_:-]{0,32}(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    rb"|credentials?))[ \t]{0,8}>)([^<\r\n]{1,%d})(</)" % _V
)
_COOKIE = re.compile(
    rb"((?i:set-cookie|cookie)[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?)([^\r\n]{1,%d})" % _V
)  # also as JSON or a dict key ("Cookie": "…") and as cookie=…
_COOKIE_LABEL = re.compile(rb"(?i:set-cookie|cookie)[\"']?[ \t]{0,8}[:=]")
#: In a Set-Cookie attribute's value, the start of another cookie joined on (Python and Go print several
#: Set-Cookie headers joined by ", " or " "): "Expires=Sun, 29 Nov 2026 00:00:00 GMT, SID=…".
_JOINED_PAIR = re.compile(rb"[ ,][ \t]*[^=\s,;]+=")
_COOKIE_PAIR = re.compile(rb"([ \t]*)([^=]*)=(.*)", re.DOTALL)
#: A Cookie header's pieces: quoted strings (a ";" inside stays), runs of other bytes, a lone quote, a ";".
_COOKIE_TOKEN = re.compile(rb"\"[^\"]*\"|'[^']*'|[^;\"']+|[;\"']")


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


_COOKIE_ATTRIBUTES = {b"path", b"domain", b"expires", b"max-age", b"samesite", b"priority", b"version"}
_URL_CREDENTIALS = re.compile(
    rb"([A-Za-z][A-Za-z0-9+.-]{0,20}://[^/ \t\r\n:@\"'<>]{0,256}:)([^/ \t\r\n@\"'<>]{1,%d})@" % _V
)
_JDBC_ORACLE = re.compile(rb"(jdbc:oracle:[a-z]{1,16}:[^/ \t\r\n@:\"']{1,256}/)([^@ \t\r\n\"']{1,%d})@" % _V)
_AUTHORIZATION = re.compile(
    rb"((?i:proxy-authorization|authorization)[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?"
    rb"(?:(?i:bearer|basic|token|digest|negotiate)[ \t]{1,8})?)"
    rb"([A-Za-z0-9._~+/=-]{1,%d})" % _V
)
_BEARER = re.compile(rb"(\b(?i:bearer)[ \t]{1,8})([A-Za-z0-9._~+/-]{8,%d}={0,2})" % _V)
_SLACK_WEBHOOK = re.compile(
    rb"(hooks\.slack\.com/(?:services|workflows|triggers)/)([A-Za-z0-9+/_-]{20,%d})" % _V
)
_TOKEN_CHARS = re.compile(rb"[A-Za-z0-9_+/=.~-]{0,%d}" % TOKEN_EXTEND)
#: Well-known token shapes (after gitleaks' default rules, those that show up on internal hosts).
_TOKENS = (
    (
        rb"\b(?:(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"  # AWS access key id
        rb"|ABSK[A-Za-z0-9+/]{100,300}={0,2}|bedrock-api-key-[A-Za-z0-9+/=]{20,%(v)d}"  # Amazon Bedrock API keys
        rb"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
        rb"|gl(?:pat|dt|rt|cbt|ptt|ft|imt|oas|soat|ffct)-[A-Za-z0-9_-]{20,64}|glagent-[A-Za-z0-9_-]{50,200}"  # GitLab
        rb"|xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Z0-9]{1,20}-[0-9]{1,20}-[a-z0-9]{20,100}"  # Slack
        rb"|AIza[0-9A-Za-z_-]{35}"  # Google API key
        rb"|hv[sbr]\.[A-Za-z0-9_-]{24,300}|s\.[A-Za-z0-9]{24}\b"  # HashiCorp Vault
        rb"|sk-[A-Za-z0-9_-]{20,300}"  # OpenAI, Anthropic (sk-ant-…) and similar AI API keys
        rb"|npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,300}"  # npm, PyPI
        rb"|AKCp[A-Za-z0-9]{69}|cmVmdGtu[A-Za-z0-9]{56}"  # Artifactory API key, reference token
        rb"|[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})"  # Azure AD client secret
    )
    % {b"v": _V}
)

_RULES: list[tuple[str, bytes]] = [
    ("pem", _PEM_BEGIN),
    ("url_credentials", _URL_CREDENTIALS.pattern),
    ("jdbc_oracle", _JDBC_ORACLE.pattern),
    ("authorization", _AUTHORIZATION.pattern),
    ("cookie", _COOKIE.pattern),
    ("bearer", _BEARER.pattern),
    ("slack_webhook", _SLACK_WEBHOOK.pattern),
    ("jwt", rb"\beyJ[A-Za-z0-9_-]{5,%d}\.eyJ[A-Za-z0-9_-]{1,%d}(?:\.[A-Za-z0-9_-]{0,%d})?" % (_V, _V, _V)),
    ("token", _TOKENS),
    ("identified_by", _IDENTIFIED_BY.pattern),
    ("xml_secret", _XML_ELEMENT.pattern),
    # RE2 has no look-behind: the flag rules match one byte before the dash and the handler checks it.
    ("flag_value", rb"(?:(?m:^)|[ \t\"'=(])" + _FLAG_VALUE.pattern.replace(rb"(?<![A-Za-z0-9_-])", b"")),
    ("curl_user", rb"(?:(?m:^)|[ \t\"'=(])" + _CURL_USER.pattern.replace(rb"(?<![A-Za-z0-9_-])", b"")),
    ("key_value", _KEY_VALUE.pattern),
    ("ipv4_hex_name", rb"\b[0-9a-fA-F]{8}\.(?i:nip|sslip|xip)\.io\b"),
    # The first octet is filled in per redactor: the internal ranges' and the inventory's (see _ipv4_pattern).
    # Dashes or underscores (ip-10-0-0-1, ip_10_0_0_1); after "_" (no \b there) the "_" is matched and kept, and
    # so is a "_" or letter before a word that follows (node_10_1_2_3_9100, ip-10-0-0-1abc: no \b there either).
    (
        "ipv4_dashed",
        rb"(?:\b|_)0{0,3}(?:%(first)s)(?:-[0-9]{1,4}-[0-9]{1,4}-[0-9]{1,4}|_[0-9]{1,4}_[0-9]{1,4}_[0-9]{1,4})"
        rb"(?:\b|[A-Za-z_])",
    ),
    (
        "ipv4",
        # At a word boundary, or after a letter or "_" (ip_10.0.0.1, host10.0.0.1), which \b would not allow, and
        # before a word boundary, a letter or "_" (dump_10.0.0.1_0918.sql, 10.0.0.5ms). RE2 has no look-around: the
        # letter or "_" is matched, and the handler leaves it as it is.
        rb"(?:\b|[A-Za-z_])(?:0[xX][0-9a-fA-F]{1,2}|0{0,3}(?:%(first)s)|0[0-7]{1,3})"
        rb"(?:\.(?:0[xX][0-9a-fA-F]{1,2}|[0-9]{1,4})){3}(?:\b|[A-Za-z_])",
    ),
    (
        "ipv6",
        rb"(?i:(?:\b(?:0{1,4}:){5}|::)(?:ffff:)?(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"
        rb"|[0-9a-f]{1,4}:[0-9a-f]{1,4}\b)"
        rb"|\b(?:f[cd][0-9a-f]{2}|fe[89a-f][0-9a-f])(?::[0-9a-f]{0,4}){1,7}(?:%[A-Za-z0-9_.-]{1,32})?"
        rb"|\[::1\])",
    ),
    ("rrn", rb"\b[0-9]{6}[- ]?[1-8][0-9]{6}\b"),
    (
        "card",
        rb"\b(?:[0-9]{13,19}|[0-9]{4}[- ][0-9]{4,6}[- ][0-9]{4,5}(?:[- ][0-9]{1,4}){0,2})\b",
    ),
    (
        "phone",
        rb"(?:\+82[- ]?(?:\(0\))?1[016789]|\b01[016789]|\b0(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|50[0-9]))"
        rb"[- .)]?[0-9]{3,4}[- .]?[0-9]{4}\b",
    ),
    (
        "passport",
        "(?:(?:여권번호|여권|(?i:passport)(?:[ _-]?(?i:no\\.?|number|num))?)[ \\t]{0,8}[:=]?[ \\t]{0,8}"
        "[A-Za-z]{1,2}[0-9]{7,8}|[A-Z][0-9]{3}[A-Z][0-9]{4})\\b".encode(),
    ),
    (
        "driver_license",
        "(?:(?:운전면허번호|운전면허|(?i:driver'?s?[ _-]?licen[cs]e)(?:[ _-]?(?i:no\\.?|number))?)[ \\t]{0,8}[:=]?"
        "[ \\t]{0,8})?\\b(?:1[1-9]|2[0-8])[- ]?[0-9]{2}[- ]?[0-9]{6}[- ]?[0-9]{2}\\b".encode(),
    ),
    (
        "biz_no",
        "(?:사업자등록번호|사업자번호|(?i:business[ _-]?registration)(?:[ _-]?(?i:no\\.?|number))?)[ \\t]{0,8}"
        "[:=]?[ \\t]{0,8}[0-9]{3}-?[0-9]{2}-?[0-9]{5}\\b".encode(),
    ),
    (
        "account",
        "(?:계좌번호|계좌|(?i:bank[ _-]?account|account[ _-]?(?:no\\.?|number)))[ \\t]{0,8}[:=]?[ \\t]{0,8}"
        "[0-9][0-9-]{6,22}[0-9]\\b".encode(),
    ),
]
_LABELLED_MASKS = {
    "passport": b"[PASSPORT]",
    "driver_license": b"[DRIVER-LICENSE]",
    "biz_no": b"[BIZ-NO]",
    "account": b"[ACCOUNT]",
}
_LABELLED_NUMBER = re.compile(rb"(?:[A-Za-z]{0,2}[0-9]|[0-9])[0-9 -]*[0-9]$|[A-Z][0-9]{3}[A-Z][0-9]{4}$")
_DIGITS = re.compile(rb"[0-9]")
_HEX_OCTET = re.compile(rb"0[xX][0-9a-fA-F]{1,2}")
_CARD_PREFIX = re.compile(rb"3[0-9]|4|5[1-5]|2[2-7]|6|9")


#: Internal IPv4 ranges as (first octet, lowest second octet, highest second octet).
_INTERNAL_V4 = {10: (0, 255), 127: (0, 255), 172: (16, 31), 192: (168, 168), 100: (64, 127), 169: (254, 254)}
_INTERNAL_V6 = (
    ipaddress.IPv6Network("fc00::/7"),
    ipaddress.IPv6Network("fe80::/10"),
    ipaddress.IPv6Network("fec0::/10"),
    ipaddress.IPv6Network("::1/128"),
)


def _octet_values(part: bytes) -> tuple[int, ...]:
    """How a resolver may read one part of a dotted address: hex, decimal, and (leading zero) octal (none: not
    a number)."""
    if part[:2] in (b"0x", b"0X"):
        return (int(part, 16),) if _HEX_OCTET.fullmatch(part) else ()
    if not part.isdigit():
        return ()
    values = [int(part)]
    if len(part) > 1 and part[0] == 0x30 and all(0x30 <= c <= 0x37 for c in part):
        values.append(int(part, 8))
    return tuple(values)


def _v4_readings(text: bytes, sep: bytes = b".") -> list[tuple[int, int, int, int]]:
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


def _v4_octets(text: bytes) -> tuple[int, int, int, int] | None:
    readings = _v4_readings(text)
    return readings[0] if readings else None


def _v4_internal(octets: tuple[int, int, int, int]) -> bool:
    bounds = _INTERNAL_V4.get(octets[0])
    return bounds is not None and bounds[0] <= octets[1] <= bounds[1]


def _v6_internal(address: ipaddress.IPv6Address) -> bool:
    v4 = _v6_embedded_v4(address)
    if v4 is not None and _v4_internal(v4):
        return True
    return any(address in network for network in _INTERNAL_V6)


def _v6_embedded_v4(address: ipaddress.IPv6Address) -> tuple[int, int, int, int] | None:
    """The IPv4 address in an IPv4-mapped (``::ffff:a.b.c.d``) or -compatible (``::a.b.c.d``) address."""
    packed = address.packed
    if packed[:10] == bytes(10) and packed[10:12] in (b"\xff\xff", b"\0\0") and packed[12:] != bytes(4):
        if packed[10:12] == b"\0\0" and packed[12:14] == b"\0\0":
            return None  # ::1 and other small numbers are not compatible addresses
        a, b, c, d = packed[12:]
        return a, b, c, d
    return None


def _visible_length(secret: str) -> int:
    """How many characters of ``secret`` are matched (invisible formatting characters are not)."""
    return len(_Normalised(secret.encode("utf-8", "surrogatepass")).data.decode("utf-8", "replace"))


def _no_captures(pattern: bytes) -> bytes:
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


#: Long repeats that stay bounded in RE2's search all the same (see :func:`_relax`).
_KEPT_BOUNDED = (rb"[A-Za-z0-9_.-]{0,32}",)  # a label's suffix: password_db_admin=, token.value:
_KEPT = re.compile(b"(" + b"|".join(re.escape(kept) for kept in _KEPT_BOUNDED) + b")")


def _relax(pattern: bytes) -> bytes:
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


def _luhn(digits: bytes) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = char - 0x30
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


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


# -- normalising: matched as ASCII, shown as written -----------------------------------------------------------


_LONE_SURROGATE = re.compile("[\udc80-\udcff]")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _stray_bytes_marked(data: bytes) -> bytes:
    """``data`` with every byte that is not part of a valid UTF-8 sequence made ``?``: same length, same offsets."""
    return _LONE_SURROGATE.sub("?", data.decode("utf-8", "surrogateescape")).encode("utf-8")


class _Normalised:
    """``data`` with full-width digits and dashes made ASCII and invisible characters removed, and the offset maps."""

    __slots__ = ("_deletion", "_norm_ends", "_orig_ends", "_shrink", "data")

    def __init__(self, data: bytes) -> None:
        out: list[bytes] = []
        orig_ends: list[int] = []
        norm_ends: list[int] = []
        shrink: list[int] = [0]
        deletion: list[bool] = []
        last = 0
        length = 0
        for match in _NORMALISE.finditer(data):
            start, end = match.span()
            if match.group(1) is not None:
                run = match.group(1)
                if len(run.decode("utf-8", "replace")) > MAX_INVISIBLE_RUN:
                    continue  # a long run of invisible characters is content, not an obfuscated secret
                replacement = b""
            else:
                replacement = _NORMAL_CHARS[match.group()]
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


# -- the redactor ------------------------------------------------------------------------------------------------

Handler = Callable[[bytes, int, int], tuple[bytes, int] | None]


class _Engine(Protocol):
    def search(self, data: bytes, pos: int) -> Any: ...

    def match(self, data: bytes, pos: int, endpos: int = ...) -> Any: ...


#: Zero-width assertions that look further than one byte either side, or at the whole text: with one of these in
#: a rule, which rule matched is read from the capturing groups instead (see :func:`_finder`).
_FAR_ASSERTIONS = re.compile(rb"\\[AzZ]|(?<!\(\?m:)[\^$]")
#: Character classes and escaped bytes: what is left of a pattern without them can be scanned for syntax.
_CLASS_OR_ESCAPE = re.compile(rb"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]", re.DOTALL)


def _keep_anchor(match: re.Match[bytes]) -> bytes:
    """For :data:`_CLASS_OR_ESCAPE`: drop a class or an escaped byte, keep the text anchors ``\\A``/``\\z``/``\\Z``."""
    return match[0] if match[0] in (rb"\A", rb"\z", rb"\Z") else b""


Spans = Callable[[bytes, int, int], list[tuple[int, int]]]
Which = Callable[[bytes | memoryview], list[int]]


def _finder(parts: Sequence[bytes], options: Any) -> tuple[Spans | None, Which | None]:
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


def _with_context(data: bytes, start: int, end: int) -> bytes:
    """``data[start:end]`` with the byte before and after it, a line feed standing in where the text ends."""
    before = data[start - 1 : start] if start else b"\n"
    after = data[end : end + 1] or b"\n"
    return before + data[start:end] + after


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
        InvalidRule: an extra rule does not compile or is unbounded.
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
        self._v4_cache: dict[bytes, bytes | None] = {}
        #: Short texts known to need nothing masked (only those: nothing sensitive is kept). Outbound messages
        #: repeat the same keys and values (``status``, ``SUCCESS``, host aliases) in every answer.
        self._clean: set[str] = set()
        #: The same for the pieces of matches that nested passes search (see :meth:`_pass`).
        self._clean_labels: set[bytes] = set()
        self._clean_parts: set[bytes] = set()
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
                if _visible_length(secret) >= MIN_SECRET_LENGTH
                for form in secret_variants(secret)
            },
            key=lambda form: (-len(form), form),
        )
        # Text is matched normalised (full-width digits, dashes, invisible characters): so are the secrets.
        forms = sorted(
            {
                *forms,
                *(normal for form in forms if len(normal := _Normalised(form).data) >= MIN_SECRET_LENGTH),
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
            "authorization": self._keep_label(_AUTHORIZATION, extend=True),
            "cookie": self._cookie,
            "bearer": self._keep_label(_BEARER, extend=True),
            "slack_webhook": self._keep_label(_SLACK_WEBHOOK, extend=True),
            "jwt": self._fixed(CREDENTIAL_MASK, extend=True),
            "token": self._fixed(CREDENTIAL_MASK, extend=True),
            "identified_by": self._keep_label(_IDENTIFIED_BY),
            "xml_secret": self._keep_label(_XML_ELEMENT, b"</"),
            "flag_value": self._after_context(self._keep_label(_FLAG_VALUE), b"-"),
            "curl_user": self._after_context(self._keep_label(_CURL_USER), b"-"),
            "key_value": self._keep_label(_KEY_VALUE),
            "ipv4_hex_name": self._ipv4_hex_name,
            "ipv4_dashed": self._after_context(self._glued_before(self._ipv4_dashed), b"0123456789"),
            "ipv4": self._after_context(self._glued_before(self._ipv4), b"0123456789"),
            "ipv6": self._ipv6,
            "rrn": self._rrn,
            "card": self._card,
            "phone": self._phone,
        }
        first = b"|".join(str(octet).encode() for octet in first_octets)
        for name, pattern in _RULES:
            if b"%(first)s" in pattern:
                pattern = pattern.replace(b"%(first)s", first)
            handler = builtin.get(name) or self._labelled(_LABELLED_MASKS[name])
            if name == "driver_license":
                handler = self._not_a_timestamp(handler)
            rules.append((name, pattern, handler))
        for rule in extra_rules:
            check_rule(rule)
            rules.append(
                (f"extra:{rule.name}", rule.pattern.encode(), self._fixed(rule.replacement.encode()))
            )

        # One alternation; remember which top-level group index belongs to which rule. RE2 finds candidates
        # with the long repeats relaxed (bounded repeats cost it dearly); the bounded rule decides (_bounded_at).
        parts, self._by_group, group = [], {}, 1
        self._rules: list[tuple[str, Handler, _Engine | None]] = []
        widest = 0
        for index, (name, pattern, handler) in enumerate(rules):
            relaxed = pattern if name.startswith("extra:") or engine == "re" else _relax(pattern)
            bounded: _Engine | None = None
            if name.startswith("extra:"):
                bounded = re2.compile(pattern, _ONE_LINE)  # as in the search: a rule never spans a line feed
            elif relaxed != pattern:
                bounded = re.compile(pattern)
            self._rules.append((name, handler, bounded))
            parts.append(_no_captures(relaxed))
            self._by_group[group] = (name, handler, index, relaxed != pattern)
            group += 1
            if name.startswith("extra:"):
                width = MAX_RULE_WIDTH
            elif name == "secret":
                width = max(len(form) for form in single_line)
            elif name == "host_name":
                width = max(len(name) for name in names)
            else:
                width = max_width(pattern) or 0
                assert width > 0, name
            widest = max(widest, width)
        #: The most bytes (of the normalised text) a decision about one position can depend on: a stream holds
        #: back this much of a long line, and everything before it is final.
        self.window = widest + TOKEN_EXTEND + LOOKAROUND
        #: The longest span any rule's bounded pattern can match: a candidate that needs more is rejected anyway.
        self.widest = widest
        self._exact: dict[str, Any] = {
            name: re.compile(pattern) for name, pattern, _ in rules if not name.startswith("extra:")
        }
        combined = b"|".join(b"(" + part + b")" for part in parts)
        self.pattern = combined
        options = re2.Options()
        options.max_mem = 64 << 20
        options.log_errors = False
        options.never_nl = True
        self._options, self._engine = options, engine
        self._find, self._which = _finder(parts, options) if engine == "re2" else (None, None)

    @functools.cached_property
    def _regex(self) -> _Engine:
        """The alternation with a capturing group per rule: for the ``re`` engine, or where :func:`_finder` can't."""
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

    # -- handlers: (data, start, end) -> (replacement, end) or None to keep the candidate as it is --------------

    def _secret(self, data: bytes, start: int, end: int) -> tuple[bytes, int]:
        return SECRET_MASK, end

    @staticmethod
    def _extend(data: bytes, end: int) -> int:
        """Past the end of a token's pattern, the rest of a longer token (bounded by :data:`TOKEN_EXTEND`)."""
        if end < len(data) and data[end] in _TOKEN_BYTES:
            match = _TOKEN_CHARS.match(data, end)
            if match is not None:
                key = data.find(b"-----BEGIN", end, match.end())  # a key block is the PEM rule's
                return match.end() if key == -1 else key
        return end

    @classmethod
    def _fixed(cls, mask: bytes, extend: bool = False) -> Handler:
        if extend:
            return lambda data, start, end: (mask, cls._extend(data, end))
        return lambda data, start, end: (mask, end)

    def _keep_label(self, detail: re.Pattern[bytes], suffix: bytes = b"", extend: bool = False) -> Handler:
        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            match = detail.fullmatch(data, start, end)
            if match is None:  # pragma: no cover - the alternation matched this same pattern
                return CREDENTIAL_MASK, end
            value = match.group(2)
            quote = (
                value[:1] if len(value) > 1 and value[:1] in (b'"', b"'") and value[-1:] == value[:1] else b""
            )
            if extend and not suffix:
                end = self._extend(data, end)
            return self._kept(match.group(1)) + quote + CREDENTIAL_MASK + quote + suffix, end

        return handler

    def _kept(self, label: bytes) -> bytes:
        """What a rule keeps of its match (a flag, a user name, a cookie's name), with the addresses, host names and
        secrets in it masked: the user of ``rsync -u 10.0.0.5:/data`` or ``http://10.0.0.5:8443@x`` is an address.
        Only those rules: a label is not a value (``Authorization: Bearer`` stays). Shorter than the match, so this
        ends."""
        return self._pass(label, self._clean_labels, only=_IN_KEPT_LABELS)

    @staticmethod
    def _after_context(inner: Handler, own: bytes) -> Handler:
        """For a rule that may match one byte of left context (RE2 has no look-behind): keep that byte as it is.

        ``own``: the bytes that, first in the match, are the match's own (a flag's ``-``, an address's digit).
        """

        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            if data[start] in own:
                return inner(data, start, end)
            result = inner(data, start + 1, end)
            return (data[start : start + 1] + result[0], result[1]) if result else None

        return handler

    @staticmethod
    def _glued_before(inner: Handler) -> Handler:
        """For a rule that may match one "_" or letter after its own text (RE2 has no look-ahead): leave it alone.

        A letter that ends a whole hex octet (``10.0.0.0xab``) is the octet's own; in ``10.0.0.0x`` it is not.
        """

        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            last = data[end - 1]
            if last == 0x5F or (
                last in _LETTERS and not _HEX_OCTET.fullmatch(data, data.rfind(b".", start, end) + 1, end)
            ):
                # Left in the text: the next search starts at it, and an address glued after it
                # (10.0.0.5_10.0.0.6, from10.0.0.5to10.0.0.6) takes it as its own left context.
                return inner(data, start, end - 1)
            return inner(data, start, end)

        return handler

    def _cookie(self, data: bytes, start: int, end: int) -> tuple[bytes, int]:
        match = _COOKIE.fullmatch(data, start, end)
        assert match is not None
        # A Cookie header is often longer than a value's bound (analytics cookies first): its pairs go on to the
        # end of the line, as far as a token's tail may (what a stream holds back covers that much).
        line_end = data.find(b"\n", end, end + TOKEN_EXTEND)
        end = line_end if line_end != -1 else min(len(data), end + TOKEN_EXTEND)
        if data[end - 1 : end] == b"\r":
            end -= 1
        # Up to the next Cookie label, which is a match of its own (a log line may name a cookie, then quote one),
        # or a private key block, which is the PEM rule's to mask to its end.
        following = _COOKIE_LABEL.search(data, match.start(2), end)
        if following is not None:
            end = following.start()
        key = _PEM_BEGIN_RE.search(data, match.start(2), end)
        if key is not None:
            end = key.start()
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
                    pairs.append(self._nested(pair))
                    continue
                joined, pair = self._nested(pair[: after.start()]), pair[after.start() :]
                found = _COOKIE_PAIR.fullmatch(pair)
            if found is None and b"=" in match.group(1):
                pairs.append(joined + CREDENTIAL_MASK)  # cookie=VALUE: the value is the cookie
            elif found is None:
                # Not a pair (HttpOnly, the free text of a log line after "cookie:"): every rule but this one.
                pairs.append(joined + self._nested(pair))
            else:
                pairs.append(joined + found.group(1) + self._nested(found.group(2)) + b"=" + CREDENTIAL_MASK)
        return match.group(1) + b";".join(pairs), end

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

    @staticmethod
    def _labelled(mask: bytes) -> Handler:
        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            number = _LABELLED_NUMBER.search(data, start, end)
            return (data[start : number.start()] + mask, end) if number else None

        return handler

    @staticmethod
    def _not_a_timestamp(inner: Handler) -> Handler:
        """An unlabelled, unseparated 12-digit licence number that reads as ``yyyymmddHHMM`` is a timestamp."""

        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            text = data[start:end]
            if len(text) == 12 and text.isdigit() and text[:2] in (b"19", b"20"):
                month, day, hour, minute = int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12])
                if 1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59:
                    return None
            return inner(data, start, end)

        return handler

    def _pem(self, data: bytes, start: int, end: int) -> tuple[bytes, int]:
        close = _PEM_END.search(data, end)
        return PEM_MASK, close.end() if close else len(data)

    def _host_name(self, names: Mapping[bytes, bytes]) -> Handler:
        # RE2's (?i) folds case the Unicode way: "ſ" (long s) matches s, "K" (Kelvin sign) matches k.
        folded = {name.decode("utf-8", "replace").casefold(): alias for name, alias in names.items()}

        def handler(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
            after = data[end : end + 1]
            longer = (start > 0 and data[start - 1] in b".-") or after == b"-"
            if longer or (after == b"." and data[end + 1 : end + 2].isalnum()):
                return None  # part of a longer name
            name = data[start:end]
            alias = names.get(name.lower()) or folded.get(name.decode("utf-8", "replace").casefold())
            return (alias, end) if alias is not None else (IP_MASK, end)

        return handler

    def _v4_mask(self, text: bytes, sep: bytes = b".") -> bytes | None:
        """The alias or mask for an IPv4 address as written, if any reading of it is known or internal."""
        readings = _v4_readings(text, sep)
        for octets in readings:
            alias = self._v4_aliases.get(octets)
            if alias is not None:
                return alias
        return IP_MASK if any(_v4_internal(octets) for octets in readings) else None

    def _ipv4(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
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

    def _ipv4_dashed(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        # An address written with dashes or underscores inside a host name: after a name part (ip-, host_, app-)
        # or before a domain.
        named = start >= 3 and data[start - 1] in b"-_" and bytes(data[start - 3 : start - 1]).isalnum()
        domain = data[end : end + 1] == b"." and data[end + 1 : end + 2].isalpha()
        if not (named or domain):
            return None
        mask = self._v4_mask(data[start:end], b"_" if b"_" in data[start:end] else b"-")
        return (mask, end) if mask else None

    def _ipv4_hex_name(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        a, b, c, d = bytes.fromhex(data[start : start + 8].decode())
        mask = self._v4_mask(b"%d.%d.%d.%d" % (a, b, c, d))
        return (mask + data[start + 8 : end], end) if mask else None

    def _ipv6(self, data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        if data[start : start + 2] == b"::" and start > 0 and data[start - 1 : start] in _HEX_OR_COLON:
            return None  # the tail of a longer address
        core = data[start:end].strip(b"[]").split(b"%", 1)[0]
        try:
            address = ipaddress.IPv6Address(core.decode("ascii"))
        except ValueError:
            return None
        alias = self._v6_aliases.get(address)
        embedded = _v6_embedded_v4(address)
        if alias is None and embedded is not None:
            alias = self._v4_aliases.get(embedded)
        if alias is not None:
            return alias, end
        return (IP_MASK, end) if _v6_internal(address) else None

    @staticmethod
    def _rrn(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        digits = data[start:end]
        month, day = int(digits[2:4]), int(digits[4:6])
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return None
        return digits[:6] + b"-*******", end

    @staticmethod
    def _card(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        digits = data[start:end].replace(b"-", b"").replace(b" ", b"")
        if not (13 <= len(digits) <= 19) or _CARD_PREFIX.match(digits) is None or not _luhn(digits):
            return None
        return CARD_MASK, end

    @staticmethod
    def _phone(data: bytes, start: int, end: int) -> tuple[bytes, int] | None:
        number = data[start:end]
        head = re.match(rb"\+82[- ]?(?:\(0\))?1[016789]|01[016789]|0(?:2|50[0-9]|[3-7][0-9])", number)
        keep = head.group() if head else number[:3]
        return keep + b"-****-****", end

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
        emitted = begin  # data[:emitted] is decided
        pos = begin  # where the next search starts
        last = len(data) if limit is None else limit
        by_group = self._by_group
        size = len(data)
        find, which = self._find, self._which
        spans = self._spans if which is None else None
        search = self._regex.search if which is None else None
        view = memoryview(data)
        widest = self.widest
        # After a rejected candidate (reach > 0) the search looks only `reach` bytes past what the widest rule can
        # match: see the comment at the rejection below. Python's re reads the end of a cut text as the end of the
        # text, so the "re" engine (the baseline) always searches to the end.
        reach, cut = 0, size
        rejected_reach = REJECTED_REACH if spans is not None or which is not None else 0
        line_end = -1  # the end of the line where searches are cut short
        masks_on_line, counted_to = 0, -1  # masks on the line that ends at counted_to
        while pos < last:
            if reach:
                cut = pos + widest + reach
                if cut >= size or pos > line_end:
                    reach, cut = 0, size
            if find is not None and which is not None:
                start, end = find(data, pos, cut)[0]
            elif spans is not None:
                found = spans(data, pos, cut)
                start, end = found[0]
            else:
                assert search is not None
                match = search(data, pos)
                start, end = match.span() if match is not None else (-1, -1)
            if reach and (start == -1 or start > cut - widest):
                # Every match a rule can accept is at most `widest` long, and RE2 decides assertions at the cut
                # from the bytes after it: one that starts at or before cut - widest would have been found.
                pos = cut - widest + 1
                reach *= 2
                continue
            if start == -1:
                break
            if find is not None and which is not None:
                # The rules that match exactly this span, with one byte of context on each side (a line feed
                # stands in for the start or end of the text); the first of them is the one the search took.
                if start > 0 and end < size:
                    group = min(which(view[start - 1 : end + 1])) + 1
                else:
                    group = min(which(_with_context(data, start, end))) + 1
            elif spans is not None:
                group = found.index((start, end), 1)  # the one alternative that matched spans the whole match
            else:
                assert match is not None
                group = match.lastindex
            if start >= last:
                break
            name, handler, index, relaxed = by_group[group]
            if nested and (name in skip or (only is not None and name not in only)):
                relaxed = True  # let _decide pick among the rules allowed here, from this one on
            result = None if relaxed else handler(data, start, end)
            if (
                result is None
            ):  # the bounded rule decides; a candidate it rejects leaves the later rules a chance
                decided = self._decide(
                    data, start, index if relaxed else index + 1, only if nested else None, skip
                )
                if decided is None:
                    # Not sensitive: look again from the next byte, not after the candidate. The relaxed search
                    # finds candidates far longer than any rule accepts (a user name running to a ":" 50 KB on),
                    # and one from each next byte made a hostile line cost time quadratic in its length: the next
                    # searches, to the end of this line, look only a little past `widest`, further each time
                    # nothing is found.
                    pos = start + 1
                    if rejected_reach:
                        reach = rejected_reach
                        if line_end < start:
                            line_end = data.find(b"\n", start)
                            line_end = size if line_end == -1 else line_end
                    continue
                name, result = decided
            key = data.find(b"-----BEGIN", start + 1, result[1]) if name != "pem" else -1
            if key != -1 and _PEM_BEGIN_RE.match(data, key) and not _PEM_END.search(data, key, result[1]):
                # A value that runs into a private key block that goes on past it (IDENTIFIED BY '-----BEGIN …,
                # sk-…-----BEGIN): decide on the text before the block, which the PEM rule then masks to its END.
                decided = self._decide(data, start, index, only if nested else None, skip, endpos=key)
                if decided is None:
                    pos = start + 1
                    continue
                name, result = decided
            if reach:
                # Still on the line of a rejected candidate: such a candidate starts again wherever its rule's
                # start does (=-u=10.1.2.3 repeated, then a ":" far on), so a search to the end after each masked
                # address cost the rest of the line every time. No candidate runs past a line feed.
                reach = rejected_reach
            elif rejected_reach:
                # A candidate that never completes (=-u=10.1.2.3 repeated with no ":" at all) is never rejected,
                # yet keeps every search running to the end of the line: after MASKS_BEFORE_CUT masks on one line
                # (an access log has two or three) the rest of it is searched cut short as well.
                if start > counted_to:
                    counted_to = data.find(b"\n", start)
                    counted_to = size if counted_to == -1 else counted_to
                    masks_on_line = 0
                masks_on_line += 1
                if masks_on_line > MASKS_BEFORE_CUT:
                    reach, line_end = rejected_reach, counted_to
            replacement, end = result
            out.append(data[emitted:start])
            out.append(replacement)
            if findings is not None:
                is_open = name == "pem" and end == len(data) and _PEM_END.search(data, start) is None
                findings.append(Finding(name, start, end, replacement, is_open))
            emitted = pos = max(end, start + 1)
        stop = len(data) if limit is None else max(emitted, last)
        if not out and begin == 0 and stop == len(data):
            return data, stop
        out.append(data[emitted:stop])
        return b"".join(out), stop

    def _decide(
        self,
        data: bytes,
        start: int,
        index: int,
        only: frozenset[str] | None = None,
        skip: frozenset[str] = frozenset(),
        endpos: int | None = None,
    ) -> tuple[str, tuple[bytes, int]] | None:
        """The first rule from ``index`` on (of ``only``, not of ``skip``) whose bounded pattern matches at ``start``
        (before ``endpos``, when given) and whose handler masks."""
        rules = self._rules[index:]
        if only is not None or skip:
            rules = [rule for rule in rules if rule[0] not in skip and (only is None or rule[0] in only)]
        stop = len(data) if endpos is None else endpos
        for name, handler, bounded in rules:
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
        valid = ascii_only or _is_utf8(data)
        if ascii_only or (valid and _NEEDS_NORMALISING.search(data) is None):
            limit = None
            if partial:
                limit = len(data) - NORMALISE_MARGIN - self.window
                if limit <= begin:
                    return b"", begin
            return self._apply(data, begin, limit, findings)
        # RE2 reads UTF-8: a byte that is not part of a character (EUC-KR or CP949 from a legacy host, binary)
        # would end a value such as password=…, unmasked. Matched as "?" instead (one byte for one: the offsets
        # stay), a value runs on through it as it does for the bytes reference.
        normal = _Normalised(data if valid else _stray_bytes_marked(data))
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
            first = normal.to_original(finding.start, end=False)
            after = normal.to_original(finding.end, end=True)
            out.append(data[last:first])
            out.append(finding.replacement)
            last = after
            if findings is not None:
                findings.append(Finding(finding.rule, first, after, finding.replacement, finding.open))
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
            data = _ANSI.sub(b"", data)
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
                close = _PEM_END.search(data, _begin_end(data, found[-1].start))
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


#: The rules applied to what a credential rule keeps of its match (see :meth:`Redactor._kept`).
_IN_KEPT_LABELS = frozenset({"secret", "host_name", "ipv4_hex_name", "ipv4_dashed", "ipv4", "ipv6"})
#: Skipped in a Cookie header's parts that are not pairs: they are searched with every other rule.
_COOKIE_RULE = frozenset({"cookie"})

_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_TOKEN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+/=.~-")
_HEX_OR_COLON = frozenset(bytes([c]) for c in b"0123456789abcdefABCDEF:")


def _begin_end(data: bytes, start: int) -> int:
    """Where the private key BEGIN marker at ``start`` ends (the END search starts there)."""
    match = _PEM_BEGIN_RE.match(data, start)
    return match.end() if match else start


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
    CONTEXT = 16

    def __init__(self, redactor: Redactor, in_key_block: bool = False) -> None:
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
            for match in _ANSI.finditer(data, data.find(b"\x1b")):
                if match.start() >= undecided:
                    cut = match.start()
                    break
        self._raw = data[cut:]
        return _ANSI.sub(b"", data[:cut])

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
                close = _PEM_END.search(data, begin)
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
            self._buffer, self._begin = self._buffer[_begin_end(self._buffer, findings[-1].start) :], 0
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
        if b"PRIVATE KEY" not in window:  # PEM ("…PRIVATE KEY-----") and PGP ("…PRIVATE KEY BLOCK-----")
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
