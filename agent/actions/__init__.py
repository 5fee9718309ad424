"""The room's actions: the fixed table of what an operator may ask (:mod:`agent.actions.dispatch`, the entry
point), four-eyes decisions on held requests, and the console commands (HELP, HISTORY, PENDING, CANCEL)."""
