"""Answerability before generation: refuse a question when the knowledge base does not hold what it asks about.

The evidence is what retrieval already has, in two shares between 0 (nothing) and 1 (all of it):

* **lexical** — the best BM25 score divided by the question's own maximum, the score it would get against a
  chunk of average length containing each of its terms once (the sum of the terms' IDFs). Rare, specific
  terms (names, numbers) weigh most, and a term the knowledge base has never seen still counts in the
  maximum: a question about something absent cannot come close to it however many common words it shares.
* **vector** — the best cosine similarity placed on the embedder's own scale for the question's language,
  between what random unrelated chunks (0) and a chunk's own probe question (1) reach
  (:meth:`rag_app.calibrate.Calibration.vector_share`).

In hybrid retrieval the two are averaged with the fusion's weights (BM25 1, vector the calibrated weight of the
embedder in that language), so the embedder counts as much as it has proved to be worth, and not at all below
``MIN_TRUSTED_WEIGHT`` (half as good as BM25 on the calibration probe): the shipped English embedder, nearly
blind to Chinese, would only add noise to a Chinese decision. ``bm25`` mode has only the lexical share,
``vector`` mode only the vector share. A question is answerable when its evidence reaches the threshold for
its language and that kind of evidence (:data:`THRESHOLDS`). They were chosen on split-half data
(docs/grounding.md): the knowledge base holds half the articles of a reading-comprehension set, questions on
the other half must be refused, questions on the ingested half not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.keyword_index import KeywordHit, KeywordIndex

#: Minimum evidence per question language and kind of evidence. Each is the highest value that refuses at most
#: 1 % of the answerable questions when the whole dev file is in the knowledge base (docs/grounding.md): chosen
#: on answerable questions only, so the share of unanswerable ones refused is measured out of sample. Chinese
#: ``vector`` and ``hybrid`` would need an embedder that reads Chinese, and none ships to measure one on: they
#: are the English values, on the same embedder-independent scales.
THRESHOLDS: dict[str, dict[str, float]] = {
    "zh": {"lexical": 0.56, "vector": 0.68, "hybrid": 0.59},
    "en": {"lexical": 0.33, "vector": 0.68, "hybrid": 0.59},
}
Thresholds = dict[str, dict[str, float]]
#: The calibrated vector weight from which the embedder's similarity counts in a hybrid decision.
MIN_TRUSTED_WEIGHT = 0.5
#: A self-score below this: no term of the question has an IDF above FTS5's floor of 1e-6.
_NO_WEIGHT = 1e-3


@dataclass(frozen=True)
class Evidence:
    """What retrieval found for one question; ``None`` where that side did not run or cannot be read."""

    language: str
    lexical: float | None
    vector: float | None
    #: Trust in the vector side relative to BM25's 1 (the calibrated fusion weight; ``inf`` in vector mode).
    vector_weight: float

    @property
    def kind(self) -> str | None:
        """``lexical``, ``vector`` or ``hybrid``: which shares the score is made of (``None``: neither)."""
        lexical = self.lexical is not None and not math.isinf(self.vector_weight)
        trusted = self.vector_weight >= MIN_TRUSTED_WEIGHT or not lexical
        vector = self.vector is not None and self.vector_weight > 0 and trusted
        if lexical and vector:
            return "hybrid"
        return "lexical" if lexical else "vector" if vector else None

    def score(self) -> float | None:
        """The weighted mean of the available shares; ``None`` when there is none."""
        kind = self.kind
        if kind == "hybrid":
            assert self.lexical is not None and self.vector is not None
            return (self.lexical + self.vector_weight * self.vector) / (1.0 + self.vector_weight)
        return self.lexical if kind == "lexical" else self.vector if kind == "vector" else None


def thresholds_with(overrides: Any = None) -> Thresholds:
    """:data:`THRESHOLDS` with a user's overrides (``retrieval.answerable_thresholds``) laid over them."""
    table = {language: dict(kinds) for language, kinds in THRESHOLDS.items()}
    for language, kinds in (overrides or {}).items():
        table.setdefault(language, dict(THRESHOLDS["en"])).update(kinds)
    return table


def answerable(evidence: Evidence, thresholds: Thresholds | None = None) -> bool:
    """Whether the evidence reaches the threshold of its language and kind. No evidence at all (an embedder
    not yet calibrated in this language, in vector mode) gives the benefit of the doubt."""
    score, kind = evidence.score(), evidence.kind
    if score is None or kind is None:
        return True
    table = thresholds or THRESHOLDS
    return score >= table.get(evidence.language, table["en"])[kind]


def lexical_share(index: KeywordIndex, query: str, hits: list[KeywordHit]) -> float:
    """The best BM25 score among ``hits`` divided by the question's self-score, clipped to 0..1.

    When every term of the question is in at least half the chunks, BM25 gives none of them any weight (its
    IDF is 0 there) and the ratio would only measure chunk lengths: the question is then about what the whole
    knowledge base is about, and the share is the best chunk's IDF-weighted coverage of its terms instead.
    """
    if not hits:
        return 0.0
    maximum = self_score(index, query)
    if maximum < _NO_WEIGHT:
        return max(h.coverage for h in hits)
    return min(1.0, max(h.score for h in hits) / maximum)


