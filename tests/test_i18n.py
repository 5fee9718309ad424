"""The chat message catalog: every text the code uses is translated in ko and en, the .mo files are fresh, and the
:class:`agent.chat.i18n.Chat` helpers (times in KST, honest counts, :class:`Msg`) never break a message."""

from __future__ import annotations

import datetime as dt
import gettext
import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from agent.chat.i18n import KEYWORDS, LANGUAGES, LOCALE_DIR, Chat, Msg, nmsg

AGENT = Path(__file__).resolve().parent.parent / "agent"
KST_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} KST$")


def _keywords() -> dict[str, tuple[int, ...] | None]:
    keywords: dict[str, tuple[int, ...] | None] = {}
    for word in KEYWORDS:
        name, _, spec = word.partition(":")
        keywords[name] = tuple(int(i) for i in spec.split(",")) if spec else None
    return keywords


def used_in_code() -> dict[str, str | None]:
    """msgid → msgid_plural (None for a singular) of every chat text marked in agent/."""
    found: dict[str, str | None] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(AGENT), keywords=_keywords(), comment_tags=()
    ):
        if isinstance(message, tuple):
            found[message[0]] = message[1]
        else:
            found.setdefault(message, None)
    return found


def po_catalog(language: str):  # type: ignore[no-untyped-def]
    with (LOCALE_DIR / language / "LC_MESSAGES" / "guardia.po").open("rb") as f:
        return read_po(f, locale=language)


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_the_code_uses_texts_at_all() -> None:
    used = used_in_code()
    # A sample from each layer, so a broken extraction (wrong keywords) cannot pass as "nothing missing".
    for text in ["connection refused", "{shown} shown ({total} in all)", "{n} item"]:
        assert text in used


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_in_the_code_is_translated(language: str) -> None:
    catalog = po_catalog(language)
    problems = []
    for msgid, plural in used_in_code().items():
        entry = catalog.get(msgid)
        if entry is None:
            problems.append(f"missing: {msgid!r}")
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(strings):
            problems.append(f"untranslated: {msgid!r}")
        if entry.fuzzy:
            problems.append(f"fuzzy: {msgid!r}")
        if (plural is None) != (not entry.pluralizable):
            problems.append(f"plural form differs from the code: {msgid!r}")
        # A translation may drop a value (Korean needs no plural n) but never invent one: str.format would fail.
        allowed = fields(msgid) | fields(plural or "")
        for translated in strings:
            if not fields(translated) <= allowed:
                problems.append(f"unknown placeholder in {translated!r} for {msgid!r}")
    assert not problems, f"run scripts/i18n and translate ({language}):\n" + "\n".join(problems)


@pytest.mark.parametrize("language", LANGUAGES)
def test_compiled_catalog_matches_its_po(language: str) -> None:
    catalog = po_catalog(language)
    expected: dict[object, str] = {}
    for entry in catalog:
        if not entry.id or entry.fuzzy:
            continue
        if isinstance(entry.id, tuple):
            for index, text in enumerate(entry.string):
                expected[(entry.id[0], index)] = text
        else:
            expected[entry.id] = entry.string
    with (LOCALE_DIR / language / "LC_MESSAGES" / "guardia.mo").open("rb") as f:
        compiled = dict(gettext.GNUTranslations(f)._catalog)  # type: ignore[attr-defined]
    compiled.pop("", None)
    assert compiled == expected, f"{language}: guardia.mo is stale; run scripts/i18n compile"


def test_korean_is_the_default_and_english_by_config() -> None:
    assert Chat()._("connection refused") == "연결 거부"
    assert Chat("en")._("connection refused") == "connection refused"


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (dt.datetime(2026, 11, 28, 5, 5, 59, 999_999, tzinfo=dt.UTC), "2026-11-28 14:05 KST"),
        (dt.datetime(2026, 11, 28, 15, 0), "2026-11-29 00:00 KST"),  # naive = UTC; the date rolls over
        (0.0, "1970-01-01 09:00 KST"),
    ],
)
def test_times_are_kst_without_seconds(moment: dt.datetime | float, shown: str) -> None:
    assert Chat().when(moment) == shown and KST_TIME.match(shown)


