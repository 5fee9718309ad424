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

from agent.chat.i18n import N_, Msg, message_of
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

# Descriptions of the fields each parameter type declares for itself (with its own type), worded alike.
_TYPE_DESCRIPTION = "Which kind of parameter this table is."
_DEFAULT_DESCRIPTION = (
    "Used when the request gives none; must itself be a valid value. A positional parameter that is optional "
    "needs one, so that later positions stay put."
)
_MAX_LENGTH_DESCRIPTION = "The longest value accepted, in characters."


class _ParamModel(BaseModel):
    """Fields every parameter type shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(
        description="The argument's name (`--arg NAME=VALUE`); upper-case in the argv shape "
        "`agent runbooks show` prints."
    )
    help: str = Field(default="", description="Shown to the room as written.")
    required: bool | None = Field(
        default=None,
        description="Not set: required unless it has a default. A required parameter cannot have a default.",
    )
    flag: Flag | None = Field(
        default=None,
        description="Passed as two argv elements, `FLAG VALUE` (`--lines 100`), instead of positionally.",
    )

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

    def describe(self) -> Msg:  # pragma: no cover - every subclass overrides
        """A one-line description of what the parameter accepts (a message of the catalog: the room reads it in
        its language)."""
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
    type: Literal["string"] = Field(description=_TYPE_DESCRIPTION)
    pattern: str | None = Field(
        default=None,
        description="A regular expression the whole value must match, with `re.ASCII` (`\\d` is `[0-9]`, not "
        "full-width digits); without it, printable ASCII only. It must compile. To admit Hangul, say so: "
        "`[가-힣a-z]+`.",
    )
    min_length: int = Field(
        default=1, ge=0, le=4096, description="The shortest value accepted, in characters."
    )
    max_length: int = Field(default=256, ge=1, le=4096, description=_MAX_LENGTH_DESCRIPTION)
    default: str | None = Field(default=None, description=_DEFAULT_DESCRIPTION)

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

    def describe(self) -> Msg:
        if self.pattern:
            return Msg("text in the form {pattern}, {min}–{max} characters", pattern=self.pattern,
                       min=self.min_length, max=self.max_length)  # fmt: skip
        return Msg("printable ASCII text, {min}–{max} characters", min=self.min_length, max=self.max_length)


class IdentifierParam(_ParamModel):
    """A host, service or file name: letters, digits and ``. _ @ : -``, not starting with a punctuation mark."""

    type: Literal["identifier"] = Field(description=_TYPE_DESCRIPTION)
    max_length: int = Field(default=253, ge=1, le=1024, description=_MAX_LENGTH_DESCRIPTION)
    default: str | None = Field(default=None, description=_DEFAULT_DESCRIPTION)

    def convert(self, value: object) -> str:
        text = _check_text(value, min_length=1, max_length=self.max_length)
        if not re.fullmatch(IDENTIFIER_PATTERN, text, re.ASCII):
            raise ValueError(Msg("must be letters, digits and . _ @ : - (starting with a letter or digit)"))
        return text

    def describe(self) -> Msg:
        return Msg("a name of letters, digits and . _ @ : -, up to {max} characters", max=self.max_length)


#: (has a minimum, has a maximum) -> what an integer parameter accepts, and how a value outside is refused.
_INTEGER_RANGES = {
    (True, True): (N_("a whole number from {min} to {max}"), N_("must be an integer from {min} to {max}")),
    (True, False): (N_("a whole number of at least {min}"), N_("must be an integer of at least {min}")),
    (False, True): (N_("a whole number of at most {max}"), N_("must be an integer of at most {max}")),
    (False, False): (N_("a whole number"), N_("must be an integer")),
}


class IntegerParam(_ParamModel):
    type: Literal["integer"] = Field(description=_TYPE_DESCRIPTION)
    min: int | None = Field(default=None, description="The smallest value accepted.")
    max: int | None = Field(default=None, description="The largest value accepted.")
    default: int | None = Field(default=None, description=_DEFAULT_DESCRIPTION)

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
        return self._bounded(1)

    def describe(self) -> Msg:
        return self._bounded(0)

    def _bounded(self, which: int) -> Msg:
        """The description (0) or the refusal (1) of this parameter's range."""
        template = _INTEGER_RANGES[(self.min is not None, self.max is not None)][which]
        return Msg(template, min=self.min, max=self.max)


