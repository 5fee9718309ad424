"""Four eyes: deciding a held request (APPROVE / REJECT). The holding, releasing and expiring are the core's.

A held request is stored as a redacted view, a digest and its expiry (:class:`agent.ledger.HeldRequest`), announced with
TASK_PENDING_APPROVAL and a one-time code, and decided here exactly once, by a different user with the approver
role, before it expires. The answer tells the core what to do: run the released request as the approver's, or
answer it as rejected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.console import decision_data
from agent.core import APPROVAL_CODE, Answer
from agent.i18n import Msg
from agent.protocol import Command, ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.audit import AuditLog
    from agent.outbox import Outbox


def decide(command: Command, ledger: Outbox, audit: AuditLog, approve: bool, now: float) -> Answer:
    """APPROVE or REJECT a held request: a different user, with the approver role, before it expires, once."""
    code = command.params.get("code")
    if not isinstance(code, str) or not APPROVAL_CODE.fullmatch(code):
        return Answer.fail(
            ErrorCode.INVALID_ARGUMENTS, Msg("params.code must be the 6-character approval code")
        )
    approval = ledger.held_request(code.upper())
    # A request is decided in the room where it was asked, nowhere else: another room gets the answer an unknown
    # code gets, so it learns nothing of the request.
    if approval is None or approval.room_id != command.room_id:
        return Answer.fail(
            ErrorCode.APPROVAL_UNKNOWN, Msg("no request waits for that code (unknown, expired or decided)")
        )
    decider = command.user
    if decider is None or decider == approval.requester:
        return Answer.fail(
            ErrorCode.UNAUTHORIZED, Msg("a request must be decided by someone other than its requester")
        )
    if approval.expires < now:
        return Answer.fail(ErrorCode.APPROVAL_EXPIRED, Msg("that request has expired"))
    claimed = ledger.claim(approval.code)
    if claimed is None:
        return Answer.fail(ErrorCode.APPROVAL_UNKNOWN, Msg("that request was already decided"))
    decision = "approved" if approve else "rejected"
    audit.append("approval_decided", task_id=claimed.task_id, requester=claimed.requester,
                 approver=decider, decision=decision)  # fmt: skip
    data = decision_data(decision, claimed)
    if approve:
        return Answer(Status.SUCCESS, data, release=claimed)
    return Answer(Status.SUCCESS, data, rejected=claimed)
