"""Chat-facing text: one gettext message catalog, Korean by default (``ko``), English by config (``en``). Pure.

Every text a person reads in a chat room (answers, refusals, reports, approval prompts, the demo) comes from
``agent/locale/<language>/LC_MESSAGES/guardia.mo``; error codes, log lines and JSON keys stay English. Times are shown
in the configured timezone (default Asia/Seoul), the way a Korean office reads them: ``2026-11-28 14:05 KST``.

Use a :class:`Chat` (built once from the ``[chat]`` config): ``chat._("...")``, ``chat.ngettext(s, p, n)``,
``chat.when(datetime)``, ``chat.duration(seconds)``, ``chat.size(bytes)``. Message ids are the English texts.
"""

from __future__ import annotations

import datetime as dt
import gettext
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

DOMAIN = "guardia"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "ko"
DEFAULT_TIMEZONE = "Asia/Seoul"


def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog for ``language`` (the message ids themselves when it has none)."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


@dataclass(frozen=True)
class Chat:
    """How to speak to a room: language and timezone."""

    language: str = DEFAULT_LANGUAGE
    timezone: str = DEFAULT_TIMEZONE
    _t: gettext.NullTranslations = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_t", translations(self.language))

    def _(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def when(self, moment: dt.datetime | float) -> str:
        """``2026-11-28 14:05 KST``: minutes, the zone's abbreviation, no microseconds."""
        if not isinstance(moment, dt.datetime):
            moment = dt.datetime.fromtimestamp(moment, dt.UTC)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        local = moment.astimezone(ZoneInfo(self.timezone))
        return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or self.timezone)

    def duration(self, seconds: float) -> str:
        """Human units: ``0.4초``/``0.4 s``, ``1분 5초``/``1 min 5 s``, ``2시간 3분``/``2 h 3 min``."""
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