@pytest.mark.parametrize(
    ("language", "args", "shown"),
    [
        ("ko", (10, 15), "10건 표시 (전체 15건)"),
        ("ko", (10, 10, True), "10건 표시 (전체 10건 이상)"),
        ("ko", (3, 3), "3건"),
        ("en", (10, 15), "10 shown (15 in all)"),
        ("en", (1, None), "1 item"),
        ("en", (0, 0), "0 items"),
    ],
)
def test_counts_are_honest(language: str, args: tuple[int, int | None, bool], shown: str) -> None:
    assert Chat(language).count(*args) == shown


def test_durations_and_sizes_in_human_units() -> None:
    ko, en = Chat(), Chat("en")
    assert (ko.duration(0.42), ko.duration(65), ko.duration(7380)) == ("0.4초", "1분 5초", "2시간 3분")
    assert en.duration(65) == "1 min 5 s" and en.size(3 * 1024**3) == "3.0 GiB" and en.size(12) == "12 B"


def test_msg_is_its_english_text_and_translates_with_nested_values_after_json() -> None:
    inner = Msg("connection refused")
    outer = Msg("cannot reach host ({reason})", reason=inner)
    assert outer == "cannot reach host (connection refused)"
    assert Chat().text(outer.to_json()) == "호스트에 연결할 수 없음 (연결 거부)"
    assert Chat("en").text(outer) == outer
    plural = nmsg("{n} item", "{n} items", 3)
    assert plural == "3 items" and Chat().text(plural.to_json()) == "3건"


@given(
    template=st.text(max_size=40),
    values=st.dictionaries(
        st.sampled_from(["a", "b", "n"]), st.text(max_size=10) | st.integers() | st.none()
    ),
)
def test_a_broken_or_hostile_template_never_raises(template: str, values: dict[str, object]) -> None:
    message = Msg(template, **values)
    assert isinstance(str(message), str)
    for chat in (Chat(), Chat("en")):
        assert isinstance(chat.text(message.to_json()), str)
        assert isinstance(chat.text({"id": template, "args": values, "plural": template, "n": 2}), str)


def test_templates_cannot_reach_attributes() -> None:
    leak = Msg("{a.__class__.__mro__}", a="x")
    assert "class" not in Chat().text(leak.to_json()).replace("{a.__class__.__mro__}", "")


def test_chat_config_defaults_to_korean_kst_and_refuses_unknown_zones_and_languages(tmp_path: Path) -> None:
    from agent.config.schema import load_config
    from agent.errors import ConfigError

    path = tmp_path / "agent.toml"
    path.write_text("", encoding="utf-8", newline="\n")
    chat = load_config(path).chat
    assert (chat.language, chat.timezone) == ("ko", "Asia/Seoul")
    path.write_text('[chat]\nlanguage = "en"\ntimezone = "Europe/Berlin"\n', encoding="utf-8", newline="\n")
    assert load_config(path).chat.chat() == Chat("en", "Europe/Berlin")
    for bad in ['timezone = "Mars/Olympus"', 'timezone = "../../etc/passwd"', 'timezone = "Asia"',
                'timezone = ""', 'language = "fr"']:  # fmt: skip
        path.write_text(f"[chat]\n{bad}\n", encoding="utf-8", newline="\n")
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        assert "chat." in str(refused.value), bad


def test_every_template_survives_redaction() -> None:
    """The runtime translates from the redacted JSON: a template the redactor changed would not be found."""
    from agent.redaction import Redactor

    redactor = Redactor()
    changed = [msgid for msgid in used_in_code() if redactor.redact(msgid) != msgid]
    assert not changed


def test_the_wheel_ships_the_compiled_catalogs() -> None:
    import tomllib

    project = tomllib.loads((AGENT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert "locale/*/LC_MESSAGES/*.mo" in project["tool"]["setuptools"]["package-data"]["agent.chat"]
    assert any(dep.startswith("tzdata") for dep in project["project"]["dependencies"])  # zoneinfo on Windows


def test_no_korean_text_leaves_a_particle_for_the_reader_to_choose() -> None:
    """Issue 28: '을(를)', '(으)로' after a placeholder read as a machine's; each text is phrased so the particle
    follows a word of its own. And one word for reject: 반려."""
    po = (Path(__file__).resolve().parent.parent / "agent/chat/locale/ko/LC_MESSAGES/guardia.po").read_text(
        encoding="utf-8"
    )
    strings = [line for line in po.splitlines() if line.startswith("msgstr")]
    assert [s for s in strings if re.search(r"\((을|를|은|는|이|가|으|와|과)\)|을\(를\)|\(으\)로", s)] == []
    assert [s for s in strings if "거절" in s] == []
