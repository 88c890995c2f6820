"""Loaders: one function per file type, chosen by extension from a registry.

A loader turns a file into :class:`Section` objects (a page of a PDF, a whole text file, …) or raises a
:class:`~rag_app.errors.DocumentLoadError` naming the file and the reason. Loaders only read; cleaning
and splitting happen later in the pipeline.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from rag_app.errors import (
    DocumentLoadError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedFileTypeError,
)

logger = logging.getLogger(__name__)


@dataclass
class Section:
    """A piece of a document with its own location (page number for PDFs)."""

    text: str
    page: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The text has hard line breaks that are layout, not structure (PDF): the cleaner re-joins them.
    layout_breaks: bool = False


@dataclass
class LoadedDocument:
    sections: list[Section]
    #: Non-fatal problems (e.g. pages without a text layer), reported to the user.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadOptions:
    password: str | None = None


Loader = Callable[[Path, LoadOptions], LoadedDocument]
_LOADERS: dict[str, Loader] = {}


def register_loader(*extensions: str) -> Callable[[Loader], Loader]:
    """Register a loader for extensions (with the dot, lower case)."""

    def deco(fn: Loader) -> Loader:
        for ext in extensions:
            _LOADERS[ext.lower()] = fn
        return fn

    return deco


def supported_extensions() -> list[str]:
    return sorted(_LOADERS)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in _LOADERS


def load_document(path: Path, options: LoadOptions | None = None) -> LoadedDocument:
    """Load ``path`` with the loader registered for its extension."""
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UnsupportedFileTypeError(
            str(path),
            f"unsupported file type '{path.suffix or '(none)'}'",
            hint=f"supported: {', '.join(supported_extensions())}",
        )
    try:
        if path.stat().st_size == 0:
            raise EmptyDocumentError(str(path), "the file is empty")
        doc = loader(path, options or LoadOptions())
    except DocumentLoadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a parser's own error: report it, the batch goes on
        raise DocumentLoadError(str(path), f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if not any(s.text.strip() for s in doc.sections):
        raise EmptyDocumentError(str(path), "no text could be extracted", hint="; ".join(doc.warnings))
    return doc


# --- text ------------------------------------------------------------------------------------------

#: Bytes of a file that decide its encoding: enough for any detector, cheap on a 20 MB file.
_SAMPLE_BYTES = 64 * 1024
_WHATWG_ALIASES = {"gbk": "gb18030", "gb2312": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252",
                   "latin1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252",
                   "big5-hkscs": "big5hkscs"}


def decode_bytes(data: bytes, path: Path) -> str:
    """Decode text of unknown encoding: BOMs, UTF-16 without BOM, UTF-8, then the most plausible of
    GB18030, Big5, cp1252 and charset-normalizer's guess (see :func:`_plausibility`)."""
    for bom, enc in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(enc, errors="replace")
    if b"\x00" in data[:4096]:
        utf16 = _utf16_without_bom(data)
        if utf16 is None:
            raise DocumentLoadError(str(path), "binary data, not text")
        return data.decode(utf16, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and len(data) > _SAMPLE_BYTES:  # only a cut character at the end
            return data.decode("utf-8", errors="replace")
    encoding = detect_encoding(data[:_SAMPLE_BYTES])
    if encoding is None:
        raise DocumentLoadError(str(path), "unknown text encoding (not UTF-8, GB18030, Big5, UTF-16 …)")
    logger.debug("%s: detected encoding %s", path, encoding)
    return data.decode(encoding, errors="replace")


def detect_encoding(sample: bytes) -> str | None:
    """The legacy encoding under which ``sample`` reads most like real text.

    charset-normalizer alone misreads short GBK texts (e.g. '你好' as Big5 '斕疑', '中文测试' as Korean):
    with a few bytes its statistics have nothing to go on. So every candidate that decodes the bytes
    strictly is scored by how common its characters are (:func:`_plausibility`); ties go to GB18030,
    then Big5, then cp1252, then charset-normalizer's own pick.
    """
    from charset_normalizer import from_bytes

    candidates: dict[str, str] = {}
    for encoding in ("gb18030", "big5", "cp1252"):
        text = _strict_decode(sample, encoding)
        if text is not None:
            candidates[encoding] = text
    guess = from_bytes(sample).best()
    if guess is not None and guess.encoding not in candidates:
        encoding = _WHATWG_ALIASES.get(guess.encoding, guess.encoding)
        candidates.setdefault(encoding, str(guess))
    if not candidates:
        return None
    return max(candidates, key=lambda enc: _plausibility(candidates[enc]))


def _strict_decode(sample: bytes, encoding: str) -> str | None:
    """Decode strictly, forgiving only a multi-byte character cut off at the end of the sample."""
    try:
        return sample.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 3 and exc.start > 0:
            try:
                return sample[: exc.start].decode(encoding)
            except UnicodeDecodeError:
                return None
        return None
    except LookupError:
        return None


def _codec_rows(encoding: str, leads: Iterable[int], trails: Iterable[int]) -> set[str]:
    trails = list(trails)
    out: set[str] = set()
    for lead in leads:
        for trail in trails:
            try:
                out.update(bytes([lead, trail]).decode(encoding))
            except UnicodeDecodeError:
                pass
    return out


@cache
def _common_characters() -> tuple[frozenset[str], frozenset[str]]:
    """(common everywhere, common in one script) — read off the codecs themselves, no frequency table.

    GB2312 level 1 holds the 3,755 most frequent simplified characters, Big5 level 1 the 5,401 frequent
    traditional ones, KS X 1001 rows B0–C8 the common Hangul syllables. A mis-decoding produces rare
    characters, outside these sets.
    """
    big5_trails = [*range(0x40, 0x7F), *range(0xA1, 0xFF)]
    gb = _codec_rows("gb2312", range(0xB0, 0xD8), range(0xA1, 0xFF))
    big5 = _codec_rows("big5", range(0xA4, 0xC6), big5_trails) | _codec_rows("big5", [0xC6], range(0x40, 0x7F))
    symbols = _codec_rows("gb2312", [0xA1, 0xA3], range(0xA1, 0xFF)) & _codec_rows("big5", range(0xA1, 0xA4), big5_trails)
    hangul = _codec_rows("euc_kr", range(0xB0, 0xC9), range(0xA1, 0xFF))
    full = (gb & big5) | symbols | hangul | set("，。、；：？！“”‘’（）《》【】…—·")
    half = (gb ^ big5) | {chr(c) for c in range(0x3041, 0x30FF)}  # one script only; kana
    return frozenset(full), frozenset(half)


def _plausibility(text: str) -> float:
    """Share of characters that real text is made of (1.0: all printable ASCII / common CJK)."""
    full, half = _common_characters()
    score = 0.0
    count = 0
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        count += 1
        if ch.isascii():
            score += ch.isprintable()
        elif ch in full:
            score += 1.0
        elif ch in half:
            score += 0.5
        elif "\u00c0" <= ch <= "\u00ff" and _next_to_ascii_letter(text, i):
            score += 1.0  # "Café", "naïve" — but not "ÖÐÎÄ", GBK read as Latin-1
    return score / count if count else 0.0


def _next_to_ascii_letter(text: str, i: int) -> bool:
    return any(0 <= j < len(text) and text[j].isascii() and text[j].isalpha() for j in (i - 1, i + 1))


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the NUL bytes sit in every other byte, as in UTF-16 text."""
    head = data[:4096]
    half = max(len(head) // 2, 1)
    zeros_even, zeros_odd = head[0::2].count(0) / half, head[1::2].count(0) / half
    if zeros_odd > 0.3 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.3 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


@register_loader(".txt", ".text")
def load_text(path: Path, options: LoadOptions) -> LoadedDocument:
    return LoadedDocument([Section(text=decode_bytes(path.read_bytes(), path))])


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_ATX = re.compile(r"^\s{0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)[ \t]*$")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n(?:---|\.\.\.)\n", re.DOTALL)


@register_loader(".md", ".markdown")
def load_markdown(path: Path, options: LoadOptions) -> LoadedDocument:
    """One section per heading, its heading path ("一级 > 二级") in the metadata; code fences respected."""
    text = decode_bytes(path.read_bytes(), path).replace("\r\n", "\n").replace("\r", "\n")
    text = _FRONT_MATTER.sub("", text)
    blocks: list[tuple[int, str, list[str]]] = [(0, "", [])]  # (heading level, heading, lines)
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        body = blocks[-1][2]
        if not in_fence and (atx := _ATX.match(line)):
            blocks.append((len(atx.group(1)), atx.group(2).strip(), [line]))
        elif not in_fence and (setext := _SETEXT.match(line)) and _underlined_paragraph(body, blocks[-1][0]):
            title = body.pop()
            blocks.append((1 if setext.group(1)[0] == "=" else 2, title.strip(), [title, line]))
        else:
            body.append(line)
    return LoadedDocument(_sections_from_blocks([(lvl, title, "\n".join(body)) for lvl, title, body in blocks]))


_NOT_A_PARAGRAPH = re.compile(r"^\s*(?:[-*+>|#]|\d+[.)]\s)")


def _underlined_paragraph(body: list[str], level: int) -> bool:
    """A one-line paragraph right above '===' / '---' is a (setext) heading; a list item or rule is not."""
    if not body or not body[-1].strip() or _NOT_A_PARAGRAPH.match(body[-1]):
        return False
    above = body[-2] if len(body) >= 2 else None
    return (above is None and level == 0) or (above is not None and (not above.strip() or bool(_FENCE.match(above))))


def _sections_from_blocks(blocks: Iterable[tuple[int, str, str]]) -> list[Section]:
    """Blocks (level, heading, text) → sections whose metadata carries the heading path."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    for level, title, body in blocks:
        if level:
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
        if not body.strip():
            continue
        meta = {"heading": " > ".join(t for _, t in path)} if path else {}
        sections.append(Section(text=body, metadata=meta))
    return sections


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


# --- html / epub -------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_DROP_TAGS = ("script", "style", "noscript", "template", "nav", "aside", "footer", "svg", "iframe", "button",
              "select", "form", "head", "object", "canvas", "map")
