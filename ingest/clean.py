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
# Control characters (category Cc) other than newline and tab.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LATIN1 = re.compile(r"[\u0080-\u00ff]")
# Characters that may be private-use, unassigned or surrogates: all but ASCII and the (fully assigned) CJK
# ideograph and punctuation blocks, which are most of the text and need no lookup.
_SUSPECT = re.compile(r"[^\x00-\x7f\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff]")


def normalize(text: str) -> str:
    """NFKC (maps CJK compatibility / Kangxi radicals such as '⽤' to '用'), unify newlines, drop NULs."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text)


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

    Counts the replacement character, private-use, unassigned and surrogate code points, and every
    character of a "word" made mostly of U+0080–U+00FF characters — what a PDF font without a Unicode map
    (e.g. GBK CID fonts) extracts to: "¹Ø ÓÚ ºì ¾ü". Real Latin-1 words ("Café", "naïve", "façade") are
    mostly ASCII letters and do not count. Judge the text before NFKC, which turns "¼" into "1⁄4".
    """
    total = 0
    bad = 0
    for word in text.split():
        total += len(word)
        if word.isascii():
            continue
        if len(_LATIN1.findall(word)) * 2 > len(word):
            bad += len(word)
            continue
        for ch in _SUSPECT.findall(word):
            if ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cn", "Cs"):
                bad += 1
    return bad / total if total else 0.0


def looks_unreadable(text: str, threshold: float = 0.3) -> bool:
    """True when the text is mostly mojibake and indexing it would only add noise."""
    return len(text.strip()) >= 20 and garbage_ratio(text) >= threshold


#: A "word" longer than this (outside CJK text, which has no spaces) is not a word: base64, a hex dump,
#: one endless token. URLs and paths rarely reach it.
_MAX_WORD = 40
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_VOWELS = frozenset("aeiouyAEIOUY")
_CONSONANT_RUN = re.compile(r"[^aeiouyAEIOUY]{6,}")


def wordless_ratio(text: str) -> float:
    """Share of the letters that are not in plausible words.

    A word is implausible when it is longer than :data:`_MAX_WORD` characters (CJK characters excepted),
    or is a run of Latin letters that no language writes: no vowel in four letters or more (acronyms
    excepted), six consonants in a row, or case flipping three times inside it ("xQzPwK"). Real prose, code and tables score near 0; random
    letters and one huge token score near 1.
    """
    total = 0
    bad = 0
    for word in text.split():
        letters = sum(1 for ch in word if ch.isalpha() and not _CJK_RE.match(ch))
        if not letters:
            continue
        total += letters
        if len(word) > _MAX_WORD and not _CJK_RE.search(word):
            bad += letters
            continue
        for run in _LATIN_WORD.findall(word):
            if len(run) < 4 or (run.isupper() and len(run) <= 10):  # short words, acronyms ("NCCL")
                continue
            if not _VOWELS.intersection(run) or _CONSONANT_RUN.search(run) or _case_flips(run) >= 3:
                bad += len(run)
    return bad / total if total else 0.0


def _case_flips(word: str) -> int:
    return sum(1 for a, b in zip(word[1:], word[2:], strict=False) if a.isupper() != b.isupper())


def looks_wordless(text: str, threshold: float = 0.5) -> bool:
    """True when most of the text is not words (one huge token, random letters): indexing it would only
    add junk chunks. Short texts are left alone (an ID, a code)."""
    return len(text.strip()) >= 200 and wordless_ratio(text) >= threshold
