"""The agent's configuration: ``agent.toml`` validated by pydantic, secrets only from the environment.

The config file is found from ``--config`` or ``AGENT_CONFIG``. Without one the defaults apply, with paths relative
to the current directory, so every ``agent runbooks …`` command works from the project root with no flags. With
one, relative paths in it are relative to the file's own directory. A config that does not validate is refused
with every problem listed (:class:`~agent.errors.ConfigError`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from agent.errors import ConfigError, SigningError
from agent.manifest import TARGET_PATTERN, format_validation_error
from agent.signing import ApproverKey

CONFIG_ENV = "AGENT_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogConfig(_Section):
    #: Folder of ``NAME.toml`` manifests and ``NAME.sh`` scripts.
    dir: Path = Path("runbooks")
    #: The hash lock of that folder.
    lock: Path = Path("runbooks.lock")
    #: Public keys (``ssh-ed25519 AAAA… name``) whose signatures approve the lock. Empty: no signature needed.
    approver_keys: list[str] = Field(default_factory=list)
    #: How many distinct approver keys must have signed the lock when keys are configured.
    min_signatures: int = Field(default=1, ge=1)

    @field_validator("approver_keys")
    @classmethod
    def _keys_parse(cls, keys: list[str]) -> list[str]:
        for index, line in enumerate(keys):
            try:
                ApproverKey.parse(line)
            except SigningError as exc:
                raise ValueError(f"approver key #{index + 1}: {exc}") from None
        return keys

    def approvers(self) -> list[ApproverKey]:
        return [ApproverKey.parse(line) for line in self.approver_keys]


class AgentConfig(_Section):
    agent_id: Annotated[str, StringConstraints(pattern=TARGET_PATTERN)] = "guardia-agent"
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)

    #: Directory that relative paths are resolved against (the config file's folder, or the working directory).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.base_dir / relative


def load_config(path: Path | str | None = None) -> AgentConfig:
    """Load the configuration.

    Args:
        path: the TOML file; ``None`` takes ``$AGENT_CONFIG`` and, without it, the built-in defaults.

    Raises:
        ConfigError: the file is missing, not TOML, or does not validate; every problem is listed.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return AgentConfig()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    if "base_dir" in raw:
        raise ConfigError(str(path), ["base_dir: not a setting (paths are relative to the config file)"])
    try:
        return AgentConfig.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(str(path), format_validation_error(exc)) from None
