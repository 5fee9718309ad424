"""On Windows: do the state, log and output folders grant write access to no one but the agent's user?

POSIX mode bits mean little on Windows; what protects the outbox (unacknowledged results), the audit log and its key
there is the folder's ACL. A folder made under ``C:\\ProgramData`` inherits ``BUILTIN\\Users: (CI)(AD)(WD)`` (every
local user may create files and folders in it); one made in advance by another user may grant them anything. So at
start, and in ``agent config check``, each folder's owner and DACL are read and judged:

* :func:`acl_problems` (pure, tested with recorded ACLs): the owner must be the agent's user, SYSTEM or
  Administrators, and no ACE that allows a write right (write or append data, write attributes or extended
  attributes, delete, delete a child, change the permissions or the owner, generic write or all) may name anyone else;
  a NULL DACL (everyone, everything) is a problem too. An ACE that only children inherit (``INHERIT_ONLY``) for
  ``CREATOR OWNER`` is fine (it gives each file's creator rights on what they created, and no one else may create).
  Deny ACEs are not weighed: an allow for someone else is named even if a deny before it might cancel it
  (conservative: the fix is the same).
* :class:`WindowsSecurity` reads them with the Windows API through ctypes (``GetNamedSecurityInfoW``, the DACL's ACEs
  by ``GetAce``, SIDs as strings, the process token's user), never by parsing ``icacls`` (its names are localised).
  Under Wine these calls may answer with made-up ACLs; the decision logic is tested on recorded real ones.

Each problem names the path, who has what, and the fix: an ``icacls`` command in SID form (locale-independent).
Imports only the standard library; the API is touched only on Windows.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"
CREATOR_OWNER = "S-1-3-0"

#: Access rights that let a trustee change, add or remove what is in a folder, or its permissions.
WRITE_RIGHTS = {
    0x00000002: "write data / add file",
    0x00000004: "append data / add folder",
    0x00000010: "write extended attributes",
    0x00000040: "delete child",
    0x00000100: "write attributes",
    0x00010000: "delete",
    0x00040000: "change permissions",
    0x00080000: "take ownership",
    0x10000000: "generic all",
    0x40000000: "generic write",
}
ACCESS_ALLOWED = 0x0  # ACCESS_ALLOWED_ACE_TYPE
ACCESS_ALLOWED_OBJECT = 0x5
INHERIT_ONLY = 0x08  # INHERIT_ONLY_ACE


@dataclass(frozen=True)
class Ace:
    """One access control entry as read from a DACL."""

    sid: str
    ace_type: int
    flags: int
    mask: int


@dataclass(frozen=True)
class FolderAcl:
    """A folder's owner and DACL (``aces`` None: a NULL DACL, which grants everyone everything)."""

    owner: str
    aces: tuple[Ace, ...] | None


def write_rights(mask: int) -> list[str]:
    """The names of the write rights in ``mask``."""
    return [name for bit, name in WRITE_RIGHTS.items() if mask & bit]


def acl_problems(path: Path | str, acl: FolderAcl, user: str) -> list[str]:
    """What in ``acl`` lets someone other than ``user`` (a SID), SYSTEM or Administrators write to ``path``.

    Returns:
        One line per problem, each naming the path and the trustee, the last the fix (empty: private).
    """
    trusted = {user, SYSTEM, ADMINISTRATORS}
    problems: list[str] = []
    if acl.owner not in trusted:
        problems.append(f"{path}: owned by {acl.owner}, not by this user ({user})")
    if acl.aces is None:
        problems.append(f"{path}: no DACL at all (everyone may do everything)")
    else:
        for ace in acl.aces:
            if ace.ace_type not in (ACCESS_ALLOWED, ACCESS_ALLOWED_OBJECT) or ace.sid in trusted:
                continue
            if ace.sid == CREATOR_OWNER and ace.flags & INHERIT_ONLY:
                continue
            rights = write_rights(ace.mask)
            if rights:
                problems.append(f"{path}: {ace.sid} may {', '.join(rights)}")
    if problems:
        problems.append(f"fix: {fix_command(path, user, acl)}")
    return problems


def fix_command(path: Path | str, user: str, acl: FolderAcl) -> str:
    """The ``icacls`` command that leaves ``path`` to ``user``, SYSTEM and Administrators (SIDs: any locale)."""
    others = sorted({a.sid for a in acl.aces or () if a.sid not in {user, SYSTEM, ADMINISTRATORS}})
    grant = " ".join(f"*{sid}:(OI)(CI)F" for sid in (user, SYSTEM, ADMINISTRATORS))
    remove = "".join(f" /remove:g *{sid}" for sid in others)
    owner = (
        f' && icacls "{path}" /setowner *{user}' if acl.owner not in {user, SYSTEM, ADMINISTRATORS} else ""
    )
    return f'icacls "{path}" /inheritance:r /grant:r {grant}{remove}{owner}'


class SecurityApi(Protocol):
    """What the check asks of Windows (the real one: :class:`WindowsSecurity`; tests: a recording fake)."""

    def current_user(self) -> str: ...
    def folder_acl(self, path: str) -> FolderAcl: ...