_BLOCK_TAGS = frozenset(
    "address article blockquote dd details dialog div dl dt fieldset figcaption figure header hr li main ol "
    "p section summary tbody thead tfoot ul caption body html center".split()
)
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_WS = re.compile(r"[ \t\r\n\f\v]+")


def decode_html(data: bytes, path: Path) -> str:
    """HTML bytes → text, honouring a BOM, then the declared ``<meta charset>``, then detection."""
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return decode_bytes(data, path)
    declared = _META_CHARSET.search(data[:4096])
    if declared:
        name = declared.group(1).decode("ascii", "replace").lower()
        encoding = _WHATWG_ALIASES.get(name, name)
        try:
            return data.decode(encoding, errors="replace")
        except LookupError:
            logger.warning("%s: unknown declared charset %r; detecting", path, name)
    return decode_bytes(data, path)


def html_sections(markup: str) -> list[Section]:
    """Visible text of an HTML document, one section per heading (h1–h6 → heading path)."""
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag

    soup = BeautifulSoup(markup, "lxml")
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(attrs={"hidden": True}):
        tag.decompose()
    for tag in soup.find_all(attrs={"aria-hidden": "true"}):
        tag.decompose()
    skip_strings = (Comment, Declaration, Doctype, ProcessingInstruction)
    blocks: list[tuple[int, str, str]] = [(0, "", "")]
    paragraphs: list[str] = []
    buffer: list[str] = []

    def flush() -> None:
        text = "".join(buffer)
        buffer.clear()
        text = "\n".join(_WS.sub(" ", line).strip() for line in text.split("\n"))
        if text.strip():
            paragraphs.append(text.strip())

    def close_block() -> None:
        flush()
        level, title, body = blocks[-1]
        blocks[-1] = (level, title, "\n\n".join(filter(None, [body, *paragraphs])))
        paragraphs.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, skip_strings):
                    buffer.append(str(child))
            elif isinstance(child, Tag):
                name = child.name
                if name in _HEADINGS:
                    close_block()
                    title = _WS.sub(" ", child.get_text(" ")).strip()
                    blocks.append((_HEADINGS[name], title, title))
                elif name == "br":
                    buffer.append("\n")
                elif name == "pre":
                    flush()
                    paragraphs.append(child.get_text().strip("\n"))
                elif name == "table":
                    flush()
                    rows = _table_rows([c.get_text(" ") for c in tr.find_all(["td", "th"])] for tr in child.find_all("tr"))
                    if rows:
                        paragraphs.append(rows)
                elif name in _BLOCK_TAGS:
                    flush()
                    walk(child)
                    flush()
                else:
                    walk(child)

    walk(soup)
    close_block()
    return _sections_from_blocks(blocks)


