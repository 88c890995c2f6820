"""Text cleaning: Unicode normalisation, re-joining lines a PDF broke, and a garbage detector."""

from __future__ import annotations

import re
import unicodedata

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_RE = re.compile(f"[{_CJK}]")
# A line that ends in a CJK character (not a sentence end) followed by a line that starts with one:
# the PDF broke the line inside a sentence, so the newline goes.
_CJK_BREAK = re.compile(f"(?<=[{_CJK}，、：“”‘’（）《》])[ \\t]*\\n[ \\t]*(?=[{_CJK}，、。：；！？”’）》])")
# English words hyphenated across lines: "infor-\nmation" → "information".
_HYPHEN_BREAK = re.compile(r"(?<=[a-z])-\n(?=[a-z])")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """NFKC (maps CJK compatibility / Kangxi radicals such as '⽤' to '用'), unify newlines, drop NULs."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return text


def rejoin_broken_lines(text: str) -> str:
    """Undo hard line breaks inside Chinese sentences; English words are never glued together."""
    text = _HYPHEN_BREAK.sub("", text)
    text = _CJK_BREAK.sub("", text)
    return text


def tidy_whitespace(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def clean_text(text: str, *, rejoin_lines: bool = False) -> str:
    """The cleaning every loader's output goes through before splitting."""
    text = normalize(text)
    if rejoin_lines:
        text = rejoin_broken_lines(text)
    return tidy_whitespace(text)


def cjk_ratio(text: str) -> float:
    letters = [ch for ch in text if not ch.isspace()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _CJK_RE.match(ch)) / len(letters)


def garbage_ratio(text: str) -> float:
    """Share of characters that do not belong in readable text.

    Counts the replacement character, private-use code points, unassigned code points and runs of
    Latin-1 accented letters with no ASCII word around them — what a PDF font without a Unicode map
    (e.g. GBK CID fonts) extracts to.
    """
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0
    bad = 0
    for ch in chars:
        cat = unicodedata.category(ch)
        if ch == "\ufffd" or cat in ("Co", "Cn", "Cs"):
            bad += 1
        elif "\u0080" <= ch <= "\u00ff" and cat.startswith("L"):
            bad += 1
    return bad / len(chars)


def looks_unreadable(text: str, threshold: float = 0.3) -> bool:
    """True when the text is mostly mojibake and indexing it would only add noise."""
    return len(text.strip()) >= 20 and garbage_ratio(text) >= threshold
