"""Where a cited passage comes from, shown to the user: a PDF page rendered as an image with the passage
highlighted, or the passage within its surrounding text.

A citation's 160-character snippet does not let a reader check an answer; the page does. The passage is
found on the page by its text (whitespace and compatibility forms ignored, since ingestion normalised both),
its characters' boxes merged line by line into highlight rectangles.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import unicodedata
from pathlib import Path
from typing import Any

from rag_app.errors import RagError

logger = logging.getLogger(__name__)

#: Render scale (1 = 72 dpi): 2 keeps Chinese characters legible in the app without huge images.
RENDER_SCALE = 2.0
#: Most pixels (width × height) one rendered page may have, whatever its size in points: a 645-byte PDF can
#: declare a 7200 × 7200 pt page, which at RENDER_SCALE is 207 Mpx (10 s and 1.6 GB). 4 Mpx is an A4 page at
#: about 240 dpi, 16 MB as RGBA.
MAX_PIXELS = 4_000_000
#: PDFium must not be called from two threads at once, not even for different documents (pypdfium2's docs):
#: a server renders pages for several requests in its thread pool.
PDFIUM_LOCK = threading.Lock()
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


def render_scale(width: float, height: float, scale: float = RENDER_SCALE, max_pixels: int = MAX_PIXELS) -> float:
    """``scale``, lowered so that a ``width`` × ``height`` pt page renders to at most ``max_pixels`` pixels."""
    area = width * height
    if not (math.isfinite(area) and area > 0):
        raise PreviewError(f"the page has no usable size ({width:g} × {height:g} pt)")
    return min(scale, math.sqrt(max_pixels / area))


def render_pdf_page(path: Path, page: int, passage: str | None, password: str | None = None) -> bytes:
    """PNG of page ``page`` (1-based) of the PDF at ``path``, with ``passage`` highlighted where found; at
    :data:`RENDER_SCALE`, or smaller where the page would exceed :data:`MAX_PIXELS`. PDFium is not
    thread-safe, so its part runs under :data:`PDFIUM_LOCK`; drawing and PNG encoding run outside it."""
    from PIL import Image, ImageDraw

    with PDFIUM_LOCK:
        image, scale, height, boxes = _render_locked(path, page, passage, password)
    if boxes:
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        s = scale
        for left, bottom, right, top in _line_rects(boxes):
            box = (left * s - 2, (height - top) * s - 2, right * s + 2, (height - bottom) * s + 2)
            draw.rectangle(box, fill=_HIGHLIGHT, outline=_OUTLINE, width=2)
        image = Image.alpha_composite(image, overlay)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


def _render_locked(
    path: Path, page: int, passage: str | None, password: str | None
) -> tuple[Any, float, float, list[tuple[float, float, float, float]]]:
    """The page as an RGBA image (a copy that outlives the document), its scale, its height in points and the
    character boxes of ``passage`` on it (empty: no passage, or not found)."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path), password=password)
    except pdfium.PdfiumError as exc:
        raise PreviewError(f"{path.name}: cannot open the PDF to show its page ({exc})") from exc
    try:
        if not 1 <= page <= len(pdf):
            raise PreviewError(f"{path.name} has no page {page}")
        pdf_page = pdf[page - 1]
        width, height = pdf_page.get_size()
        scale = render_scale(width, height)
        if scale < RENDER_SCALE:
            logger.info("page %s of %s is %g × %g pt: rendered at scale %.3f", page, path.name, width, height, scale)
        image = pdf_page.render(scale=scale).to_pil().convert("RGBA")
        boxes: list[tuple[float, float, float, float]] = []
        if passage:
            textpage = pdf_page.get_textpage()
            text = textpage.get_text_range(0, textpage.count_chars())
            span = find_span(text, passage)
            if span is not None:
                boxes = [textpage.get_charbox(i) for i in range(*span)]
            else:
                logger.info("passage not found on page %s of %s", page, path.name)
        return image, scale, height, boxes
    finally:
        pdf.close()
