"""Plain text and Markdown, and decoding text of unknown encoding (GBK, Big5, UTF-16 …)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, register_loader, sections_from_blocks
from rag_app.errors import DocumentLoadError

logger = logging.getLogger(__name__)

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
    return LoadedDocument(sections_from_blocks([(lvl, title, "\n".join(body)) for lvl, title, body in blocks]))


_NOT_A_PARAGRAPH = re.compile(r"^\s*(?:[-*+>|#]|\d+[.)]\s)")


def _underlined_paragraph(body: list[str], level: int) -> bool:
    """A one-line paragraph right above '===' / '---' is a (setext) heading; a list item or rule is not."""
    if not body or not body[-1].strip() or _NOT_A_PARAGRAPH.match(body[-1]):
        return False
    above = body[-2] if len(body) >= 2 else None
    return (above is None and level == 0) or (above is not None and (not above.strip() or bool(_FENCE.match(above))))
