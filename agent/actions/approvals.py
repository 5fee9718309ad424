"""Four eyes: deciding a held request (APPROVE / REJECT / CANCEL). Holding, releasing and expiring are the core's.

A held request is stored as a redacted view, a digest and its expiry (:class:`agent.session.ledger.HeldRequest`), announced with
TASK_PENDING_APPROVAL and a one-time code, and decided here exactly once, by a different user with the approver
role, before it expires, or withdrawn by its requester. A request is decided only in the room where it was asked. The
answer tells the core what to do: run the released request as the approver's, or answer it as rejected/cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.chat.i18n import Msg
from agent.session.answers import HeldSummary, Refused, Rejected, Released, Withdrawn
from agent.session.core import APPROVAL_CODE, Answer, Decided, Decision
from agent.session.protocol import Command, ErrorCode, Status

if TYPE_CHECKING:  # pragma: no cover
    from agent.session.ledger import HeldRequest
    from agent.state.audit import AuditLog
    from agent.state.outbox import Outbox


def _held_here(command: Command, ledger: Outbox) -> HeldRequest | Answer[Refused]:
    """The held request ``params.code`` names, if it was asked in this room; else the refusal to answer with.

    Another room gets the answer an unknown code gets, so it learns nothing of the request.
    """
    code = command.params.get("code")
    if not isinstance(code, str) or not APPROVAL_CODE.fullmatch(code):
        return Answer.fail(
            ErrorCode.INVALID_ARGUMENTS, Msg("params.code must be the 6-character approval code")
        )
    held = ledger.held_request(code.upper())
    if held is None or held.room_id != command.room_id:
        return Answer.fail(
            ErrorCode.APPROVAL_UNKNOWN, Msg("no request waits for that code (unknown, expired or decided)")
        )
    return held


def _claim(ledger: Outbox, held: HeldRequest) -> HeldRequest | Answer[Refused]:
    """Take the request out, once: a second decision of the same code is refused."""
    claimed = ledger.claim(held.code)
    if claimed is None:
        return Answer.fail(ErrorCode.APPROVAL_UNKNOWN, Msg("that request was already decided"))
    return claimed


def decide(
    command: Command, ledger: Outbox, audit: AuditLog, approve: bool, now: float
) -> Answer[Refused] | Decided:
    """APPROVE or REJECT a held request: a different user, with the approver role, before it expires, once."""
    approval = _held_here(command, ledger)
    if isinstance(approval, Answer):
        return approval
    decider = command.user
    if decider is None or decider == approval.requester:
        return Answer.fail(
            ErrorCode.UNAUTHORIZED, Msg("a request must be decided by someone other than its requester")
        )
    if approval.expires < now:
        return Answer.fail(ErrorCode.APPROVAL_EXPIRED, Msg("that request has expired"))
    claimed = _claim(ledger, approval)
    if isinstance(claimed, Answer):
        return claimed
    decision = "approved" if approve else "rejected"
    audit.append("approval_decided", task_id=claimed.task_id, requester=claimed.requester,
                 approver=decider, decision=decision)  # fmt: skip
    summary = _summary(claimed)
    if approve:
        released = Released(approved=claimed.task_id, **summary)
        return Decided(claimed, Decision.APPROVED, Answer(Status.SUCCESS, released))
    return Decided(
        claimed, Decision.REJECTED, Answer(Status.SUCCESS, Rejected(rejected=claimed.task_id, **summary))
    )


def cancel(command: Command, ledger: Outbox, audit: AuditLog) -> Answer[Refused] | Decided:
    """CANCEL. ``params``: ``code``. The requester withdraws their own held request; it is answered CANCELLED."""
    held = _held_here(command, ledger)
    if isinstance(held, Answer):
        return held
    if command.user is None or command.user != held.requester:
        return Answer.fail(ErrorCode.UNAUTHORIZED, Msg("only the person who asked can cancel a request"))
    claimed = _claim(ledger, held)
    if isinstance(claimed, Answer):
        return claimed
    audit.append("approval_cancelled", task_id=claimed.task_id, requester=claimed.requester)
    withdrawn = Withdrawn(cancelled=claimed.task_id, **_summary(claimed))
    return Decided(claimed, Decision.CANCELLED, Answer(Status.SUCCESS, withdrawn))


def _summary(held: HeldRequest) -> HeldSummary:
    """What an approve / reject / cancel answer says was released, rejected or withdrawn, beside its task id."""
    summary = held.summary
    return HeldSummary(runbook=summary.get("runbook"), hosts=summary.get("hosts") or [],
                       args=summary.get("args") or {}, requested_by=held.requester)  # fmt: skip
