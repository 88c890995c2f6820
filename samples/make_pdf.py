"""Render a sample Markdown guide to PDF (dev-only tool; not run by the tests or by the install).

Used to make ``samples/guide/user-guide.zh.pdf`` from ``samples/guide/user-guide.zh.md``.
The PDF embeds a subset of a CJK TrueType font with a ToUnicode map, so its text layer
extracts as real Chinese with pypdf. The font is WenQuanYi Micro Hei (TrueType outlines; it has
no bold face, so bold is drawn by stroking the glyph outlines). Do not swap in Noto Sans CJK:
its outlines are CFF, and fpdf2 2.8's subsets of it extract as garbage with pypdf.

Needs (outside the project's virtual environment):

    apt-get install -y fonts-wqy-microhei      # /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
    python3 -m venv /tmp/pdfvenv && /tmp/pdfvenv/bin/pip install fpdf2   # made with fpdf2 2.8.9

Run from the repository root:

    /tmp/pdfvenv/bin/python samples/make_pdf.py
    /tmp/pdfvenv/bin/python samples/make_pdf.py samples/guide/user-guide.zh.md -o out.pdf

Supported Markdown (deliberately small): ``#``/``##``/``###`` headings, paragraphs,
``-`` and ``1.`` list items, fenced code blocks, and inline ``**bold**`` and ```code```.
Lines are wrapped by the script itself so that Chinese breaks between characters and
punctuation such as "，。）" never starts a line.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import TextMode

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE / "guide" / "user-guide.zh.md"
FONT_TTC = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
# Face numbers inside the collection (see fontTools.ttLib.TTCollection).
SANS_FACE = 0  # WenQuanYi Micro Hei
MONO_FACE = 1  # WenQuanYi Micro Hei Mono
BOLD_STROKE = 0.011  # fake-bold outline width in mm per pt of font size

BODY_SIZE = 10.5
CODE_SIZE = 9.5
HEADING_SIZES = {1: 20.0, 2: 15.0, 3: 12.5}
LINE_FACTOR = 0.55  # line height in mm per pt of font size

# Kinsoku: never start a line with CLOSE, never end one with OPEN.
CLOSE = set("，。、；：？！）》」』】”’,.;:?!)]%")
OPEN = set("（《「『【“‘([")

# Inline styles: "" regular, "B" bold, "C" code.
Piece = tuple[str, str]


@dataclass
class Block:
    kind: str  # "h1".."h3", "p", "li", "code"
    text: str = ""
    marker: str = ""
    lines: list[str] | None = None


def parse_markdown(text: str) -> list[Block]:
    """Split Markdown into headings, paragraphs, list items and code blocks."""
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("p", " ".join(s.strip() for s in para)))
            para.clear()

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                code.append(lines[i].rstrip())
                i += 1
            blocks.append(Block("code", lines=code))
        elif m := re.match(r"(#{1,3})\s+(.*)", stripped):
            flush()
            blocks.append(Block(f"h{len(m.group(1))}", m.group(2).strip()))
        elif m := re.match(r"(-|\*|\d+\.)\s+(.*)", stripped):
            flush()
            marker = "•" if m.group(1) in "-*" else m.group(1)
            blocks.append(Block("li", m.group(2).strip(), marker=marker))
        elif not stripped:
            flush()
        elif para or not blocks or blocks[-1].kind != "li" or not line.startswith(" "):
            para.append(stripped)
        else:  # continuation line of a list item
            blocks[-1].text += " " + stripped
        i += 1
    flush()
    return blocks


def inline_pieces(text: str, base: str = "") -> list[Piece]:
    """``**bold**`` and ```code``` spans -> (text, style) pieces."""
    pieces: list[Piece] = []
    for part in re.split(r"(\*\*.+?\*\*|`[^`]+`)", text):
        if not part:
            continue
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            pieces.append((part[2:-2], "B"))
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            pieces.append((part[1:-1], "C"))
        else:
            pieces.append((part, base))
    return pieces


class GuidePDF(FPDF):
    def __init__(self, font: Path = FONT_TTC) -> None:
        super().__init__(format="A4", unit="mm")
        self.add_font("cjk", "", str(font), collection_font_number=SANS_FACE)
        self.add_font("cjkmono", "", str(font), collection_font_number=MONO_FACE)
        self.set_margins(22, 20, 22)
        self.set_auto_page_break(False)  # pages are broken line by line in emit_line()
        self.body_size = BODY_SIZE

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("cjk", "", 8.5)
        self.set_text_color(120, 120, 120)
        self.cell(0, 5, str(self.page_no()), align="C")
        self.set_text_color(0, 0, 0)

    # -- fonts and measuring -------------------------------------------------------------------
    def use(self, style: str, size: float) -> None:
        """Select the font for a piece style (bold uses the regular face, see emit_line)."""
        if style == "C":
            self.set_font("cjkmono", "", size * 0.95)
        else:
            self.set_font("cjk", "", size)

    def width(self, pieces: list[Piece], size: float) -> float:
        total = 0.0
        for text, style in pieces:
            self.use(style, size)
            total += self.get_string_width(text)
        return total

    # -- wrapping ------------------------------------------------------------------------------
    def wrap(self, pieces: list[Piece], size: float, max_w: float) -> list[list[Piece]]:
        """Greedy line breaking: between CJK characters, at spaces, never before CLOSE."""
        units: list[list[Piece]] = []  # unbreakable units; a unit of spaces is a break point
        for text, style in pieces:
            for tok in re.findall(r"[!-~]+|\s+|.", text):
                if tok.isspace():
                    units.append([(" ", style)])
                elif units and tok[0] in CLOSE and not units[-1][0][0].isspace():
                    units[-1].append((tok, style))
                elif units and units[-1][-1][0][-1] in OPEN:
                    units[-1].append((tok, style))
                else:
                    units.append([(tok, style)])

        lines: list[list[Piece]] = []
        line: list[Piece] = []
        line_w = 0.0
        for unit in units:
            is_space = unit[0][0].isspace()
            if is_space and not line:
                continue
            w = self.width(unit, size)
            if line and line_w + w > max_w and not is_space:
                lines.append(line)
                line, line_w = [], 0.0
            if not line and w > max_w:  # an over-long word: break it by characters
                for text, style in unit:
                    for ch in text:
                        cw = self.width([(ch, style)], size)
                        if line and line_w + cw > max_w:
                            lines.append(line)
                            line, line_w = [], 0.0
                        line.append((ch, style))
                        line_w += cw
                continue
            line.extend(unit)
            line_w += w
        if line:
            lines.append(line)
        return [_merge(_rstrip(ln)) for ln in lines if _rstrip(ln)]

    # -- output --------------------------------------------------------------------------------
    def ensure_room(self, height: float) -> None:
        if self.get_y() + height > self.h - 20:
            self.add_page()

    def emit_line(self, pieces: list[Piece], size: float, x: float, lh: float,
                  fill: tuple[int, int, int] | None = None) -> None:
        self.ensure_room(lh)
        y = self.get_y()
        if fill:
            self.set_fill_color(*fill)
            self.rect(self.l_margin, y, self.w - self.l_margin - self.r_margin, lh, style="F")
        self.set_xy(x, y)
        for text, style in pieces:
            self.use(style, size)
            if style == "C" and not fill:
                self.set_text_color(150, 40, 40)
            if style == "B":
                # Fake bold: fill and stroke the outlines. local_context wraps this in q/Q, since
                # the text rendering mode (Tr) would otherwise stay on for all following text.
                with self.local_context(
                    text_mode=TextMode.FILL_STROKE, line_width=size * BOLD_STROKE
                ):
                    self.cell(self.get_string_width(text), lh, text)
            else:
                self.cell(self.get_string_width(text), lh, text)
            self.set_text_color(0, 0, 0)
        self.set_xy(self.l_margin, y + lh)

    def render(self, blocks: list[Block]) -> None:
        self.add_page()
        full_w = self.w - self.l_margin - self.r_margin
        for i, block in enumerate(blocks):
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if block.kind.startswith("h"):
                level = int(block.kind[1])
                size = HEADING_SIZES[level]
                lh = size * LINE_FACTOR
                before = {1: 0.0, 2: 5.0, 3: 3.0}[level]
                # Keep a heading together with at least two lines of what follows.
                self.ensure_room(before + lh + 3 * BODY_SIZE * LINE_FACTOR)
                if self.get_y() > self.t_margin + 1:
                    self.ln(before)
                for ln in self.wrap(inline_pieces(block.text, "B"), size, full_w):
                    ln = [(t, "B" if s == "" else s) for t, s in ln]
                    self.emit_line(ln, size, self.l_margin, lh)
                if level == 1:
                    y = self.get_y() + 1
                    self.set_draw_color(160, 160, 160)
                    self.set_line_width(0.3)
                    self.line(self.l_margin, y, self.w - self.r_margin, y)
                    self.set_draw_color(0, 0, 0)
                    self.ln(4)
                else:
                    self.ln(1.5)
            elif block.kind == "p":
                lh = BODY_SIZE * LINE_FACTOR
                lines = self.wrap(inline_pieces(block.text), BODY_SIZE, full_w)
                if re.fullmatch(r"\*\*[^*]+\*\*", block.text):
                    # A bold line (an FAQ question) stays with the start of its answer.
                    self.ensure_room(lh * (len(lines) + 2) + 2.5)
                if nxt is not None and nxt.kind == "code":
                    # "For example:" stays on the same page as the start of its code block.
                    code_lines = min(len(nxt.lines or []), 8)
                    self.ensure_room(lh * len(lines) + 2.5 + code_lines * CODE_SIZE * LINE_FACTOR)
                for ln in lines:
                    self.emit_line(ln, BODY_SIZE, self.l_margin, lh)
                self.ln(2.5)
            elif block.kind == "li":
                lh = BODY_SIZE * LINE_FACTOR
                indent = 5.0
                hang = 6.0
                lines = self.wrap(inline_pieces(block.text), BODY_SIZE, full_w - indent - hang)
                for n, ln in enumerate(lines):
                    if n == 0:
                        self.ensure_room(lh)
                        y = self.get_y()
                        self.use("", BODY_SIZE)
                        self.set_xy(self.l_margin + indent, y)
                        self.cell(hang, lh, block.marker)
                        self.set_y(y)
                    self.emit_line(ln, BODY_SIZE, self.l_margin + indent + hang, lh)
                self.ln(1.0)
            elif block.kind == "code":
                lh = CODE_SIZE * LINE_FACTOR * 1.05
                pad = 1.5
                shade = (240, 240, 240)
                self.ensure_room(lh * min(len(block.lines or []), 8) + 2 * pad)
                self.set_fill_color(*shade)
                self.rect(self.l_margin, self.get_y(), full_w, pad, style="F")
                self.ln(pad)
                for raw in block.lines or [""]:
                    wrapped = self.wrap([(raw, "C")], CODE_SIZE, full_w - 8) or [[]]
                    for ln in wrapped:
                        self.emit_line(ln, CODE_SIZE, self.l_margin + 4, lh, fill=shade)
                self.set_fill_color(*shade)
                self.rect(self.l_margin, self.get_y(), full_w, pad, style="F")
                self.ln(pad + 3)


def _rstrip(line: list[Piece]) -> list[Piece]:
    while line and line[-1][0].isspace():
        line = line[:-1]
    return line


def _merge(line: list[Piece]) -> list[Piece]:
    """Join neighbouring pieces of the same style (fewer text objects in the PDF)."""
    out: list[Piece] = []
    for text, style in line:
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        else:
            out.append((text, style))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown", nargs="?", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("-o", "--output", type=Path, help="default: the Markdown path with .pdf")
    parser.add_argument("--font", type=Path, default=FONT_TTC, help=f"default: {FONT_TTC}")
    args = parser.parse_args()
    src: Path = args.markdown
    out: Path = args.output or src.with_suffix(".pdf")

    blocks = parse_markdown(src.read_text(encoding="utf-8"))
    pdf = GuidePDF(args.font)
    title = next((b.text for b in blocks if b.kind == "h1"), src.stem)
    pdf.set_title(title)
    pdf.set_author("rag-app team")
    pdf.set_lang("zh-CN")
    pdf.render(blocks)
    pdf.output(str(out))
    print(f"wrote {out} ({out.stat().st_size} bytes, {pdf.page_no()} pages)")


if __name__ == "__main__":
    main()
