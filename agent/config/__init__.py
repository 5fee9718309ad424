"""The agent's configuration: the validated schema of ``agent.toml`` (:mod:`agent.config.schema`, the entry point) and
the environment files that hold its secrets."""
