"""Checks a generated answer against the sources it cites, so that a poorly supported answer is marked as such.

Nothing else tells a user whether an answer comes from the documents: the model may cite a source it did not
use, a source that does not exist ([7] with four sources), or none at all. After generation the answer's
*content units* — English and other alphabetic words (lower-cased, lightly stemmed, without stop words) and
Chinese character bigrams (without function characters) — are looked up in the passages of the sources it
cites with [n] markers (all sources when it has none). ``score`` = the share of the answer's distinct units
found there. Below ``SUPPORT_THRESHOLD`` the answer is flagged and gets a short notice in the question's
language. Citations of sources that do not exist are taken out of the answer text, also while it streams.
A refusal ("the documents do not contain …") is not an answer from the sources and is not checked.

:class:`SupportCheck` is the chain's last step (:mod:`rag_app.chain`): ``invoke`` returns the chain's output
with a ``grounding`` entry and ``cited`` marked on each source; ``stream`` passes the chunks through (answer
pieces cleaned of dangling citations) and ends with one chunk ``{"grounding": …}``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from functools import cache
from typing import Any, TypedDict

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import AddableDict

from ingest.keyword_index import tokenize
from rag_app.prompting import load_prompt, question_language

logger = logging.getLogger(__name__)

#: Below this share of its content units found in the sources it cites, an answer is flagged (the setting
#: ``retrieval.support_threshold``). Measured (docs/grounding.md): the default SmolLM2-135M's English answers
#: from the right passages have a median of 0.75 and 14 % fall below; made to answer from unrelated chunks, a
#: median of 0.38 and 67 % below. On Chinese, answers built from the data as a model writes them: 2 % of grounded
#: and 94 % of ungrounded ones below (bench/support_proxy.py).
SUPPORT_THRESHOLD = 0.5

# [3], [1, 2], [1，2], [1、2] and the full-width 【3】 that Chinese models write.
_MARKER = re.compile(r"(\s*)[\[【](\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)[\]】]")
# The end of a partial answer that may still become a marker (or precede one): hold it back.
_OPEN_TAIL = re.compile(r"\s*(?:[\[【][\d\s,，、]{0,15})?\Z")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
#: Chinese characters that make no claim of their own: a bigram holding one is not a content unit.
FUNCTION_CHARS_ZH = frozenset("的了着过是在和与及或吗呢吧啊也都就把被而又还并之其这那")
#: Words an answer uses to talk about its sources, not to state a fact ("according to the documents …").
_META_WORDS = "according source document text passage mention state answer question information"
_META_ZH = re.compile("根据|资料|文档|提到|回答|问题|信息")


class Support(TypedDict):
    """The verdict on one answer (``score`` is ``None`` when nothing was checked: a refusal)."""

    supported: bool
    score: float | None
    cited: list[int]
    removed_citations: list[int]
    notice: str | None


def _numbers(marker_body: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", marker_body)]


def cited_numbers(text: str) -> list[int]:
    """The source numbers an answer cites, in order of first mention."""
    seen: dict[int, None] = {}
    for match in _MARKER.finditer(text):
        seen.update(dict.fromkeys(_numbers(match.group(2))))
    return list(seen)


def remove_dangling(text: str, count: int) -> tuple[str, list[int]]:
    """``text`` without citations of sources outside 1..``count`` (a marker left empty goes with the space
    before it), and the numbers removed."""
    removed: dict[int, None] = {}

    def fix(match: re.Match[str]) -> str:
        numbers = _numbers(match.group(2))
        kept = [n for n in numbers if 1 <= n <= count]
        removed.update(dict.fromkeys(n for n in numbers if not 1 <= n <= count))
        if len(kept) == len(numbers):
            return match.group(0)
        if not kept:
            return ""
        return f"{match.group(1)}[{', '.join(map(str, kept))}]"

    return _MARKER.sub(fix, text), list(removed)


class CitationFilter:
    """Removes dangling citations from an answer that arrives piece by piece: a marker may be split across
    pieces, so a possible start of one (and the space before it) is held back until it is complete."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.removed: list[int] = []
        self._held = ""

    def _clean(self, text: str) -> str:
        cleaned, removed = remove_dangling(text, self.count)
        self.removed += [n for n in removed if n not in self.removed]
        return cleaned

    def feed(self, piece: str) -> str:
        text = self._held + piece
        cut = _OPEN_TAIL.search(text)
        start = cut.start() if cut else len(text)
        self._held = text[start:]
        return self._clean(text[:start])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._clean(text)


