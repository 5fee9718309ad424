"""Messenger-safe text pieces shared by the chat renderers (:mod:`agent.render`, :mod:`agent.render_console`). Pure.

Whatever came from a host or a user is neutralised before it is put in a chat text: mentions (``@all``), links and
code fences cannot trigger anything.
"""

from __future__ import annotations

ZWSP = "\u200b"
MARKS = {"SUCCESS": "✅", "OK": "✅", "FAIL": "❌", "DOWN": "🔴", "ERROR": "⚠️", "WARN": "🟡", "TIMEOUT": "⏱️",
         "UNREACHABLE": "📵", "REFUSED": "⛔"}  # fmt: skip


def neutralize(text: str) -> str:
    """Break mentions, links and markup so a messenger shows them as plain text."""
    return (
        text.replace("```", "``" + ZWSP + "`")
        .replace("@", "@" + ZWSP)
        .replace("://", ":" + ZWSP + "//")
        .replace("<", "<" + ZWSP)
    )
