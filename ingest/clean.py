"""Text cleaning: Unicode normalisation, re-joining lines a PDF broke, and a garbage detector."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

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


def is_cjk(ch: str) -> bool:
    """A Chinese/Japanese/Korean character: text written without spaces between words."""
    return bool(_CJK_RE.match(ch))


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
# Hex digits with at least one digit and one letter ("7f45", "deadbeef01"): a dump or a hash, not a word.
_HEX_WORD = re.compile(r"(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{4,}[:,;]?")


def wordless_ratio(text: str) -> float:
    """Share of the letters that are not in plausible words.

    A word is implausible when it is longer than :data:`_MAX_WORD` characters (CJK characters excepted),
    is a group of hex digits ("7f45", "a3f9c2d1"), or is a run of Latin letters that no language writes:
    no vowel in four letters or more (acronyms excepted), six consonants in a row, or case flipping three
    times inside it ("xQzPwK"). Real prose, code and tables score near 0; random letters, hex dumps and
    one huge token score near 1.
    """
    total = 0
    bad = 0
    for word in text.split():
        letters = sum(1 for ch in word if ch.isalpha() and not _CJK_RE.match(ch))
        if not letters:
            continue
        total += letters
        if (len(word) > _MAX_WORD and not _CJK_RE.search(word)) or _HEX_WORD.fullmatch(word):
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


@dataclass(frozen=True)
class LetterStats:
    """Statistics of the Latin letters of a text, where random letters and real words differ.

    Measured on words with diacritics folded ("é" → "e"), camelCase split, all-capital acronyms left out.
    Real text in any Latin-script language, and code, uses some letters far more than others: entropy
    3.75–4.35 bits (random letters: 4.6–4.75). It also alternates consonants and vowels: 0.13–0.33 of
    adjacent letter pairs are two consonants (random: ≥ 0.47; x86 assembly reaches 0.43), and 0.31–0.51
    of the letters are vowels (random: ≤ 0.32; assembly 0.25). Ranges from tests/test_junk_text.py.
    """

    letters: int
    vowel_share: float  # a e i o u y among the letters
    consonant_pairs: float  # adjacent letter pairs inside words with no vowel
    entropy: float  # bits per letter of the letter distribution


def letter_stats(text: str) -> LetterStats | None:
    """:class:`LetterStats` of (a sample of) ``text``; ``None`` for CJK text or too few Latin letters."""
    sample = _sample(text)
    if cjk_ratio(sample) >= _MAX_CJK_SHARE:
        return None
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", sample) if not unicodedata.combining(ch))
    counts: Counter[str] = Counter()
    pairs = consonant_pairs = 0
    for run in _CASE_RUN.findall(folded):
        if len(run) >= 2 and run.isupper():  # an acronym ("NCCL", "HTTP"): not pronounced as a word
            continue
        run = run.lower()
        counts.update(run)
        pairs += len(run) - 1
        consonant_pairs += sum(1 for a, b in zip(run, run[1:], strict=False) if a not in _VOWELS and b not in _VOWELS)
    letters = sum(counts.values())
    if letters < _MIN_LETTERS:
        return None
    # Miller–Madow: a plug-in entropy of a few hundred letters reads low by (K-1)/2N nats.
    entropy = -sum(n / letters * math.log2(n / letters) for n in counts.values())
    entropy += (len(counts) - 1) / (2 * letters * math.log(2))
    vowels = sum(counts[v] for v in "aeiouy")
    return LetterStats(letters, vowels / letters, consonant_pairs / pairs if pairs else 0.0, entropy)


def looks_like_random_letters(text: str) -> bool:
    """True when the text's Latin "words" are letters drawn at random (or keyboard mash): every letter
    about as frequent as any other, and consonants piled up as no language writes them. Random *real*
    words cannot be told from text this way; CJK text is never judged."""
    stats = letter_stats(text)
    if stats is None:
        return False
    random_like = stats.entropy >= _RANDOM_ENTROPY and (
        stats.consonant_pairs >= _RANDOM_CONSONANT_PAIRS or stats.vowel_share <= _RANDOM_VOWEL_SHARE
    )
    mash = stats.consonant_pairs >= _MASH_CONSONANT_PAIRS and stats.vowel_share <= _MASH_VOWEL_SHARE
    return random_like or mash


# Thresholds set between the values of real and random text (see LetterStats): entropy is required, as the
# consonant and vowel shares alone would take assembly listings or "the strengths of rhythm" for junk;
# keyboard mash (a few keys, so lower entropy) is recognised by its consonant pile-ups alone.
_RANDOM_ENTROPY = 4.5
_RANDOM_CONSONANT_PAIRS = 0.45
_RANDOM_VOWEL_SHARE = 0.28
_MASH_CONSONANT_PAIRS = 0.6
_MASH_VOWEL_SHARE = 0.2
#: Fewer letters than this prove nothing either way.
_MIN_LETTERS = 150
#: Text with this share of CJK characters is not judged by its Latin letters.
_MAX_CJK_SHARE = 0.1
#: A long text is judged on this many evenly spread windows of this many characters.
_SAMPLE_WINDOWS = 8
_SAMPLE_WINDOW = 2000
# Letters of one case run: "getElementById" → "get", "Element", "By", "Id"; "HTTP" stays whole.
_CASE_RUN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def _sample(text: str) -> str:
    if len(text) <= _SAMPLE_WINDOWS * _SAMPLE_WINDOW:
        return text
    step = (len(text) - _SAMPLE_WINDOW) // (_SAMPLE_WINDOWS - 1)
    return "\n".join(text[i * step : i * step + _SAMPLE_WINDOW] for i in range(_SAMPLE_WINDOWS))


def looks_wordless(text: str, threshold: float = 0.5) -> bool:
    """True when most of the text is not words (one huge token, hex dumps, random letters, keyboard mash):
    indexing it would only add junk chunks. Short texts are left alone (an ID, a code)."""
    if len(text.strip()) < 200:
        return False
    return wordless_ratio(text) >= threshold or looks_like_random_letters(text)
