"""Render a report ``Table`` as text, Markdown, CSV or HTML.

Text and Markdown go through ``tabulate``. CSV and HTML are written here: CSV keeps
parameter counts as plain integers, and the HTML table gets its own classes and
indentation so that a notebook shows the module nesting of the graph view.
"""

from __future__ import annotations

import csv
import html
import io

from tabulate import tabulate, tabulate_formats

from ._report_tables import MISSING, SHARED, Table
from .errors import ReportError

__all__ = ["render_text", "render_markdown", "render_csv", "render_html", "TABLE_FORMATS"]

TABLE_FORMATS = tuple(tabulate_formats)

# Markdown renderers drop leading spaces in a table cell, but keep no-break spaces.
_MARKDOWN_INDENT = "\u00a0\u00a0"


def _cell_text(value: str | int) -> str:
    return f"{value:,}" if isinstance(value, int) else value


def _text_rows(table: Table, indent: str) -> list[list[str]]:
    rows = []
    for cells, level in zip(table.rows, table.indents):
        texts = [_cell_text(cells[column.key]) for column in table.columns]
        texts[0] = indent * level + texts[0]
        rows.append(texts)
    return rows


def _alignment(table: Table) -> list[str]:
    return ["right" if column.numeric else "left" for column in table.columns]


def render_text(table: Table, tablefmt: str) -> str:
    """Render ``table`` in the ``tabulate`` format ``tablefmt``, followed by its totals lines.

    Raises:
        ReportError: ``tablefmt`` is not a ``tabulate`` format.
    """
    if tablefmt not in TABLE_FORMATS:
        raise ReportError(f"Unknown table format {tablefmt!r}. Valid formats: {', '.join(TABLE_FORMATS)}.")
    footer = "\n".join(table.footer)
    if not table.rows:
        return footer
    text = tabulate(
        _text_rows(table, "  "),
        headers=[column.title for column in table.columns],
        tablefmt=tablefmt,
        colalign=_alignment(table),
        disable_numparse=True,
        preserve_whitespace=True,
    )
    return f"{text}\n{footer}"


def _escape_markdown(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(table: Table) -> str:
    """Render ``table`` as a Markdown pipe table, with each totals line as a paragraph."""
    footer = "\n\n".join(_escape_markdown(line) for line in table.footer)
    if not table.rows:
        return footer + "\n"
    rows = [[_escape_markdown(text) for text in row] for row in _text_rows(table, _MARKDOWN_INDENT)]
    text = tabulate(
        rows,
        headers=[column.title for column in table.columns],
        tablefmt="pipe",
        colalign=_alignment(table),
        disable_numparse=True,
        preserve_whitespace=True,
    )
    return f"{text}\n\n{footer}\n"


def _csv_cell(value: str | int, numeric: bool) -> str | int:
    """Write a missing value as an empty field, and a params cell as a plain integer."""
    if isinstance(value, int):
        return value
    if numeric and value in (MISSING, SHARED):
        return 0
    return "" if value == MISSING else value


def render_csv(table: Table) -> str:
    """Render the rows of ``table`` as CSV with a header of column keys; totals lines are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.key for column in table.columns])
    for cells in table.rows:
        writer.writerow([_csv_cell(cells[column.key], column.numeric) for column in table.columns])
    return buffer.getvalue()


def render_html(table: Table) -> str:
    """Render ``table`` as an HTML ``<table>`` followed by its totals lines as paragraphs."""
    lines = ['<div class="fxlazy-shape-report">']
    if table.rows:
        lines.append("<table>")
        lines.append("<thead>")
        header = "".join(_html_cell("th", column.title, column.numeric, 0) for column in table.columns)
        lines.append(f"<tr>{header}</tr>")
        lines.append("</thead>")
        lines.append("<tbody>")
        for cells, level in zip(table.rows, table.indents):
            row = "".join(
                _html_cell("td", _cell_text(cells[column.key]), column.numeric, level if index == 0 else 0)
                for index, column in enumerate(table.columns)
            )
            lines.append(f"<tr>{row}</tr>")
        lines.append("</tbody>")
        lines.append("</table>")
    lines.extend(f"<p>{html.escape(line)}</p>" for line in table.footer)
    lines.append("</div>")
    return "\n".join(lines)


def _html_cell(tag: str, text: str, numeric: bool, level: int) -> str:
    styles = ["text-align: right" if numeric else "text-align: left"]
    if level:
        styles.append(f"padding-left: {level * 1.5 + 0.5:g}em")
    return f'<{tag} style="{"; ".join(styles)}">{html.escape(text)}</{tag}>'