def self_score(index: KeywordIndex, query: str) -> float:
    """The BM25 score (FTS5's IDF) of a chunk of average length that holds each term the search scores once.

    A term absent from the knowledge base counts with the IDF of a term in no chunk. The terms are those
    :meth:`ingest.keyword_index.KeywordIndex.search` ranks on: on a large knowledge base it leaves out single
    Chinese characters of words it knows and terms in more than ``max_postings`` chunks, and so does this.
    """
    from ingest.keyword_index import _CJK_RUN, tokenize

    terms = list(dict.fromkeys(tokenize(query)))
    if not terms:
        return 0.0
    n, rows, df = index.term_statistics(terms)
    if n > 2 * index.max_postings:
        covered = {ch for t in terms if len(t) > 1 and df[t] > 0 and _CJK_RUN.match(t) for ch in t}
        terms = [t for t in terms if not (len(t) == 1 and t in covered) and df[t] <= index.max_postings]
    return sum(max(1e-6, math.log((rows - df[t] + 0.5) / (df[t] + 0.5))) for t in terms)


def vector_share(calibration: Any, language: str, similarities: list[float]) -> float | None:
    """The best similarity on the embedder's calibrated scale for ``language`` (None: not calibrated)."""
    if not similarities:
        return None
    return calibration.vector_share(language, max(similarities))


#: Below this many chunks the knowledge base's own document frequencies say little: in a handful of chunks
#: every word the question shares with it is in "half the chunks" (BM25 weight 0) while every word it lacks
#: weighs the most, so answerable questions were refused (46 % of Chinese questions on one-article knowledge
#: bases, 89 % of English ones on one passage; docs/grounding.md "Small knowledge bases").
SMALL_KB_CHUNKS = 50
#: The IDFs of a small knowledge base are taken as if it held this many chunks, the others holding none of the
#: question's terms: a word in one chunk of five then weighs nearly as much as an absent one.
BACKGROUND_CHUNKS = 300
#: The share a small knowledge base must reach, per question language: the highest that refuses at most ~1.5 % (zh),
#: ~3 % (en) of answerable questions on one-article and one-passage knowledge bases (docs/grounding.md).
SMALL_KB_THRESHOLDS: dict[str, float] = {"zh": 0.45, "en": 0.25}


def small_kb_share(query: str, chunks: list[str]) -> float:
    """The lexical share on a small knowledge base: the best BM25 score over ``chunks`` (their texts) divided
    by the question's self-score, both with IDFs smoothed to :data:`BACKGROUND_CHUNKS`."""
    from collections import Counter

    from ingest.keyword_index import BM25_B, BM25_K1, tokenize

    terms = list(dict.fromkeys(tokenize(query)))
    if not terms or not chunks:
        return 0.0
    bodies = [Counter(tokenize(text)) for text in chunks]
    avgdl = sum(sum(b.values()) for b in bodies) / len(bodies) or 1.0
    n = max(len(bodies), BACKGROUND_CHUNKS)
    idf = {}
    for t in terms:
        df = sum(1 for b in bodies if t in b)
        idf[t] = math.log((n - df + 0.5) / (df + 0.5))
    maximum = sum(idf.values())

    def bm25(body: Counter[str]) -> float:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * sum(body.values()) / avgdl)
        return sum(idf[t] * body[t] * (BM25_K1 + 1) / (body[t] + norm) for t in terms if body[t])

    return min(1.0, max(bm25(b) for b in bodies) / maximum) if maximum > 0 else 0.0


def small_kb_answerable(query: str, chunks: list[str]) -> tuple[bool, float]:
    """(answerable, share) for a knowledge base of fewer than :data:`SMALL_KB_CHUNKS` chunks."""
    from rag_app.prompting import question_language

    share = small_kb_share(query, chunks)
    language = question_language(query)
    return share >= SMALL_KB_THRESHOLDS.get(language, SMALL_KB_THRESHOLDS["en"]), share


def content_terms(text: str) -> list[str]:
    """The question's index terms (stop words out), each once: what a rewrite of it must keep."""
    from ingest.keyword_index import tokenize

    return list(dict.fromkeys(tokenize(text)))


def usable_condensation(question: str, condensed: str) -> str:
    """The condensed (standalone) question, or ``question`` itself when the condensation is junk: empty,
    less than half as long, or keeping fewer than half of the question's content terms (a tiny model's
    "The answer is:" for an off-topic follow-up would otherwise be what retrieval and the check judge)."""
    condensed, question = condensed.strip(), question.strip()
    if not condensed or len(condensed) * 2 < len(question):
        return question
    terms = content_terms(question)
    kept = set(content_terms(condensed))
    if terms and sum(1 for t in terms if t in kept) * 2 < len(terms):
        return question
    return condensed


def follow_up_on_topic(retriever: Any, question: str, history: list[tuple[str, str]]) -> bool:
    """Whether a follow-up may be answered from its condensed form: the original question is answerable
    itself, or every content term of it the knowledge base lacks comes from the conversation (an elliptic
    "那押金呢？" leans on earlier turns; "What is the boiling point of mercury?" brings a new subject)."""
    if not getattr(retriever, "relevance_threshold", False):
        return True
    if retriever.invoke(question):
        return True
    kb = getattr(retriever, "knowledge_base", None)
    if kb is None:
        return False
    terms = content_terms(question)
    _, _, df = kb.keywords.term_statistics(terms)
    said = {t for user, assistant in history for t in content_terms(f"{user}\n{assistant}")}
    return all(df.get(t, 0) > 0 or t in said for t in terms)
