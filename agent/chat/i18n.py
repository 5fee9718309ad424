"""Chat-facing text: one gettext message catalog, Korean by default (``ko``), English by config (``en``). Pure.

Every text a person reads in a chat room (answers, refusals, reports, approval prompts, the demo) comes from
``agent/chat/locale/<language>/LC_MESSAGES/guardia.mo``; error codes, log lines and JSON keys stay English. Times are shown
in the configured timezone (default Asia/Seoul), the way a Korean office reads them: ``2026-11-28 14:05 KST``.

Two ways to say something:

* Where the room's :class:`Chat` is at hand (the renderers, the demo): ``chat._("...")``,
  ``chat.ngettext(s, p, n)``, ``chat.when(datetime)``, ``chat.duration(seconds)``, ``chat.size(bytes)``,
  ``chat.count(shown, total)``.
* Where it is not (errors, check results, reports made deep inside the agent): a :class:`Msg`, e.g.
  ``Msg("runbook {name} is not runnable: {reason}", name=..., reason=Msg("..."))``. A ``Msg`` *is* its English
  text (a ``str``; logs and ``error.message`` use it as is) and also carries its template and values, which travel
  in the JSON (``"i18n": {"id", "args"}``, see :meth:`Msg.to_json`) so the runtime can render ``payload.text`` in the
  room's language after redaction (:meth:`Chat.text`). ``nmsg(singular, plural, n, **args)`` for plurals.

Message ids are the English texts, with ``{name}`` placeholders (``str.format``, no attribute or index access).
``N_("...")`` marks a text for extraction without translating it (for tables). Babel extracts the keywords ``_``,
``N_``, ``Msg``, ``ngettext:1,2`` and ``nmsg:1,2`` (``scripts/i18n``).
"""

from __future__ import annotations

import datetime as dt
import gettext
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

DOMAIN = "guardia"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "ko"
DEFAULT_TIMEZONE = "Asia/Seoul"
#: The Babel keywords that mark a chat text (``pybabel extract -k ...``).
KEYWORDS = ("_", "N_", "Msg", "ngettext:1,2", "nmsg:1,2")


def N_(message: str) -> str:
    """Mark ``message`` for extraction; translate it later with ``chat._(message)``."""
    return message


def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog for ``language`` (the message ids themselves when it has none)."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


class _SafeFormatter(string.Formatter):
    """``str.format`` with plain ``{name}`` / ``{name:spec}`` / ``{name!r}`` fields only (no ``.attr``/``[i]``)."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise KeyError(field_name)
        return kwargs[field_name], field_name


_FORMATTER = _SafeFormatter()


def _fill(template: str, values: Mapping[str, Any]) -> str | None:
    """``template`` with ``values``; None when they do not fit (a missing name, a bad format spec)."""
    try:
        return _FORMATTER.vformat(template, (), dict(values))
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return None


class Msg(str):
    """A chat text not yet translated: its English text (the ``str`` value), template (msgid) and values.

    Values are strings, numbers, None, other :class:`Msg` (translated in turn), aware datetimes (shown with
    :meth:`Chat.when`; UTC in the English text) or lists of these (joined with ``"; "``). Never raises: values
    that do not fit the template give the template followed by the values.
    """

    id: str
    plural: str | None
    n: int | None
    args: dict[str, Any]

    def __new__(cls, id: str, /, **args: Any) -> Msg:
        return cls._make(id, None, None, args)

    @classmethod
    def _make(cls, id: str, plural: str | None, n: int | None, args: dict[str, Any]) -> Msg:
        template = plural if plural is not None and n != 1 else id
        english = _fill(template, {k: _english(v) for k, v in args.items()})
        if english is None:
            english = template + " " + repr(args)
        self = super().__new__(cls, english)
        self.id, self.plural, self.n, self.args = id, plural, n, args
        return self

    def to_json(self) -> dict[str, Any]:
        """``{"id": template, "args": {...}}`` (plus ``plural`` and ``n``): what :meth:`Chat.text` reads back."""
        data: dict[str, Any] = {
            "id": self.id,
            "args": {k: _value_json(v) for k, v in self.args.items()},
        }
        if self.plural is not None:
            data["plural"], data["n"] = self.plural, self.n
        return data


#: How a list value is joined (InvalidArguments' problems).
LIST_SEPARATOR = "; "


def _english(value: Any) -> Any:
    if isinstance(value, Msg):
        return str(value)
    if isinstance(value, dt.datetime):
        return _utc(value).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, list | tuple):
        return LIST_SEPARATOR.join(str(_english(v)) for v in value)
    return value


def _utc(moment: dt.datetime) -> dt.datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _value_json(value: Any) -> Any:
    """A value as JSON: a Msg as its JSON, a time as ``{"when": unix seconds}``, a list item by item."""
    if isinstance(value, Msg):
        return value.to_json()
    if isinstance(value, dt.datetime):
        return {"when": _utc(value).timestamp()}
    if isinstance(value, list | tuple):
        return [_value_json(v) for v in value]
    return value


def message_of(exc: BaseException) -> str:
    """An exception's message, as the :class:`Msg` it was raised with when it was (``str(exc)`` loses it)."""
    first = exc.args[0] if len(exc.args) == 1 else None
    return first if isinstance(first, Msg) else str(exc)


