"""Issue 27, item 3: an audit trail that cannot be quietly rewritten.

The chain is keyed (an HMAC with ``audit.key``, never in the log), so a log re-chained after an edit fails; its head
is anchored beside the log (``audit.head``) and off the PC (the relay keeps the head of each HELLO and final answer),
so a cut tail, a re-chained log and a fork are each named, by ``agent audit verify`` and by the relay's room notice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.reference.relay import Relay, RelaySettings, audit_head_change
from agent.state.audit import KEYED, AuditLog, entry_hash, verify_chain
from agent.state.audit_key import Head, HeadFileError, head_path, key_path, read_head, read_key
from tests.conftest import RELAY_TOKEN, RunningApp, agent_environ, connect_operator
from tests.waiting import eventually


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    text = "".join(
        json.dumps(e, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries
    )
    path.write_text(text, encoding="utf-8", newline="\n")


def rechain(entries: list[dict[str, Any]], key: bytes | None) -> list[dict[str, Any]]:
    """What an attacker does after an edit: every entry's prev and hash made again (with ``key``: keyed; None:
    plain sha256, the old format)."""
    out, prev = [], "0" * 64
    for entry in entries:
        entry = {k: v for k, v in entry.items() if k not in ("hash", "chain")}
        entry["prev"] = prev
        if key is not None:
            entry["chain"] = KEYED
        entry["hash"] = prev = entry_hash(entry, key)
        out.append(entry)
    return out


def verify_cli(path: Path) -> Any:
    return CliRunner().invoke(main, ["audit", "verify", "--file", str(path)])


def _log(tmp_path: Path, count: int = 8) -> Path:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(count):
        log.append("command", task_id=f"t{i}", user_id="kim", room_id="ops")
    log.close()
    return path


def test_entries_are_keyed_with_a_private_key_kept_beside_the_log_not_in_it(tmp_path: Path) -> None:
    path = _log(tmp_path)
    key = read_key(key_path(path))
    assert key is not None and len(key) == 32
    # Owner-only: mode 0600 on POSIX (on Windows the folder's ACL is checked instead: agent/state/acl.py).
    assert os.name != "posix" or key_path(path).stat().st_mode & 0o777 == 0o600
    text = path.read_text(encoding="utf-8")
    assert key.hex() not in text and all(e["chain"] == KEYED for e in _lines(path))
    report = verify_chain(path)
    assert report.ok and report.seq == 8 and "matches the anchored head (seq 8)" in report.notes
    ok = verify_cli(path)
    assert ok.exit_code == 0 and "seq 8" in ok.output and report.head in ok.output


def test_a_cut_tail_is_named_against_the_anchored_head(tmp_path: Path) -> None:
    path = _log(tmp_path)
    _write(path, _lines(path)[:5])  # the last three entries removed: the rest is still a valid chain
    report = verify_chain(path)
    assert any(p.startswith("truncated: the log ends at seq 5") and "entries 6–8 are missing" in p
               for p in report.problems), report.problems  # fmt: skip
    broken = verify_cli(path)
    assert broken.exit_code == 1 and "truncated" in broken.output


@pytest.mark.parametrize("with_key", [None, b"k" * 32], ids=["plain-sha256", "a-guessed-key"])
def test_a_log_rechained_after_editing_a_user_id_fails_verification(
    tmp_path: Path, with_key: bytes | None
) -> None:
    """Issue 27: editing a user_id and re-chaining every line after it (plain sha256) verified OK."""
    path = _log(tmp_path)
    entries = _lines(path)
    entries[2]["user_id"] = "mallory"
    _write(path, rechain(entries, with_key))
    report = verify_chain(path, anchor=None)  # even without the anchored head
    assert not report.ok
    expected = "content does not match its hash" if with_key else "unkeyed"
    assert any(expected in p or "re-chained" in p for p in report.problems), report.problems
    assert verify_cli(path).exit_code == 1


def test_a_cut_tail_stays_on_record_after_the_agent_writes_again(tmp_path: Path) -> None:
    """The next append rewrites audit.head; the cut it found is written into the chain first, and verify names it."""
    path = _log(tmp_path)
    _write(path, _lines(path)[:5])
    log = AuditLog(path)
    log.append("start")
    log.close()
    mismatch = _lines(path)[5]
    assert mismatch["kind"] == "anchor_mismatch" and (mismatch["found_seq"], mismatch["anchored_seq"]) == (
        5,
        8,
    )
    report = verify_chain(path)
    assert any("cut or rewritten" in p and "up to seq 8" in p for p in report.problems), report.problems


def test_a_log_rewritten_with_the_key_differs_from_its_anchored_head_as_a_fork(tmp_path: Path) -> None:
    """Someone who has the key (the agent's own user) rewrites the log but not its head: verify names the fork."""
    path = _log(tmp_path)
    key = read_key(key_path(path))
    entries = _lines(path)
    entries[6]["user_id"] = "mallory"
    _write(path, rechain(entries, key))
    report = verify_chain(path)
    assert [p for p in report.problems if p.startswith("forked: the entry at seq 8")], report.problems
    head_path(path).write_bytes(b'{"seq": 99, "hash": "x", "mac": "y"}')  # and a forged head is named as such
    assert any("audit.head: its HMAC does not match" in p for p in verify_chain(path).problems)


def test_an_old_unkeyed_log_verifies_as_such_and_goes_on_as_a_keyed_segment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = rechain([{"seq": i, "ts": 1.0, "kind": "command", "task_id": f"t{i}"} for i in (1, 2, 3)], None)
    _write(path, old)
    report = verify_chain(path)
    assert report.ok and any("3 entries (seq 1–3) are unkeyed" in n for n in report.notes)
    AuditLog(path).append("start")
    entries = _lines(path)
    assert entries[3]["seq"] == 4 and entries[3]["prev"] == old[2]["hash"] and entries[3]["chain"] == KEYED
    assert verify_chain(path).ok
    _write(path, [*entries, *rechain([*old, {"seq": 5, "ts": 1.0, "kind": "x"}], None)[3:]])
    assert any("not keyed, after the chain became keyed at seq 4" in p for p in verify_chain(path).problems)


def test_a_rotated_log_keeps_one_chain_across_its_files(tmp_path: Path) -> None:
    path = _log(tmp_path, 3)
    path.rename(tmp_path / "audit.jsonl.1")
    log = AuditLog(path)
    log.append("after")
    log.close()
    first = _lines(path)[0]
    assert (
        first["kind"] == "continued"
        and first["seq"] == 4
        and first["prev"] == _lines(tmp_path / "audit.jsonl.1")[-1]["hash"]
    )
    assert verify_chain(path).ok and verify_chain(tmp_path / "audit.jsonl.1").ok
    reader = AuditLog(path)
    assert reader.anchor()["seq"] == 5
    reader.close()  # (Windows renames no file that is open)
    # Verified as one chain, oldest first; a file missing between two is named.
    path.rename(tmp_path / "audit.jsonl.0")
    later = AuditLog(path)
    later.append("later")
    later.close()
    files = [tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl.0", path]
    whole = CliRunner().invoke(main, ["audit", "verify", *(a for f in files for a in ("--file", str(f)))])
    assert whole.exit_code == 0 and "seq 7" in whole.output, whole.output
    gap = CliRunner().invoke(main, ["audit", "verify", "--file", str(files[0]), "--file", str(path)])
    assert gap.exit_code == 1 and "does not go on from audit.jsonl.1 (seq 3)" in gap.output


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_a_head_file_is_a_head_or_a_head_file_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("head") / "audit.head"
    path.write_bytes(raw)
    try:
        head = read_head(path, b"k" * 32)
    except HeadFileError:
        return
    assert head is not None  # a head only when its HMAC matched: written with the key
    path.write_bytes(Head(head.seq, head.hash).record(b"k" * 32))
    assert read_head(path, b"k" * 32) == head


heads = st.fixed_dictionaries({"seq": st.integers(0, 10**6), "hash": st.text(min_size=1, max_size=70)})


@given(heads, heads, st.booleans())
def test_the_relay_calls_a_head_backwards_or_forked_only_when_it_is(
    before: dict[str, Any], now: dict[str, Any], fresh: bool
) -> None:
    change = audit_head_change(before, now, fresh)
    if now["seq"] < before["seq"]:
        assert change == ("backwards" if fresh else None)
    elif now["seq"] == before["seq"]:
        assert change == (None if now["hash"] == before["hash"] else "forked")
    else:
        assert change is None
    assert audit_head_change(None, now, fresh) is None


# -- with the real relay and agent -----------------------------------------------------------------------------


async def _session(home: Path, relay: Relay) -> tuple[RunningApp, dict[str, Any]]:
    """Start the agent; return it and the audit head of its HELLO."""
    previous = relay.hello
    app = RunningApp.of(home / "agent.toml", agent_environ(relay))
    hello = await eventually(lambda: relay.hello if relay.hello is not previous else None, what="a new HELLO")
    return app, hello["payload"]["audit_head"]


async def test_a_cut_tail_and_a_fork_are_told_to_the_room_by_the_relay_and_named_by_verify(
    agent_home: Path, tmp_path: Path
) -> None:
    state = tmp_path / "relay-state" / "known.json"
    relay = Relay(agent_token=RELAY_TOKEN, settings=RelaySettings(state_file=state))
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    operator = await connect_operator(relay)
    log = agent_home / "var" / "audit.jsonl"
    try:
        app, head = await _session(agent_home, relay)
        assert head["seq"] >= 1 and len(head["hash"]) == 64
        for n in range(1, 4):
            await operator.command("HELP", f"t-{n}")
            final = await operator.finished(f"t-{n}")
        assert final["payload"]["audit_head"]["seq"] > head["seq"]  # every final answer carries the head too
        await app.stop()
        kept = json.loads(state.read_text(encoding="utf-8"))["test-agent"]["audit_head"]
        assert kept == final["payload"]["audit_head"]
        assert verify_cli(log).exit_code == 0

        # 1. The tail cut (as someone who may write the state folder would): verify names it; the agent, started
        # again, says hello with an earlier head, and the relay tells the room.
        cut = kept["seq"] - 5
        _write(log, _lines(log)[:cut])
        found = verify_cli(log)
        assert found.exit_code == 1 and "truncated" in found.output
        app, head = await _session(agent_home, relay)
        assert head["seq"] < kept["seq"]
        # The agent itself put the cut on record before going on (audit.head was ahead of the file).
        before_hello = [e["kind"] for e in _lines(log) if cut < e["seq"] <= head["seq"]]
        assert before_hello[0] == "anchor_mismatch"
        start_entries = len(before_hello) - 1  # what the agent writes before its HELLO
        notice = await operator.wait_for(lambda e: e.get("payload", {}).get("kind") == "audit_head")
        assert notice["event"] == "RELAY_NOTICE" and notice["room_id"] == "ops"
        assert notice["payload"]["change"] == "backwards" and notice["payload"]["before"] == kept
        assert "test-agent" in notice["payload"]["text"] and str(kept["seq"]) in notice["payload"]["text"]
        await app.stop()

        # 2. A fork: the log rewritten with the key (a user_id edited), one entry shorter than the head the relay
        # kept, so that the agent's next HELLO names the same seq with another hash.
        kept = json.loads(state.read_text(encoding="utf-8"))["test-agent"]["audit_head"]
        entries = [
            e for e in _lines(log) if e["kind"] != "anchor_mismatch"
        ]  # the evidence dropped, renumbered
        entries = [{**e, "seq": n} for n, e in enumerate(entries, start=1)][: kept["seq"] - start_entries]
        next((e for e in entries if "user_id" in e), entries[0])["user_id"] = "mallory"
        _write(log, rechain(entries, read_key(key_path(log))))
        forked = verify_cli(log)
        assert forked.exit_code == 1 and ("truncated" in forked.output or "forked" in forked.output)
        # Whoever has the key covers their tracks on the PC: audit.head made to match. Only the relay still knows.
        last = _lines(log)[-1]
        head_path(log).write_bytes(Head(last["seq"], last["hash"]).record(read_key(key_path(log)) or b""))
        assert verify_cli(log).exit_code == 0
        before_notices = len([e for e in operator.events if e.get("payload", {}).get("kind") == "audit_head"])
        app, head = await _session(agent_home, relay)
        assert head["seq"] == kept["seq"] and head["hash"] != kept["hash"]
        notice = await operator.wait_for(
            lambda e: (
                e.get("payload", {}).get("change") == "forked"
                and len([x for x in operator.events if x.get("payload", {}).get("kind") == "audit_head"])
                > before_notices
            )
        )
        assert notice["room_id"] == "ops" and notice["payload"]["after"] == head
        await app.stop()
    finally:
        await operator.close()
        await relay.stop()


def test_a_fresh_process_anchors_the_file_s_head_not_its_own(tmp_path: Path) -> None:
    """The HELLO's head is the file's last entry even before this process wrote one (another wrote the rest)."""
    path = _log(tmp_path, 2)
    other = AuditLog(path)
    assert other.anchor() == {"seq": 2, "hash": _lines(path)[-1]["hash"]}
    AuditLog(path).append("cli")
    assert other.anchor()["seq"] == 3
