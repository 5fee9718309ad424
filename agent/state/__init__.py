"""The agent's durable state on its own PC: the outbox of unacknowledged messages and the task ledger (SQLite,
:mod:`agent.state.outbox`, the entry point), the hash-chained audit log, and the private state folder they live in."""
