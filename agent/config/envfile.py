"""Environment files: ``KEY=VALUE`` lines holding the agent's secrets (relay URL and token, DB_*, passphrases).

PURE parsing (no I/O but the one read in :func:`read_env_file`). The format is the subset that systemd's
``EnvironmentFile=`` and the agent read alike: one ``KEY=VALUE`` per line, ``#`` comments and blank lines ignored,
whitespace around key and value dropped, one pair of matching surrounding quotes removed. Problems name the line
number and never the value (it may be a password).
"""

from __future__ import annotations

import re
from pathlib import Path

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class InvalidEnvFile(ValueError):
    """An environment file that cannot be used; ``problems`` lists every bad line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def parse_env(text: str, source: str = "environment file") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines.

    Returns:
        The variables in file order (a later line for the same key wins, as with systemd).

    Raises:
        InvalidEnvFile: a line without ``=``, a key that is not an environment variable name, a value with a
            control character, or a NUL anywhere.
    """
    variables: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        if not sep:
            problems.append(f"line {number}: expected KEY=VALUE")
            continue
        if not _KEY.fullmatch(key):
            problems.append(f"line {number}: {key[:40]!r} is not a variable name (letters, digits, _)")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            problems.append(f"line {number}: the value of {key} has a control character")
            continue
        variables[key] = value
    if problems:
        raise InvalidEnvFile(source, problems)
    return variables


def read_env_file(path: Path) -> dict[str, str]:
    """Read and parse an environment file (UTF-8, a BOM tolerated: Notepad writes one).

    Raises:
        InvalidEnvFile: unreadable, not UTF-8, or a bad line (see :func:`parse_env`).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidEnvFile(str(path), [f"cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise InvalidEnvFile(str(path), ["not UTF-8 text"]) from None
    return parse_env(text, str(path))
