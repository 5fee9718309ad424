"""The manifest schema and the pure argv builder."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.catalog.manifest import Manifest, build_argv, effective_args, parse_manifest
from agent.errors import InvalidArguments, InvalidManifest

BASE = """
description = "test"
targets = ["all"]
rooms = ["ops"]
"""


def manifest(params: str = "", head: str = "") -> Manifest:
    return parse_manifest((BASE + head + params).encode(), "t.toml")


TAIL = manifest(
    """
[[params]]
name = "dir"
type = "enum"
choices = ["app", "was"]

[[params]]
name = "file"
type = "string"
max_length = 64

[[params]]
name = "lines"
type = "integer"
min = 1
max = 2000
default = 100
flag = "--lines"

[[params]]
name = "since"
type = "date"
flag = "--since"
required = false

[[params]]
name = "host"
type = "identifier"
flag = "--host"
required = false
"""
)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('description = "x"\ntargets = ["all"]\n', "rooms: Field required"),
        (BASE + "timeout = -1\n", "timeout: Input should be greater than 0"),
        (BASE + 'interpreter = "python"\n', "interpreter: Input should be 'bash' or 'sh'"),
        (BASE + 'shell = "bash"\n', "shell: Extra inputs are not permitted"),
        ('description = "x"\nrooms = []\ntargets = ["../etc"]\n', "targets.0: String should match pattern"),
        (
            BASE + '[[params]]\nname = "Bad-Name"\ntype = "string"\n',
            "params.0.string.name: String should match",
        ),
        (BASE + '[[params]]\nname = "a"\ntype = "float"\n', "params.0: Input tag 'float' found"),
        (BASE + '[[params]]\nname = "a"\ntype = "string"\npattern = "(["\n', "params.0.string.pattern"),
        (BASE + '[[params]]\nname = "a"\ntype = "integer"\nmin = 5\nmax = 1\n', "min is greater than max"),
        (
            BASE + '[[params]]\nname = "a"\ntype = "integer"\nmax = 9\ndefault = 10\n',
            "default is not a valid",
        ),
        (BASE + '[[params]]\nname = "a"\ntype = "enum"\nchoices = []\n', "params.0.enum.choices"),
        (BASE + '[[params]]\nname = "a"\ntype = "string"\nrequired = false\n', "positional and optional"),
        (
            BASE + '[[params]]\nname = "a"\ntype = "string"\n[[params]]\nname = "a"\ntype = "date"\n',
            "duplicate",
        ),
        (
            BASE + '[[params]]\nname = "a"\ntype = "string"\nrequired = true\ndefault = "x"\n',
            "cannot have a default",
        ),
        ("description = ", "not valid TOML"),
        (BASE + "description = 'twice'\n", "not valid TOML"),
    ],
)
def test_bad_manifest_names_the_field_at_fault(toml: str, field: str) -> None:
    with pytest.raises(InvalidManifest) as caught:
        parse_manifest(toml.encode(), "bad.toml")
    assert caught.value.source == "bad.toml"
    assert any(field in problem for problem in caught.value.problems), caught.value.problems


def test_argv_maps_positionals_then_flag_pairs_in_manifest_order() -> None:
    assert build_argv(TAIL, {"dir": "app", "file": "server.log"}) == ["app", "server.log", "--lines", "100"]
    assert build_argv(
        TAIL, {"file": "a.log", "dir": "was", "lines": "7", "since": "2026-02-28", "host": "was01"}
    ) == [
        "was",
        "a.log",
        "--lines",
        "7",
        "--since",
        "2026-02-28",
        "--host",
        "was01",
    ]
    assert TAIL.argv_template() == ["DIR", "FILE", "[--lines LINES]", "[--since SINCE]", "[--host HOST]"]


HOSTILE = [
    "-rf",
    "--lines=1",
    "a\nb",
    "a\x00b",
    "a\rb",
    "\x1b[31mred",
    "tab\there",
    "x" * 65,
    "",
    "file\u202egol.sh",  # right-to-left override
    "zero\u200bwidth",
    "ｆｕｌｌ",  # full-width letters
    "раss",  # Cyrillic р and а
    "é",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_string_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        build_argv(TAIL, {"dir": "app", "file": value})
    assert [param for param, _ in caught.value.problems] == ["file"]
    if len(value) > 1:
        assert value not in str(caught.value)


@pytest.mark.parametrize(
    ("args", "problems"),
    [
        ({"dir": "app"}, [("file", "required")]),
        ({"dir": "etc", "file": "a"}, [("dir", "must be one of: app, was")]),
        ({"dir": "app", "file": "a", "lines": 0}, [("lines", "must be an integer from 1 to 2000")]),
        ({"dir": "app", "file": "a", "lines": True}, [("lines", "must be an integer")]),
        ({"dir": "app", "file": "a", "lines": "1e3"}, [("lines", "must be an integer")]),
        ({"dir": "app", "file": "a", "lines": "１２"}, [("lines", "must be an integer")]),
        ({"dir": "app", "file": "a", "lines": "9" * 40}, [("lines", "must be an integer")]),
        (
            {"dir": "app", "file": "a", "since": "2026-02-30"},
            [("since", "must be a real calendar date (YYYY-MM-DD)")],
        ),
        ({"dir": "app", "file": "a", "since": "20260101"}, [("since", "must be a date written YYYY-MM-DD")]),
        (
            {"dir": "app", "file": "a", "host": "a/b"},
            [("host", "must be letters, digits and . _ @ : - (starting with a letter or digit)")],
        ),
        ({"dir": "app", "file": "a", "x": 1}, [("x", "unknown argument")]),
        ({"dir": "app", "file": "a", "$(id)": 1}, [("(invalid name)", "unknown argument")]),
        (
            {"dir": ["app"], "file": {"a": 1}},
            [("dir", "must be one of: app, was"), ("file", "must be a string")],
        ),
    ],
)
def test_bad_arguments_are_each_named(args: dict[str, object], problems: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidArguments) as caught:
        build_argv(TAIL, args)
    assert sorted(caught.value.problems) == sorted(problems)


def test_ascii_flag_keeps_unicode_digits_out_of_a_manifest_pattern() -> None:
    digits = manifest('[[params]]\nname = "n"\ntype = "string"\npattern = "\\\\d+"\n')
    assert build_argv(digits, {"n": "123"}) == ["123"]
    with pytest.raises(InvalidArguments):
        build_argv(digits, {"n": "１２３"})  # full-width digits are \d in a Unicode regex
    hangul = manifest('[[params]]\nname = "n"\ntype = "string"\npattern = "[가-힣a-z]+"\n')
    assert build_argv(hangul, {"n": "서버abc"}) == ["서버abc"]  # widened explicitly by the manifest


SHELL_META = st.text(alphabet=st.sampled_from([*" $`;|&<>()*?~'\"\\!#{}[]=%^+,.:/@_", "a", "Z", "0"]))


@given(st.one_of(SHELL_META, st.text(max_size=80)))
def test_any_accepted_string_is_exactly_one_argv_element(value: str) -> None:
    wide = manifest('[[params]]\nname = "v"\ntype = "string"\nmin_length = 0\nmax_length = 80\n')
    try:
        argv = build_argv(wide, {"v": value})
    except InvalidArguments as exc:
        reason = str(exc)
        assert len(value) < 2 or value not in reason
        assert not value.isascii() or not value.isprintable() or value.startswith("-") or len(value) > 80
        return
    assert argv == [value]
    assert re.fullmatch(r"[\x20-\x7e]*", value) and not value.startswith("-")


@given(
    st.dictionaries(
        st.text(max_size=10),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=20), st.booleans(), st.lists(st.integers(), max_size=2)
        ),
    )
)
def test_arbitrary_arguments_give_argv_or_invalid_arguments(args: dict[str, object]) -> None:
    try:
        argv = build_argv(TAIL, args)
    except InvalidArguments as exc:
        assert exc.problems
        return
    assert all(isinstance(element, str) for element in argv)
    assert argv[:2] == [args["dir"], args["file"]]


@pytest.mark.parametrize(
    "hidden",
    ["\u00ad", "\u061c", "\u180e", "\U000e0041", "\ufff9", "\ufe0f", "\u3164", "\u115f", "\u2800", "\u200b",
     "\u202e", "\u2028", "\x85", "\x7f", "\ue000"],
)  # fmt: skip
def test_an_argument_never_carries_an_invisible_or_format_character(hidden: str) -> None:
    m = manifest('[[params]]\nname = "v"\ntype = "string"\npattern = ".{1,50}"\n')
    with pytest.raises(InvalidArguments):
        build_argv(m, {"v": f"a{hidden}b"})
    assert build_argv(m, {"v": "a-b 한글"}) == ["a-b 한글"]


def test_the_arguments_an_approver_sees_include_every_default_in_the_manifests_order() -> None:
    change = manifest(
        """
[[params]]
name = "mode"
type = "enum"
choices = ["dry-run", "apply"]
default = "dry-run"

[[params]]
name = "days"
type = "integer"
min = 1
max = 90
default = 30

[[params]]
name = "note"
type = "string"
max_length = 64
required = false
flag = "--note"
""",
        head="requires_approval = true\nchanges_state = true\n",
    )
    sent = {"days": 7}
    build_argv(change, sent)  # accepted
    assert list(effective_args(change, sent).items()) == [("mode", "dry-run"), ("days", 7)]
    assert effective_args(change, {}) == {"mode": "dry-run", "days": 30}
