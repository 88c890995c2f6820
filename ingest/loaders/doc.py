"""Word 97–2003 binary documents (``.doc``), read with olefile (the OLE2 container) and the format's own
structures ([MS-DOC]); no converter program, no guessing at the bytes.

The text is where the piece table says it is: the FIB at the start of the ``WordDocument`` stream names the
table stream (``0Table`` or ``1Table``) and the CLX inside it, whose piece table maps character positions to
byte offsets, each piece either 8-bit (cp1252, at half the stored offset) or UTF-16LE (what Chinese text
needs). Paragraph properties (the PAPX in the formatted disk pages) say which paragraphs are headings (the
built-in "heading 1…9" styles, or an outline level) and which marks end a table row, so headings give the
section path and tables become Markdown tables, as for ``.docx``. Field codes keep their result and drop
their instruction (``HYPERLINK "…"``); object anchors are dropped.

Files named ``.doc`` that are something else are common: HTML and ``.docx`` ones are read by their own
loader, anything else (RTF, an Excel file…) is reported as what it is.
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, add_block, register_loader, sections_from_blocks
from ingest.loaders.tables import markdown_table
from rag_app.errors import DocumentLoadError, EncryptedDocumentError

logger = logging.getLogger(__name__)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_WORD_IDENT = 0xA5EC
#: nFib of Word 97; Word 6/95 files (nFib 101–105) have another FIB and are not read.
_NFIB_WORD97 = 0xC0
_F_ENCRYPTED = 0x0100
_F_WHICH_TABLE = 0x0200
# Indexes into FibRgFcLcb97 (pairs of fc, lcb).
_STSHF, _PLCF_BTE_PAPX, _CLX = 1, 13, 33
# Indexes into FibRgLw97: the character counts of the stories, in the order they follow each other.
_CCP_TEXT, _CCP_FTN, _CCP_HDD, _CCP_MCR, _CCP_ATN, _CCP_EDN, _CCP_TXBX = 3, 4, 5, 6, 7, 8, 9
# Paragraph sprms read here.
_SPRM_IN_TABLE, _SPRM_TTP, _SPRM_OUTLINE = 0x2416, 0x2417, 0x2640
_SPRM_TDEF_TABLE, _SPRM_CHG_TABS = 0xD608, 0xC615
_OPERAND_SIZE = {0: 1, 1: 1, 2: 2, 3: 4, 4: 2, 5: 2, 7: 3}
#: Built-in style identifiers (sti): heading 1–9, and Title (read as a level-1 heading, as for .docx).
_STI_TITLE = 62
#: Characters dropped: object anchors (picture, drawn object), auto footnote references, annotation marks,
#: optional hyphens and other controls that are not text.
_DROP = {chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0x13, 0x14, 0x15, 0x1E)}
_FIELD_BEGIN, _FIELD_SEPARATOR, _FIELD_END = "\x13", "\x14", "\x15"
_PARAGRAPH_END, _CELL_END = "\r", "\x07"
_LINE_BREAKS = {"\x0b": "\n", "\x0c": "\n", "\x0e": "\n", "\x1e": "-"}


@dataclass(frozen=True)
class _Paragraph:
    text: str
    #: The character that ended it: "\r" (a paragraph) or "\x07" (a table cell or a table row).
    mark: str
    level: int = 0
    in_table: bool = False
    row_end: bool = False


@register_loader(".doc")
def load_doc(path: Path, options: LoadOptions) -> LoadedDocument:
    """Paragraphs and tables of the main text in order (headings give the heading path), then footnotes,
    endnotes and text boxes; a file that is not a Word 97–2003 document is routed or named."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head.startswith(OLE_MAGIC):
        return _not_ole(path, head, options)
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            if not ole.exists("WordDocument"):
                if ole.exists("EncryptedPackage"):
                    raise EncryptedDocumentError(str(path), "a password-protected Word document cannot be read",
                                                 hint=_UNPROTECT)
                streams = ", ".join("/".join(s) for s in ole.listdir()[:5]) or "none"
                raise DocumentLoadError(str(path), f"not a Word 97–2003 file: an OLE file without a WordDocument "
                                                   f"stream ({_ole_kind(ole)}streams: {streams})")
            word = ole.openstream("WordDocument").read()
            fib = _Fib.parse(path, word)
            table_name = "1Table" if fib.which_table else "0Table"
            if not ole.exists(table_name):
                raise DocumentLoadError(str(path), f"a damaged Word file: its {table_name} stream is missing")
            table = ole.openstream(table_name).read()
    except DocumentLoadError:
        raise
    except (OSError, ValueError, struct.error, IndexError) as exc:  # olefile's own errors on a damaged container
        raise DocumentLoadError(str(path), f"a damaged Word 97–2003 file ({exc})") from exc
    try:
        return _read_document(fib, word, table)
    except (ValueError, struct.error, IndexError) as exc:
        raise DocumentLoadError(str(path), f"a damaged Word 97–2003 file ({exc})") from exc


