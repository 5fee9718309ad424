"""The agent core, without servers: events in, effects out, against an in-memory ledger."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.actions.dispatch import HANDLERS
from agent.session.answers import ACTION_DATA
from agent.session.command_auth import sign
from agent.session.core import (
    Acked,
    AgentCore,
    Answer,
    ArmTimer,
    Audit,
    CancelTimer,
    Closing,
    Decided,
    Decision,
    Effect,
    Event,
    FrameReceived,
    Hold,
    Send,
    Started,
    StartRun,
    TaskEnded,
    TimerFired,
    approval_timer,
)
from agent.session.ledger import (
    BeginTask,
    DropHeld,
    HeldRequest,
    KeepHeld,
    RecordNonce,
    SetTaskState,
    Store,
    TaskRecord,
    TaskState,
    check_transition,
)
from agent.session.protocol import Action, Command, Status, parse_frame

NOW = 1_800_000_000.0


class MemoryLedger:
    """The ledger over dicts, as the SQLite outbox behaves: what the core reads, and :meth:`apply` for its writes."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskRecord] = {}
        self.kept: dict[str, HeldRequest] = {}
        self.nonces: set[str] = set()

    def task(self, task_id: str) -> TaskRecord | None:
        return self.tasks.get(task_id)

    def unfinished_tasks(self) -> list[TaskRecord]:
        return [r for r in self.tasks.values() if r.state in (TaskState.QUEUED, TaskState.RUNNING)]

    def nonce_seen(self, nonce: str, now: float, keep: float) -> bool:
        return nonce in self.nonces

    def held(self) -> list[HeldRequest]:
        return list(self.kept.values())

    def held_request(self, code: str) -> HeldRequest | None:
        return self.kept.get(code)

    def apply(self, write: Store) -> None:
        """What the runtime does with a write the core returned."""
        match write:
            case BeginTask(task_id, room_id, command):
                assert task_id not in self.tasks, "the core begins a task it has seen"
                self.tasks[task_id] = TaskRecord(task_id, TaskState.QUEUED, room_id, None, command)
            case SetTaskState(task_id, state, approved_by):
                record = self.tasks[task_id]
                check_transition(
                    task_id, record.state, state
                )  # an illegal one is a bug in the core: fail the test
                self.tasks[task_id] = replace(
                    record, state=state, approved_by=approved_by or record.approved_by
                )
            case KeepHeld(request):
                self.kept[request.code] = request
            case DropHeld(code):
                del self.kept[code]
            case RecordNonce(nonce, _, _):
                self.nonces.add(nonce)

    def begin_task(self, task_id: str, room_id: str | None) -> None:
        """A task the runtime had begun before (a test's setup)."""
        self.apply(BeginTask(task_id, room_id))

    def hold(self, request: HeldRequest) -> None:
        """A request held before (a test's setup)."""
        self.apply(KeepHeld(request))

    def claim(self, code: str) -> HeldRequest:
        """What an approver's APPROVE does in its action (agent/actions/approvals.py): take the request out."""
        return self.kept.pop(code)

    def finish(self, task_id: str, message: dict[str, Any]) -> None:
        """What the runtime does for a Send with a task id."""
        record = self.tasks.get(task_id) or TaskRecord(task_id, TaskState.FINISHED, None, None)
        self.tasks[task_id] = replace(record, state=TaskState.FINISHED, result=message)


class Driven:
    """The core as the runtime drives it: each event's ledger writes are applied, in order, before the next event.
    Everything else is the core's own (``core.closing``, ``core.may_change_state``)."""

    def __init__(self, core: AgentCore, ledger: MemoryLedger) -> None:
        self.core, self.ledger = core, ledger

    def handle(self, event: Event) -> list[Effect]:
        effects = self.core.handle(event)
        for effect in effects:
            if isinstance(effect, Store):
                self.ledger.apply(effect)
        return effects

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def driven(ledger: MemoryLedger, **kwargs: Any) -> Driven:
    """A core over ``ledger``, driven as the runtime drives it."""
    return Driven(AgentCore(ledger, **kwargs), ledger)


CHANGES_STATE = {"service_restart": True, "disk_usage": False}


def make_core(ledger: MemoryLedger | None = None, **kwargs: Any) -> tuple[Driven, MemoryLedger]:
    ledger = ledger or MemoryLedger()
    codes = iter(["ABCDEF", "GHJKLM", "NPQRST"])
    core = driven(ledger, changes_state=lambda name: CHANGES_STATE.get(name, True), new_code=lambda: next(codes),
                  **kwargs)  # fmt: skip
    return core, ledger


