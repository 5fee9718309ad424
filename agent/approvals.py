"""Four eyes: requests held until a different user with the approver role approves them.

A held request is stored (SQLite, with the original packet and when it expires), announced with
TASK_PENDING_APPROVAL and a one-time code, and released exactly once by APPROVE — or cancelled by REJECT, or expired
by a timer. Held requests and their timers survive a restart of the agent.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from agent.dispatch import Answer
from agent.outbox import Approval, TaskState
from agent.protocol import Command, ErrorCode, Status, finished_message, parse_frame, pending_message

if TYPE_CHECKING:  # pragma: no cover
    from agent.service import AgentService


class Approvals:
    def __init__(self, service: AgentService) -> None:
        self.service = service
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def hold(self, command: Command, summary: dict[str, Any]) -> None:
        """Keep a request until a second person approves it; tell the room what would run and the code."""
        window = self.service.config.access.approval_window
        approval = Approval(
            code=_approval_code(), task_id=command.task_id, room_id=command.room_id, requester=command.user,
            command=json.dumps(command.raw), summary=summary, expires=time.time() + window,
        )  # fmt: skip
        self.service.outbox.add_approval(approval)
        self.service.outbox.set_task_state(command.task_id, TaskState.PENDING)
        self.service.audit.append(
            "approval_requested", task_id=command.task_id, requester=command.user, request=summary
        )
        self.service.emit(pending_message(command, {"code": approval.code, **summary, "requested_by": command.user,
                                            "expires_in": round(window)}))  # fmt: skip
        self.arm(approval)

    def arm(self, approval: Approval) -> None:
        delay = max(0.0, approval.expires - time.time())
        self._expiry[approval.code] = asyncio.get_running_loop().call_later(delay, self.expire, approval.code)

    def expire(self, code: str) -> None:
        self._expiry.pop(code, None)
        approval = self.service.outbox.claim_approval(code)
        if approval is None:
            return
        minutes = self.service.config.access.approval_window / 60
        self.service.audit.append("approval_expired", task_id=approval.task_id, requester=approval.requester)
        self._close(
            approval,
            ErrorCode.APPROVAL_EXPIRED,
            f"nobody approved it within {minutes:g} min; request it again",
        )

    def _close(self, approval: Approval, code: ErrorCode, message: str) -> None:
        """The held request's one TASK_FINISHED, when it will not run."""
        data = {"runbook": approval.summary.get("runbook")}
        final = finished_message(
            approval.task_id, approval.room_id, Status.FAIL, data=data, error=(code, message)
        )
        self.service.emit_result(approval.task_id, final)

    async def decide(self, command: Command, approve: bool) -> Answer:
        """APPROVE or REJECT a held request: a different user, with the approver role, before it expires, once."""
        code = command.params.get("code")
        if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z2-9]{6}", code):
            return Answer.fail(
                ErrorCode.INVALID_ARGUMENTS, "params.code must be the 6-character approval code"
            )
        approval = self.service.outbox.approval(code.upper())
        if approval is None:
            return Answer.fail(
                ErrorCode.APPROVAL_UNKNOWN, "no request waits for that code (unknown, expired or decided)"
            )
        decider = command.user
        if decider is None or decider == approval.requester:
            return Answer.fail(
                ErrorCode.UNAUTHORIZED, "a request must be decided by someone other than its requester"
            )
        if approval.expires < time.time():
            self.expire(approval.code)
            return Answer.fail(ErrorCode.APPROVAL_EXPIRED, "that request has expired")
        if self.service.outbox.claim_approval(approval.code) is None:
            return Answer.fail(ErrorCode.APPROVAL_UNKNOWN, "that request was already decided")
        timer = self._expiry.pop(approval.code, None)
        if timer is not None:
            timer.cancel()
        decision = "approved" if approve else "rejected"
        self.service.audit.append("approval_decided", task_id=approval.task_id, requester=approval.requester,
                          approver=decider, decision=decision)  # fmt: skip
        if approve:
            original = parse_frame(approval.command)
            assert isinstance(original, Command)
            self.service.outbox.set_task_state(approval.task_id, TaskState.RUNNING)
            self.service.spawn(original, approved_by=decider)
        else:
            self._close(approval, ErrorCode.REJECTED, f"rejected by {decider}")
        return Answer(
            Status.SUCCESS, {decision: approval.task_id, "runbook": approval.summary.get("runbook")}
        )


def _approval_code() -> str:
    """Six characters from an alphabet without look-alikes (no 0/O, 1/I)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(6))