_UNPROTECT = "open it in Word or LibreOffice, save it without a password, then ingest it again"


def _ole_kind(ole: Any) -> str:
    for stream, kind in (("Workbook", "an Excel file? "), ("Book", "an Excel file? "),
                         ("PowerPoint Document", "a PowerPoint file? ")):
        if ole.exists(stream):
            return kind
    return ""


def _not_ole(path: Path, head: bytes, options: LoadOptions) -> LoadedDocument:
    """A '.doc' that is really another format: read it with the loader for what it is, or say what it is."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(b"{\\rtf"):
        raise DocumentLoadError(str(path), "not a Word 97–2003 file: it is an RTF file named .doc (RTF is not read)",
                                hint="save it as .docx, then ingest it again")
    if start.startswith(b"pk\x03\x04"):
        return _zip_named_doc(path, options)
    if start.startswith(b"%pdf-"):
        from ingest.loaders.pdf import load_pdf

        logger.info("%s: a PDF named .doc; read as PDF", path)
        return load_pdf(path, options)
    if b"<html" in start[:1024] or start.startswith(b"<!doctype html"):
        from ingest.loaders.html import load_html

        logger.info("%s: an HTML page named .doc (Word's 'web page'); read as HTML", path)
        return load_html(path, options)
    if start.startswith(b"mime-version:"):
        what = "a web archive (MHTML) named .doc"
    elif start.startswith(b"<?xml"):
        what = "an XML file named .doc (Word 2003 XML is not read)"
    elif start.startswith(b"\xdb\xa5"):
        what = "a Word 2.0 file (not read)"
    else:
        what = "it does not start with the OLE2 signature of Word 97–2003"
    raise DocumentLoadError(str(path), f"not a Word 97–2003 file: {what}",
                            hint="save it as .docx, then ingest it again")


def _zip_named_doc(path: Path, options: LoadOptions) -> LoadedDocument:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise DocumentLoadError(str(path), f"not a Word 97–2003 file: a damaged zip ({exc})") from exc
    if "word/document.xml" in names:
        from ingest.loaders.office import load_docx

        logger.info("%s: a .docx named .doc; read as .docx", path)
        return load_docx(path, options)
    if "content.xml" in names:
        from ingest.loaders.office import load_odt

        logger.info("%s: an OpenDocument text named .doc; read as .odt", path)
        return load_odt(path, options)
    raise DocumentLoadError(str(path), "not a Word 97–2003 file: a zip archive named .doc")


# --- the FIB -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fib:
    which_table: bool
    lengths: tuple[int, ...]  # FibRgLw97
    fc_lcb: tuple[int, ...]  # FibRgFcLcb (fc, lcb, fc, lcb, …)

    @classmethod
    def parse(cls, path: Path, word: bytes) -> _Fib:
        """The FIB, with the checks that name what is wrong: not Word, too old, encrypted."""
        if len(word) < 34:
            raise DocumentLoadError(str(path), "a damaged Word file: its WordDocument stream is truncated")
        ident, nfib = struct.unpack_from("<HH", word, 0)
        if ident != _WORD_IDENT:
            raise DocumentLoadError(str(path), "not a Word 97–2003 file: the WordDocument stream has no Word signature")
        if nfib < _NFIB_WORD97:
            raise DocumentLoadError(str(path), f"a Word 6/95 file (nFib {nfib}) is not read",
                                    hint="save it as .docx in Word or LibreOffice, then ingest it again")
        (flags,) = struct.unpack_from("<H", word, 0x0A)
        if flags & _F_ENCRYPTED:
            raise EncryptedDocumentError(str(path), "a password-protected (encrypted) Word document cannot be read",
                                         hint=_UNPROTECT)
        pos = 32
        (csw,) = struct.unpack_from("<H", word, pos)
        pos += 2 + 2 * csw
        (cslw,) = struct.unpack_from("<H", word, pos)
        lengths = struct.unpack_from(f"<{cslw}i", word, pos + 2)
        pos += 2 + 4 * cslw
        (cb_fc_lcb,) = struct.unpack_from("<H", word, pos)
        fc_lcb = struct.unpack_from(f"<{2 * cb_fc_lcb}I", word, pos + 2)
        if cslw <= _CCP_TXBX or cb_fc_lcb <= _CLX:
            raise DocumentLoadError(str(path), "a damaged Word file: its FIB is too short")
        return cls(bool(flags & _F_WHICH_TABLE), tuple(lengths), tuple(fc_lcb))

    def blob(self, index: int, table: bytes) -> bytes:
        fc, lcb = self.fc_lcb[2 * index], self.fc_lcb[2 * index + 1]
        if not lcb:
            return b""
        if fc + lcb > len(table):
            raise ValueError(f"structure {index} lies past the end of the table stream")
        return table[fc : fc + lcb]


# --- text: the piece table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    cp_start: int
    cp_end: int
    fc: int  # byte offset of the first character in the WordDocument stream
    compressed: bool

    def text(self, word: bytes) -> str:
        count = self.cp_end - self.cp_start
        size = count if self.compressed else 2 * count
        data = word[self.fc : self.fc + size]
        if len(data) != size:
            raise ValueError("a text piece lies past the end of the WordDocument stream")
        if not self.compressed:
            return data.decode("utf-16-le", errors="replace")
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined stand for themselves
            return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in data)

    def fc_of(self, cp: int) -> int:
        return self.fc + (cp - self.cp_start) * (1 if self.compressed else 2)


def _pieces(clx: bytes) -> list[_Piece]:
    """The piece table (PlcPcd) of the CLX, after any Prc (property modifiers, skipped)."""
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:  # Prc: clxt, cbGrpprl, grpprl
        (cb,) = struct.unpack_from("<h", clx, pos + 1)
        pos += 3 + max(cb, 0)
    if pos >= len(clx) or clx[pos] != 0x02:
        raise ValueError("no piece table in the CLX")
    (lcb,) = struct.unpack_from("<I", clx, pos + 1)
    plc = clx[pos + 5 : pos + 5 + lcb]
    if len(plc) != lcb or lcb < 16 or (lcb - 4) % 12:
        raise ValueError("a piece table of the wrong size")
    n = (lcb - 4) // 12
    cps = struct.unpack_from(f"<{n + 1}I", plc, 0)
    pieces = []
    for i in range(n):
        (fc_field,) = struct.unpack_from("<I", plc, 4 * (n + 1) + 8 * i + 2)
        compressed = bool(fc_field & 0x40000000)
        fc = fc_field & 0x3FFFFFFF
        if cps[i + 1] > cps[i]:
            pieces.append(_Piece(cps[i], cps[i + 1], fc // 2 if compressed else fc, compressed))
    return pieces


# --- paragraph properties: styles and the PAPX in the formatted disk pages -----------------------------------


def _style_levels(stsh: bytes) -> dict[int, int]:
    """istd → heading level, for the styles whose built-in identifier is heading 1–9 or Title."""
    if len(stsh) < 6:
        return {}
    (cb_stshi,) = struct.unpack_from("<H", stsh, 0)
    (cstd,) = struct.unpack_from("<H", stsh, 2)
    pos = 2 + cb_stshi
    levels: dict[int, int] = {}
    for istd in range(cstd):
        if pos + 2 > len(stsh):
            break
        (cb_std,) = struct.unpack_from("<H", stsh, pos)
        if cb_std >= 2:
            sti = struct.unpack_from("<H", stsh, pos + 2)[0] & 0x0FFF
            if 1 <= sti <= 9:
                levels[istd] = sti
            elif sti == _STI_TITLE:
                levels[istd] = 1
        pos += 2 + cb_std
    return levels


class _Papx:
    """The paragraph properties that matter here, looked up by the byte offset of a paragraph's mark."""

    def __init__(self, plc: bytes, word: bytes, levels: dict[int, int]) -> None:
        self.word = word
        self.levels = levels
        n = (len(plc) - 4) // 8 if len(plc) >= 12 else 0
        self.fcs = struct.unpack_from(f"<{n + 1}I", plc, 0) if n else ()
        self.pns = struct.unpack_from(f"<{n}I", plc, 4 * (n + 1)) if n else ()
        self._page = lru_cache(maxsize=64)(self._read_page)

    def _read_page(self, pn: int) -> tuple[tuple[int, ...], bytes, bytes]:
        page = self.word[pn * 512 : pn * 512 + 512]
        if len(page) != 512:
            raise ValueError("a paragraph property page lies past the end of the WordDocument stream")
        crun = page[511]
        fcs = struct.unpack_from(f"<{crun + 1}I", page, 0)
        bx = page[4 * (crun + 1) : 4 * (crun + 1) + 13 * crun]
        return fcs, bx, page

    def lookup(self, fc: int) -> tuple[int, bool, bool]:
        """(heading level, in a table, ends a table row) for the paragraph whose mark is at ``fc``."""
        i = bisect_right(self.fcs, fc) - 1
        if i < 0 or i >= len(self.pns):
            return 0, False, False
        fcs, bx, page = self._page(self.pns[i] & 0x3FFFFF)
        j = bisect_right(fcs, fc) - 1
        if j < 0 or j >= len(fcs) - 1:
            return 0, False, False
        offset = bx[13 * j] * 2
        if not offset:
            return 0, False, False
        cb = page[offset]
        if cb:
            grpprl = page[offset + 1 : offset + 1 + 2 * cb - 1]
        else:
            grpprl = page[offset + 2 : offset + 2 + 2 * page[offset + 1]]
        if len(grpprl) < 2:
            return 0, False, False
        (istd,) = struct.unpack_from("<H", grpprl, 0)
        level = self.levels.get(istd, 0)
        in_table = row_end = False
        for sprm, operand in _sprms(grpprl[2:]):
            if sprm == _SPRM_IN_TABLE:
                in_table = bool(operand[:1] and operand[0])
            elif sprm == _SPRM_TTP:
                row_end = bool(operand[:1] and operand[0])
            elif sprm == _SPRM_OUTLINE and operand[:1] and operand[0] < 9:
                level = operand[0] + 1
        return level, in_table or row_end, row_end