def packet(
    task_id: str = "t-1", action: str = "RUN_RUNBOOK", runbook: str = "disk_usage", **extra: Any
) -> str:
    params: dict[str, Any] = (
        {"runbook": runbook, "hosts": ["was01"], "args": {}} if action == "RUN_RUNBOOK" else {}
    )
    if action in ("APPROVE", "REJECT"):
        params = {"code": "ABCDEF"}
    return json.dumps({"action": action, "task_id": task_id, "room_id": "ops", "user_id": "kim", "params": params,
                       **extra})  # fmt: skip


def command(raw: str) -> Command:
    parsed = parse_frame(raw)
    assert isinstance(parsed, Command)
    return parsed


def kinds(effects: list[Effect]) -> list[str]:
    return [type(e).__name__ + (f":{e.kind}" if isinstance(e, Audit) else "") for e in effects]


def sent(effects: list[Effect]) -> list[dict[str, Any]]:
    return [e.message for e in effects if isinstance(e, Send)]


# -- frames -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (packet(), ["Audit:command", "BeginTask", "StartRun"]),
        ('{"event": "ACK", "msg_id": "m-1"}', ["Acked"]),
        ("not json", ["Log", "Audit:refused", "Send"]),
        (
            json.dumps({"action": "DROP_TABLE", "task_id": "t-9", "room_id": "ops"}),
            ["Log", "Audit:refused", "Send"],
        ),
        (
            json.dumps({"action": "RUN_RUNBOOK", "task_id": "", "room_id": "ops"}),
            ["Log", "Audit:refused", "Send"],
        ),
        (
            json.dumps({"action": "RUN_RUNBOOK", "task_id": "../../etc", "room_id": "ops"}),
            ["Log", "Audit:refused", "Send"],
        ),
    ],
    ids=["command", "ack", "garbage", "unknown-action", "empty-task-id", "task-id-as-path"],
)
def test_a_frame_becomes_exactly_these_effects(frame: str, expected: list[str]) -> None:
    core, _ = make_core()
    assert kinds(core.handle(FrameReceived(frame, NOW))) == expected


def test_an_ack_names_the_message_it_acknowledges() -> None:
    core, _ = make_core()
    assert core.handle(FrameReceived('{"event": "ACK", "msg_id": "m-7"}', NOW)) == [Acked("m-7")]


def test_a_refused_packet_is_answered_fail_and_never_run() -> None:
    core, ledger = make_core()
    effects = core.handle(
        FrameReceived(json.dumps({"action": "rm -rf", "task_id": "t-2", "room_id": "ops"}), NOW)
    )
    (answer,) = sent(effects)
    assert answer["payload"]["status"] == "FAIL" and answer["task_id"] == "t-2"
    assert not any(isinstance(e, StartRun) for e in effects) and ledger.tasks == {}


def test_a_repeated_task_id_is_never_run_twice_and_gets_its_stored_result() -> None:
    core, ledger = make_core()
    core.handle(FrameReceived(packet("t-1"), NOW))
    running = core.handle(FrameReceived(packet("t-1"), NOW))
    assert not any(isinstance(e, StartRun) for e in running)
    assert sent(running)[0]["payload"]["in_progress"] is True
    end = core.handle(TaskEnded(command(packet("t-1")), Answer(Status.SUCCESS, {"x": 1}), NOW))
    final = next(e for e in end if isinstance(e, Send))
    assert final.task_id == "t-1"
    ledger.finish("t-1", final.message)
    again = core.handle(FrameReceived(packet("t-1"), NOW))
    (resent,) = sent(again)
    assert resent["payload"]["data"] == {"x": 1} and resent["payload"]["duplicate"] is True
    assert resent["msg_id"] != final.message["msg_id"]


def test_a_closing_agent_refuses_new_commands_without_recording_them() -> None:
    core, ledger = make_core()
    core.handle(Closing())
    effects = core.handle(FrameReceived(packet("t-3"), NOW))
    assert sent(effects)[0]["payload"]["error"]["code"] == "SHUTTING_DOWN" and "t-3" not in ledger.tasks


def test_signed_commands_unsigned_tampered_and_replayed_are_refused() -> None:
    key = "k" * 32
    core, _ = make_core(command_key=key)
    fields = json.loads(packet("t-5"))
    signed = sign(key, fields, int(NOW), "0123456789abcdef0123456789abcdef")
    assert kinds(core.handle(FrameReceived(json.dumps(signed), NOW)))[-1] == "StartRun"
    again = sent(core.handle(FrameReceived(json.dumps(signed), NOW)))  # the same frame, resent: a duplicate
    assert again[0]["event"] == "TASK_ACCEPTED" and again[0]["payload"]["in_progress"] is True
    replay = {**signed, "task_id": "t-6"}
    assert sent(core.handle(FrameReceived(json.dumps(replay), NOW)))[0]["payload"]["status"] == "FAIL"
    assert sent(core.handle(FrameReceived(packet("t-7"), NOW)))[0]["payload"]["status"] == "FAIL"


