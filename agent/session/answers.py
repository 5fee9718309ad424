"""What each action answers: the ``data`` of its TASK_FINISHED, one type per action (docs/protocol.md's table). Pure.

Handlers build these and the type checker holds them to the shape (a key missing, misspelt or extra is an error);
:data:`ACTION_DATA` names the type of each action, and a test pins it to the protocol's actions. Nested rows (a
host's result, a check's, a runbook's entry) stay JSON objects: they are built by their own records' ``to_json``.
"""

from __future__ import annotations

from typing import Any, TypedDict

Row = dict[str, Any]


class RunData(TypedDict):
    """RUN_RUNBOOK: the run, one row per host, and where its whole output is kept."""

    runbook: str
    script_sha256: str
    status: str
    hosts: list[Row]
    output_ref: str
    page_lines: int


class RunbookList(TypedDict):
    """LIST_RUNBOOKS: the runbooks this room may run, with their parameters."""

    runbooks: list[Row]


class QueryRows(TypedDict):
    """FETCH_MES_QC: the day queried, at most ten rows, and how many matched (when the query counted them)."""

    date: str | None
    rows: list[Row]
    row_count: int
    truncated: bool
    total: int | None
    total_at_least: bool


class CheckResults(TypedDict):
    """CHECK_INTERNAL_WAS_STATUS, CHECK_DISK_SPACE, RUN_CHECK: the worst status, and each check's result."""

    status: str
    checks: dict[str, Row]


class OutputPage(TypedDict):
    """GET_OUTPUT: one page of a kept stream."""

    task_id: str
    host: str
    stream: str
    page: int
    pages: int
    lines: str


class HeldSummary(TypedDict):
    """What a decided request was: its runbook, hosts and arguments (redacted) and who asked."""

    runbook: Any
    hosts: list[Any]
    args: dict[str, Any]
    requested_by: str | None


class Released(HeldSummary):
    """APPROVE: the held request released (``approved``: its task id) and what it runs."""

    approved: str


class Rejected(HeldSummary):
    """REJECT: the held request that will not run."""

    rejected: str


class Withdrawn(HeldSummary):
    """CANCEL: the requester's own held request, withdrawn."""

    cancelled: str


class Help(TypedDict):
    """HELP: ``help`` holds this room's runbooks (``runbooks``) or how to call one (``runbook``)."""

    help: dict[str, Any]


class History(TypedDict):
    """HISTORY: this room's runs from the audit log, newest first."""

    history: list[Row]
    runbook: str | None
    limit: int


class Pending(TypedDict):
    """PENDING: this room's requests waiting for an approver."""

    pending: list[Row]


class Hosts(TypedDict):
    """HOSTS: the servers and groups this room may target (through the runbooks it may run)."""

    hosts: list[Row]
    groups: list[Row]


class Checks(TypedDict):
    """CHECKS: the configured checks, their schedules and their last state."""

    checks: list[Row]
    #: The summary schedules (``schedule_view``): when the checks are summed up.
    summaries: list[Row]


class Stopped(TypedDict):
    """STOP: the run that was told to stop, and who stopped it (its own TASK_FINISHED follows)."""

    stopped: str
    runbook: str
    hosts: list[str]
    stopped_by: str | None


class CheckAlert(TypedDict):
    """ACK_CHECK, MUTE_CHECK, UNMUTE_CHECK: the check, its last state, and what now holds of its alerts (who acknowledged it; muted
    until when, by whom; None: not so)."""

    check: str
    status: str | None
    acked_by: str | None
    muted_until: float | None
    muted_by: str | None


class Refused(TypedDict, total=False):
    """A FAIL answer's data: nothing, or the runbook a closed request was for."""

    runbook: Any


#: The ``data`` of any answer.
ActionData = (
    RunData
    | RunbookList
    | QueryRows
    | CheckResults
    | OutputPage
    | Released
    | Rejected
    | Withdrawn
    | Help
    | History
    | Pending
    | Hosts
    | Checks
    | Stopped
    | CheckAlert
    | Refused
)

#: The type of each action's successful answer, by the action's wire name.
ACTION_DATA: dict[str, type] = {
    "RUN_RUNBOOK": RunData,
    "LIST_RUNBOOKS": RunbookList,
    "FETCH_MES_QC": QueryRows,
    "CHECK_INTERNAL_WAS_STATUS": CheckResults,
    "CHECK_DISK_SPACE": CheckResults,
    "RUN_CHECK": CheckResults,
    "GET_OUTPUT": OutputPage,
    "APPROVE": Released,
    "REJECT": Rejected,
    "CANCEL": Withdrawn,
    "HELP": Help,
    "HISTORY": History,
    "PENDING": Pending,
    "HOSTS": Hosts,
    "CHECKS": Checks,
    "STOP": Stopped,
    "RERUN": RunData,
    "ACK_CHECK": CheckAlert,
    "MUTE_CHECK": CheckAlert,
    "UNMUTE_CHECK": CheckAlert,
}
