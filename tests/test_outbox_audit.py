"""The durable outbox and task ledger (SQLite), and the hash-chained audit log."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.state.audit import AuditLog, verify_chain
from agent.state.outbox import Outbox, TaskState


def test_pending_messages_survive_a_reopen_in_order_until_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    for i in range(5):
        box.put({"msg_id": f"m{i}", "n": i})
    assert box.ack("m1") and not box.ack("m1") and not box.ack("nope")
    box.close()
    again = Outbox(tmp_path / "o.sqlite3")
    assert [json.loads(body)["n"] for _, body in again.pending()] == [0, 2, 3, 4]
    seq_of_2 = again.pending()[1][0]
    assert [json.loads(body)["n"] for _, body in again.pending(after=seq_of_2)] == [3, 4]


def test_task_ledger_begin_finish_and_retention(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", task_retention=100)
    assert box.begin_task("t1", "ops") and not box.begin_task("t1", "ops")
    assert box.task("t1") is not None and box.task("t1").state is TaskState.QUEUED  # type: ignore[union-attr]
    assert [r.task_id for r in box.unfinished_tasks()] == ["t1"]
    box.finish_task("t1", {"msg_id": "r1", "room_id": "ops", "payload": {"status": "SUCCESS"}})
    record = box.task("t1")
    assert record is not None and record.state is TaskState.FINISHED and record.result["msg_id"] == "r1"  # type: ignore[index]
    assert [body for _, body in box.pending()] and box.unfinished_tasks() == []
    assert box.purge(now=10**10) == 1 and box.task("t1") is None


def test_a_failed_transaction_leaves_neither_message_nor_result(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put({"msg_id": "same"})
    with pytest.raises(sqlite3.IntegrityError):
        box.finish_task("t2", {"msg_id": "same"})  # duplicate msg_id: the insert fails
    assert box.task("t2") is None and box.count() == 1


def _entries(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_audit_chain_detects_edits_removals_and_reordering(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(
        path, redact=lambda fields: {k: str(v).replace("secret", "[SECRET]") for k, v in fields.items()}
    )
    for i in range(5):
        log.append("command", task_id=f"t{i}", note="secret")
    assert AuditLog(path).append("start")["seq"] == 6  # a new process continues the chain
    report = verify_chain(path)
    assert report.ok and report.entries == 6 and 'secret"' not in path.read_text(encoding="utf-8")
    lines = _entries(path)

    edited = lines.copy()
    edited[2] = edited[2].replace('"t2"', '"t9"')
    path.write_text("".join(edited), encoding="utf-8", newline="\n")
    assert any("edited" in p for p in verify_chain(path).problems)

    path.write_text("".join(lines[:2] + lines[3:]), encoding="utf-8", newline="\n")
    assert any("removed or reordered" in p for p in verify_chain(path).problems)

    path.write_text("".join([lines[1], lines[0], *lines[2:]]), encoding="utf-8", newline="\n")
    assert not verify_chain(path).ok

    path.write_text("".join(lines), encoding="utf-8", newline="\n")
    result = CliRunner().invoke(main, ["audit", "verify", "--file", str(path)])
    assert result.exit_code == 0 and f"head {report.head}" in result.output
    path.write_text("".join(edited), encoding="utf-8", newline="\n")
    broken = CliRunner().invoke(main, ["audit", "verify", "--file", str(path)])
    assert broken.exit_code == 1 and "BROKEN" in broken.output


@pytest.mark.posix_only(reason="Windows lets no process rename or delete a file another holds open")
def test_an_audit_log_moved_or_deleted_while_open_goes_on_at_its_path(tmp_path: Path) -> None:
    """The log keeps its file open between entries; a rotation (move) or a deletion must not send entries to a
    file nobody will read."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("one")
    path.rename(tmp_path / "audit.jsonl.1")
    log.append("two")
    path.unlink()
    log.append("three")
    log.close()

    def kinds(file: Path) -> list[str]:
        return [json.loads(line)["kind"] for line in file.read_text(encoding="utf-8").splitlines()]

    # The new file is a chain of its own, its first entry naming the head written before: each file verifies.
    assert kinds(path) == ["continued", "three"] and kinds(tmp_path / "audit.jsonl.1") == ["one"]
    assert verify_chain(path).ok and verify_chain(tmp_path / "audit.jsonl.1").ok
    continued = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    # The chain goes on across files (seq and prev), so the relay's anchored head never goes backwards at a rotation.
    assert (
        continued["previous_seq"] == 3
        and continued["seq"] == 4
        and continued["prev"] == continued["previous_head"]
    )


