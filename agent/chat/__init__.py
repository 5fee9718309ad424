"""Chat text: the message catalogs (gettext, Korean by default, :mod:`agent.chat.i18n`), the renderers of answers
and reports (:mod:`agent.chat.render`, the entry point) and of the room's console, and messenger-safe markup. Pure."""
