"""Heading paths for PDFs: from the outline (bookmarks) when the file has one, else from font sizes.

PDF pages carry no structure, so a chunk from deep in a manual would only say "report.pdf:37". Like the
Markdown, Word and HTML loaders, the PDF loader puts the section path into the ``heading`` metadata
("产品手册 > 安装"), which splitting carries into every chunk and the prompt shows beside the citation.

Positions come from pypdf's own text extraction (its ``visitor_text`` callback reports every piece of
text it emits with its matrices and font size), so the page is parsed once: the joined pieces are exactly
the page's text, which gives each line's offset, baseline and effective font size at no extra parse
(pages with large figures excepted, see :func:`_silent_form_bytes`).

The font-size heuristic is deliberately conservative — no heading is better than a wrong one: a line is a
heading only when all its letters are set clearly larger than the body text (the size most characters
use), it is short, it does not end like a sentence, it is not a running header repeated on many pages,
and it is not an author or date line under the title (see :func:`font_marks`).
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ingest.clean import garbage_ratio, is_cjk, normalize
from ingest.loaders.base import Section

logger = logging.getLogger(__name__)

#: A heading is set at least this much larger than the body text (Word's 13 pt Heading 2 over 11 pt
#: Normal is 1.18, LaTeX's 12 pt subsection over 10 pt text 1.2; bold at body size is not a heading here).
MIN_SIZE_RATIO = 1.15
#: Longest heading line, in characters; a heading wraps onto at most this many lines.
MAX_HEADING_CHARS = 80
MAX_HEADING_LINES = 2
#: Share of a line's letters that must be in the heading size (a stray symbol in another font is fine).
_UNIFORM = 0.95
#: A line of the same text in heading size on this many pages (and this share of them) is a running header.
_RUNNING_PAGES = 3
_RUNNING_SHARE = 0.3
#: When would-be headings hold more than this share of all letters, the "body" size is not body text.
_MAX_HEADING_SHARE = 0.3
#: Deepest level kept (like HTML's h1–h6).
_MAX_LEVEL = 6
#: A line starting this close (PDF points) to where body lines start is flush with them.
_MARGIN_SLACK = 3.0
#: Baselines within this distance (PDF points) above an outline destination's top still count as below it.
_TOP_SLACK = 2.0
#: Text-less form XObjects (figures) a page may hold and still be read with text positions (see
#: :func:`_silent_form_bytes`): about 10 ms of extra parsing at most.
_MAX_SILENT_FORM_BYTES = 8 * 1024
# Operators that show text (Tj, TJ, ', "): a form without them is a figure.
_TEXT_SHOWN = re.compile(rb"T[jJ]|['\"]")
# What may precede an outline title on its line (keys: casefolded, no spaces): "3.2", "IV.", "第二章".
_NUMBERING = re.compile(r"[\d.\-)(（）ivxl]*|第.{1,5}[章节部篇]|(?:chapter|section|part|appendix)[\da-z.]*")
# Ends a sentence or introduces what follows: such a line is body text, not a heading.
# A question mark does not ("怎样导入文档？", "What is RAG?").
_SENTENCE_END = tuple(".。,，;；:：、")


@dataclass
class Line:
    """One line of a page's extracted text, with where and how large it is set."""

    start: int  # offset in the page text
    text: str
    size: float  # the font size most of its letters are set in; 0.0 when it has none
    uniform: bool  # (almost) all its letters are in that size
    letters: int
    y: float | None  # baseline of its first letters, PDF user space (larger is higher up)
    x: float | None = None  # where its first letters start


@dataclass
class PageLayout:
    """A page's text as pypdf extracts it, and its lines (empty when positions are unknown)."""

    number: int
    text: str
    lines: list[Line] = field(default_factory=list)


@dataclass(frozen=True)
class Mark:
    """A heading at an offset of a page's text (the line it starts, for finding it again)."""

    page: int
    offset: int
    level: int
    title: str
    line: str = ""


def extract_page(page: Any, number: int) -> PageLayout:
    """The page's text exactly as ``page.extract_text()`` gives it, plus its lines' sizes and baselines."""
    pieces: list[tuple[str, float, float, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], _font: Any, font_size: float) -> None:
        if not text:
            return
        try:
            c, d, e, f = _text_space_to_page(tm, cm)
            pieces.append((text, abs(float(font_size)) * math.hypot(c, d), e, f))
        except (TypeError, ValueError, IndexError):  # odd operands: the piece is missing, so no positions
            pass

    if _silent_form_bytes(page) > _MAX_SILENT_FORM_BYTES:
        logger.debug("page %d: large figures, text positions not read", number)
        return PageLayout(number, page.extract_text() or "")
    text = page.extract_text(visitor_text=visit) or ""
    if "".join(p[0] for p in pieces) != text:  # a pypdf path that bypasses the visitor: no positions
        logger.debug("page %d: text positions unavailable", number)
        return PageLayout(number, text)
    return PageLayout(number, text, _lines(pieces))