def folder_problems(paths: Iterable[Path], api: SecurityApi | None = None) -> list[str]:
    """Every problem of every existing folder in ``paths`` (missing ones are made by the agent, private).

    On anything but Windows (and with no ``api``): nothing, the POSIX owner and mode checks apply there.
    """
    if api is None:
        if sys.platform != "win32":
            return []
        api = WindowsSecurity()  # pragma: no cover - Windows
    problems: list[str] = []
    user = api.current_user()
    for path in paths:
        if not path.is_dir():
            continue
        try:
            acl = api.folder_acl(str(path))
        except OSError as exc:
            problems.append(f"{path}: its permissions cannot be read ({exc})")
            continue
        problems += acl_problems(path, acl, user)
    return problems


class WindowsSecurity:  # pragma: no cover - runs on Windows only
    """The Windows API through ctypes: a folder's owner and DACL, the process's user, as string SIDs."""

    _ctypes: Any
    _w: Any
    _advapi: Any
    _kernel: Any

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows security API exists on Windows only")
        import ctypes
        from ctypes import wintypes

        self._ctypes, self._w = ctypes, wintypes
        self._advapi = ctypes.WinDLL("advapi32", use_last_error=True)
        self._kernel = ctypes.WinDLL("kernel32", use_last_error=True)
        # Every signature declared: a HANDLE or pointer passed as a C int loses its upper half on 64-bit Windows.
        voidp, handle, dword, pvoid = (
            ctypes.c_void_p,
            wintypes.HANDLE,
            wintypes.DWORD,
            ctypes.POINTER(ctypes.c_void_p),
        )
        for function, argtypes, restype in (
            (self._advapi.GetNamedSecurityInfoW,
             [wintypes.LPCWSTR, ctypes.c_int, dword, pvoid, pvoid, pvoid, pvoid, pvoid], dword),
            (self._advapi.ConvertSidToStringSidW, [voidp, ctypes.POINTER(ctypes.c_wchar_p)], wintypes.BOOL),
            (self._advapi.OpenProcessToken, [handle, dword, ctypes.POINTER(handle)], wintypes.BOOL),
            (self._advapi.GetTokenInformation, [handle, ctypes.c_int, voidp, dword, ctypes.POINTER(dword)],
             wintypes.BOOL),
            (self._advapi.GetAce, [voidp, dword, pvoid], wintypes.BOOL),
            (self._kernel.GetCurrentProcess, [], handle),
            (self._kernel.LocalFree, [voidp], voidp),
            (self._kernel.CloseHandle, [handle], wintypes.BOOL),
        ):  # fmt: skip
            function.argtypes, function.restype = argtypes, restype

    def _sid_string(self, sid: int) -> str:
        ctypes = self._ctypes
        text = ctypes.c_wchar_p()
        if not self._advapi.ConvertSidToStringSidW(ctypes.c_void_p(sid), ctypes.byref(text)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return str(text.value)
        finally:
            self._kernel.LocalFree(ctypes.cast(text, ctypes.c_void_p))

    def current_user(self) -> str:
        ctypes, w = self._ctypes, self._w
        token = w.HANDLE()
        process = self._kernel.GetCurrentProcess()
        if not self._advapi.OpenProcessToken(process, 0x0008, ctypes.byref(token)):  # TOKEN_QUERY
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            size = w.DWORD()
            self._advapi.GetTokenInformation(token, 1, None, 0, ctypes.byref(size))  # TokenUser
            buffer = ctypes.create_string_buffer(size.value)
            if not self._advapi.GetTokenInformation(token, 1, buffer, size, ctypes.byref(size)):
                raise ctypes.WinError(ctypes.get_last_error())
            sid = ctypes.c_void_p.from_buffer(buffer).value  # TOKEN_USER.User.Sid
            return self._sid_string(int(sid or 0))
        finally:
            self._kernel.CloseHandle(token)

    def folder_acl(self, path: str) -> FolderAcl:
        ctypes, w = self._ctypes, self._w
        owner, dacl, descriptor = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        status = self._advapi.GetNamedSecurityInfoW(
            path, 1, 0x1 | 0x4,  # SE_FILE_OBJECT; OWNER_ | DACL_SECURITY_INFORMATION
            ctypes.byref(owner), None, ctypes.byref(dacl), None, ctypes.byref(descriptor),
        )  # fmt: skip
        if status != 0:
            raise ctypes.WinError(status)
        try:
            if not dacl.value:
                return FolderAcl(self._sid_string(int(owner.value or 0)), None)
            # ACL: AclRevision and Sbz1 (a byte each), AclSize, AceCount (words).
            count = ctypes.cast(dacl, ctypes.POINTER(w.WORD))[2]
            aces = []
            for index in range(count):
                ace = ctypes.c_void_p()
                if not self._advapi.GetAce(dacl, index, ctypes.byref(ace)):
                    raise ctypes.WinError(ctypes.get_last_error())
                header = ctypes.cast(ace, ctypes.POINTER(ctypes.c_ubyte))
                ace_type, flags = header[0], header[1]
                mask = ctypes.cast(ace, ctypes.POINTER(w.DWORD))[1]
                if ace_type != ACCESS_ALLOWED and ace_type != 0x1:  # allowed/denied: the SID follows the mask
                    aces.append(Ace("", ace_type, flags, mask))
                    continue
                aces.append(Ace(self._sid_string(int(ace.value or 0) + 8), ace_type, flags, mask))
            return FolderAcl(self._sid_string(int(owner.value or 0)), tuple(aces))
        finally:
            self._kernel.LocalFree(descriptor)
