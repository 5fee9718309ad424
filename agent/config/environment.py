"""What the agent takes from outside its config file: the process environment and the secret files the config names.

An :class:`Environment` is made once, where the process starts (the command line, :class:`agent.shell.app.App`),
from the config and the environment it is given, and handed on: the relay's URL and token, the command key, every
secret to mask, what would stop ``agent run``. Nothing below the entry points reads ``os.environ`` for these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.catalog.manifest import RedactRuleModel
from agent.config.schema import (
    COMMAND_KEY_ENV,
    RELAY_TOKEN_ENV,
    RELAY_URL_ENV,
    SECRET_ENV_NAMES,
    AgentConfig,
    is_loopback_url,
    ws_url_problems,
)
from agent.errors import ConfigError
from agent.redaction import Redactor


@dataclass(frozen=True)
class Environment:
    """A config with the environment it runs in."""

    config: AgentConfig
    environ: Mapping[str, str]

    def command_key(self) -> str | None:
        """The key signed commands must carry (``$AGENT_COMMAND_KEY``); None: commands are not signed."""
        return self.environ.get(COMMAND_KEY_ENV) or None

    def relay_url(self) -> str:
        """Raises: ConfigError when neither $EXTERNAL_WS_URL nor relay.url is set."""
        env = self.environ
        url = env.get(RELAY_URL_ENV) or self.config.relay.url
        if not url:
            raise ConfigError("relay", [f"no relay URL: set ${RELAY_URL_ENV} or relay.url"])
        problems = ws_url_problems(url)
        if problems:
            source = f"${RELAY_URL_ENV}" if env.get(RELAY_URL_ENV) else "relay.url"
            raise ConfigError("relay", [f"{source}: {p}" for p in problems])
        if url.startswith("ws://") and not self.config.relay.allow_insecure and not is_loopback_url(url):
            raise ConfigError(
                "relay",
                [
                    "a plain ws:// URL is allowed for a loopback relay only (the token would travel in clear "
                    "text): use wss://, or set [relay] allow_insecure = true"
                ],
            )
        return url

    def relay_token(self) -> str | None:
        """The relay token from $AGENT_RELAY_TOKEN or relay.token_file (None: connect without one)."""
        env = self.environ
        if env.get(RELAY_TOKEN_ENV):
            return env[RELAY_TOKEN_ENV]
        if self.config.relay.token_file is None:
            return None
        try:
            return self.config.path(self.config.relay.token_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError("relay.token_file", [f"cannot read: {exc.strerror}"]) from None

    def problems(self) -> tuple[list[str], list[str]]:
        """What would stop ``agent run`` (errors) or is worth knowing (warnings), beyond the schema."""
        errors: list[str] = []
        warnings: list[str] = []
        try:
            self.relay_url()
        except ConfigError as exc:
            errors.extend(exc.problems)
        try:
            if self.relay_token() is None:
                warnings.append(
                    f"no relay token (${RELAY_TOKEN_ENV} or relay.token_file): the relay cannot check who dials"
                )
        except ConfigError as exc:
            errors.extend(f"{exc.source}: {p}" for p in exc.problems)
        files = [("catalog.dir", self.config.catalog.dir)]
        if self.config.inventory.known_hosts is not None:
            files.append(("inventory.known_hosts", self.config.inventory.known_hosts))
        for alias, host in self.config.inventory.hosts.items():
            key = host.key_file or self.config.inventory.key_file
            if key is not None:
                files.append((f"hosts.{alias}.key_file", key))
        files += [("redaction.secret_files", f) for f in self.config.redaction.secret_files]
        if self.config.relay.ca_file is not None:
            files.append(("relay.ca_file", self.config.relay.ca_file))
        for name, path in files:
            if not self.config.path(path).exists():
                errors.append(f"{name}: {self.config.path(path)} does not exist")
        return errors, warnings

    def secret_values(self) -> list[str]:
        """Every secret the agent was given: known and configured environment variables, secret files.

        Raises:
            ConfigError: a configured secret file cannot be read.
        """
        env = self.environ
        names = {*SECRET_ENV_NAMES, *self.config.redaction.secret_env}
        names |= {n for n in [self.config.inventory.passphrase_env] if n}
        names |= {h.passphrase_env for h in self.config.inventory.hosts.values() if h.passphrase_env}
        values = [env[name] for name in sorted(names) if env.get(name)]
        for file in [
            *self.config.redaction.secret_files,
            *([self.config.relay.token_file] if self.config.relay.token_file else []),
        ]:
            try:
                text = self.config.path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    "redaction.secret_files", [f"{file}: cannot read: {exc.strerror}"]
                ) from None
            if text:
                values.append(text)
        return values

    def redactor(self, manifest_rules: Sequence[RedactRuleModel] = ()) -> Redactor:
        """The redactor for everything the agent sends: its secrets, inventory aliases, configured rules.

        ``manifest_rules`` adds a runbook's own rules for that runbook's output.
        """
        return Redactor(
            secrets=self.secret_values(),
            known_hosts=self.config.inventory.known_addresses(),
            extra_rules=[r.rule() for r in (*self.config.redaction.rules, *manifest_rules)],
        )