@register_loader(".html", ".htm", ".xhtml")
def load_html(path: Path, options: LoadOptions) -> LoadedDocument:
    return LoadedDocument(html_sections(decode_html(path.read_bytes(), path)))


@register_loader(".epub")
def load_epub(path: Path, options: LoadOptions) -> LoadedDocument:
    """Chapters in reading (spine) order, through the HTML loader; chapter number as the page."""
    import warnings

    from ebooklib import ITEM_DOCUMENT, epub

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = epub.read_epub(str(path), options={"ignore_ncx": True})
    items = [book.get_item_with_id(idref) for idref, _ in book.spine]
    items = [i for i in items if i is not None and i.get_type() == ITEM_DOCUMENT]
    sections: list[Section] = []
    for number, item in enumerate(items, start=1):
        for section in html_sections(decode_html(item.get_content(), path)):
            section.page = number
            sections.append(section)
    return LoadedDocument(sections)


# --- office ------------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^(?:heading|标题|標題)\s*(\d)$", re.IGNORECASE)


def _table_rows(rows: Iterable[Iterable[str]]) -> str:
    """Table rows as lines of cells joined by ' | ' (cells repeated by merging appear once)."""
    lines = []
    for row in rows:
        cells: list[str] = []
        for cell in row:
            cell = " ".join(cell.split())
            if cell and (not cells or cells[-1] != cell):
                cells.append(cell)
        if cells:
            lines.append(" | ".join(cells))
    return "\n".join(lines)