def _append_many(path: str, who: str, count: int, start: Any = None) -> None:
    log = AuditLog(Path(path))
    log.ready()
    if start is not None:
        start.wait(60)  # every writer has the log open; all append at the same moment
    for i in range(count):
        log.append("run", via=who, n=i)
    log.close()


def test_two_writers_of_one_audit_log_keep_one_chain(tmp_path: Path) -> None:
    """``agent runbooks run`` appends to the log the running service appends to: each entry must follow the file's
    last one, not the last one its own process wrote (the chain broke at every switch of writer)."""
    path = tmp_path / "audit.jsonl"
    service, cli = AuditLog(path), AuditLog(path)
    for i in range(3):
        service.append("decision", n=i)
        cli.append("run", n=i)
    report = verify_chain(path)
    assert report.ok and report.entries == 6, report.problems
    spawn = multiprocessing.get_context("spawn")  # and at the same time, from three processes
    start = spawn.Barrier(3)
    writers = [spawn.Process(target=_append_many, args=(str(path), who, 300, start)) for who in "abc"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    report = verify_chain(path)
    assert report.ok and report.entries == 906, report.problems[:3]


def test_a_chain_goes_on_after_an_entry_longer_than_one_read(tmp_path: Path) -> None:
    """A run on many hosts makes one long line; the next writer (another process) must still find its hash."""
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("run", hosts=[{"host": f"web{i:04d}", "status": "SUCCESS"} for i in range(4000)])
    AuditLog(path).append("run", hosts=[])
    report = verify_chain(path)
    assert report.ok and report.entries == 2, report.problems


def test_a_line_torn_by_a_crash_does_not_stop_the_log(tmp_path: Path) -> None:
    """Power lost in the middle of an append leaves half a line: the next entry goes on its own line, chained to
    the last whole entry, and verify names the torn line alone."""
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("one")
    with path.open("ab") as handle:
        handle.write(b'{"seq": 2, "ts": 17')
    AuditLog(path).append("two")
    report = verify_chain(path)
    assert report.problems == ["line 2: not an audit entry"] and report.entries == 3
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[2])["kind"] == "two"


@pytest.mark.posix_only(reason="Windows lets no process rename or delete a file another holds open")
def test_rotations_while_processes_append_lose_nothing_and_every_file_verifies(tmp_path: Path) -> None:
    """From the outside review: a writer that waited for the lock while the file was renamed wrote into the old
    file, chained to the new one's tail (148 forks of the chain), and an append raised when the path was gone."""
    path = tmp_path / "audit.jsonl"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        done = pool.starmap_async(_append_many, [(str(path), who, 300) for who in "abc"])
        rotated = 0
        while not done.ready():
            with contextlib.suppress(FileNotFoundError):
                path.rename(tmp_path / f"audit.jsonl.{rotated}")
                rotated += 1
            time.sleep(0.003)
        done.get()  # re-raises a writer's exception
    files = sorted(tmp_path.glob("audit.jsonl*"))
    kinds = [
        json.loads(line)["kind"] for file in files for line in file.read_text(encoding="utf-8").splitlines()
    ]
    assert kinds.count("run") == 900 and rotated > 0
    for file in files:
        report = verify_chain(file)
        assert report.ok, (file.name, report.problems[:3])


def test_a_line_nested_too_deep_for_json_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("one")
    with path.open("ab") as handle:
        handle.write(b"[" * 100_000 + b"\n")
    AuditLog(path).append("two")  # must not raise RecursionError
    assert verify_chain(path).problems == ["line 2: not an audit entry"]
