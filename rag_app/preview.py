"""Where a cited passage comes from, shown to the user: a PDF page rendered as an image with the passage
highlighted, or the passage within its surrounding text.

A citation's 160-character snippet does not let a reader check an answer; the page does. The passage is
found on the page by its text (whitespace and compatibility forms ignored, since ingestion normalised both),
its characters' boxes merged line by line into highlight rectangles.
"""

from __future__ import annotations

import io
import logging
import unicodedata
from pathlib import Path

from rag_app.errors import RagError

logger = logging.getLogger(__name__)

#: Render scale (1 = 72 dpi): 2 keeps Chinese characters legible in the app without huge images.
RENDER_SCALE = 2.0
#: Text windows tried when the whole passage is not found verbatim on the page (it was cleaned on ingest).
_PROBE_CHARS = 24
_HIGHLIGHT = (255, 214, 0, 96)
_OUTLINE = (230, 120, 0, 255)


class PreviewError(RagError):
    hint = "the passage is still shown as text"


def _normalised(text: str) -> tuple[str, list[int]]:
    """``text`` without whitespace, NFKC, lower-cased; and for each of its characters the index in ``text``."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for piece in unicodedata.normalize("NFKC", ch).lower():
            if not piece.isspace():
                out.append(piece)
                where.append(i)
    return "".join(out), where


def find_span(page_text: str, passage: str) -> tuple[int, int] | None:
    """Character range ``[start, end)`` of ``passage`` in ``page_text``, tolerant of whitespace and of a
    passage that runs onto the next page (its start is found, the rest of the page is taken)."""
    hay, where = _normalised(page_text)
    needle, _ = _normalised(passage)
    if not hay or not needle:
        return None
    pos = hay.find(needle)
    if pos >= 0:
        return where[pos], where[pos + len(needle) - 1] + 1
    start = -1
    for offset in range(0, max(1, len(needle) - _PROBE_CHARS), _PROBE_CHARS):
        probe = needle[offset : offset + _PROBE_CHARS]
        start = hay.find(probe)
        if start >= 0:
            start = max(0, start - offset)
            break
    if start < 0:
        return None
    end = min(len(hay), start + len(needle))
    return where[start], where[end - 1] + 1


def _line_rects(boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    """Character boxes (left, bottom, right, top) merged into one rectangle per text line."""
    rects: list[list[float]] = []
    for left, bottom, right, top in boxes:
        if right <= left or top <= bottom:
            continue
        last = rects[-1] if rects else None
        if last and abs(last[1] - bottom) < (top - bottom) * 0.6 and left >= last[0] - 2:
            last[0], last[1] = min(last[0], left), min(last[1], bottom)
            last[2], last[3] = max(last[2], right), max(last[3], top)
        else:
            rects.append([left, bottom, right, top])
    return [(r[0], r[1], r[2], r[3]) for r in rects]


def render_pdf_page(path: Path, page: int, passage: str | None, password: str | None = None) -> bytes:
    """PNG of page ``page`` (1-based) of the PDF at ``path``, with ``passage`` highlighted where found."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    try:
        pdf = pdfium.PdfDocument(str(path), password=password)
    except pdfium.PdfiumError as exc:
        raise PreviewError(f"{path.name}: cannot open the PDF to show its page ({exc})") from exc
    try:
        if not 1 <= page <= len(pdf):
            raise PreviewError(f"{path.name} has no page {page}")
        pdf_page = pdf[page - 1]
        image = pdf_page.render(scale=RENDER_SCALE).to_pil().convert("RGBA")
        if passage:
            textpage = pdf_page.get_textpage()
            text = textpage.get_text_range(0, textpage.count_chars())
            span = find_span(text, passage)
            if span is not None:
                _, height = pdf_page.get_size()
                boxes = [textpage.get_charbox(i) for i in range(*span)]
                overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
                draw = ImageDraw.Draw(overlay)
                s = RENDER_SCALE
                for left, bottom, right, top in _line_rects(boxes):
                    box = (left * s - 2, (height - top) * s - 2, right * s + 2, (height - bottom) * s + 2)
                    draw.rectangle(box, fill=_HIGHLIGHT, outline=_OUTLINE, width=2)
                image = Image.alpha_composite(image, overlay)
            else:
                logger.info("passage not found on page %s of %s", page, path.name)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG", optimize=False)
        return out.getvalue()
    finally:
        pdf.close()
