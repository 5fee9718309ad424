"""The agent's exception tree: one root, typed leaves, each also the builtin it means.

    AgentError
    ├── ConfigError (ValueError)            a config file or environment that cannot be used
    ├── CatalogError                        the runbook catalog as a whole
    │   ├── InvalidManifest (ValueError)    a manifest that does not parse or validate
    │   ├── InvalidLock (ValueError)        a lock file that does not parse
    │   └── RunbookNotRunnable (LookupError) unknown, unverified or tampered runbook
    ├── InvalidArguments (ValueError)       request arguments that do not match the runbook's schema
    ├── RequestRefused                      a run request the runbook or the inventory does not allow
    │   ├── UnknownHost (LookupError)       a host or group name the inventory does not know
    │   ├── HostNotAllowed (PermissionError) a host the runbook may not target
    │   ├── RoomNotAllowed (PermissionError) a chat room that may not trigger the runbook
    │   └── NotAuthorized (PermissionError) a chat user whose roles do not allow the request
    └── SigningError (ValueError)           an approver key that cannot be read or used

Messages never contain the raw value that was refused: they are meant to be shown to an operator in a chat room
outside the network. The refusals are raised with a :class:`agent.chat.i18n.Msg` (English as ``str(exc)``, translated in
the room from ``exc.msg``).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.chat.i18n import Msg


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""

    @property
    def msg(self) -> str:
        """The message as raised: a :class:`~agent.chat.i18n.Msg` the room sees translated, when it is one."""
        first = self.args[0] if len(self.args) == 1 else None
        return first if isinstance(first, Msg) else str(self)


class ConfigError(AgentError, ValueError):
    """The configuration cannot be used; ``problems`` lists every problem found, one line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class CatalogError(AgentError):
    """A problem with the runbook catalog."""


class InvalidManifest(CatalogError, ValueError):
    """A runbook manifest that does not parse or validate; ``problems`` name the field at fault."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class InvalidLock(CatalogError, ValueError):
    """The lock file does not parse or has the wrong shape."""


class RunbookNotRunnable(CatalogError, LookupError):
    """A runbook that may not run: unknown, failing verification, or changed on disk since it was locked."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(Msg("runbook {name!r} is not runnable: {reason}", name=name, reason=reason))


class InvalidArguments(AgentError, ValueError):
    """Request arguments refused by the runbook's parameter schema.

    ``problems`` is a list of ``(param, reason)``; neither part contains the refused value.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            Msg(
                "{problems}", problems=[Msg("{param}: {reason}", param=p, reason=r) for p, r in self.problems]
            )
        )


class RequestRefused(AgentError):
    """A run request refused before anything runs; the message is safe to show in the room."""


class UnknownHost(RequestRefused, LookupError):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(Msg("unknown host or group: {names}", names=", ".join(self.names)))


class HostNotAllowed(RequestRefused, PermissionError):
    def __init__(self, runbook: str, hosts: Sequence[str]) -> None:
        self.runbook = runbook
        self.hosts = list(hosts)
        super().__init__(
            Msg("runbook {runbook!r} may not run on: {hosts}", runbook=runbook, hosts=", ".join(self.hosts))
        )


class RoomNotAllowed(RequestRefused, PermissionError):
    def __init__(self, runbook: str) -> None:
        self.runbook = runbook
        super().__init__(Msg("runbook {runbook!r} may not be run from this room", runbook=runbook))


class NotAuthorized(RequestRefused, PermissionError):
    """The user is unknown or lacks the role; the message says which role was needed."""


class SigningError(AgentError, ValueError):
    """An approver key that cannot be loaded, or a signature that cannot be made."""
