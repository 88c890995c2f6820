"""PDF: the text layer per page (pypdf), tables (pdfplumber), OCR of pages without text (optional), and
heading paths from the outline or font sizes (:mod:`.pdf_headings`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, register_loader
from ingest.loaders.images import render_page
from ingest.loaders.pdf_headings import PageLayout, extract_page, font_marks, outline_marks, split_at_headings
from ingest.loaders.tables import markdown_table
from rag_app.errors import DocumentLoadError, EncryptedDocumentError

logger = logging.getLogger(__name__)

# --- pdf -------------------------------------------------------------------------------------------


@register_loader(".pdf")
def load_pdf(path: Path, options: LoadOptions) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path)
    except PdfReadError as exc:
        raise DocumentLoadError(str(path), f"corrupt or not a PDF ({exc})") from exc
    if reader.is_encrypted:
        try:
            ok = reader.decrypt(options.password or "")
        except (FileNotDecryptedError, NotImplementedError) as exc:
            raise EncryptedDocumentError(str(path), f"encrypted PDF cannot be opened ({exc})") from exc
        if not ok:
            reason = "wrong password for encrypted PDF" if options.password else "encrypted PDF"
            raise EncryptedDocumentError(str(path), reason)
    sections: list[Section] = []
    no_text: list[int] = []
    layouts: dict[int, PageLayout] = {}
    for number, page in enumerate(reader.pages, start=1):
        try:
            layout = extract_page(page, number)
        except Exception as exc:  # one broken page does not lose the others
            logger.warning("%s page %d: cannot extract text (%s)", path, number, exc)
            layout = PageLayout(number, "")
        if layout.text.strip():
            layouts[number] = layout
            sections.append(Section(text=layout.text, page=number, layout_breaks=True))
        else:
            no_text.append(number)
    warnings: list[str] = []
    if sections:
        _tables_into(path, sections, options.password, warnings)
    if no_text:
        if options.ocr is None:
            warnings.append(
                f"{len(no_text)} page(s) without a text layer (scanned?), not indexed: {_ranges(no_text)}; "
                "OCR is off or not installed (pip install 'rag-app[ocr]', ingest.ocr = 'auto')"
            )
        else:
            sections += _ocr_pages(path, no_text, options, warnings)
            sections.sort(key=lambda s: s.page or 0)
    marks = outline_marks(reader, layouts) or font_marks(list(layouts.values()))
    return LoadedDocument(split_at_headings(sections, marks, layouts), warnings)


#: Vector paths on a page before it is searched for ruled tables: pdfplumber parses the whole page
#: (pdfminer, ~0.2 s a page), which only pays on pages that draw lines at all.
_MIN_TABLE_PATHS = 4


def _tables_into(path: Path, sections: list[Section], password: str | None, warnings: list[str]) -> None:
    """Pages that hold ruled tables get their text again from pdfplumber: the prose around each table,
    and the table itself as a Markdown table (pypdf's text would run its cells together)."""
    candidates = _pages_with_lines(path, [s.page for s in sections if s.page], password)
    if not candidates:
        return
    import pdfplumber

    by_page = {s.page: s for s in sections}
    with pdfplumber.open(str(path), password=password or "") as pdf:
        for number in candidates:
            try:
                text = _page_with_tables(pdf.pages[number - 1])
            except Exception as exc:  # table extraction is a bonus: keep pypdf's text
                warnings.append(f"page {number}: tables not extracted ({type(exc).__name__}: {exc})")
                continue
            if text is not None:
                by_page[number].text = text
                by_page[number].metadata["tables"] = True


def _pages_with_lines(path: Path, pages: list[int | None], password: str | None) -> list[int]:
    """Pages (1-based) that draw at least :data:`_MIN_TABLE_PATHS` vector paths (cheap, pdfium)."""
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c
    except ImportError:
        return []
    out = []
    try:
        pdf = pdfium.PdfDocument(str(path), password=password)
    except Exception:  # pypdf read it; pdfium's opinion only decides whether to look for tables
        return []
    try:
        for number in pages:
            if number is None or number > len(pdf):
                continue
            page = pdf[number - 1]
            paths = sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=2))
            if paths >= _MIN_TABLE_PATHS:
                out.append(number)
    finally:
        pdf.close()
    return out


def _page_with_tables(page: Any) -> str | None:
    """The page's text with its tables as Markdown tables, top to bottom; ``None`` without tables."""
    tables = [t for t in page.find_tables() if len(t.rows) >= 2]
    if not tables:
        return None
    tables.sort(key=lambda t: t.bbox[1])
    parts: list[str] = []
    top = 0.0
    for table in tables:
        x0, t_top, x1, t_bottom = table.bbox
        if t_top > top:
            parts.append(page.crop((0, top, page.width, t_top), strict=False).extract_text() or "")
        parts.append("\n\n" + markdown_table(table.extract()) + "\n\n")
        top = max(top, t_bottom)
    if top < page.height:
        parts.append(page.crop((0, top, page.width, page.height), strict=False).extract_text() or "")
    return "\n".join(p for p in parts if p.strip())


def _ocr_pages(path: Path, numbers: list[int], options: LoadOptions, warnings: list[str]) -> list[Section]:
    """Pages without a text layer, rendered (pypdfium2) and read by OCR; metadata ``ocr: True``."""
    import pypdfium2 as pdfium

    assert options.ocr is not None
    sections: list[Section] = []
    empty: list[int] = []
    pdf = pdfium.PdfDocument(str(path), password=options.password)
    try:
        for number in numbers:
            text = options.ocr.read_text(render_page(pdf[number - 1]))
            if text.strip():
                sections.append(Section(text=text, page=number, metadata={"ocr": True}, layout_breaks=True))
            else:
                empty.append(number)
    finally:
        pdf.close()
    done = [s.page for s in sections if s.page]
    if done:
        warnings.append(f"{len(done)} page(s) without a text layer read by OCR: {_ranges(done)}")
    if empty:
        warnings.append(f"{len(empty)} page(s) without a text layer where OCR found no text: {_ranges(empty)}")
    return sections


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
