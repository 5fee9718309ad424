"""On-disk state: private whatever the umask, bounded, durable, versioned; held requests keep no raw secret."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.schema import load_config
from agent.errors import ConfigError
from agent.redaction import Redactor
from agent.runs.outputs import OutputNotFound, OutputStore
from agent.runs.results import HostResult, Outcome, RunResult
from agent.session.ledger import (
    TASK_TRANSITIONS,
    BeginTask,
    DropHeld,
    IllegalTransition,
    KeepHeld,
    RecordNonce,
    SetTaskState,
    Store,
    check_transition,
)
from agent.shell.logsetup import configure_logging
from agent.state.audit import AuditLog, verify_chain
from agent.state.files import StateNotPrivate
from agent.state.group_commit import GroupCommit
from agent.state.outbox import HeldRequest, Outbox, TaskState, packet_digest
from agent.state.schema import SCHEMA_VERSION

SECRET = "Sup3r-S3cret-Typed-In"


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def report(i: int, size: int = 100) -> dict[str, Any]:
    return {"event": "REPORT", "msg_id": f"r{i}", "room_id": "ops", "payload": {"x": "." * size}}


def finished(i: int, size: int = 100) -> dict[str, Any]:
    return {"event": "TASK_FINISHED", "msg_id": f"f{i}", "task_id": f"t{i}", "payload": {"x": "." * size}}


def run_of(text: str) -> RunResult:
    return RunResult("r", "0" * 64, [HostResult("h1", Outcome.SUCCESS, 0, stdout_full=text)])


# -- private files ----------------------------------------------------------------------------------------------

#: Another local user (the attack needs one; only root can make a folder theirs in a test).
NOBODY = 65534
as_root = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="needs root to act as another user"
)


@as_root
@pytest.mark.posix_only(reason="POSIX owners and modes; on Windows the installer's ACL protects the folder")
@pytest.mark.parametrize("how", ["made 0777 by another user", "a link to another user's folder"])
def test_a_state_folder_another_user_made_in_advance_is_refused_naming_the_fix(
    tmp_path: Path, how: str
) -> None:
    """Issue 27: a state folder made in advance by another local user was used silently; that user could then
    delete the outbox (unacknowledged results) or swap in a rebuilt audit chain."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    os.chmod(theirs, 0o777)
    os.chown(theirs, NOBODY, NOBODY)
    state = theirs if how.startswith("made") else tmp_path / "var"
    if state != theirs:
        state.symlink_to(theirs)
    for opening in (lambda: Outbox(state / "outbox.sqlite3"), lambda: AuditLog(state / "audit.jsonl")):
        with pytest.raises(StateNotPrivate, match=r"chmod 700") as refused:
            opening()
        assert str(state) in str(refused.value)
    assert list(theirs.iterdir()) == []  # nothing written there
    (tmp_path / "agent.toml").write_text(f'agent_id = "a"\n[state]\ndir = "{state.name}"\n', encoding="utf-8")
    (tmp_path / "runbooks").mkdir()
    env = {**os.environ, "EXTERNAL_WS_URL": "ws://127.0.0.1:9/agent"}
    done = subprocess.run([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "run"], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0 and str(state) in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.posix_only(reason="POSIX modes and umask")
def test_a_log_file_and_its_rotations_are_private_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    """Issue 27: --log-file logs/agent.log made logs/ 0777 and the log 0666 under a permissive umask."""
    log = tmp_path / "logs" / "agent.log"
    configure_logging(Redactor(), "INFO", file=log, max_bytes=200, backups=2)
    try:
        for i in range(20):
            logging.getLogger("agent.test").warning("line %d %s", i, "x" * 50)
    finally:
        configure_logging(Redactor(), "INFO")  # back to stderr only: closes the file handler
    files = sorted(log.parent.iterdir())
    assert len(files) == 3  # the log and two rotations
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_state_files_are_0600_and_folders_0700_even_with_umask_0(tmp_path: Path, open_umask: None) -> None:
    state = tmp_path / "var" / "state"
    box = Outbox(state / "outbox.sqlite3")
    box.put(report(1))
    box.begin_task("t1", "ops")
    AuditLog(state / "audit.jsonl").append("start")
    OutputStore(state / "outputs", 1).save("t-1", run_of("out"))
    names = {p.name for p in state.iterdir()}
    assert {"outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm", "audit.jsonl", "outputs"} <= names
    seen = 0
    for folder, dirs, files in os.walk(tmp_path / "var"):
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o700, name
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600, name
            seen += 1
    assert seen >= 7  # db, wal, shm, audit, meta, stdout, stderr
    box.close()


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_loose_state_files_of_an_older_agent_are_narrowed_when_opened(
    tmp_path: Path, open_umask: None
) -> None:
    Outbox(tmp_path / "o.sqlite3").close()
    AuditLog(tmp_path / "audit.jsonl").append("x")
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    tmp_path.chmod(0o755)
    Outbox(tmp_path / "o.sqlite3").close()
    AuditLog(tmp_path / "audit.jsonl").append("y")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}
    assert verify_chain(tmp_path / "audit.jsonl").ok


