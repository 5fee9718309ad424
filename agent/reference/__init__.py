"""The reference side, not the agent: the relay (the executable form of docs/protocol.md), the operator client,
the demo and its embedded SSH host. Nothing under ``agent`` outside this package imports it, except the CLI
commands that start these tools (lazily, inside the command)."""
