"""Runbook manifests: the pydantic schema of ``runbooks/NAME.toml`` and the pure argv builder.

No I/O here. :func:`parse_manifest` turns manifest bytes into a :class:`Manifest` or raises
:class:`~agent.errors.InvalidManifest`; :func:`build_argv` turns a request's arguments into the argv list that
follows ``bash -s --`` on the host, or raises :class:`~agent.errors.InvalidArguments`.

Every accepted argument value becomes exactly one argv element. String values are refused when they hold a
control character (NUL included), start with ``-``, or exceed their length bound; without an explicit pattern
they must be printable ASCII. Manifest patterns are compiled with ``re.ASCII`` so ``\\d`` and ``\\w`` never admit
Unicode look-alikes (full-width digits, Cyrillic letters); a manifest widens that only by naming the characters.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

import tomli
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.chat.i18n import Msg, message_of
from agent.errors import InvalidArguments, InvalidManifest
from agent.redaction import ExtraRule, InvalidRule, check_rule

#: Runbook and parameter names: short, lower-case identifiers (also file stems).
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
#: Host aliases, group names and room ids as manifests may name them.
TARGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
#: What a string parameter accepts when its manifest gives no pattern: printable ASCII.
DEFAULT_STRING_PATTERN = r"[\x20-\x7e]*"
#: identifier-like values: host names, service names, file names without a directory.
IDENTIFIER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@:-]*"
#: Characters an argument never contains: controls, line/paragraph separators, and everything Unicode calls a
#: format character (Cf: bidi marks and overrides, zero-width, soft hyphen, tags, …), unassigned, private-use or a
#: surrogate (checked by category in :func:`_invisible`), plus the Default_Ignorable_Code_Point characters that are
#: not Cf (Hangul fillers, variation selectors, combining grapheme joiner, …) and the blank braille pattern.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164"
    "\ufe00-\ufe0f\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]"
)
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_INTEGER = re.compile(r"-?[0-9]{1,18}", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
RoleName = Literal["viewer", "operator", "approver"]
DEFAULT_ROLES: tuple[RoleName, ...] = ("operator",)
Target = Annotated[str, StringConstraints(pattern=TARGET_PATTERN)]
Flag = Annotated[str, StringConstraints(pattern=r"^--?[A-Za-z0-9][A-Za-z0-9-]{0,62}$")]


class _ParamModel(BaseModel):
    """Fields every parameter type shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    help: str = ""
    #: ``None``: required unless a default is given.
    required: bool | None = None
    #: Passed as ``FLAG VALUE`` (two argv elements) instead of positionally.
    flag: Flag | None = None

    @property
    def is_required(self) -> bool:
        default = getattr(self, "default", None)
        return self.required if self.required is not None else default is None

    @model_validator(mode="after")
    def _check_default(self) -> _ParamModel:
        default = getattr(self, "default", None)
        if default is None:
            return self
        if self.required:
            raise ValueError("a required parameter cannot have a default")
        try:
            self.convert(default)
        except ValueError as exc:
            raise ValueError(f"default is not a valid value: {exc}") from None
        return self

    def convert(self, value: object) -> str:  # pragma: no cover - every subclass overrides
        """Return the argv element for ``value`` or raise ``ValueError`` with a reason that omits the value."""
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        """A one-line description of what the parameter accepts."""
        raise NotImplementedError


def _check_text(value: object, *, min_length: int, max_length: int) -> str:
    if not isinstance(value, str):
        raise ValueError(Msg("must be a string"))
    if _CONTROL.search(value) or any(unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in value):
        raise ValueError(Msg("contains a control or invisible formatting character"))
    if value.startswith("-"):
        raise ValueError(Msg("must not start with '-'"))
    if len(value) < min_length:
        raise ValueError(
            Msg("must not be empty") if min_length == 1 else Msg("shorter than {n} characters", n=min_length)
        )
    if len(value) > max_length:
        raise ValueError(Msg("longer than {n} characters", n=max_length))
    return value


