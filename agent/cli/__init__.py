"""The ``agent`` command line. The entry point is :func:`entry` (:mod:`agent.cli.root` builds the command group)."""

from agent.cli.root import entry, main, run_cli

__all__ = ["entry", "main", "run_cli"]