def _units(text: str) -> set[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    units: set[str] = set()
    for run in _RUNS.findall(text):
        if _CJK_CHAR.match(run):
            pairs = {a + b for a, b in zip(run, run[1:], strict=False) if not {a, b} & FUNCTION_CHARS_ZH}
            units |= pairs or {ch for ch in run if ch not in FUNCTION_CHARS_ZH}
        else:
            units.update(tokenize(run))
    return units


@cache
def _meta_units() -> frozenset[str]:
    return frozenset(_units(_META_WORDS))


def content_units(text: str) -> set[str]:
    """What a text claims, as comparable units: stemmed content words, and Chinese bigrams without function
    characters (a Chinese run too short for one gives its content characters). Citation markers and words
    about the sources themselves are not claims."""
    return _units(_META_ZH.sub(" ", _MARKER.sub(" ", text))) - _meta_units()


def support_score(answer: str, passages: Iterable[str]) -> float:
    """The share of the answer's distinct content units found in the passages (1.0 for an answer with none)."""
    units = content_units(answer)
    if not units:
        return 1.0
    found: set[str] = set()
    for passage in passages:
        found |= units & content_units(passage)
    return len(found) / len(units)


@cache
def _refusal_units() -> tuple[frozenset[str], ...]:
    """The refusals the app and the prompts ask for (both languages: a model may answer in either), as units."""
    phrases: list[str] = []
    for lang in ("en", "zh"):
        phrases.append(load_prompt(f"no_answer_{lang}"))
        phrases += re.findall(r'["“]([^"”]+)["”]', load_prompt(f"qa_{lang}"))
    return tuple(frozenset(content_units(p)) for p in phrases)


def is_refusal(answer: str) -> bool:
    """The answer says no more than "the documents do not contain the answer" (in either wording)."""
    units = content_units(answer)
    return bool(units) and any(units <= refusal for refusal in _refusal_units())


#: Where a sentence ends (a "." only when whitespace or the end follows: not in "0.1" or "e.g").
_SENTENCE_ENDS = frozenset("。！？!?；;\n.")
_LEADING_MARKER = re.compile(r"^\s*[\[【][\d\s,，、]*[\]】]")


class Attributor:
    """Inline citations for answers whose model wrote none: a sentence without a ``[n]`` gets the number of the
    passage holding most of its content units, placed before the sentence's end mark (``… 100 元 [1]。``), when
    that passage holds at least ``threshold`` of them. Small models asked to cite answer with a bare "[1]"
    (Qwen2.5-0.5B) or ignore the request (SmolLM2), so the app cites for them. Works piece by piece: only an
    end mark (and the whitespace after it) is held back until the next visible character shows whether the
    model cites after it (``。[1]``)."""

    def __init__(self, passages: Sequence[str], threshold: float = SUPPORT_THRESHOLD) -> None:
        self.passages = [content_units(p) for p in passages]
        self.threshold = threshold
        self.sentence = ""  # the sentence so far, already passed on
        self.held = ""  # an end mark and the whitespace after it, not yet passed on

    def _marker(self) -> str:
        sentence = _LEADING_MARKER.sub("", self.sentence)
        if not self.passages or _MARKER.search(sentence) or is_refusal(sentence):
            return ""
        units = content_units(sentence)
        if len(units) < 2:
            return ""
        found = [len(units & p) for p in self.passages]
        best = max(range(len(found)), key=found.__getitem__)
        return f" [{best + 1}]" if found[best] >= self.threshold * len(units) else ""

    def _end(self, cited_after: bool) -> str:
        out = self.held if cited_after else self._marker() + self.held
        self.sentence, self.held = "", ""
        return out

    def feed(self, piece: str) -> str:
        out: list[str] = []
        for ch in piece:
            if self.held:
                if ch.isspace() or (ch in _SENTENCE_ENDS and ch != "."):
                    self.held += ch
                    continue
                if self.held == "." and ch not in "[【":  # "0.1", "e.g": no sentence end
                    self.sentence += self.held
                    out.append(self.held)
                    self.held = ""
                else:
                    out.append(self._end(cited_after=ch in "[【"))
            if ch in _SENTENCE_ENDS:
                self.held = ch
                continue
            self.sentence += ch
            out.append(ch)
        return "".join(out)

    def flush(self) -> str:
        if not self.held and not self.sentence.strip():
            self.sentence = ""
            return ""
        return self._end(cited_after=False)


def attribute(answer: str, passages: Sequence[str], threshold: float = SUPPORT_THRESHOLD) -> str:
    """``answer`` with :class:`Attributor`'s citations."""
    attributor = Attributor(passages, threshold)
    return attributor.feed(answer) + attributor.flush()


def low_support_notice(question: str) -> str:
    return load_prompt(f"low_support_{question_language(question)}")


def check_support(
    question: str,
    answer: str,
    passages: Sequence[str],
    *,
    removed: Sequence[int] = (),
    threshold: float = SUPPORT_THRESHOLD,
) -> Support:
    """The verdict on ``answer`` (already without dangling citations) given the passages of its sources,
    numbered from 1 as the answer cites them; ``removed``: the citations taken out of it."""
    cited = [n for n in cited_numbers(answer) if 1 <= n <= len(passages)]
    if removed:
        logger.info("removed citations of sources that do not exist: %s", removed)
    if not passages or is_refusal(answer):
        return Support(supported=True, score=None, cited=cited, removed_citations=list(removed), notice=None)
    score = support_score(answer, [passages[n - 1] for n in cited] if cited else passages)
    supported = score >= threshold
    return Support(
        supported=supported,
        score=round(score, 3),
        cited=cited,
        removed_citations=list(removed),
        notice=None if supported else low_support_notice(question),
    )


def mark_cited(sources: Sequence[dict[str, Any]], cited: Iterable[int]) -> list[dict[str, Any]]:
    """Copies of the sources with ``cited`` set: the answer refers to them by their [index]."""
    numbers = set(cited)
    return [{**src, "cited": src["index"] in numbers} for src in sources]


def split_sources(sources: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the cited sources, the ones only retrieved), each in [index] order; when the answer cites none,
    every source is in the first list (nothing tells them apart)."""
    cited = [s for s in sources if s.get("cited")]
    if not cited:
        return list(sources), []
    return cited, [s for s in sources if not s.get("cited")]


def _passages(state: dict[str, Any]) -> list[str]:
    docs = state.get("context")
    if docs is not None:
        return [doc.page_content for doc in docs]
    return [str(src.get("snippet", "")) for src in state.get("sources") or []]


class _StreamCheck:
    """The streaming side of :class:`SupportCheck`: passes chunks on, cleans the answer pieces, remembers the
    rest of the output, and makes the final ``grounding`` chunk."""

    def __init__(self, threshold: float, attribute: bool) -> None:
        self.threshold = threshold
        self.attribute = attribute
        self.state: dict[str, Any] = {}
        self.answer = ""
        self.filter: CitationFilter | None = None
        self.attributor: Attributor | None = None
        self.early: list[str] = []  # answer pieces that came before the sources (not in this chain's order)

    def _piece(self, piece: str) -> str:
        if self.filter is None:
            self.early.append(piece)
            return ""
        text = self.filter.feed("".join(self.early) + piece)
        self.early.clear()
        if self.attributor is not None:
            text = self.attributor.feed(text)
        self.answer += text
        return text

    def feed(self, chunk: dict[str, Any]) -> AddableDict | None:
        out = AddableDict()
        for key, value in chunk.items():
            if key == "answer":
                if text := self._piece(str(value)):
                    out["answer"] = text
                continue
            self.state[key] = self.state[key] + value if key in self.state else value
            out[key] = value
            if key == "sources" and self.filter is None:
                self.filter = CitationFilter(len(self.state["sources"]))
                if self.attribute:
                    self.attributor = Attributor(_passages(self.state), self.threshold)
        return out or None

    def finish(self) -> Iterator[AddableDict]:
        if self.filter is None:
            self.filter = CitationFilter(len(self.state.get("sources") or []))
        tail = self._piece("")
        flushed = self.filter.flush()
        if self.attributor is not None:
            flushed = self.attributor.feed(flushed) + self.attributor.flush()
        self.answer += flushed
        if tail + flushed:
            yield AddableDict(answer=tail + flushed)
        yield AddableDict(
            grounding=check_support(
                str(self.state.get("question", "")),
                self.answer,
                _passages(self.state),
                removed=self.filter.removed,
                threshold=self.threshold,
            )
        )


class SupportCheck(Runnable[dict[str, Any], dict[str, Any]]):
    """The chain's last step: the support check on its output (see the module's docstring)."""

    def __init__(self, threshold: float = SUPPORT_THRESHOLD, attribute: bool = True) -> None:
        self.threshold = threshold
        #: add inline citations to the sentences the model left without (:class:`Attributor`)
        self.attribute = attribute

    def _check(self, state: dict[str, Any]) -> dict[str, Any]:
        sources = state.get("sources") or []
        answer, removed = remove_dangling(str(state.get("answer", "")), len(sources))
        if self.attribute and sources:
            answer = attribute(answer, _passages(state), self.threshold)
        grounding = check_support(
            str(state.get("question", "")), answer, _passages(state), removed=removed, threshold=self.threshold
        )
        return {**state, "answer": answer, "sources": mark_cited(sources, grounding["cited"]), "grounding": grounding}

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        return self._call_with_config(self._check, input, config)

    def _stream(self, chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        check = _StreamCheck(self.threshold, self.attribute)
        for chunk in chunks:
            if out := check.feed(chunk):
                yield out
        yield from check.finish()

    async def _astream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        check = _StreamCheck(self.threshold, self.attribute)
        async for chunk in chunks:
            if out := check.feed(chunk):
                yield out
        for out in check.finish():
            yield out

    def transform(
        self, input: Iterator[dict[str, Any]], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        yield from self._transform_stream_with_config(input, self._stream, config)

    async def atransform(
        self, input: AsyncIterator[dict[str, Any]], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        async for out in self._atransform_stream_with_config(input, self._astream, config):
            yield out

    def stream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        yield from self.transform(iter([input]), config, **kwargs)


def score_distribution(scores: Sequence[float | None], threshold: float = SUPPORT_THRESHOLD) -> dict[str, Any]:
    """Summary of the support scores of many answers (``rag eval --answers``): how many were checked (not
    refusals), the share below ``threshold`` (flagged), and the quantiles."""
    checked = sorted(s for s in scores if s is not None)
    out: dict[str, Any] = {"checked": len(checked), "unchecked": len(scores) - len(checked), "threshold": threshold}
    if not checked:
        return out

    def quantile(q: float) -> float:
        pos = q * (len(checked) - 1)
        low = int(pos)
        high = min(low + 1, len(checked) - 1)
        return round(checked[low] + (checked[high] - checked[low]) * (pos - low), 3)

    out["flagged"] = round(sum(s < threshold for s in checked) / len(checked), 4)
    out["mean"] = round(sum(checked) / len(checked), 3)
    points = (("min", 0.0), ("p10", 0.1), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("p90", 0.9), ("max", 1.0))
    out |= {name: quantile(q) for name, q in points}
    return out
