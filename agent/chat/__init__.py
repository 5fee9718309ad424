"""Chat text: the message catalogs (gettext, Korean by default, :mod:`agent.chat.i18n`), the renderers of answers
and reports (:mod:`agent.chat.render`, the entry point), of the room's console and of the operator's day (servers,
checks in words, stops, alerts: :mod:`agent.chat.operations`), and messenger-safe markup. Pure."""