def _silent_form_bytes(page: Any) -> int:
    """Bytes of the page's form XObjects that show no text (figures, plots), nested ones included.

    pypdf skips such forms when it only extracts text, but parses every operator in them once a visitor
    watches: a plot of 20,000 strokes costs a second instead of milliseconds. Pages above
    :data:`_MAX_SILENT_FORM_BYTES` are extracted without positions (their text is the same either way).
    """
    total = 0
    seen: set[int] = set()

    def walk(resources: Any, depth: int) -> None:
        nonlocal total
        try:
            xobjects = resources.get_object()["/XObject"].get_object()
        except Exception:  # no resources or no XObjects: nothing to parse
            return
        for name in list(xobjects):
            try:
                form = xobjects[name].get_object()
                if form.get("/Subtype") != "/Form" or id(form) in seen:
                    continue
                seen.add(id(form))
                data = form.get_data()
            except Exception:  # unreadable: pypdf reports it while extracting
                continue
            if not _TEXT_SHOWN.search(data):
                total += len(data)
            if depth < 4 and "/Resources" in form:
                walk(form["/Resources"], depth + 1)

    walk(page.get("/Resources"), 0)
    return total


def _text_space_to_page(tm: list[float], cm: list[float]) -> tuple[float, float, float, float]:
    """(c, d, e, f) of tm × cm: the glyphs' vertical axis and the text origin, in page space."""
    c = tm[2] * cm[0] + tm[3] * cm[2]
    d = tm[2] * cm[1] + tm[3] * cm[3]
    e = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
    f = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
    return c, d, e, f


def _lines(pieces: Iterable[tuple[str, float, float, float]]) -> list[Line]:
    lines: list[Line] = []
    start = pos = 0
    parts: list[str] = []
    sizes: Counter[float] = Counter()
    origin: tuple[float, float] | None = None

    def close() -> None:
        letters = sum(sizes.values())
        size, most = sizes.most_common(1)[0] if sizes else (0.0, 0)
        x, y = origin or (None, None)
        uniform = letters > 0 and most >= _UNIFORM * letters
        lines.append(Line(start, "".join(parts), size, uniform, letters, y, x))

    for text, size, x, y in pieces:
        for i, part in enumerate(text.split("\n")):
            if i:
                close()
                pos += 1
                start, parts, sizes, origin = pos, [], Counter(), None
            letters = sum(1 for ch in part if ch.isalnum())
            if letters:
                sizes[round(size * 2) / 2] += letters  # half-point buckets: 10.98 and 11.0 are one size
                if origin is None:
                    origin = (x, y)
            parts.append(part)
            pos += len(part)
    close()
    return lines


# --- the outline --------------------------------------------------------------------------------------


def outline_marks(reader: Any, layouts: dict[int, PageLayout]) -> list[Mark]:
    """Headings from the document outline: each entry at its page (and at the line its destination's top
    coordinate or its title points to), nested entries one level deeper. ``[]`` without an outline."""
    try:
        outline = reader.outline
    except Exception as exc:  # a broken outline costs the headings, not the document
        logger.warning("PDF outline unreadable (%s): no heading paths from it", exc)
        return []
    marks: list[Mark] = []
    after: dict[int, int] = {}  # page → offset of the last mark placed there (entries are in reading order)

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, min(level + 1, _MAX_LEVEL))
                continue
            title = heading_text(str(getattr(item, "title", "") or ""))
            try:
                index = reader.get_destination_page_number(item)
            except Exception:
                index = None
            if not title or index is None or index < 0:
                continue
            number = index + 1
            layout = layouts.get(number)
            offset = _locate(title, _top(item), layout, after.get(number, 0)) if layout else 0
            after[number] = offset
            line = _line_at(layout, offset) if layout else ""
            marks.append(Mark(number, offset, level, title, line))

    walk(outline, 1)
    return marks


def _top(item: Any) -> float | None:
    top = getattr(item, "top", None)
    try:
        return None if top is None else float(top)
    except (TypeError, ValueError):  # /XYZ null: "keep the current position"
        return None


def _locate(title: str, top: float | None, layout: PageLayout, after: int) -> int:
    """Where on the page an outline entry starts: the line that reads as its title (nearest the top
    coordinate, else the first after the previous entry), else the highest line under the top
    coordinate, else the page's start."""
    key = _key(title)
    lines = layout.lines or _plain_lines(layout.text)
    matches = [ln for ln in lines if _same_title(key, _key(ln.text))]
    if matches:
        if top is not None and all(ln.y is not None for ln in matches):
            return min(matches, key=lambda ln: (abs(top - (ln.y or 0.0)), ln.start)).start
        later = [ln for ln in matches if ln.start >= after]
        return (later or matches)[0].start
    if top is not None:
        below = [ln for ln in lines if ln.letters and ln.y is not None and ln.y <= top + _TOP_SLACK]
        if below:
            return max(below, key=lambda ln: (ln.y or 0.0, -ln.start)).start
    return 0


