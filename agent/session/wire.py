"""The protocol the agent speaks with its relay, as one object chosen at start: protocol 1, or the original ("v0").

Pure, no I/O. As websockets keeps its client and server variants behind one protocol interface, the runtime and the
link ask a :class:`WireProtocol` what to do instead of testing which protocol is configured:

* :meth:`~WireProtocol.outgoing`: the message to store and send for an agent message (None: this protocol has no
  such message, and :meth:`~WireProtocol.why_not_sent` says why, for the log);
* :meth:`~WireProtocol.frame`: the text that goes on the wire for a stored message;
* ``says_hello``, ``acknowledged``, ``holds_approvals``: what the relay on the other side can do.

:func:`wire_protocol` picks the object from ``[relay] protocol``; :mod:`agent.shell.app` calls it once and hands the
result to the runtime, the core (``holds_approvals``) and the link.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.session import protocol_v0
from agent.session.protocol import Event, Inbound
from agent.session.protocol_v0 import Addressing

if TYPE_CHECKING:
    from agent.config.schema import AgentConfig


@dataclass(frozen=True)
class WireProtocol:
    """Protocol 1 (docs/protocol.md): every message as the agent makes it, a HELLO, the relay's ACKs."""

    name: str = "1"
    #: The agent sends AGENT_HELLO on every connect.
    says_hello: bool = True
    #: The relay ACKs each message by msg_id; without ACKs, a ping answered after a frame counts as its delivery.
    acknowledged: bool = True
    #: A request can wait for a second person (the relay can show the approval code and carry APPROVE).
    holds_approvals: bool = True
    #: A stored final answer, sent again for a repeated task_id, is already in this protocol's shape.
    stores_wire_shape: bool = False
    #: Without ACKs: a message sent but not known to be read when the connection drops is sent again (False:
    #: counted delivered once written; ``[relay] v0_resend = "never"``).
    resends_unread: bool = True

    def inbound(self, frame: str | bytes, now: float) -> Inbound:
        """What the core reads for a frame from the relay (protocol 1: the frame itself)."""
        return Inbound(frame)

    def resume(self, tasks: Iterable[tuple[str, str | None]]) -> None:
        """After a restart, before the core settles them: the tasks the ledger kept, ``(task_id, packet JSON)``."""

    def carries(self, message: dict[str, Any]) -> bool:
        """False when this protocol has no such message (asked before it is redacted and rendered for nothing)."""
        return True

    def outgoing(
        self, message: dict[str, Any], action: str | None, redact: Callable[[Any], Any]
    ) -> dict[str, Any] | None:
        """The message to store for the relay, or None when this protocol has no such message. ``message`` is
        redacted; whatever the result takes from elsewhere (an id, an action as sent) passes through ``redact``."""
        return message

    def why_not_sent(self, message: dict[str, Any]) -> tuple[int, str]:
        """``(log level, text)`` for a message :meth:`outgoing` did not send."""
        return logging.DEBUG, f"{message.get('event')} is not sent"

    def frame(self, body: str) -> str:
        """The text sent on the wire for a stored message."""
        return body


@dataclass(frozen=True)
class OriginalProtocol(WireProtocol):
    """The original GUARDiA relay's protocol (v0, :mod:`agent.session.protocol_v0`): one TASK_FINISHED per command."""

    name: str = "v0"
    says_hello: bool = False
    acknowledged: bool = False
    holds_approvals: bool = False
    stores_wire_shape: bool = True
    #: ``[relay] v0_reports``: push REPORTs in the TASK_FINISHED shape.
    reports: bool = False
    #: The relay's ids of each command, by the agent's own task key (v0 ids are data, not keys).
    addressing: Addressing = field(default_factory=Addressing, compare=False)

    def inbound(self, frame: str | bytes, now: float) -> Inbound:
        return self.addressing.inbound(frame, now)

    def resume(self, tasks: Iterable[tuple[str, str | None]]) -> None:
        self.addressing.resume(tasks)

    def carries(self, message: dict[str, Any]) -> bool:
        event = message.get("event")
        return event == Event.TASK_FINISHED.value or (event == Event.REPORT.value and self.reports)

    def outgoing(
        self, message: dict[str, Any], action: str | None, redact: Callable[[Any], Any]
    ) -> dict[str, Any] | None:
        final = message.get("event") == Event.TASK_FINISHED.value
        address = self.addressing.address(message.get("task_id"), final)
        return protocol_v0.adapt(message, action, self.reports, address, redact)

    def why_not_sent(self, message: dict[str, Any]) -> tuple[int, str]:
        event = message.get("event")
        if event == Event.TASK_FINISHED.value:
            return (
                logging.WARNING,
                f"protocol v0: the answer of task {message.get('task_id')} cannot be addressed: the agent does not"
                " know the relay's ids for it (a frame that was not a JSON object, or a task kept over a restart"
                " without its packet)",
            )
        if event == Event.REPORT.value:
            kind = message.get("payload", {}).get("kind")
            return (
                logging.INFO,
                f"protocol v0 sends no reports (relay.v0_reports is off): {kind} report not sent",
            )
        return logging.DEBUG, f"protocol v0 has no {event}; not sent (task {message.get('task_id')})"

    def frame(self, body: str) -> str:
        return protocol_v0.wire(body)


def wire_protocol(config: AgentConfig) -> WireProtocol:
    """The protocol ``[relay] protocol`` names."""
    if config.relay.protocol == "v0":
        return OriginalProtocol(
            reports=config.relay.v0_reports, resends_unread=config.relay.v0_resend != "never"
        )
    return WireProtocol()
