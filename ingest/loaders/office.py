"""Word (.docx), PowerPoint (.pptx) and OpenDocument text (.odt)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, add_block, register_loader, sections_from_blocks
from ingest.loaders.tables import markdown_table

logger = logging.getLogger(__name__)

# --- office ------------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^(?:heading|标题|標題)\s*(\d)$", re.IGNORECASE)


@register_loader(".docx")
def load_docx(path: Path, options: LoadOptions) -> LoadedDocument:
    """Paragraphs and tables in document order; Heading/Title styles give the heading path."""
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    blocks: list[tuple[int, str, str]] = [(0, "", "")]
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            text = markdown_table([c.text for c in row.cells] for row in item.rows)
            level = 0
        else:
            text = item.text.strip()
            style = (item.style.name if item.style is not None else "") or ""
            match = _HEADING_STYLE.match(style.strip())
            level = int(match.group(1)) if match else (1 if style.strip().lower() == "title" else 0)
        add_block(blocks, level, text)
    sections = sections_from_blocks(blocks)
    warnings = []
    if not sections and document.inline_shapes:
        warnings.append("the document holds only images; their text is not read (OCR reads scanned PDFs and images)")
    return LoadedDocument(sections, warnings)


@register_loader(".pptx")
def load_pptx(path: Path, options: LoadOptions) -> LoadedDocument:
    """One section per slide (slide number as the page): text frames, tables, grouped shapes, notes."""
    from pptx import Presentation

    presentation = Presentation(str(path))
    sections: list[Section] = []
    for number, slide in enumerate(presentation.slides, start=1):
        parts = [t for t in (_shape_text(shape) for shape in slide.shapes) if t]
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                parts.append(notes)
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None and title_shape.has_text_frame else ""
        if parts:
            meta = {"heading": title} if title else {}
            sections.append(Section(text="\n\n".join(parts), page=number, metadata=meta))
    return LoadedDocument(sections)


def _shape_text(shape: Any) -> str:
    if getattr(shape, "shapes", None) is not None and shape.shape_type == 6:  # a group: recurse
        return "\n\n".join(t for t in (_shape_text(s) for s in shape.shapes) if t)
    if getattr(shape, "has_table", False) and shape.has_table:
        return markdown_table([c.text for c in row.cells] for row in shape.table.rows)
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        return str(shape.text_frame.text).strip()
    return ""


# --- odt ---------------------------------------------------------------------------------------------

_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_ODF_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"


@register_loader(".odt")
def load_odt(path: Path, options: LoadOptions) -> LoadedDocument:
    """OpenDocument text (odfpy): headings (``text:h`` with its outline level) give the heading path,
    paragraphs and lists in order, tables as Markdown tables."""
    from odf import teletype
    from odf.opendocument import load

    document = load(str(path))
    blocks: list[tuple[int, str, str]] = [(0, "", "")]

    def add(level: int, text: str) -> None:
        add_block(blocks, level, text)

    def walk(node: Any) -> None:
        for child in node.childNodes:
            if child.nodeType != child.ELEMENT_NODE:
                continue
            ns, name = child.qname
            if ns == _ODF_TEXT and name == "h":
                level = child.attributes.get((_ODF_TEXT, "outline-level"))
                add(int(level) if level and str(level).isdigit() else 1, " ".join(teletype.extractText(child).split()))
            elif ns == _ODF_TEXT and name == "p":
                add(0, teletype.extractText(child).strip())
            elif ns == _ODF_TABLE and name == "table":
                rows = [
                    [teletype.extractText(cell) for cell in row.childNodes
                     if cell.nodeType == cell.ELEMENT_NODE and cell.qname[1] in ("table-cell", "covered-table-cell")]
                    for row in _descendants(child, _ODF_TABLE, "table-row")
                ]
                add(0, markdown_table(rows))
            else:
                walk(child)

    walk(document.text)
    return LoadedDocument(sections_from_blocks(blocks))


def _descendants(node: Any, ns: str, name: str) -> list[Any]:
    out = []
    for child in node.childNodes:
        if child.nodeType == child.ELEMENT_NODE:
            if child.qname == (ns, name):
                out.append(child)
            else:
                out.extend(_descendants(child, ns, name))
    return out