@pytest.mark.posix_only(
    reason="Wine shows Windows processes no links (real Windows: reparse points, refused by lstat)"
)
def test_a_state_file_replaced_by_a_link_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    """From an outside review: a state file made a link to another file (/dev/null, /etc/passwd) had that file
    narrowed to 0600 and written to by the agent (as root, any file); a link to a device, or a folder, too."""
    victim = tmp_path / "victim"
    victim.write_text("root:x:0:0\n", encoding="utf-8", newline="\n")
    victim.chmod(0o644)
    state = tmp_path / "var"
    state.mkdir()
    for name in ("audit.jsonl", "o.sqlite3"):
        (state / name).symlink_to(victim)
    with pytest.raises(OSError):
        AuditLog(state / "audit.jsonl").append("x")
    with pytest.raises(OSError):
        Outbox(state / "o.sqlite3")
    assert (
        victim.read_text(encoding="utf-8") == "root:x:0:0\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    )
    (state / "audit.jsonl").unlink()
    (state / "audit.jsonl").mkdir()  # not a regular file either
    with pytest.raises(OSError):
        AuditLog(state / "audit.jsonl").append("x")
    # A dangling link as the outbox's -wal: SQLite would create its target.
    (state / "o2.sqlite3-wal").symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(OSError):
        Outbox(state / "o2.sqlite3")
    assert not (tmp_path / "created-through-the-link").exists()
    linked = tmp_path / "linked-state"
    linked.symlink_to(state, target_is_directory=True)  # the folder itself may be a link
    AuditLog(linked / "audit2.jsonl").append("ok")
    assert verify_chain(state / "audit2.jsonl").ok


# -- held requests --------------------------------------------------------------------------------------------------


def held_packet() -> dict[str, Any]:
    return {"action": "RUN_RUNBOOK", "task_id": "t-7", "room_id": "ops", "user_id": "kim",
            "params": {"runbook": "db_login", "hosts": ["db01"], "args": {"password": SECRET}}}  # fmt: skip


def test_a_held_request_keeps_no_raw_secret_on_disk_only_a_redacted_view_and_a_digest(tmp_path: Path) -> None:
    redact = Redactor(secrets=[SECRET]).redact_json
    packet = held_packet()
    summary = {"runbook": "db_login", "hosts": ["db01"], "args": {"password": SECRET}}
    box = Outbox(tmp_path / "o.sqlite3")
    box.hold(HeldRequest.of("K7P2QX", packet, summary, 1e12, redact, requester="kim"))
    box.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in on_disk and b"K7P2QX" in on_disk
    again = Outbox(tmp_path / "o.sqlite3")
    held = again.held_request("K7P2QX")
    assert held is not None and held.matches(packet) and held.packet_sha256 == packet_digest(packet)
    assert SECRET not in json.dumps(held.request) and SECRET not in json.dumps(held.summary)
    assert held.replayable() is None  # redaction changed it: after a restart it cannot run as it was asked
    assert again.claim("K7P2QX") == held and again.claim("K7P2QX") is None
    plain = {**packet, "params": {"runbook": "x", "hosts": ["db01"], "args": {"n": 1}}}
    again.hold(HeldRequest.of("ABCDEF", plain, {}, 1e12, redact))
    assert again.held_request("ABCDEF").replayable() == plain  # type: ignore[union-attr]


# -- schema versions ----------------------------------------------------------------------------------------------

#: The schema of releases before versioning (user_version 0), verbatim.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (code TEXT PRIMARY KEY, task_id TEXT NOT NULL, room_id TEXT, requester TEXT,
    command TEXT NOT NULL, summary TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, state TEXT NOT NULL, room_id TEXT, result TEXT,
    updated REAL NOT NULL);