class StringParam(_ParamModel):
    type: Literal["string"]
    pattern: str | None = None
    min_length: int = Field(default=1, ge=0, le=4096)
    max_length: int = Field(default=256, ge=1, le=4096)
    default: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern, re.ASCII)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return pattern

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern or DEFAULT_STRING_PATTERN, re.ASCII)

    def convert(self, value: object) -> str:
        text = _check_text(value, min_length=self.min_length, max_length=self.max_length)
        if not self._regex.fullmatch(text):
            raise ValueError(
                Msg("must match {pattern}", pattern=self.pattern)
                if self.pattern
                else Msg("must be printable ASCII")
            )
        return text

    def describe(self) -> str:
        shape = f"matching {self.pattern}" if self.pattern else "printable ASCII"
        return f"string, {shape}, {self.min_length}-{self.max_length} characters"


class IdentifierParam(_ParamModel):
    """A host, service or file name: letters, digits and ``. _ @ : -``, not starting with a punctuation mark."""

    type: Literal["identifier"]
    max_length: int = Field(default=253, ge=1, le=1024)
    default: str | None = None

    def convert(self, value: object) -> str:
        text = _check_text(value, min_length=1, max_length=self.max_length)
        if not re.fullmatch(IDENTIFIER_PATTERN, text, re.ASCII):
            raise ValueError(Msg("must be letters, digits and . _ @ : - (starting with a letter or digit)"))
        return text

    def describe(self) -> str:
        return f"identifier (letters, digits, . _ @ : -), up to {self.max_length} characters"


class IntegerParam(_ParamModel):
    type: Literal["integer"]
    min: int | None = None
    max: int | None = None
    default: int | None = None

    @model_validator(mode="after")
    def _bounds(self) -> IntegerParam:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self

    def convert(self, value: object) -> str:
        if isinstance(value, bool):
            raise ValueError(Msg("must be an integer"))
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value):
            number = int(value)
        else:
            raise ValueError(Msg("must be an integer"))
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            raise ValueError(self._range_msg())
        return str(number)

    def _range_msg(self) -> Msg:
        if self.min is not None and self.max is not None:
            return Msg("must be an integer from {min} to {max}", min=self.min, max=self.max)
        if self.min is not None:
            return Msg("must be an integer of at least {min}", min=self.min)
        if self.max is not None:
            return Msg("must be an integer of at most {max}", max=self.max)
        return Msg("must be an integer")

    def _range(self) -> str:
        if self.min is not None and self.max is not None:
            return f"from {self.min} to {self.max}"
        if self.min is not None:
            return f"of at least {self.min}"
        if self.max is not None:
            return f"of at most {self.max}"
        return ""

    def describe(self) -> str:
        return f"integer {self._range()}".rstrip()


class EnumParam(_ParamModel):
    type: Literal["enum"]
    choices: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}$")]],
        Field(min_length=1),
    ]
    default: str | None = None

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise ValueError(Msg("must be one of: {choices}", choices=", ".join(self.choices)))
        return value

    def describe(self) -> str:
        return "one of: " + ", ".join(self.choices)


class DateParam(_ParamModel):
    """A calendar date written ``YYYY-MM-DD``."""

    type: Literal["date"]
    default: str | None = None

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise ValueError(Msg("must be a date written YYYY-MM-DD"))
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(Msg("must be a real calendar date (YYYY-MM-DD)")) from None

    def describe(self) -> str:
        return "date, YYYY-MM-DD"


Param = Annotated[
    StringParam | IdentifierParam | IntegerParam | EnumParam | DateParam,
    Field(discriminator="type"),
]