def _plain_lines(text: str) -> list[Line]:
    """The text's lines without sizes or positions (a page read without them): for matching titles."""
    out: list[Line] = []
    start = 0
    for line in text.split("\n"):
        out.append(Line(start, line, 0.0, False, sum(1 for ch in line if ch.isalnum()), None))
        start += len(line) + 1
    return out


def _same_title(title: str, line: str) -> bool:
    """The line reads as the title: equal, the title after a section number ("3.2 Setup"), or the first
    line of a title that wraps."""
    if len(line) < 2:
        return False
    if line.endswith(title) and _NUMBERING.fullmatch(line[: len(line) - len(title)]):
        return True
    return title.startswith(line) and 2 * len(line) >= len(title)


def _key(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def _line_at(layout: PageLayout, offset: int) -> str:
    end = layout.text.find("\n", offset)
    return layout.text[offset : end if end >= 0 else len(layout.text)]


# --- font sizes ---------------------------------------------------------------------------------------


def font_marks(layouts: list[PageLayout]) -> list[Mark]:
    """Headings from font sizes, for PDFs without an outline.

    Candidate lines are set at least :data:`MIN_SIZE_RATIO` times the body size, short, with letters, not
    ending like a sentence; consecutive ones of one size join (a wrapped heading; more lines than
    :data:`MAX_HEADING_LINES` are large text, not a heading). Candidates that follow each other with no
    body text between form a *run*. The document's first run is its title block: its largest line (the
    title) is a heading, the subtitle, author and date lines under it are not, and its last line is one
    only when its size is confirmed as a heading size elsewhere (directly above body text, outside the
    title block) and it starts at a left margin of the body text (title blocks are centred; LaTeX sets
    author and date in its subsection size). In other runs every candidate counts. Levels are the rank of
    the size, largest first.
    """
    lines = [(layout.number, ln) for layout in layouts for ln in layout.lines if ln.letters]
    sizes: Counter[float] = Counter()
    for _, ln in lines:
        sizes[ln.size] += ln.letters
    if not sizes:
        return []
    body = sizes.most_common(1)[0][0]
    items = _items(lines, body)
    _drop_running_headers(items, len(layouts))
    if sum(it.letters for it in items if it.title) > _MAX_HEADING_SHARE * sum(sizes.values()):
        logger.debug("font-size headings: too much large text, %.1f pt is not the body size", body)
        return []
    for item, nxt in zip(items, items[1:], strict=False):
        item.before_body = not nxt.title
    runs = _runs(items)
    confirmed = {run[-1].size for run in runs[1:] if run[-1].before_body}
    keep: list[_Item] = []
    if runs:
        title = max(runs[0], key=lambda it: it.size)
        keep.append(title)
        last = runs[0][-1]
        if last is not title and last.size in confirmed and _at_margin(last, _margins(items)):
            keep.append(last)
    for run in runs[1:]:
        keep.extend(run)
    ranks = {size: rank for rank, size in enumerate(sorted({it.size for it in keep}, reverse=True), start=1)}
    return [
        Mark(it.page, it.start, min(ranks[it.size], _MAX_LEVEL), it.title, it.parts[0])
        for it in sorted(keep, key=lambda it: (it.page, it.start))
    ]


def _margins(items: list[_Item]) -> list[float]:
    """Left edges where body lines start (one per column): each starts at least a tenth of them."""
    starts = Counter(round(it.x) for it in items if not it.large and it.x is not None)
    total = sum(starts.values())
    return [float(x) for x, n in starts.items() if n * 10 >= total]


def _at_margin(item: _Item, margins: list[float]) -> bool:
    return item.x is not None and any(abs(item.x - m) <= _MARGIN_SLACK for m in margins)


@dataclass
class _Item:
    """A line, or consecutive large lines of one size joined, in document order."""

    page: int
    start: int
    size: float
    letters: int
    large: bool
    parts: list[str]
    x: float | None = None
    title: str = ""  # set when the item reads as a heading
    before_body: bool = False  # the next item is body text


def _items(lines: list[tuple[int, Line]], body: float) -> list[_Item]:
    items: list[_Item] = []
    for page, ln in lines:
        large = ln.uniform and ln.size >= MIN_SIZE_RATIO * body
        prev = items[-1] if items else None
        if large and prev is not None and prev.large and prev.page == page and prev.size == ln.size:
            prev.parts.append(ln.text.strip())
            prev.letters += ln.letters
        else:
            items.append(_Item(page, ln.start, ln.size, ln.letters, large, [ln.text.strip()], ln.x))
    for item in items:
        if item.large and len(item.parts) <= MAX_HEADING_LINES:
            text = heading_text(_join(item.parts))
            item.title = text if _looks_like_heading(text) else ""
    return items


def _looks_like_heading(text: str) -> bool:
    return (
        2 <= len(text) <= MAX_HEADING_CHARS
        and any(ch.isalpha() for ch in text)
        and not text.endswith(_SENTENCE_END)
        and garbage_ratio(text) < 0.3
    )


def _join(parts: list[str]) -> str:
    """The lines of a wrapped heading: no space between Chinese characters, one elsewhere."""
    out = parts[0]
    for part in parts[1:]:
        glue = "" if out and part and is_cjk(out[-1]) and is_cjk(part[0]) else " "
        out += glue + part
    return out


def _drop_running_headers(items: list[_Item], pages: int) -> None:
    """Forget large lines whose text recurs on many pages: running headers, not sections."""
    on_pages: dict[str, set[int]] = {}
    for it in items:
        if it.title:
            on_pages.setdefault(_key(it.title), set()).add(it.page)
    running = {k for k, p in on_pages.items() if len(p) >= _RUNNING_PAGES and len(p) >= _RUNNING_SHARE * pages}
    for it in items:
        if it.title and _key(it.title) in running:
            it.title = ""


def _runs(items: list[_Item]) -> list[list[_Item]]:
    """Maximal stretches of consecutive headings (any other line ends a run and belongs to none)."""
    runs: list[list[_Item]] = []
    current: list[_Item] = []
    for it in items:
        if it.title:
            current.append(it)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def heading_text(text: str) -> str:
    """A title as metadata shows it: NFKC (PDF fonts give '⽤' for '用'), one line, no icon glyphs around it."""
    text = " ".join(normalize(text).split())
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or _icon(text[start])):
        start += 1
    while end > start and (text[end - 1].isspace() or _icon(text[end - 1])):
        end -= 1
    return text[start:end]


