"""docs/benchmarks.md's generated sections (benchmarks/report.py), without running a benchmark."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

from benchmarks import report
from benchmarks.__main__ import main

NOON_UTC = dt.datetime(2026, 12, 8, 3, 4, tzinfo=dt.UTC)
SUMMARY = "2026-12-08 12:04 KST, 2 CPUs, Python 3.11.9 (CPython), Linux x86_64"


def _doc(*sections: str) -> str:
    return (
        "# Benchmarks\n\nWhat each measures.\n\n## Results\n\nHow to read them.\n\n"
        + "\n\n".join(sections)
        + "\n"
    )


def _hand(name: str, text: str) -> str:
    begin, end = report.markers(name)
    return f"{begin}\n### {name}\n\n{text}\n{end}"


def test_the_machine_summary_gives_the_date_in_kst_the_cpus_and_python() -> None:
    assert report.machine_summary(NOON_UTC, 2, "3.11.9 (CPython)", "Linux x86_64") == SUMMARY
    assert report.machine_summary(NOON_UTC, None, "3.12.1", "Linux").startswith(
        "2026-12-08 12:04 KST, ? CPUs,"
    )
    assert ", 1 CPU, " in report.machine_summary(NOON_UTC, 1, "3.12.1", "Linux")
    assert report.machine_summary(NOON_UTC, 2, "3.12.1", "Linux", 1.5).endswith(
        ", Linux, load 1.50 at the start"
    )
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d KST, .+ CPUs?, Python \S+ .+", report.this_machine())


def test_a_section_holds_the_markers_the_machine_the_command_and_the_figures_fenced() -> None:
    section = report.render_section(
        "catalog", "   verify :  94.0 ms\n   floor  :  23.5 ms\n\n", SUMMARY, 6.04
    )
    begin, end = report.markers("catalog")
    assert section.startswith(begin + "\n### catalog\n") and section.endswith(end)
    assert f"`python -m benchmarks catalog --write` on {SUMMARY}; took 6.0 s." in section
    # dedented, the trailing blank lines gone
    assert "```text\nverify :  94.0 ms\nfloor  :  23.5 ms\n```" in section


def test_printed_backticks_get_a_longer_fence() -> None:
    section = report.render_section("x", "a ```b``` c\n", SUMMARY)
    assert "````text\na ```b``` c\n````" in section


def test_one_benchmark_is_updated_and_the_others_and_the_prose_kept() -> None:
    doc = _doc(
        _hand("catalog", "94 ms by hand"), _hand("chat_text", "339 µs by hand"), _hand("link", "p50 19 ms")
    )
    new = report.render_section("chat_text", "   301.0 µs/message\n", SUMMARY)
    updated = report.replace_sections(doc, {"chat_text": new})
    assert updated == doc.replace(_hand("chat_text", "339 µs by hand"), new)
    assert "94 ms by hand" in updated and "p50 19 ms" in updated and "339 µs" not in updated
    assert report.replace_sections(updated, {"chat_text": new}) == updated


def test_several_benchmarks_are_updated_at_once() -> None:
    doc = _doc(_hand("catalog", "old"), _hand("chat_text", "old"))
    sections = {
        name: report.render_section(name, f"{name} figures", SUMMARY) for name in ("catalog", "chat_text")
    }
    updated = report.replace_sections(doc, sections)
    assert "old" not in updated and updated == _doc(sections["catalog"], sections["chat_text"])


def test_a_benchmark_without_markers_is_added_after_the_last_section() -> None:
    doc = _doc(_hand("catalog", "old")) + "\n## Afterword\n\nkept last.\n"
    new = report.render_section("redaction", "143 MB/s", SUMMARY)
    updated = report.replace_sections(doc, {"redaction": new})
    assert updated.index(report.markers("catalog")[1]) < updated.index(new) < updated.index("## Afterword")
    assert updated.replace("\n\n" + new, "") == doc


def test_a_doc_without_any_section_gets_it_at_the_end() -> None:
    doc = "# Benchmarks\n\nprose only\n\n"
    new = report.render_section("catalog", "94 ms", SUMMARY)
    assert report.replace_sections(doc, {"catalog": new}) == "# Benchmarks\n\nprose only\n\n" + new + "\n"


def test_a_name_that_is_a_prefix_of_another_touches_only_its_own_section() -> None:
    doc = _doc(_hand("link", "link by hand"), _hand("link_v2", "v2 by hand"))
    updated = report.replace_sections(doc, {"link": report.render_section("link", "new", SUMMARY)})
    assert "v2 by hand" in updated and "link by hand" not in updated


def test_write_sections_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(_doc(_hand("catalog", "old"), _hand("link", "kept")), encoding="utf-8", newline="\n")
    new = report.render_section("catalog", "94 ms", SUMMARY)
    report.write_sections({"catalog": new}, path)
    assert path.read_text(encoding="utf-8") == _doc(new, _hand("link", "kept"))


def test_tee_keeps_what_is_printed_and_passes_it_on() -> None:
    echo = io.StringIO()
    tee = report.Tee(echo)
    print("   figure 1", file=tee, flush=True)
    tee.write("figure 2\n")
    assert tee.getvalue() == echo.getvalue() == "   figure 1\nfigure 2\n"


def test_the_doc_has_a_section_per_benchmark_and_names_its_command() -> None:
    doc = report.DOC.read_text(encoding="utf-8")
    names = sorted(
        p.stem.removeprefix("bench_") for p in report.DOC.parent.parent.glob("benchmarks/bench_*.py")
    )
    for name in names:
        begin, end = report.markers(name)
        assert doc.count(begin) == 1 and doc.count(end) == 1, name
        assert doc.index(begin) < doc.index(end)
        assert f"`{report.regenerate_command(name)}`" in doc[doc.index(begin) : doc.index(end)], name


def test_an_unknown_benchmark_is_refused_before_anything_runs_or_is_written() -> None:
    before = report.DOC.read_text(encoding="utf-8")
    assert main(["no_such_benchmark", "--write"]) == 2
    assert report.DOC.read_text(encoding="utf-8") == before
