"""The room's actions: the fixed table of what an operator may ask (:mod:`agent.actions.dispatch`, the entry
point), four-eyes decisions on held requests, the console commands (HELP, HISTORY, PENDING, CANCEL), and the
operator's day (:mod:`agent.actions.operations`: HOSTS, CHECKS, STOP, RERUN, ACK_CHECK, MUTE_CHECK, UNMUTE_CHECK)."""
