"""Issue 27, item 2 (Windows): the state, log and output folders grant write access to no one but the agent's user.

The decision is tested on ACLs recorded from real Windows folders (owner and DACL as ``GetNamedSecurityInfoW`` gives
them); the API itself is reached through a recording fake that checks exactly what would be asked of Windows.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.state.acl import (
    ADMINISTRATORS,
    CREATOR_OWNER,
    INHERIT_ONLY,
    SYSTEM,
    WRITE_RIGHTS,
    Ace,
    FolderAcl,
    acl_problems,
    folder_problems,
)

KIM = "S-1-5-21-1004336348-1177238915-682003330-1001"
LEE = "S-1-5-21-1004336348-1177238915-682003330-1002"
USERS, EVERYONE, AUTHENTICATED = "S-1-5-32-545", "S-1-1-0", "S-1-5-11"
FULL, MODIFY, READ_EXECUTE = 0x1F01FF, 0x1301BF, 0x1200A9
OI_CI, INHERITED = 0x03, 0x10

#: Owners and DACLs as Windows reports them, and the trustees that must be named (none: private).
RECORDED: dict[str, tuple[FolderAcl, list[str]]] = {
    # A folder made under C:\ProgramData inherits its ACL: every local user may add files and folders.
    "programdata-default": (FolderAcl(KIM, (
        Ace(SYSTEM, 0, OI_CI | INHERITED, FULL), Ace(ADMINISTRATORS, 0, OI_CI | INHERITED, FULL),
        Ace(CREATOR_OWNER, 0, OI_CI | INHERIT_ONLY | INHERITED, 0x10000000),
        Ace(USERS, 0, OI_CI | INHERITED, READ_EXECUTE), Ace(USERS, 0, 0x02 | INHERITED, 0x116),
    )), [USERS]),
    # Under C:\Users\kim: the user, SYSTEM and Administrators only.
    "profile": (FolderAcl(KIM, (
        Ace(SYSTEM, 0, OI_CI | INHERITED, FULL), Ace(ADMINISTRATORS, 0, OI_CI | INHERITED, FULL),
        Ace(KIM, 0, OI_CI | INHERITED, FULL),
    )), []),
    # What the fix leaves (inheritance removed, the three granted), owned by Administrators (the installer).
    "after-the-fix": (FolderAcl(ADMINISTRATORS, (
        Ace(KIM, 0, OI_CI, FULL), Ace(SYSTEM, 0, OI_CI, FULL), Ace(ADMINISTRATORS, 0, OI_CI, FULL),
    )), []),
    "everyone-full": (FolderAcl(KIM, (Ace(KIM, 0, OI_CI, FULL), Ace(EVERYONE, 0, OI_CI, FULL))), [EVERYONE]),
    "authenticated-users-modify": (FolderAcl(KIM, (Ace(AUTHENTICATED, 0, OI_CI | INHERITED, MODIFY),)),
                                   [AUTHENTICATED]),
    # Made in advance by another user, who keeps full control.
    "made-by-another-user": (FolderAcl(LEE, (Ace(LEE, 0, OI_CI, FULL), Ace(KIM, 0, OI_CI, FULL))), [LEE]),
    # Readers are fine; a deny entry is not weighed.
    "users-read-only": (FolderAcl(KIM, (Ace(USERS, 1, OI_CI, FULL), Ace(USERS, 0, OI_CI, READ_EXECUTE),
                                        Ace(KIM, 0, OI_CI, FULL))), []),
    "null-dacl": (FolderAcl(KIM, None), ["no DACL"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_acls_are_judged_naming_who_may_write_and_the_fix(name: str) -> None:
    acl, named = RECORDED[name]
    path = Path("C:/ProgramData/guardia/var")
    problems = acl_problems(path, acl, KIM)
    if not named:
        assert problems == []
        return
    *found, fix = problems
    assert all(str(path) in line for line in found) and all(
        any(who in line for line in found) for who in named
    )
    assert fix.startswith(
        f'fix: icacls "{path}" /inheritance:r /grant:r *{KIM}:(OI)(CI)F *{SYSTEM}:(OI)(CI)F'
    )
    for who in named:
        if who.startswith("S-1-") and acl.aces is not None:
            assert f"/remove:g *{who}" in fix
    assert (f"/setowner *{KIM}" in fix) == (acl.owner not in (KIM, SYSTEM, ADMINISTRATORS))


class RecordingApi:
    """The fake of :class:`agent.state.acl.WindowsSecurity`: answers from RECORDED, and records every call."""

    def __init__(self, acls: dict[str, FolderAcl]) -> None:
        self.acls, self.calls = acls, []  # type: list[tuple[str, ...]]

    def current_user(self) -> str:
        self.calls.append(("current_user",))
        return KIM

    def folder_acl(self, path: str) -> FolderAcl:
        self.calls.append(("folder_acl", path))
        if path not in self.acls:
            raise PermissionError(5, "Access is denied")
        return self.acls[path]


def test_the_check_asks_windows_for_each_existing_folder_once_and_names_each_problem(tmp_path: Path) -> None:
    state, outputs, logs, missing = (
        tmp_path / "var",
        tmp_path / "var" / "outputs",
        tmp_path / "logs",
        tmp_path / "no",
    )
    for folder in (state, outputs, logs):
        folder.mkdir()
    api = RecordingApi({str(state): RECORDED["programdata-default"][0], str(outputs): RECORDED["profile"][0]})
    problems = folder_problems([state, outputs, logs, missing], api)
    # Asked: who this process is, then each folder that exists, by its path as given, in order; nothing else.
    assert api.calls == [("current_user",), ("folder_acl", str(state)), ("folder_acl", str(outputs)),
                         ("folder_acl", str(logs))]  # fmt: skip
    assert any(str(state) in p and USERS in p for p in problems)
    assert any(str(logs) in p and "cannot be read" in p for p in problems)
    assert not any(str(outputs) in p for p in problems)


def test_elsewhere_than_windows_the_posix_checks_apply_and_no_acl_is_read(tmp_path: Path) -> None:
    assert folder_problems([tmp_path]) == []


sids = st.sampled_from([KIM, LEE, SYSTEM, ADMINISTRATORS, USERS, EVERYONE, CREATOR_OWNER])
aces = st.builds(Ace, sids, st.sampled_from([0, 1, 5]), st.integers(0, 0x1F), st.integers(0, 0xFFFFFFFF))


@given(sids, st.none() | st.lists(aces, max_size=6).map(tuple))
def test_a_folder_is_private_exactly_when_no_one_else_may_write_or_own_it(
    owner: str, entries: tuple[Ace, ...] | None
) -> None:
    problems = acl_problems("D:\\agent\\var", FolderAcl(owner, entries), KIM)
    trusted = {KIM, SYSTEM, ADMINISTRATORS}
    writers = [a for a in entries or () if a.ace_type in (0, 5) and a.sid not in trusted
               and not (a.sid == CREATOR_OWNER and a.flags & INHERIT_ONLY)
               and any(a.mask & bit for bit in WRITE_RIGHTS)]  # fmt: skip
    private = owner in trusted and entries is not None and not writers
    assert (problems == []) == private
    if problems:
        assert problems[-1].startswith('fix: icacls "D:\\agent\\var"') and len(problems) >= 2


@pytest.mark.skipif(
    sys.platform != "win32", reason="the Windows API itself (scripts/test-windows runs it under Wine)"
)
def test_the_windows_api_gives_this_user_and_a_folder_s_owner_and_entries_as_sids(tmp_path: Path) -> None:
    from agent.state.acl import WindowsSecurity

    api = WindowsSecurity()
    user = api.current_user()
    assert re.fullmatch(r"S-1-\d+(-\d+)+", user), user
    acl = api.folder_acl(str(tmp_path))
    assert re.fullmatch(r"S-1-\d+(-\d+)+", acl.owner) and acl.aces is not None
    assert all(isinstance(a.mask, int) and (a.sid == "" or a.sid.startswith("S-1-")) for a in acl.aces)
    problems = folder_problems([tmp_path])
    assert problems == [] or problems[-1].startswith(f'fix: icacls "{tmp_path}"')
