"""Planning a run: from a request to exactly what will execute where. Pure, no I/O.

:func:`plan_run` checks a request against the runbook's manifest and the inventory (room, hosts, arguments) and
returns a :class:`RunPlan`; :func:`agent.runs.remote.remote_command` builds the command line the host's sshd will run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.catalog.manifest import TARGET_PATTERN, build_argv
from agent.chat.i18n import Msg
from agent.config.schema import InventoryConfig
from agent.errors import HostNotAllowed, InvalidArguments, RoomNotAllowed, UnknownHost

if TYPE_CHECKING:  # pragma: no cover
    from agent.catalog.store import VerifiedRunbook


@dataclass(frozen=True)
class RunPlan:
    """A validated request: this runbook's verified bytes, with this argv, on these host aliases."""

    runbook: VerifiedRunbook
    argv: list[str]
    hosts: list[str]

    @property
    def name(self) -> str:
        return self.runbook.name


def _shown(name: object) -> str:
    return name if isinstance(name, str) and re.fullmatch(TARGET_PATTERN, name) else "(invalid name)"


def plan_run(
    runbook: VerifiedRunbook,
    inventory: InventoryConfig,
    hosts: Sequence[Any],
    args: Mapping[str, Any],
    room: str | None,
) -> RunPlan:
    """Validate a run request.

    Args:
        runbook: what :meth:`Catalog.load` just returned.
        inventory: the configured hosts and groups.
        hosts: host aliases or group names, as requested.
        args: parameter values, as requested.
        room: the chat room the request came from; ``None`` for the command line on the agent PC.

    Returns:
        The plan.

    Raises:
        RoomNotAllowed: the room may not trigger this runbook.
        UnknownHost: a requested name is not in the inventory (or none was given).
        HostNotAllowed: a requested host is outside the runbook's targets.
        InvalidArguments: the arguments do not match the parameter schema.
    """
    manifest = runbook.manifest
    if room is not None and room not in manifest.rooms:
        raise RoomNotAllowed(runbook.name)
    if not isinstance(hosts, list | tuple) or not hosts:
        raise UnknownHost(["(no host given)"])
    unknown = [_shown(h) for h in hosts if not isinstance(h, str) or not inventory.resolve([h])]
    if unknown:
        raise UnknownHost(unknown)
    resolved = inventory.resolve(list(hosts))
    allowed = set(inventory.resolve(manifest.targets))
    outside = [h for h in resolved if h not in allowed]
    if outside:
        raise HostNotAllowed(runbook.name, outside)
    if not isinstance(args, Mapping):
        raise InvalidArguments([("args", Msg("must be an object of parameter names to values"))])
    return RunPlan(runbook=runbook, argv=build_argv(manifest, args), hosts=resolved)
