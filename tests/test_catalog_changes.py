"""What a reload may use and what it tells: which problems block a new lock, and which rooms hear of which runbooks."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.catalog.store import Catalog, ProblemKind, reasons_of
from agent.session.notices import catalog_changes, catalog_reloaded
from tests.conftest import TEST_RUNBOOKS


def _catalog(tmp_path: Path) -> Catalog:
    shutil.copytree(TEST_RUNBOOKS, tmp_path / "runbooks")
    catalog = Catalog(tmp_path / "runbooks", tmp_path / "runbooks.lock")
    catalog.relock()
    return catalog


def _draft(catalog: Catalog, name: str, rooms: str = '["ops"]') -> None:
    (catalog.directory / f"{name}.toml").write_text(
        f'description = "draft"\ntargets = ["all"]\nrooms = {rooms}\n', encoding="utf-8", newline="\n"
    )
    (catalog.directory / f"{name}.sh").write_text("echo draft\n", encoding="utf-8", newline="\n")


def test_a_draft_not_in_the_lock_does_not_block_a_reload_but_a_tampered_locked_script_does(
    tmp_path: Path,
) -> None:
    catalog = _catalog(tmp_path)
    _draft(catalog, "draft_one")
    report = catalog.examine()
    assert report.blocking == [] and "draft_one" not in report.runnable
    assert [str(m) for m in report.why_not_runnable("draft_one")] == ["not in the lock"]

    (catalog.directory / "echo_args.sh").write_bytes(b"echo tampered\n")
    blocking = catalog.examine().blocking
    assert [(p.runbook, p.kind) for p in blocking] == [("echo_args", ProblemKind.MODIFIED_SCRIPT)]
    assert [str(m) for m in reasons_of(blocking)] == ["echo_args: script changed since it was locked"]


def test_examine_does_not_change_the_catalog_in_use_until_adopted(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    before = catalog.verify()
    _draft(catalog, "draft_two")
    catalog.relock()
    after = catalog.examine()
    assert catalog.report is before and "draft_two" in after.runnable
    catalog.adopt(after)
    assert catalog.report is after and catalog.load("draft_two").name == "draft_two"


def test_each_room_hears_only_of_its_own_runbooks(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    old = catalog.verify()
    _draft(catalog, "web_only", rooms='["web-room"]')
    (catalog.directory / "echo_args.sh").write_bytes(b"echo changed\n")
    (catalog.directory / "fail_exit.toml").unlink()
    (catalog.directory / "fail_exit.sh").unlink()
    catalog.relock()
    changes = catalog_changes(old, catalog.examine())
    assert (changes.added, changes.changed, changes.removed) == (["web_only"], ["echo_args"], ["fail_exit"])
    assert changes.rooms_told() == ["ops", "web-room"]
    web = changes.seen_in("web-room")
    assert (web.added, web.changed, web.removed) == (["web_only"], [], [])
    assert not changes.seen_in("elsewhere")
    payload = catalog_reloaded(changes, "ab" * 32, 0.0)
    assert payload["kind"] == "catalog_reload" and payload["catalog"] == "ab" * 6
    assert str(payload["message"]) == (
        "runbooks reloaded without a restart: added: web_only; changed: echo_args; removed: fail_exit"
    )