class RedactRuleModel(BaseModel):
    """An extra redaction rule (RE2 syntax), in a manifest's ``[[redact]]`` or the config's ``[[redaction.rules]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    replacement: Annotated[str, StringConstraints(max_length=64)] = "[REDACTED]"

    @model_validator(mode="after")
    def _compiles(self) -> RedactRuleModel:
        try:
            check_rule(self.rule())
        except InvalidRule as exc:
            raise ValueError(str(exc)) from None
        return self

    def rule(self) -> ExtraRule:
        return ExtraRule(self.name, self.pattern, self.replacement)


class Manifest(BaseModel):
    """What ``runbooks/NAME.toml`` declares about ``runbooks/NAME.sh``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\n\r]*$")]
    interpreter: Literal["bash", "sh"] = "bash"
    #: Hard time limit of one run on one host, in seconds.
    timeout: float = Field(default=60.0, gt=0, le=86400)
    #: Output kept per stream (stdout, stderr) after redaction, in bytes.
    max_output: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)
    #: True: the runbook changes the host; at most one run of it per host at a time.
    changes_state: bool = False
    #: True: the runbook starts a process meant to outlive it (a daemon), so nothing it started is killed when it
    #: ends (at its time limit only the script itself is stopped). False: every process the run started is gone
    #: when it ends, including those that left its process group or session.
    leaves_daemon: bool = False
    #: Host aliases or group names of the inventory this runbook may target.
    targets: Annotated[list[Target], Field(min_length=1)]
    #: Chat rooms that may trigger it; empty: only the command line on the agent PC.
    rooms: list[Target]
    #: Roles that may request it (when the config lists users and their roles).
    roles: Annotated[list[RoleName], Field(min_length=1)] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    #: True: a request waits until a different user with the approver role approves it (four eyes).
    requires_approval: bool = False
    params: list[Param] = Field(default_factory=list)
    #: Extra redaction rules for this runbook's output, on top of the built-in and configured ones.
    redact: list[RedactRuleModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _params_consistent(self) -> Manifest:
        names = [p.name for p in self.params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError("duplicate parameter names: " + ", ".join(duplicates))
        flags = [p.flag for p in self.params if p.flag]
        if len(flags) != len(set(flags)):
            raise ValueError("two parameters use the same flag")
        for param in self.params:
            if param.flag is None and not param.is_required and getattr(param, "default", None) is None:
                raise ValueError(
                    f"parameter {param.name!r} is positional and optional, so it needs a default "
                    "(or a flag) to keep later positions stable"
                )
        return self

    def argv_template(self) -> list[str]:
        """The argv shape for documentation: ``['MOUNT', '[--lines LINES]']``."""
        template: list[str] = []
        for param in self.params:
            shape = f"{param.flag} {param.name.upper()}" if param.flag else param.name.upper()
            template.append(shape if param.is_required else f"[{shape}]")
        return template


def parse_manifest(data: bytes, source: str) -> Manifest:
    """Parse and validate manifest bytes.

    Args:
        data: the TOML file's bytes.
        source: the file name, used in error messages.

    Returns:
        The validated manifest.

    Raises:
        InvalidManifest: with one problem per field at fault (``params.1.max: ...``).
    """
    try:
        raw = tomli.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidManifest(source, ["not UTF-8"]) from None
    except tomli.TOMLDecodeError as exc:
        raise InvalidManifest(source, [f"not valid TOML: {exc}"]) from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidManifest(source, format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> list[str]:
    """One ``field.path: message`` line per pydantic error, without echoing input values."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {message}")
    return lines


def build_argv(manifest: Manifest, args: Mapping[str, Any]) -> list[str]:
    """Turn request arguments into the runbook's argv, validating each one.

    Args:
        manifest: the runbook's validated manifest.
        args: parameter name → value as the request carried it (JSON types).

    Returns:
        The argv elements that follow ``bash -s --``: positional values and ``FLAG VALUE`` pairs, in the
        manifest's parameter order. Each accepted value is exactly one element.

    Raises:
        InvalidArguments: naming every parameter at fault and why; never containing a refused value.
    """
    problems: list[tuple[str, str]] = []
    known = {param.name for param in manifest.params}
    for key in args:
        if key not in known:
            shown = key if isinstance(key, str) and re.fullmatch(NAME_PATTERN, key) else "(invalid name)"
            problems.append((shown, Msg("unknown argument")))
    argv: list[str] = []
    for param in manifest.params:
        value = args.get(param.name, getattr(param, "default", None))
        if value is None:
            if param.is_required:
                problems.append((param.name, Msg("required")))
            continue
        try:
            element = param.convert(value)
        except ValueError as exc:
            problems.append((param.name, message_of(exc)))
            continue
        argv.extend([param.flag, element] if param.flag else [element])
    if problems:
        raise InvalidArguments(problems)
    return argv
