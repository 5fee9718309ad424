"""Messenger-safe text pieces shared by the chat renderers (:mod:`agent.chat.render`, :mod:`agent.chat.console`). Pure.

Whatever came from a host or a user is neutralised before it is put in a chat text: mentions (``@all``), links and
code fences cannot trigger anything.
"""

from __future__ import annotations

import re
from typing import Any

from agent.chat.i18n import N_, Chat

ZWSP = "\u200b"
MARKS = {"SUCCESS": "✅", "OK": "✅", "FAIL": "❌", "DOWN": "🔴", "ERROR": "⚠️", "WARN": "🟡", "TIMEOUT": "⏱️",
         "UNREACHABLE": "📵", "REFUSED": "⛔", "STOPPED": "🛑"}  # fmt: skip
#: The word a person reads for each wire status (the status itself stays in the JSON).
STATUS_WORDS = {
    "SUCCESS": N_("succeeded"),
    "FAIL": N_("failed"),
    "TIMEOUT": N_("timed out"),
    "UNREACHABLE": N_("unreachable"),
    "REFUSED": N_("refused"),
    "ERROR": N_("error"),
    "OK": N_("OK"),
    "WARN": N_("warning"),
    "DOWN": N_("down"),
    "STOPPED": N_("stopped"),
}


#: An ``@`` a messenger could read as a mention: one with a name right after it (a lone ``@`` stays as it is).
_MENTION = re.compile(r"@(?=\S)")
#: A backtick that another follows: breaking every such pair leaves no code fence (```), however long the run.
_FENCE = re.compile(r"`(?=`)")


def neutralize(text: str) -> str:
    """Break mentions, links and markup so a messenger shows them as plain text."""
    text = _FENCE.sub("`" + ZWSP, text)
    return _MENTION.sub("@" + ZWSP, text).replace("://", ":" + ZWSP + "//").replace("<", "<" + ZWSP)


def status_word(chat: Chat, status: Any) -> str:
    """The word a person reads for a wire status, in the room's language (an unknown one as it is, neutralised)."""
    word = STATUS_WORDS.get(str(status))
    return chat._(word) if word else neutralize(str(status))
