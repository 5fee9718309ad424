"""The monthly report (agent/state/monthly.py) written out: xlsx, csv or html.

* xlsx (openpyxl, imported here only, on use): one sheet per table, bold headings, the first row frozen.
* csv: **one file with sections**, UTF-8 with a BOM (Excel on Korean Windows opens it right): the report's title,
  then per table a line ``[title]``, the headings, the rows, and an empty line.
* html: one self-contained page (inline CSS, no script, no external asset): the tables, and one inline SVG chart per
  check of its availability each day.

A cell that a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@`` first: a chat user id, say) is
written as text: quoted with ``'`` in csv, typed as a string in xlsx.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Literal

from agent.state.monthly import PERCENT_COLUMNS, WORDS, Cell, DailyAvailability, MonthlyReport, Table

Format = Literal["xlsx", "csv", "html"]
FORMATS: tuple[Format, ...] = ("xlsx", "csv", "html")
FORMULA_FIRST = ("=", "+", "-", "@", "\t", "\r")


def _shown(value: Cell, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and column in PERCENT_COLUMNS:
        return f"{value:.2f}"
    return str(value)


def _as_text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_FIRST) and not _is_number(value) else value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- csv -------------------------------------------------------------------------------------------------------


def to_csv(report: MonthlyReport) -> bytes:
    """The report as one CSV with a section per table, UTF-8 with a BOM, CRLF line ends (Excel's own)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([report.title])
    writer.writerow([])
    for table in report.tables:
        writer.writerow([f"[{table.title}]"])
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_as_text(_shown(v, c)) for v, c in zip(row, table.columns, strict=True)])
        if table.note:
            writer.writerow([table.note])
        writer.writerow([])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


# -- xlsx ------------------------------------------------------------------------------------------------------


def _width(text: str) -> int:
    """Display width in Excel's units (a Hangul syllable is about two)."""
    return sum(2 if ord(ch) > 0x1100 else 1 for ch in text)


def to_xlsx(report: MonthlyReport) -> bytes:
    """The report as an Excel workbook, one sheet per table (the summary first)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill

    book = Workbook()
    book.remove(book.active)
    book.properties.title = report.title
    heading_fill = PatternFill("solid", fgColor="DDE4EE")
    for table in report.tables:
        sheet = book.create_sheet(title=table.title[:31])
        sheet.append(list(table.columns))
        for cell in sheet[1]:
            cell.font = Font(bold=True)
            cell.fill = heading_fill
        widths = [_width(c) for c in table.columns]
        for number, row in enumerate(table.rows, start=2):
            for index, (value, column) in enumerate(zip(row, table.columns, strict=True), start=1):
                cell = sheet.cell(row=number, column=index, value=value)
                if isinstance(value, str):
                    cell.data_type = "s"  # never a formula, whatever it starts with
                elif isinstance(value, float) and column in PERCENT_COLUMNS:
                    cell.number_format = "0.00"
                widths[index - 1] = max(widths[index - 1], _width(_shown(value, column)))
        if table.note:
            sheet.cell(row=len(table.rows) + 3, column=1, value=table.note).data_type = "s"
        for index, width in enumerate(widths, start=1):
            sheet.column_dimensions[sheet.cell(row=1, column=index).column_letter].width = min(60, width + 2)
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# -- html ------------------------------------------------------------------------------------------------------

STYLE = """
body{font-family:"Malgun Gothic","Apple SD Gothic Neo","Noto Sans KR",sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}
th{background:#dde4ee}td.n{text-align:right}p.note{color:#666}figure{margin:1em 0}
figcaption{font-weight:bold;margin-bottom:.3em}
"""
CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 640, 180, 40, 22, 10


def _color(share: float) -> str:
    if share >= 99.9:
        return "#2e7d32"
    if share >= 99.0:
        return "#f9a825"
    return "#c62828"


def chart_svg(chart: DailyAvailability) -> str:
    """One check's availability per day as an inline SVG bar chart (0-100 %, a grey tick for a day with no data)."""
    inner_w, inner_h = CHART_W - PAD_L - 10, CHART_H - PAD_B - PAD_T
    step = inner_w / max(1, len(chart.days))
    title = WORDS["chart_title"].format(check=chart.check)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
    ]
    for grid in (0, 50, 100):
        y = PAD_T + inner_h * (1 - grid / 100)
        parts.append(f'<line x1="{PAD_L}" x2="{CHART_W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{grid}%</text>')
    for index, (day, share) in enumerate(chart.days):
        x = PAD_L + index * step + 1
        label = f"{day.isoformat()}: " + (f"{share:.2f}%" if share is not None else WORDS["no_data"])
        if share is None:
            parts.append(f'<rect class="none" x="{x:.1f}" y="{PAD_T + inner_h - 2}" width="{step - 2:.1f}" '
                         f'height="2" fill="#bbb"><title>{html.escape(label)}</title></rect>')  # fmt: skip
        else:
            height = inner_h * share / 100
            parts.append(
                f'<rect class="day" data-day="{day.isoformat()}" data-share="{share:.2f}" x="{x:.1f}" '
                f'y="{PAD_T + inner_h - height:.1f}" width="{step - 2:.1f}" height="{height:.1f}" '
                f'fill="{_color(share)}"><title>{html.escape(label)}</title></rect>'
            )
        if day.day == 1 or day.day % 5 == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{CHART_H - 6}" font-size="10" '
                         f'text-anchor="middle">{day.day}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for value, column in zip(row, table.columns, strict=True):
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            cells.append(f"<td{' class=n' if numeric else ''}>{html.escape(_shown(value, column))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (f'<section id="{table.key}"><h2>{html.escape(table.title)}</h2>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}</section>")  # fmt: skip


def to_html(report: MonthlyReport) -> bytes:
    """The report as one self-contained HTML page: no script, no external asset."""
    sections = [_html_table(table) for table in report.tables]
    charts = "".join(
        f'<figure class="chart" data-check="{html.escape(c.check)}"><figcaption>'
        f"{html.escape(WORDS['chart_title'].format(check=c.check))}</figcaption>{chart_svg(c)}</figure>"
        for c in report.charts
    )
    if charts:
        at = next((i for i, s in enumerate(sections) if 'id="availability"' in s), len(sections) - 1) + 1
        sections.insert(at, f'<section id="charts"><h2>{html.escape(WORDS["charts"])}</h2>'
                            f"{charts}</section>")  # fmt: skip
    page = (
        '<!doctype html><html lang="ko"><head><meta charset="utf-8">'
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(report.title)}</h1>{''.join(sections)}</body></html>\n"
    )
    return page.encode("utf-8")


WRITERS = {"xlsx": to_xlsx, "csv": to_csv, "html": to_html}


def write_report(report: MonthlyReport, form: Format, path: Path) -> Path:
    """Write ``report`` as ``form`` to ``path`` (replaced whole: written beside it, then renamed).

    Raises:
        OSError: the file cannot be written.
    """
    data = WRITERS[form](report)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path
