"""Read a printed shape report back into rows, for every form the report prints.

Each parser returns a ``PrintedTable`` whose rows are keyed by column key (``output_shape``,
not ``output shape``), so one set of invariants checks every form.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# Elements that HTML writes without a closing tag.
_VOID_ELEMENTS = {"br", "hr", "img", "meta", "link", "input", "col", "wbr"}


@dataclass
class PrintedTable:
    """Rows of a printed report, keyed by column key, and the totals lines under them."""

    keys: list[str]
    rows: list[dict[str, str]]
    footer: list[str] = field(default_factory=list)


def column_key(title: str) -> str:
    """Return the column key of a printed title: ``output shape`` becomes ``output_shape``."""
    return title.replace(" ", "_")


def _first_footer_line(line: str) -> bool:
    return re.match(r"^\S+: (\d[\d,]* (lazy layers?|graph nodes?)|no lazy modules)", line) is not None


def parse_text(text: str) -> PrintedTable:
    """Read a report printed in tabulate's "simple" format; column bounds come from the dashed rule."""
    lines = text.splitlines()
    rule_index = next(i for i, line in enumerate(lines) if line.strip() and set(line) <= {"-", " "})
    spans = [match.start() for match in re.finditer(r"-+", lines[rule_index])]
    bounds = list(zip(spans, [*spans[1:], None]))

    def cells(line: str) -> list[str]:
        return [line[start:end].strip() for start, end in bounds]

    keys = [column_key(title) for title in cells(lines[rule_index - 1])]
    rows = []
    index = rule_index + 1
    while index < len(lines) and not _first_footer_line(lines[index]):
        rows.append(dict(zip(keys, cells(lines[index]))))
        index += 1
    return PrintedTable(keys, rows, lines[index:])


def _split_pipe_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [cell.replace("\\|", "|").replace("\u00a0", " ").strip() for cell in cells]


def parse_markdown(text: str) -> PrintedTable:
    """Read a report printed as a Markdown pipe table followed by paragraphs."""
    lines = text.splitlines()
    table_lines = [line for line in lines if line.startswith("|")]
    keys = [column_key(title) for title in _split_pipe_row(table_lines[0])]
    assert set("".join(_split_pipe_row(table_lines[1]))) <= {"-", ":"}, table_lines[1]
    rows = [dict(zip(keys, _split_pipe_row(line))) for line in table_lines[2:]]
    footer = [line for line in lines if line.strip() and not line.startswith("|")]
    return PrintedTable(keys, rows, footer)


def parse_csv(text: str) -> PrintedTable:
    """Read a report printed as CSV, whose header contains the column keys and which has no totals lines."""
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return PrintedTable(list(reader.fieldnames or []), rows)


class _TableReader(HTMLParser):
    """Collect header cells, body rows and paragraphs, and check that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open_tags: list[str] = []
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.paragraphs: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID_ELEMENTS:
            return
        self.open_tags.append(tag)
        if tag == "tr" and "tbody" in self.open_tags:
            self.rows.append([])
        if tag in ("th", "td", "p"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_ELEMENTS:
            return
        assert self.open_tags and self.open_tags[-1] == tag, f"</{tag}> closes {self.open_tags}"
        self.open_tags.pop()
        if tag in ("th", "td", "p"):
            text = "".join(self._text or [])
            self._text = None
            if tag == "th":
                self.header.append(text)
            elif tag == "td":
                self.rows[-1].append(text)
            else:
                self.paragraphs.append(text)

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def parse_html(text: str) -> PrintedTable:
    """Read a report printed as HTML, asserting that the document is well formed."""
    reader = _TableReader()
    reader.feed(text)
    reader.close()
    assert reader.open_tags == [], f"unclosed elements: {reader.open_tags}"
    keys = [column_key(title) for title in reader.header]
    rows = [dict(zip(keys, cells)) for cells in reader.rows]
    return PrintedTable(keys, rows, reader.paragraphs)


def params_value(cell: str) -> int:
    """Return the parameter count in a params cell; ``-``, ``shared`` and empty cells count 0."""
    text = cell.replace(",", "")
    return int(text) if text.isdigit() else 0


# The totals lines of the two views, as the report prints them.
LAZY_TOTALS = re.compile(
    r"^\S+: (?P<layers>\d+) lazy layers? materialized, (?P<parameters>[\d,]+) parameters? "
    r"\((?P<bytes>[\d,]+) bytes?\) in them\.$"
)
MODEL_TOTALS = re.compile(r"^Whole model: (?P<parameters>[\d,]+) parameters? \((?P<bytes>[\d,]+) bytes?\)\.$")
GRAPH_TOTALS = re.compile(
    r"^\S+: (?P<nodes>[\d,]+) graph nodes?, (?P<parameters>[\d,]+) parameters? \((?P<bytes>[\d,]+) bytes?\)\.$"
)
UNUSED_TOTALS = re.compile(r"^(?P<parameters>[\d,]+) parameters? \((?P<bytes>[\d,]+) bytes?\) belong to modules no node uses: ")


def number(text: str) -> int:
    """Read an integer printed with thousands separators."""
    return int(text.replace(",", ""))
