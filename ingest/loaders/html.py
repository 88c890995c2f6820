"""HTML and EPUB: visible text, one section per heading; tables as Markdown tables."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, register_loader, sections_from_blocks
from ingest.loaders.tables import markdown_table
from ingest.loaders.text import _WHATWG_ALIASES, decode_bytes

logger = logging.getLogger(__name__)

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
                    rows = markdown_table([c.get_text(" ") for c in tr.find_all(["td", "th"])] for tr in child.find_all("tr"))
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
    return sections_from_blocks(blocks)


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