def _sprms(grpprl: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 2 <= len(grpprl):
        (sprm,) = struct.unpack_from("<H", grpprl, pos)
        pos += 2
        spra = sprm >> 13
        if sprm == _SPRM_TDEF_TABLE:
            if pos + 2 > len(grpprl):
                return
            size = struct.unpack_from("<H", grpprl, pos)[0] + 1
        elif spra == 6:
            if pos >= len(grpprl) or (sprm == _SPRM_CHG_TABS and grpprl[pos] == 255):
                return  # a variable operand this reader does not need to walk past
            size = grpprl[pos] + 1
        else:
            size = _OPERAND_SIZE[spra]
        yield sprm, grpprl[pos : pos + size]
        pos += size


# --- from characters to paragraphs to blocks -----------------------------------------------------------------


def _paragraphs(pieces: list[_Piece], word: bytes, start: int, end: int, papx: _Papx | None) -> list[_Paragraph]:
    """The paragraphs between character positions ``start`` and ``end``, control characters mapped and field
    instructions dropped."""
    out: list[_Paragraph] = []
    buf: list[str] = []
    fields: list[bool] = []  # per open field: True once its separator is passed (its result is shown)
    for piece in pieces:
        lo, hi = max(piece.cp_start, start), min(piece.cp_end, end)
        if lo >= hi:
            continue
        text = piece.text(word)[lo - piece.cp_start : hi - piece.cp_start]
        for offset, ch in enumerate(text):
            if ch == _FIELD_BEGIN:
                fields.append(False)
            elif ch == _FIELD_SEPARATOR:
                if fields:
                    fields[-1] = True
            elif ch == _FIELD_END:
                if fields:
                    fields.pop()
            elif ch in (_PARAGRAPH_END, _CELL_END):
                level, in_table, row_end = papx.lookup(piece.fc_of(lo + offset)) if papx else (0, False, False)
                out.append(_Paragraph("".join(buf).strip(), ch, level, in_table or ch == _CELL_END, row_end))
                buf = []
            elif not all(fields):
                continue  # a field's instruction (HYPERLINK "…", PAGE …): its result follows
            elif ch in _LINE_BREAKS:
                buf.append(_LINE_BREAKS[ch])
            elif ch not in _DROP:
                buf.append(ch)
    if "".join(buf).strip():
        out.append(_Paragraph("".join(buf).strip(), _PARAGRAPH_END))
    return out


def _blocks(paragraphs: list[_Paragraph], *, know_rows: bool) -> list[tuple[int, str, str]]:
    """Paragraphs → (level, heading, text) blocks; table cells gathered into rows, rows into a Markdown table.
    Without paragraph properties (``know_rows`` false) a cell mark right after a cell mark ends the row."""
    blocks: list[tuple[int, str, str]] = [(0, "", "")]
    rows: list[list[str]] = []
    cells: list[str] = []
    cell: list[str] = []
    previous = ""

    def flush_table() -> None:
        if cells or cell:
            rows.append(cells + ([" ".join(cell)] if cell else []))
        if rows:
            add_block(blocks, 0, markdown_table(rows))
        rows.clear(), cells.clear(), cell.clear()

    for para in paragraphs:
        row_end = para.row_end if know_rows else (para.mark == _CELL_END and previous == _CELL_END and not para.text)
        previous = "" if row_end else para.mark
        if row_end:
            rows.append(cells[:])
            cells.clear()
        elif para.mark == _CELL_END:
            cells.append(" ".join([*cell, para.text]).strip())
            cell.clear()
        elif para.in_table:
            cell.append(para.text)  # a paragraph inside a cell: the cell goes on
        else:
            flush_table()
            add_block(blocks, para.level, " ".join(para.text.split()) if para.level else para.text)
    flush_table()
    return blocks


def _read_document(fib: _Fib, word: bytes, table: bytes) -> LoadedDocument:
    pieces = _pieces(fib.blob(_CLX, table))
    warnings: list[str] = []
    papx: _Papx | None
    try:
        papx = _Papx(fib.blob(_PLCF_BTE_PAPX, table), word, _style_levels(fib.blob(_STSHF, table)))
    except (ValueError, struct.error, IndexError) as exc:
        logger.info("paragraph properties unreadable (%s); tables and headings are guessed", exc)
        warnings.append("paragraph properties unreadable: headings not found, table rows guessed")
        papx = None
    ccp = fib.lengths
    main_end = ccp[_CCP_TEXT]
    sections = _safe_sections(pieces, word, 0, main_end, papx)
    # The other stories follow the main text in this order; footnotes, endnotes and text boxes are content.
    story_start = main_end
    for index in (_CCP_FTN, _CCP_HDD, _CCP_MCR, _CCP_ATN, _CCP_EDN, _CCP_TXBX):
        length = max(ccp[index], 0)
        if index in (_CCP_FTN, _CCP_EDN, _CCP_TXBX) and length:
            extra = _paragraphs(pieces, word, story_start, story_start + length, papx)
            text = "\n\n".join(p.text for p in extra if p.text)
            if text:
                sections.append(Section(text=text))
        story_start += length
    return LoadedDocument(sections, warnings)


def _safe_sections(pieces: list[_Piece], word: bytes, start: int, end: int, papx: _Papx | None) -> list[Section]:
    try:
        paragraphs = _paragraphs(pieces, word, start, end, papx)
        know_rows = papx is not None
    except (ValueError, struct.error, IndexError) as exc:  # a damaged property page: the text still counts
        logger.info("paragraph properties unreadable (%s); tables and headings are guessed", exc)
        paragraphs, know_rows = _paragraphs(pieces, word, start, end, None), False
    return sections_from_blocks(_blocks(paragraphs, know_rows=know_rows))