# -- four eyes --------------------------------------------------------------------------------------------------


def test_held_request_is_released_once_as_the_approvers_and_its_timer_cancelled() -> None:
    core, ledger = make_core(approval_window=600)
    request = command(packet("t-10", runbook="service_restart"))
    core.handle(FrameReceived(packet("t-10", runbook="service_restart"), NOW))
    held = core.handle(TaskEnded(request, Hold({"runbook": "service_restart"}), NOW))
    assert kinds(held) == ["KeepHeld", "SetTaskState", "Audit:approval_requested", "Send", "ArmTimer"]
    assert sent(held)[0]["event"] == "TASK_PENDING_APPROVAL" and sent(held)[0]["payload"]["code"] == "ABCDEF"
    assert ArmTimer(approval_timer("ABCDEF"), 600) in held and ledger.tasks["t-10"].state is TaskState.PENDING
    approve = command(packet("t-11", action="APPROVE"))
    released = core.handle(
        TaskEnded(
            approve, Decided(ledger.claim("ABCDEF"), Decision.APPROVED, Answer(Status.SUCCESS, {})), NOW
        )
    )
    assert CancelTimer(approval_timer("ABCDEF")) in released
    (start,) = [e for e in released if isinstance(e, StartRun)]
    assert start.command.task_id == "t-10" and start.approved_by == "kim"
    assert ledger.tasks["t-10"].state is TaskState.QUEUED and ledger.tasks["t-10"].approved_by == "kim"
    assert core.handle(TimerFired(approval_timer("ABCDEF"), NOW + 601)) == []  # already decided: nothing


def test_an_expired_request_is_answered_once_with_approval_expired() -> None:
    core, _ = make_core(approval_window=60)
    request = command(packet("t-12", runbook="service_restart"))
    core.handle(FrameReceived(packet("t-12", runbook="service_restart"), NOW))
    core.handle(TaskEnded(request, Hold({"runbook": "service_restart"}), NOW))
    expired = core.handle(TimerFired(approval_timer("ABCDEF"), NOW + 61))
    (final,) = [e for e in expired if isinstance(e, Send)]
    assert final.task_id == "t-12" and final.message["payload"]["error"]["code"] == "APPROVAL_EXPIRED"
    assert core.handle(TimerFired(approval_timer("ABCDEF"), NOW + 62)) == []


# -- restart ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "runbook", "action", "outcome"),
    [
        (TaskState.QUEUED, "service_restart", "RUN_RUNBOOK", "run"),  # never started: as if nothing happened
        (TaskState.QUEUED, "disk_usage", "RUN_RUNBOOK", "run"),
        (TaskState.RUNNING, "disk_usage", "RUN_RUNBOOK", "run"),  # read-only: safe to run again
        (TaskState.RUNNING, "disk_usage", "CHECK_DISK_SPACE", "run"),
        (TaskState.RUNNING, "service_restart", "RUN_RUNBOOK", "interrupted"),  # may have run: say so
        (TaskState.RUNNING, "no_longer_there", "RUN_RUNBOOK", "interrupted"),  # unknown now: assume the worst
    ],
)
def test_restart_runs_what_is_safe_and_answers_the_rest_interrupted(
    state: TaskState, runbook: str, action: str, outcome: str
) -> None:
    ledger = MemoryLedger()
    raw = packet("t-20", action=action, runbook=runbook)
    ledger.tasks["t-20"] = TaskRecord("t-20", state, "ops", None, raw)
    core, _ = make_core(ledger)
    effects = core.handle(Started(NOW))
    if outcome == "run":
        (start,) = [e for e in effects if isinstance(e, StartRun)]
        assert start.command.task_id == "t-20" and not sent(effects)
    else:
        (final,) = [e for e in effects if isinstance(e, Send)]
        error = final.message["payload"]["error"]
        assert (
            final.task_id == "t-20" and error["code"] == "INTERRUPTED" and "may have run" in error["message"]
        )
        assert not any(isinstance(e, StartRun) for e in effects)


def test_restart_rearms_the_timers_of_held_requests() -> None:
    ledger = MemoryLedger()
    ledger.hold(
        HeldRequest.of("ABCDEF", json.loads(packet("t-30")), {}, NOW + 100, lambda v: v, requester="kim")
    )
    core, _ = make_core(ledger)
    assert core.handle(Started(NOW)) == [ArmTimer(approval_timer("ABCDEF"), 100)]


def test_a_cancelled_read_only_task_is_left_for_the_next_start_and_a_changing_one_is_interrupted() -> None:
    core, _ = make_core()
    read_only = core.handle(TaskEnded(command(packet("t-40")), None, NOW))
    assert not sent(read_only)
    changing = core.handle(TaskEnded(command(packet("t-41", runbook="service_restart")), None, NOW))
    assert sent(changing)[0]["payload"]["error"]["code"] == "INTERRUPTED"