def nmsg(singular: str, plural: str, n: int, /, **args: Any) -> Msg:
    """A :class:`Msg` with a plural form; ``n`` picks the form (and is also a value, ``{n}``)."""
    return Msg._make(singular, plural, n, {"n": n, **args})


def i18n_json(message: str) -> dict[str, Any] | None:
    """The ``"i18n"`` value for a JSON field holding ``message`` (None for a plain string)."""
    return message.to_json() if isinstance(message, Msg) else None


@dataclass(frozen=True)
class Chat:
    """How to speak to a room: language and timezone."""

    language: str = DEFAULT_LANGUAGE
    timezone: str = DEFAULT_TIMEZONE
    _t: gettext.NullTranslations = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_t", translations(self.language))

    def _(self, message: str) -> str:
        """``message`` (an English msgid) in the room's language; a :class:`Msg` is rendered with its values."""
        if isinstance(message, Msg):
            return self.text(message)
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def text(self, message: Any, fallback: str | None = None) -> str:
        """Render a :class:`Msg`, or its JSON form (``{"id", "args"}``), in the room's language. Never raises.

        Anything else is shown as ``fallback`` if given, else as its ``str`` (a plain text from elsewhere).
        """
        if isinstance(message, Msg):
            message = message.to_json()
        if not isinstance(message, Mapping) or not isinstance(message.get("id"), str):
            return fallback if fallback is not None else ("" if message is None else str(message))
        args = message.get("args")
        values = {str(k): self._value(v) for k, v in (args.items() if isinstance(args, Mapping) else ())}
        plural, n = message.get("plural"), message.get("n")
        if isinstance(plural, str) and isinstance(n, int):
            template = self._t.ngettext(message["id"], plural, n)
        else:
            template = self._t.gettext(message["id"])
        filled = _fill(template, values)
        if filled is None:  # a translation that does not fit its values: the English text, never a crash
            filled = _fill(message["id"], values)
        if filled is None:
            return fallback if fallback is not None else message["id"]
        return filled

    def _value(self, value: Any) -> Any:
        if isinstance(value, list):
            return LIST_SEPARATOR.join(str(self._value(v)) for v in value)
        if isinstance(value, Mapping) and set(value) == {"when"} and isinstance(value["when"], int | float):
            try:
                return self.when(float(value["when"]))
            except (OverflowError, OSError, ValueError):
                return str(value["when"])
        if isinstance(value, Mapping):
            return self.text(value)
        return value

    def when(self, moment: dt.datetime | float) -> str:
        """``2026-11-28 14:05 KST``: minutes, the zone's abbreviation, no microseconds.

        A float is a Unix time; a naive datetime is taken as UTC.
        """
        if not isinstance(moment, dt.datetime):
            moment = dt.datetime.fromtimestamp(moment, dt.UTC)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        local = moment.astimezone(ZoneInfo(self.timezone))
        return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or self.timezone)

    def duration(self, seconds: float) -> str:
        """Human units: ``0.4초``/``0.4 s``, ``1분 5초``/``1 min 5 s``, ``2시간 3분``/``2 h 3 min``."""
        if not math.isfinite(seconds) or seconds < 0:
            seconds = 0.0
        if seconds < 60:
            return self._("{s:.1f} s").format(s=seconds)
        minutes, secs = divmod(round(seconds), 60)
        if minutes < 60:
            return self._("{m} min {s} s").format(m=minutes, s=secs)
        hours, minutes = divmod(minutes, 60)
        return self._("{h} h {m} min").format(h=hours, m=minutes)

    def size(self, n: int) -> str:
        """Bytes in human units (KiB, MiB, GiB), one decimal."""
        value = float(n)
        for unit in ("B", "KiB", "MiB", "GiB"):
            if value < 1024 or unit == "GiB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
        return f"{n} B"  # pragma: no cover

    def count(self, shown: int, total: int | None = None, at_least: bool = False) -> str:
        """An honest count of a list that may be cut.

        ``count(10, 15)`` → ``10건 표시 (전체 15건)``; ``count(10, 10, at_least=True)`` (the total is not known,
        only that there are more) → ``10건 표시 (전체 10건 이상)``; ``count(3, 3)`` or ``count(3)`` → ``3건``.
        """
        if total is None or (total <= shown and not at_least):
            return self.ngettext("{n} item", "{n} items", shown).format(n=shown)
        if at_least:
            return self._("{shown} shown (at least {total} in all)").format(shown=shown, total=total)
        return self._("{shown} shown ({total} in all)").format(shown=shown, total=total)
