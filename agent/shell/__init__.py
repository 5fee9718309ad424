"""The shell around the pure session: the asyncio runtime that carries out the core's effects
(:mod:`agent.shell.runtime`), the link to the relay, logging, process start-up, the one prepare step that checks a
config before the agent runs, and the wiring that builds it all (:mod:`agent.shell.app`, the entry point)."""