class EnumParam(_ParamModel):
    type: Literal["enum"] = Field(description=_TYPE_DESCRIPTION)
    choices: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}$")]],
        Field(min_length=1, description="The values accepted, exactly as written."),
    ]
    default: str | None = Field(default=None, description=_DEFAULT_DESCRIPTION)

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise ValueError(Msg("must be one of: {choices}", choices=", ".join(self.choices)))
        return value

    def describe(self) -> Msg:
        return Msg("one of {choices}", choices=", ".join(self.choices))


class DateParam(_ParamModel):
    """A calendar date written ``YYYY-MM-DD``."""

    type: Literal["date"] = Field(description=_TYPE_DESCRIPTION)
    default: str | None = Field(default=None, description=_DEFAULT_DESCRIPTION)

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise ValueError(Msg("must be a date written YYYY-MM-DD"))
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(Msg("must be a real calendar date (YYYY-MM-DD)")) from None

    def describe(self) -> Msg:
        return Msg("a date, YYYY-MM-DD")


Param = Annotated[
    StringParam | IdentifierParam | IntegerParam | EnumParam | DateParam,
    Field(discriminator="type"),
]


class RedactRuleModel(BaseModel):
    """An extra redaction rule (RE2 syntax), in a manifest's ``[[redact]]`` or the config's ``[[redaction.rules]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")] = Field(
        description="The rule's name."
    )
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="What to mask, in RE2 syntax; bound every repeat (`[0-9]{1,12}`, not `[0-9]+`)."
    )
    replacement: Annotated[str, StringConstraints(max_length=64)] = Field(
        default="[REDACTED]", description="What each match is replaced with."
    )

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

    description: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\n\r]*$")] = (
        Field(
            description="What the runbook does, in one line; shown to the room as written (the bundled runbooks use "
            "Korean, like the chat texts)."
        )
    )
    interpreter: Literal["bash", "sh"] = Field(
        default="bash",
        description="The shell the script is streamed to on the host, as `bash -s -- ARG…` (or `sh`); "
        "`agent runbooks lint` checks the script as that dialect.",
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="Seconds; the run is killed on the host after this (`TIMEOUT`, partial output kept).",
    )
    max_output: int = Field(
        default=64 * 1024,
        ge=256,
        le=16 * 1024 * 1024,
        description="Bytes of each stream (stdout, stderr) in the chat answer, after redaction; the config's "
        "`executor.max_output` caps it.",
    )
    changes_state: bool = Field(
        default=False,
        description="`true`: the runbook changes the host, and at most one run of it per host at a time.",
    )
    # `false` also sweeps the processes that left the run's process group or session.
    leaves_daemon: bool = Field(
        default=False,
        description="`true`: a process it starts may outlive the run, so nothing is swept when it ends and at its "
        "time limit only the script itself is stopped. `false`: every process the run started is killed.",
    )
    host_view: bool = Field(
        default=False,
        description="`true`: the script needs the host's own view of users and processes: setuid programs (`sudo`, "
        "`su`, `crontab`), other users' names on processes and files (`ps -o user`, `ls -l`), or signals to "
        "processes it did not start (`kill PID`, `pkill`). It is then never run in a PID namespace (where each of "
        "those fails or shows `nobody`), only contained by a subreaper or the marker sweep.",
    )
    targets: Annotated[list[Target], Field(min_length=1)] = Field(
        description="Host aliases or groups of the inventory it may run on."
    )
    rooms: list[Target] = Field(
        description="Chat rooms that may trigger it; `[]`: only the command line on the agent PC."
    )
    roles: Annotated[list[RoleName], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_ROLES),
        description="Who may request it (when `access.users` is set).",
    )
    requires_approval: bool = Field(
        default=False,
        description="`true`: a request is held until a second person with the approver role approves it "
        "(four eyes); refused on the command line.",
    )
    params: list[Param] = Field(
        default_factory=list,
        description="One `[[params]]` table per parameter, in argv order (see below).",
    )
    redact: list[RedactRuleModel] = Field(
        default_factory=list,
        description="Extra redaction rules for this runbook's output (`[[redact]]` tables, see below), on top of "
        "the built-in and configured ones.",
    )

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


def effective_args(manifest: Manifest, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a run would get, in the manifest's order: each one sent, and each default not sent (what an
    approver must see: ``mode=dry-run days=30`` it was not asked about). Call after :func:`build_argv` accepted
    ``args``."""
    values = {param.name: args.get(param.name, getattr(param, "default", None)) for param in manifest.params}
    return {name: value for name, value in values.items() if value is not None}


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
