"""The table of built-in redaction rules in docs/security.md, generated from the rule table itself.

    python -m agent.redaction.table            print the table (Markdown)
    python -m agent.redaction.table --write    write it into docs/security.md, between its two markers

A development tool, not used by the agent: :func:`markdown_table` and :func:`with_table` are pure; only :func:`main`
reads and writes the document. ``tests/test_redaction_table.py`` fails while the document's table is stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.redaction.rules import RULES, Rule

BEGIN = "<!-- redaction-table:begin -->"
END = "<!-- redaction-table:end -->"
#: The command that regenerates the table in docs/security.md.
COMMAND = "python -m agent.redaction.table --write"
#: The document, in a checkout (the package is agent/redaction/ under the project's root).
DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_NOTE = f"<!-- generated from agent/redaction/rules.py by `{COMMAND}`: edit the rules, not this table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rules: Iterable[Rule] = RULES) -> str:
    """One row per rule, in the order the rules are tried: its name, what it masks, and what is written instead."""
    rows = ["| rule | what it masks | written instead |", "|---|---|---|"]
    rows += [f"| `{rule.name}` | {_cell(rule.description)} | {_cell(rule.writes)} |" for rule in rules]
    return "\n".join(rows) + "\n"


def with_table(document: str, table: str | None = None) -> str:
    """``document`` with what lies between :data:`BEGIN` and :data:`END` replaced by the table (``table``, or the
    one :func:`markdown_table` makes now)."""
    start = document.find(BEGIN)
    end = document.find(END, start + 1)
    if start == -1 or end == -1:
        raise ValueError(f"the document has no {BEGIN} … {END} markers")
    table = markdown_table() if table is None else table
    return f"{document[: start + len(BEGIN)]}\n{_NOTE}\n\n{table}{document[end:]}"


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["--write"]:
        text = DOCUMENT.read_text(encoding="utf-8")
        updated = with_table(text)
        if updated != text:
            DOCUMENT.write_text(updated, encoding="utf-8", newline="\n")
        print(f"{DOCUMENT}: {'updated' if updated != text else 'up to date'}")
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
