"""How much to trust the embedder, per knowledge base and per language, measured instead of assumed.

The shipped English embedder is nearly blind to Chinese, a Chinese embedder is not; hard-coding "Chinese →
BM25" would throw away a good Chinese embedder. So the knowledge base probes itself: it samples chunks,
turns a piece of each into a pseudo-question (a span of words from the chunk, with every other word left
out, so that exact wording helps neither side too much), and measures how well vector search and BM25 find
each chunk again (mean reciprocal rank). The vector weight in the fusion is the ratio of the two (an
embedder half as good as BM25 on the probe gets half its say), capped at ``MAX_WEIGHT``. The same probe gives
the embedder's similarity scale in that language, the vector side of the answerability check
(:mod:`rag_app.grounding`): the similarity a probe reaches with its own chunk ("related") and with random
other chunks ("unrelated"). Embedders differ wildly here (one gives unrelated texts 0.05, another 0.5), so a
similarity only means something measured against these two levels.

The result is cached in the keyword index with the embedder's fingerprint and the chunk count, and redone
when either changes noticeably (another embedder, the knowledge base grew or shrank by a quarter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.store import KnowledgeBase

logger = logging.getLogger(__name__)

PROBES_PER_LANGUAGE = 48
MIN_PROBES = 8
PROBE_RANKS = 10
MAX_WEIGHT = 4.0
VERSION = 3
_META_KEY = "calibration"
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass
class Calibration:
    """Per language: the vector weight (relative to BM25's 1) and the embedder's similarity scale."""

    fingerprint: str = ""
    chunks: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    #: Per language: median cosine similarity of a probe with its own chunk and with random other chunks.
    similarity: dict[str, dict[str, float]] = field(default_factory=dict)
    mrr: dict[str, dict[str, float]] = field(default_factory=dict)
    version: int = VERSION

    def weight(self, language: str) -> float:
        """Unprobed language (no chunks in it): equal say, the usual hybrid."""
        return self.weights.get(language, 1.0)

    def vector_share(self, language: str, similarity: float) -> float | None:
        """Where ``similarity`` lies between unrelated (0) and related (1) texts for this embedder, clipped to
        0..1; ``None`` when the language was not probed (too few chunks in it to know the embedder)."""
        scale = self.similarity.get(language)
        if not scale or scale["related"] <= scale["unrelated"]:
            return None
        share = (similarity - scale["unrelated"]) / (scale["related"] - scale["unrelated"])
        return max(0.0, min(1.0, share))


def chunk_language(text: str) -> str:
    """'zh' when at least a fifth of the letters are Chinese characters."""
    letters = [c for c in text if c.isalnum()]
    if not letters:
        return "en"
    return "zh" if sum(1 for c in letters if _CJK.match(c)) * 5 >= len(letters) else "en"


def pseudo_question(text: str, rng: random.Random) -> str:
    """A question-sized piece of the chunk: 16 consecutive words from a random place, every other one left out
    (so that neither side wins by matching a verbatim sentence)."""
    from ingest.keyword_index import words

    tokens = words(text)
    span = 16
    start = rng.randrange(0, max(1, len(tokens) - span))
    kept = tokens[start : start + span][::2]
    return ("" if chunk_language(text) == "zh" else " ").join(kept)


def embedder_fingerprint(embeddings: Any) -> str:
    """Identifies the embedder by what it does (one short embedding), not by a name it may not have."""
    vector = embeddings.embed_query("fingerprint 指纹 0123")
    rounded = ",".join(f"{x:.3f}" for x in vector[:32])
    return hashlib.sha1(f"{len(vector)}:{rounded}".encode()).hexdigest()[:16]


def calibrate(kb: KnowledgeBase, *, force: bool = False) -> Calibration:
    """The knowledge base's calibration: cached, or measured now (a second or two with a small embedder)."""
    fingerprint = embedder_fingerprint(kb.embeddings)
    count = kb.count()
    cached = kb.keywords.get_meta(_META_KEY)
    if cached and not force:
        try:
            old = Calibration(**json.loads(cached))
        except (TypeError, ValueError):
            old = None
        if (
            old is not None
            and old.version == VERSION
            and old.fingerprint == fingerprint
            and abs(old.chunks - count) <= 0.25 * max(old.chunks, 1)
        ):
            return old
    result = _measure(kb, fingerprint, count)
    kb.keywords.set_meta(_META_KEY, json.dumps(asdict(result)))
    logger.info("calibrated knowledge base '%s': vector weights %s", kb.name, result.weights)
    return result


def _measure(kb: KnowledgeBase, fingerprint: str, count: int) -> Calibration:
    from ingest.keyword_index import sync_from_collection

    sync_from_collection(kb.keywords, kb._collection)
    rng = random.Random(20240611)
    ids = sorted(kb._collection.get(include=[])["ids"])
    rng.shuffle(ids)
    by_language: dict[str, list[tuple[str, str]]] = {}
    for start in range(0, len(ids), 500):
        got = kb._collection.get(ids=ids[start : start + 500], include=["documents"])
        for cid, text in zip(got["ids"], got["documents"], strict=True):
            if text and len(text.split()) + len(_CJK.findall(text)) >= 20:
                group = by_language.setdefault(chunk_language(text), [])
                if len(group) < PROBES_PER_LANGUAGE:
                    group.append((cid, text))
        if all(len(g) >= PROBES_PER_LANGUAGE for g in by_language.values()) and len(by_language) >= 2:
            break
    result = Calibration(fingerprint=fingerprint, chunks=count)
    for language, sample in by_language.items():
        if len(sample) < MIN_PROBES:
            continue
        questions = [pseudo_question(text, rng) for _, text in sample]
        vectors = kb.embeddings.embed_documents(questions)
        got = kb._collection.query(query_embeddings=vectors, n_results=PROBE_RANKS, include=["distances"])
        vec_rr, keyword_rr = [], []
        for i, (cid, _) in enumerate(sample):
            ranked = list(got["ids"][i])
            vec_rr.append(1.0 / (ranked.index(cid) + 1) if cid in ranked else 0.0)
            hits = [h.chunk_id for h in kb.keywords.search(questions[i], PROBE_RANKS)]
            keyword_rr.append(1.0 / (hits.index(cid) + 1) if cid in hits else 0.0)
        mrr_v, mrr_k = sum(vec_rr) / len(sample), sum(keyword_rr) / len(sample)
        ratio = mrr_v / mrr_k if mrr_k > 0 else (MAX_WEIGHT if mrr_v > 0 else 1.0)
        result.weights[language] = round(min(MAX_WEIGHT, ratio), 4)
        result.mrr[language] = {"vector": round(mrr_v, 4), "bm25": round(mrr_k, 4)}
        result.similarity[language] = _similarity_scale(kb, [cid for cid, _ in sample], vectors)
    return result


def _similarity_scale(kb: KnowledgeBase, ids: list[str], questions: list[list[float]]) -> dict[str, float]:
    """Median cosine similarity of each probe question with its own chunk ("related") and with the other
    sampled chunks of its language ("unrelated")."""
    import numpy as np

    got = kb._collection.get(ids=ids, include=["embeddings"])
    by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
    chunks = np.array([by_id[i] for i in ids], dtype=float)
    asked = np.array(questions, dtype=float)
    chunks /= np.linalg.norm(chunks, axis=1, keepdims=True).clip(min=1e-12)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True).clip(min=1e-12)
    sims = asked @ chunks.T
    own = np.eye(len(ids), dtype=bool)
    return {"related": round(float(np.median(sims[own])), 4), "unrelated": round(float(np.median(sims[~own])), 4)}