def _icon(ch: str) -> bool:
    """An unmapped glyph (U+FFFD, private use) or a pictograph: decoration, not words."""
    return ch == "\ufffd" or unicodedata.category(ch) in ("So", "Co", "Cn")


# --- sections -----------------------------------------------------------------------------------------


def split_at_headings(
    sections: list[Section], marks: list[Mark], layouts: dict[int, PageLayout]
) -> list[Section]:
    """Page sections (in page order) cut at their headings, each with the heading path it sits under
    (``heading`` metadata, " > " between levels, as the other loaders write it). The path carries across
    pages, also across pages that gave no section (a heading on a scanned page still opens its chapter)."""
    if not marks:
        return sections
    pending = sorted(marks, key=lambda m: m.page)  # stable: a page's marks stay in their order
    path: list[tuple[int, str]] = []
    out: list[Section] = []

    def enter(mark: Mark) -> None:
        nonlocal path
        path = [(lvl, t) for lvl, t in path if lvl < mark.level] + [(mark.level, mark.title)]

    def emit(section: Section, text: str) -> None:
        if not text.strip():
            return
        meta = dict(section.metadata)
        if path:
            meta["heading"] = " > ".join(t for _, t in path)
        out.append(Section(text=text, page=section.page, metadata=meta, layout_breaks=section.layout_breaks))

    for section in sections:
        number = section.page or 0
        while pending and pending[0].page < number:
            enter(pending.pop(0))
        page_marks = []
        while pending and pending[0].page == number:
            page_marks.append(pending.pop(0))
        offsets = _offsets(section.text, page_marks, layouts.get(number))
        pos = 0
        for mark, offset in sorted(zip(page_marks, offsets, strict=True), key=lambda mo: mo[1]):
            emit(section, section.text[pos:offset])
            pos = max(pos, offset)
            enter(mark)
        emit(section, section.text[pos:])
    return out


def _offsets(text: str, marks: list[Mark], layout: PageLayout | None) -> list[int]:
    """Each mark's offset in ``text``: as found when the text is pypdf's own, else (a page whose tables
    pdfplumber rewrote) where its heading line appears again, else the page's start."""
    if layout is not None and layout.text == text:
        return [m.offset for m in marks]
    out: list[int] = []
    pos = 0
    for mark in marks:
        found = _find_loosely(text, mark.line or mark.title, pos) if (mark.line or mark.title).strip() else None
        out.append(found if found is not None else pos)
        pos = out[-1]
    return out


def _find_loosely(text: str, needle: str, start: int) -> int | None:
    """``needle`` in ``text`` from ``start``, whatever whitespace either has between characters."""
    chars = [re.escape(ch) for ch in needle if not ch.isspace()]
    if not chars:
        return None
    found = re.compile(r"\s*".join(chars)).search(text, start)
    return found.start() if found else None

