"""The session, sans I/O: the agent's core (events in, effects out, :mod:`agent.session.core`), the task ledger's
records, the wire protocols (1 and the original v0, chosen once in :mod:`agent.session.wire`), signed commands and the
notices the agent sends on its own. Nothing here touches a socket, a file or a clock it was not handed."""