"""


def old_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for message in (report(1), finished(2)):
        db.execute("INSERT INTO outbox (msg_id, body, created) VALUES (?, ?, 1.0)",
                   (message["msg_id"], json.dumps(message)))  # fmt: skip
    db.execute("INSERT INTO tasks VALUES ('t2', 'finished', 'ops', ?, 1e12)", (json.dumps(finished(2)),))
    db.execute(
        "INSERT INTO approvals VALUES ('K7P2QX', 't-7', 'ops', 'kim', ?, ?, 1e12)",
        (json.dumps(held_packet()), json.dumps({"runbook": "db_login", "args": {"password": SECRET}})),
    )
    db.execute("INSERT INTO state VALUES ('sched.x', '42')")  # fmt: skip
    db.commit()
    db.close()


@pytest.mark.parametrize("with_redactor", [True, False])
def test_an_unversioned_database_migrates_keeping_messages_tasks_and_state(
    tmp_path: Path, with_redactor: bool
) -> None:
    path = tmp_path / "outbox.sqlite3"
    old_database(path)
    box = Outbox(path, redact=Redactor(secrets=[SECRET]).redact_json if with_redactor else None)
    assert box._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [json.loads(body)["msg_id"] for _, body in box.pending()] == ["r1", "f2"]
    assert box.size == sum(len(json.dumps(m)) for m in (report(1), finished(2)))
    record = box.task("t2")
    assert record is not None and record.state is TaskState.FINISHED and box.get_state("sched.x") == "42"
    held = box.held_request("K7P2QX")
    assert held is not None and held.matches(held_packet()) and held.summary["runbook"] == "db_login"
    assert SECRET not in json.dumps([held.request, held.summary])
    box.put(report(3))
    box.close()
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert [json.loads(b)["msg_id"] for _, b in Outbox(path).pending()] == ["r1", "f2", "r3"]  # reopens as is


def test_a_database_from_a_newer_agent_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        Outbox(path)


# -- durability and grouping --------------------------------------------------------------------------------------


def test_commits_are_full_sync_and_acks_do_not_weaken_later_commits(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    sync = lambda: box._db.execute("PRAGMA synchronous").fetchone()[0]  # noqa: E731
    assert sync() == 2  # FULL
    box.put(finished(1))
    assert box.ack("f1") and sync() == 2
    assert box.begin_task("t1", "ops", fsync=False) and sync() == 2 and box.task("t1") is not None
    assert (
        Outbox(tmp_path / "p.sqlite3", synchronous="NORMAL")._db.execute("PRAGMA synchronous").fetchone()[0]
        == 1
    )


async def test_writes_within_one_loop_iteration_are_one_commit_and_one_bad_write_fails_alone(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    group = GroupCommit(box)
    futures = [group.submit(lambda b, i=i: b.finish_task(f"t{i}", finished(i))) for i in range(50)]
    futures.append(group.submit(lambda b: b.put(finished(3))))  # a duplicate msg_id: this one write fails
    done = await asyncio.gather(*futures, return_exceptions=True)
    assert group.commits == 1 and group.writes == 51
    assert isinstance(done[-1], sqlite3.IntegrityError) and len(set(done[:-1])) == 50
    other = sqlite3.connect(tmp_path / "o.sqlite3")  # committed: visible to another connection
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 50
    assert other.execute("SELECT COUNT(*) FROM tasks WHERE state = 'finished'").fetchone()[0] == 50
    assert await group.put(report(99)) > max(done[:-1])  # type: ignore[type-var]
    assert group.commits == 2


def test_a_batch_is_all_or_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    with pytest.raises(sqlite3.IntegrityError), box.batch():
        box.begin_task("t1", "ops")
        box.put(finished(1))
        box.put(finished(1))
    assert box.task("t1") is None and box.count() == 0 and box.size == 0


# -- caps -------------------------------------------------------------------------------------------------------------


def test_over_its_cap_the_outbox_drops_oldest_reports_never_a_result_and_says_how_many(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=2000)
    for i in range(10):
        box.put(report(i))
        box.finish_task(f"t{i}", finished(i, 10))
    kept = [json.loads(b)["msg_id"] for _, b in box.pending()]
    assert [f"f{i}" for i in range(10)] == [
        k for k in kept if k.startswith("f")
    ]  # every result kept, in order
    reports = [k for k in kept if k.startswith("r")]
    assert reports and reports == [
        f"r{i}" for i in range(10 - len(reports), 10)
    ]  # the newest reports survive
    assert box.size <= 2000 and not box.over_cap
    box.close()
    again = Outbox(tmp_path / "o.sqlite3", max_bytes=2000)
    assert again.dropped == 10 - len(reports)  # durable: told by a notice (tests/test_bounds.py)
    for i in range(10, 40):
        again.finish_task(f"t{i}", finished(i, 10))
    assert again.over_cap and again.count() == 40  # results alone over the cap: all kept, reports all gone
    assert again.dropped == 10


def test_kept_output_over_its_cap_loses_the_oldest_runs_first_and_reports_them(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "outputs", retention_days=1, max_runs=3, max_bytes=10_000)
    evicted = [store.save(f"t{i}", run_of(f"run {i}"), now=1000.0 + i) for i in range(5)]
    assert [[e.task_id for e in group] for group in evicted] == [[], [], [], ["t0"], ["t1"]]
    with pytest.raises(OutputNotFound):
        store.page("t1", "h1", "stdout", 0)
    assert store.page("t2", "h1", "stdout", 0)[0] == "run 2"
    big = store.save("big", run_of("x" * 20_000), now=2000.0)  # alone over max_bytes: kept, the rest goes
    assert [e.task_id for e in big] == ["t2", "t3", "t4"] and [t for t, _, _ in store.kept()] == ["big"]
    reopened = OutputStore(tmp_path / "outputs", retention_days=1, max_runs=3, max_bytes=10_000)
    assert [t for t, _, _ in reopened.kept()] == ["big"] and reopened.purge(now=2000.0 + 2 * 86400) == 1


# -- config check -----------------------------------------------------------------------------------------------


def test_an_invalid_redaction_rule_is_refused_without_showing_its_pattern(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[[redaction.rules]]\nname = "db"\npattern = "({SECRET}"\n'
                    f'[[redaction.rules]]\nname = "ok"\npattern = "x[0-9]{{1,9}}"\nreplacement = "{SECRET[:5]}"\n', encoding="utf-8", newline="\n")  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        "redaction.rules: rule 0: redaction rule 'db': pattern is not valid RE2 syntax "
        "(not shown: a pattern may hold a secret)"
    ]
    assert SECRET not in str(caught.value) and SECRET[:8] not in repr(caught.value)


def test_state_caps_are_configurable(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[state]\nmax_outbox_bytes = 2097152\nsynchronous = "NORMAL"\n[outputs]\nmax_runs = 5\n',
        encoding="utf-8",
        newline="\n",
    )
    config = load_config(path)
    assert (config.state.max_outbox_bytes, config.state.synchronous, config.outputs.max_runs) == (
        2097152,
        "NORMAL",
        5,
    )
    assert load_config(None).state.synchronous == "FULL"
    path.write_text('[state]\nsynchronous = "OFF"\n', encoding="utf-8", newline="\n")
    with pytest.raises(ConfigError):
        load_config(path)


def test_a_deleted_message_leaves_no_trace_in_the_files(tmp_path: Path) -> None:
    """An acknowledged answer (or a migrated held request) is overwritten, not left in a free page: SQLite's
    secure_delete, which Debian's build has on and python.org's Windows build off."""
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    assert box._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    box.put({"event": "REPORT", "msg_id": "r1", "room_id": "ops", "payload": {"typed": SECRET}})
    box.put(report(2))
    assert box.ack("r1")
    box.close()
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def _task_in(box: Outbox, task_id: str, state: TaskState | None) -> None:
    """Bring a task to ``state`` by a legal path."""
    if state is None:
        return
    box.begin_task(task_id, "ops")
    if state is TaskState.FINISHED:
        box.finish_task(task_id, finished(0))
    elif state is not TaskState.QUEUED:
        assert box.set_task_state(task_id, state)


@pytest.mark.parametrize("old", [None, *TaskState], ids=lambda s: getattr(s, "value", "none"))
def test_every_task_state_change_follows_the_one_table(
    tmp_path: Path, old: TaskState | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox writes a state change only when TASK_TRANSITIONS lists it; any other is refused and logged."""
    for new in TaskState:
        box = Outbox(tmp_path / f"{old}-{new.value}.sqlite3")
        _task_in(box, "t", old)
        caplog.clear()
        allowed = new in TASK_TRANSITIONS[old]
        if new is TaskState.FINISHED:
            box.finish_task("t", finished(1))
        elif old is None and new is TaskState.QUEUED:  # only begin_task records a task
            assert box.begin_task("t", "ops")
        elif old is None:  # the state of a task never recorded is not set
            assert not box.set_task_state("t", new)
        else:
            assert box.set_task_state("t", new) is allowed
        record = box.task("t")
        expected = new if allowed else old
        assert (record.state if record else None) == expected, (old, new)
        assert ("not a legal transition" in caplog.text or "no such task" in caplog.text) is not allowed, (
            old,
            new,
        )
        box.close()