@register_loader(".docx")
def load_docx(path: Path, options: LoadOptions) -> LoadedDocument:
    """Paragraphs and tables in document order; Heading/Title styles give the heading path."""
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    blocks: list[tuple[int, str, str]] = [(0, "", "")]
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            text = _table_rows([c.text for c in row.cells] for row in item.rows)
            level = 0
        else:
            text = item.text.strip()
            style = (item.style.name if item.style is not None else "") or ""
            match = _HEADING_STYLE.match(style.strip())
            level = int(match.group(1)) if match else (1 if style.strip().lower() == "title" else 0)
        if not text:
            continue
        if level:
            blocks.append((level, text, text))
        else:
            lvl, title, body = blocks[-1]
            blocks[-1] = (lvl, title, f"{body}\n\n{text}" if body else text)
    sections = _sections_from_blocks(blocks)
    warnings = []
    if not sections and document.inline_shapes:
        warnings.append("the document holds only images; OCR is not supported yet")
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
        return _table_rows([c.text for c in row.cells] for row in shape.table.rows)
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        return str(shape.text_frame.text).strip()
    return ""


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
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # one broken page does not lose the others
            logger.warning("%s page %d: cannot extract text (%s)", path, number, exc)
            text = ""
        if text.strip():
            sections.append(Section(text=text, page=number, layout_breaks=True))
        else:
            no_text.append(number)
    warnings = []
    if no_text:
        warnings.append(
            f"{len(no_text)} page(s) without a text layer (scanned?), not indexed: "
            f"{_ranges(no_text)}; OCR is not supported yet"
        )
    return LoadedDocument(sections, warnings)


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
