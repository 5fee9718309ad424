"""docs/security.md shows the redaction rules as they are: its table is the one the rule table makes now, and every
rule says what it masks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.redaction import Redactor
from agent.redaction.handlers import HANDLERS
from agent.redaction.rules import EXAMPLE_HOSTS, EXAMPLE_SECRETS, RULES, Rule
from agent.redaction.table import BEGIN, COMMAND, END, markdown_table, with_table

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "security.md"


def _rows(table: str) -> list[list[str]]:
    """The cells of each body row of a Markdown table (``\\|`` inside a cell does not split it)."""
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_the_security_guide_shows_the_table_the_rules_make_now() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"docs/security.md lost its {BEGIN} / {END} markers"
    assert with_table(text) == text, (
        f"docs/security.md's table of redaction rules differs from agent/redaction/rules.py: regenerate it with"
        f" `{COMMAND}` (from the project's root) and commit the result"
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_every_rule_says_what_it_masks_and_what_it_writes(rule: Rule) -> None:
    assert rule.description.strip(), f"rule {rule.name!r} has no description: add one next to it in RULES"
    assert rule.mask and rule.writes.strip()


def test_every_row_of_the_table_has_a_rule_a_description_and_a_mask() -> None:
    rows = _rows(markdown_table())
    assert [row[0].strip("`") for row in rows] == [rule.name for rule in RULES]
    incomplete = [row for row in rows if len(row) != 3 or not all(row)]
    assert not incomplete, incomplete


def test_every_rule_has_one_name_and_a_handler() -> None:
    names = [rule.name for rule in RULES]
    assert len(set(names)) == len(names)
    assert set(HANDLERS) == set(names)


def test_a_cell_with_a_pipe_stays_one_cell() -> None:
    rule = Rule("pipe", b"x", b"[X]", "a | b")
    assert _rows(markdown_table([rule])) == [["`pipe`", "a \\| b", "`[X]`"]]


def test_a_document_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        with_table("# Security\n")


# -- every rule proves itself: its own examples, masked exactly and left alone ------------------------------------

EXAMPLES = Redactor(secrets=EXAMPLE_SECRETS, known_hosts=EXAMPLE_HOSTS)
NAIVE = Redactor(secrets=EXAMPLE_SECRETS, known_hosts=EXAMPLE_HOSTS, engine="re")


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_every_rule_carries_two_texts_it_masks_and_two_it_leaves_alone(rule: Rule) -> None:
    assert len(rule.masks) >= 2, f"rule {rule.name!r}: give it at least two `masks` examples in RULES"
    assert len(rule.keeps) >= 2, f"rule {rule.name!r}: give it at least two `keeps` examples in RULES"


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [(rule.name, text, expected) for rule in RULES for text, expected in rule.masks],
    ids=lambda value: str(value)[:40],
)
def test_a_rule_masks_its_examples_exactly_on_every_path(rule: str, text: str, expected: str) -> None:
    assert EXAMPLES.redact(text) == expected, f"rule {rule!r}"
    assert NAIVE.redact(text) == expected, f"rule {rule!r}: the naive engine disagrees"
    assert EXAMPLES.redact(expected) == expected, f"rule {rule!r}: a second pass changes its mask"
    data = text.encode()
    stream = EXAMPLES.stream()
    streamed = b"".join(stream.feed(data[i : i + 3]) for i in range(0, len(data), 3)) + stream.finish()
    assert streamed == expected.encode(), f"rule {rule!r}: streamed in 3-byte chunks"


@pytest.mark.parametrize(
    ("rule", "text"),
    [(rule.name, text) for rule in RULES for text in rule.keeps],
    ids=lambda value: str(value)[:40],
)
def test_a_rule_leaves_its_look_alikes_as_they_are(rule: str, text: str) -> None:
    assert EXAMPLES.redact(text) == text, f"rule {rule!r}"