# -- never raises -----------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["action", "task_id", "room_id", "user_id", "params", "event",
                                                  "msg_id"]),
                                 st.one_of(st.none(), st.integers(), st.text(max_size=40),
                                           st.sampled_from(["RUN_RUNBOOK", "ACK", "APPROVE"])),
                                 max_size=7).map(json.dumps)))  # fmt: skip
def test_any_frame_gives_effects_and_every_command_is_answered_or_run(frame: str | bytes) -> None:
    core, _ = make_core()
    effects = core.handle(FrameReceived(frame, NOW))
    assert effects
    assert any(isinstance(e, Send | StartRun | Acked) for e in effects)


def mask(value: Any) -> Any:
    """A stand-in for the agent's redaction: masks one secret wherever it appears."""
    return json.loads(json.dumps(value).replace("s3cret", "[MASKED]"))


def test_a_typed_secret_is_never_kept_and_a_restart_asks_for_the_request_again() -> None:
    ledger = MemoryLedger()
    core, _ = make_core(ledger, redact=mask)
    raw = json.loads(packet("t-50", runbook="service_restart"))
    raw["params"]["args"] = {"password": "s3cret"}
    core.handle(FrameReceived(json.dumps(raw), NOW))
    assert ledger.tasks["t-50"].command is None  # the packet with the secret is not on disk
    held = core.handle(TaskEnded(command(json.dumps(raw)), Hold({"runbook": "x"}), NOW))
    assert "s3cret" not in json.dumps(ledger.kept["ABCDEF"].request) and held
    # Released by the same process: runs with the original arguments.
    release = core.handle(TaskEnded(command(packet("t-51", action="APPROVE")),
                                    Decided(ledger.claim("ABCDEF"), Decision.APPROVED, Answer(Status.SUCCESS, {})), NOW))  # fmt: skip
    (start,) = [e for e in release if isinstance(e, StartRun)]
    assert start.command.params["args"] == {"password": "s3cret"}
    # After a restart the original is gone: a second such request is answered, not run with the masked value.
    core.handle(FrameReceived(json.dumps({**raw, "task_id": "t-52"}), NOW))
    core.handle(TaskEnded(command(json.dumps({**raw, "task_id": "t-52"})),
                          Hold({"runbook": "x"}), NOW))  # fmt: skip
    restarted, _ = make_core(ledger, redact=mask)
    after = restarted.handle(TaskEnded(command(packet("t-53", action="APPROVE")),
                                       Decided(ledger.claim("GHJKLM"), Decision.APPROVED, Answer(Status.SUCCESS, {})), NOW))  # fmt: skip
    assert not any(isinstance(e, StartRun) for e in after)
    assert sent(after)[0]["payload"]["error"]["code"] == "INTERRUPTED"


def test_a_packet_nested_too_deep_is_answered_malformed_not_dropped() -> None:
    core, ledger = make_core()
    value: Any = "x"
    for _ in range(900):  # deep enough to overflow any recursive walk of the packet
        value = [value]
    raw = json.loads(packet("t-60"))
    raw["params"]["args"] = {"value": value}
    (answer,) = sent(core.handle(FrameReceived(json.dumps(raw), NOW)))
    assert answer["task_id"] == "t-60" and answer["payload"]["error"]["code"] == "MALFORMED"
    assert "t-60" not in ledger.tasks


def test_a_task_id_reused_from_another_room_learns_nothing_of_the_task() -> None:
    """Issue 27: it runs as a fresh one would, under a key of its room's (tests/test_task_scoping.py has the rest)."""
    core, _ = make_core()
    core.handle(FrameReceived(packet("t-70"), NOW))
    other = json.loads(packet("t-70"))
    other["room_id"] = "lobby"
    effects = core.handle(FrameReceived(json.dumps(other), NOW))
    assert sent(effects) == [] and [type(e) for e in effects] == [Audit, BeginTask, StartRun]


def test_every_action_has_its_answer_type() -> None:
    """agent/session/answers.py names the data type of every action's answer (handlers are held to it by mypy)."""
    assert set(ACTION_DATA) == {action.value for action in Action}
    assert all(ACTION_DATA[name].__required_keys__ for name in ACTION_DATA)  # each says what it carries
    for action, handler in HANDLERS.items():
        returns = inspect.get_annotations(handler)["return"]
        if action in (Action.APPROVE, Action.REJECT, Action.CANCEL):  # the decision carries its answer
            assert "Decided" in returns, action
        else:
            assert f"Answer[{ACTION_DATA[action.value].__name__}]" in returns, (action, returns)
