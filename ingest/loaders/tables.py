"""Tables: CSV/TSV, spreadsheets (.xlsx, .ods) and the Markdown form every table takes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, register_loader
from ingest.loaders.text import decode_bytes

logger = logging.getLogger(__name__)

#: Rows read per sheet at most: a sheet of a million rows is data, not a document to answer from.
MAX_SHEET_ROWS = 20_000


def markdown_table(rows: Iterable[Sequence[Any]]) -> str:
    """Rows (the first is the header) as a Markdown table: cells on one line, '|' escaped, empty rows and
    columns dropped, short rows padded. The splitter keeps such a table whole, or repeats its header row
    in every chunk of it (:mod:`ingest.split`)."""
    grid = [[_cell(c) for c in row] for row in rows]
    grid = [row for row in grid if any(row)]
    if not grid:
        return ""
    width = max(len(row) for row in grid)
    grid = [row + [""] * (width - len(row)) for row in grid]
    keep = [i for i in range(width) if any(row[i] for row in grid)]
    grid = [[row[i] for i in keep] for row in grid]
    header, body = grid[0], grid[1:]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split()).replace("|", "\\|")


# --- csv ---------------------------------------------------------------------------------------------


@register_loader(".csv", ".tsv")
def load_csv(path: Path, options: LoadOptions) -> LoadedDocument:
    """Row-wise: each row one line, "column: value; column: value", so a chunk never loses its headers."""
    import csv
    import io

    text = decode_bytes(path.read_bytes(), path)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    if not rows:
        return LoadedDocument([])
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    lines = []
    for row in rows[1:] if len(rows) > 1 else rows:
        cells = [
            f"{header[i] if i < len(header) else f'column {i + 1}'}: {cell.strip()}"
            for i, cell in enumerate(row)
            if cell.strip()
        ]
        lines.append("; ".join(cells))
    return LoadedDocument([Section(text="\n".join(lines))])


@register_loader(".xlsx", ".xlsm")
def load_xlsx(path: Path, options: LoadOptions) -> LoadedDocument:
    """One section per sheet, as a Markdown table (first non-empty row = header); sheet name = heading.
    Cached values are read (``data_only``): formulas give what Excel last computed."""
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    sections: list[Section] = []
    notes: list[str] = []
    try:
        for number, sheet in enumerate(workbook.worksheets, start=1):
            rows = []
            for index, row in enumerate(sheet.iter_rows(values_only=True)):
                if index >= MAX_SHEET_ROWS:
                    notes.append(f"sheet '{sheet.title}': only the first {MAX_SHEET_ROWS} rows read")
                    break
                rows.append(row)
            table = markdown_table(rows)
            if table:
                sections.append(Section(text=table, page=number, metadata={"heading": str(sheet.title)}))
    finally:
        workbook.close()
    return LoadedDocument(sections, notes)