def test_a_finished_task_keeps_its_first_result_and_the_second_answer_is_still_sent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.begin_task("t2", "ops")
    box.finish_task("t2", finished(2))
    assert not box.set_task_state("t2", TaskState.RUNNING)  # FINISHED -> RUNNING: refused, nothing written
    box.finish_task("t2", {**finished(2), "msg_id": "f2-again"})
    record = box.task("t2")
    assert record is not None and record.state is TaskState.FINISHED and record.result == finished(2)
    assert [json.loads(b)["msg_id"] for _, b in box.pending()] == ["f2", "f2-again"]  # nothing lost


def test_the_transition_table_has_a_row_for_every_state_and_finished_is_final() -> None:
    assert set(TASK_TRANSITIONS) == {None, *TaskState}
    assert TASK_TRANSITIONS[TaskState.FINISHED] == frozenset()
    with pytest.raises(IllegalTransition, match="finished -> running"):
        check_transition("t", TaskState.FINISHED, TaskState.RUNNING)


def test_the_cores_writes_applied_to_sqlite_read_back_as_the_core_reads_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each Store effect the core returns, applied by the outbox, is what the Ledger reads give back, after a
    reopen too; an illegal state change among them is refused and logged, never written."""
    path = tmp_path / "o.sqlite3"
    box = Outbox(path)
    held = HeldRequest.of("K7P2QX", held_packet(), {"runbook": "r"}, 1e12, lambda v: v, requester="kim")
    writes: list[Store] = [
        BeginTask("t1", "ops", '{"action": "LIST_RUNBOOKS"}'),
        SetTaskState("t1", TaskState.PENDING),
        KeepHeld(held),
        SetTaskState("t1", TaskState.QUEUED, approved_by="lee"),
        RecordNonce("n-0123456789abcdef", 1000.0, 600.0),
        SetTaskState("t1", TaskState.QUEUED),  # queued again: not in the table, refused
    ]
    with box.relaxed():
        for write in writes:
            box.apply(write)
    box.close()
    again = Outbox(path)
    record = again.task("t1")
    assert record is not None and (record.state, record.approved_by) == (TaskState.QUEUED, "lee")
    assert again.held_request("K7P2QX") == held and again.held() == [held]
    assert again.nonce_seen("n-0123456789abcdef", 1500.0, 600.0)
    assert not again.nonce_seen("n-0123456789abcdef", 1601.0, 600.0)  # past its window: forgotten
    assert "queued -> queued is not a legal transition" in caplog.text
    again.apply(DropHeld("K7P2QX"))
    assert again.held_request("K7P2QX") is None and again.held() == []
    again.close()
