"""Retrieval: the chunks of a knowledge base that best match a question, as LangChain retrievers.

``HybridRetriever`` (the default) fuses vector search (Chroma) with BM25 (``ingest.keyword_index``). How much
the vector side counts is decided per knowledge base and per language by probing the configured embedder
(:mod:`rag_app.calibrate`): an English embedder that is nearly blind to Chinese gets almost no say on Chinese
questions, while a Chinese embedder does, so the fusion follows whichever side actually works.
``KnowledgeBaseRetriever`` is plain vector search.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import PrivateAttr

from ingest.store import KnowledgeBase
from rag_app.errors import EmptyKnowledgeBaseError

if TYPE_CHECKING:
    from rag_app.grounding import Evidence

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "vector", "bm25"]


class KnowledgeBaseRetriever(BaseRetriever):
    """Vector search over one knowledge base; each document carries its relevance in ``metadata['score']``.

    Raises :class:`EmptyKnowledgeBaseError` when the knowledge base holds no chunks, so a question on an
    empty knowledge base gets a clear message instead of an answer from nothing.
    """

    knowledge_base: Any  # ingest.store.KnowledgeBase (not a pydantic type)
    k: int = 4
    score_threshold: float = 0.0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        """``k``: this call's number of chunks (``retriever.invoke(q, k=1)``, LangChain's convention)."""
        k = k or self.k
        kb: KnowledgeBase = self.knowledge_base
        where = kb.reader_filter()  # issue 3: fresh after other processes' writes; half-written documents hidden
        if kb.count() == 0:
            raise EmptyKnowledgeBaseError(f"knowledge base '{kb.name}' is empty")
        out = []
        for doc, distance in kb.vectorstore.similarity_search_with_score(query, k=k, filter=where):
            score = 1.0 - float(distance)  # cosine distance → similarity in [-1, 1]
            if self.score_threshold > 0 and score < self.score_threshold:
                continue
            doc.metadata["score"] = round(score, 4)
            out.append(doc)
        return out


def fuse(
    vector: Sequence[tuple[str, float]],
    keyword: Sequence[tuple[str, float]],
    vector_weight: float,
    *,
    keyword_complete: bool = True,
) -> list[tuple[str, float]]:
    """Convex combination of normalised scores (Bruch et al., 2023, "An analysis of fusion functions for hybrid
    retrieval": beats reciprocal-rank fusion and needs one weight only).

    BM25 scores are divided by the best one (0..1); cosine similarities are kept on their own absolute scale
    (clipped at 0), never stretched: an embedder that cannot tell the candidates apart gives them all about the
    same similarity, so it adds a near-constant and leaves BM25's order alone. ``vector_weight`` is relative to
    BM25's weight of 1: 0 = BM25 only, 1 = equal say. ``keyword_complete``: BM25 returned every chunk that
    matches any term (so a chunk it did not return scores 0), rather than a cut-off top list.
    Result: ``(chunk_id, fused score in 0..1)``, best first.
    """
    alpha = vector_weight / (1.0 + vector_weight)
    best_kw = max((s for _, s in keyword), default=0.0)
    kw = {cid: (s / best_kw if best_kw > 0 else 0.0) for cid, s in keyword}
    vec = {cid: max(0.0, min(1.0, s)) for cid, s in vector}
    # A candidate that one side did not return ranked below that side's last one: it gets that side's worst
    # returned score, or 0 when BM25 returned all its matches.
    kw_floor = 0.0 if keyword_complete else min(kw.values(), default=0.0)
    vec_floor = min(vec.values(), default=0.0)
    if not vec:
        alpha = 0.0
    if not kw:
        alpha = 1.0
    fused = {
        cid: (1 - alpha) * kw.get(cid, kw_floor) + alpha * vec.get(cid, vec_floor)
        for cid in dict.fromkeys([*kw, *vec])
    }
    return sorted(fused.items(), key=lambda item: item[1], reverse=True)


class HybridRetriever(BaseRetriever):
    """Vector + BM25 retrieval over one knowledge base, with a relevance threshold, optional MMR and an
    optional cross-encoder reranker.

    Each document carries ``metadata['score']`` (the fused relevance, 0..1) and the parts it came from
    (``vector_score``, ``bm25_score``, ``keyword_coverage``). When the knowledge base does not hold what the
    question asks about (:mod:`rag_app.grounding`) the result is empty, and the chain answers "the documents do
    not contain the answer" instead of letting the model invent one.
    """

    knowledge_base: Any  # ingest.store.KnowledgeBase
    k: int = 4
    mode: Mode = "hybrid"
    #: Candidates taken from each side before fusion, MMR and reranking.
    fetch_k: int = 30
    #: Vector weight relative to BM25's 1; ``None`` = calibrated per language (rag_app.calibrate).
    vector_weight: float | None = None
    #: Relevance threshold: drop everything when the question is not answerable (see :meth:`verdict`).
    relevance_threshold: bool = True
    #: A floor under it: some chunk must hold this share (0..1) of the question's IDF-weighted terms.
    min_keyword_coverage: float = 0.2
    #: Minimum evidence per question language; ``None``: :data:`rag_app.grounding.THRESHOLDS`.
    answerable_thresholds: dict[str, dict[str, float]] | None = None
    #: Put the answerability verdict on every document (``metadata["answerable"]``, ``["evidence"]``), also
    #: when the threshold is off: the ranking and the decision can then be judged apart (``rag eval``, the
    #: search page).
    annotate_evidence: bool = False
    #: Cosine similarity below which vector hits are dropped (0 keeps everything).
    score_threshold: float = 0.0
    mmr: bool = False
    mmr_lambda: float = 0.5
    reranker: Any = None  # rag_app.rerank.Reranker

    _calibration: Any = PrivateAttr(default=None)
    _executor: ThreadPoolExecutor | None = PrivateAttr(default=None)
    _small_texts: tuple[str, list[str]] | None = PrivateAttr(default=None)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bm25")
        return self._executor

    def calibration(self) -> Any:
        """The knowledge base's calibration (computed once, cached in its keyword index)."""
        from rag_app.calibrate import calibrate

        if self._calibration is None:
            self._calibration = calibrate(self.knowledge_base)
        return self._calibration

    def weight_for(self, query: str) -> float:
        if self.mode == "vector":
            return float("inf")
        if self.mode == "bm25":
            return 0.0
        if self.vector_weight is not None:
            return self.vector_weight
        from rag_app.prompting import question_language

        return float(self.calibration().weight(question_language(query)))

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        """``k``: this call's number of chunks (``retriever.invoke(q, k=1)``, LangChain's convention)."""
        if k is not None and k != self.k:
            self._pool()  # created before the copy, so the copy shares it
            return self.model_copy(update={"k": k})._get_relevant_documents(query, run_manager=run_manager)
        kb: KnowledgeBase = self.knowledge_base
        kb.refresh()  # issue 3: see other processes' writes before counting
        # Counting costs ~10 ms on a large collection: only before the first question, or when nothing is found.
        if not getattr(kb, "_keywords_checked", False) and kb.count() == 0:
            raise EmptyKnowledgeBaseError(f"knowledge base '{kb.name}' is empty")
        ensure_keywords(kb)
        weight = self.weight_for(query)
        fetch = max(self.fetch_k, self.k)
        # BM25 (SQLite) and the query embedding + vector search (torch, Chroma) both release the GIL: run them
        # side by side, which takes the slower of the two instead of their sum.
        keyword_future = self._pool().submit(kb.keywords.search, query, fetch) if self.mode != "vector" else None
        vector_hits: dict[str, tuple[Document, float, list[float] | None]] = {}
        if self.mode != "bm25":
            vector_hits = self._vector_search(kb, query, fetch)
        keyword_hits = {}
        if keyword_future is not None:
            hits = keyword_future.result()
            visible = set(kb.visible_ids(h.chunk_id for h in hits))  # issue 3: half-written documents hidden
            keyword_hits = {h.chunk_id: h for h in hits if h.chunk_id in visible}
        if not vector_hits and not keyword_hits and kb.count() == 0:  # emptied since the first question
            raise EmptyKnowledgeBaseError(f"knowledge base '{kb.name}' is empty")
        verdict: tuple[bool, float | None] | None = None
        if self.relevance_threshold or self.annotate_evidence:
            verdict = self.verdict(query, vector_hits, keyword_hits, weight)
            if self.relevance_threshold and not verdict[0]:
                logger.info("nothing relevant for %r", query)
                return []
        if self.mode == "vector":
            ranked = [(cid, hit[1]) for cid, hit in vector_hits.items()]
        else:
            ranked = fuse(
                [(cid, hit[1]) for cid, hit in vector_hits.items()],
                [(cid, h.score) for cid, h in keyword_hits.items()],
                weight,
                keyword_complete=len(keyword_hits) < fetch,
            )
        docs = self._documents(kb, ranked, vector_hits, keyword_hits)
        if self.reranker is not None:
            docs = self.reranker.rerank(query, docs)
        if self.mmr:
            docs = self._mmr(kb, query, docs)
        docs = docs[: self.k]
        if verdict is not None and self.annotate_evidence:
            for doc in docs:
                doc.metadata["answerable"], doc.metadata["evidence"] = verdict
        return docs

    def _vector_search(
        self, kb: KnowledgeBase, query: str, fetch: int
    ) -> dict[str, tuple[Document, float, list[float] | None]]:
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if self.mmr else [])
        got = kb._collection.query(
            query_embeddings=[kb.embeddings.embed_query(query)], n_results=fetch, include=include,
            where=kb.reader_filter(),  # issue 3: half-written documents hidden
        )
        out: dict[str, tuple[Document, float, list[float] | None]] = {}
        embeddings = got.get("embeddings")
        for i, cid in enumerate(got["ids"][0]):
            score = 1.0 - float(got["distances"][0][i])
            if self.score_threshold > 0 and score < self.score_threshold:
                continue
            doc = Document(page_content=got["documents"][0][i] or "", metadata=dict(got["metadatas"][0][i] or {}))
            doc.id = cid
            vec = list(embeddings[0][i]) if embeddings is not None else None
            out[cid] = (doc, score, vec)
        return out

    def evidence(
        self, query: str, vector_hits: dict[str, Any], keyword_hits: dict[str, Any], weight: float
    ) -> Evidence:
        """What this retrieval found for the question, as :class:`rag_app.grounding.Evidence`."""
        from rag_app import grounding
        from rag_app.prompting import question_language

        language = question_language(query)
        lexical = None
        if self.mode != "vector":
            lexical = grounding.lexical_share(self.knowledge_base.keywords, query, list(keyword_hits.values()))
        vector = None
        if self.mode != "bm25":
            vector = grounding.vector_share(self.calibration(), language, [h[1] for h in vector_hits.values()])
        return grounding.Evidence(language, lexical, vector, weight)

    def verdict(
        self, query: str, vector_hits: dict[str, Any], keyword_hits: dict[str, Any], weight: float
    ) -> tuple[bool, float | None]:
        """(answerable by the evidence (:func:`rag_app.grounding.answerable`), the evidence score). When the
        evidence is BM25's alone, some chunk must also hold ``min_keyword_coverage`` of the question's
        IDF-weighted terms. A small knowledge base is judged by its smoothed lexical share instead
        (:func:`rag_app.grounding.small_kb_answerable`), whichever the embedder."""
        from rag_app.grounding import answerable

        if self.mode != "vector" and self.answerable_thresholds is None:  # thresholds a user set win
            texts = self._small_kb_texts()
            if texts is not None:
                from rag_app.grounding import small_kb_answerable

                return small_kb_answerable(query, texts)
        evidence = self.evidence(query, vector_hits, keyword_hits, weight)
        score = evidence.score()
        if evidence.kind == "lexical" and not any(
            h.coverage >= self.min_keyword_coverage for h in keyword_hits.values()
        ):
            return False, score
        return answerable(evidence, self.answerable_thresholds), score

    def _small_kb_texts(self) -> list[str] | None:
        """Every visible chunk's text when the knowledge base is small enough for
        :func:`rag_app.grounding.small_kb_answerable` (its own statistics too thin to judge by), else ``None``.
        Read once per chunk count and hidden set."""
        from rag_app.grounding import SMALL_KB_CHUNKS

        kb: KnowledgeBase = self.knowledge_base
        n = kb.keywords.count()
        if n >= SMALL_KB_CHUNKS:
            return None
        where = kb.reader_filter()
        key = f"{n}:{where}"
        cached = self._small_texts
        if cached is None or cached[0] != key:
            got = kb._collection.get(include=["documents"], where=where)
            cached = (key, [t for t in got["documents"] or [] if t])
            self._small_texts = cached
        return cached[1]

    def _documents(
        self,
        kb: KnowledgeBase,
        ranked: list[tuple[str, float]],
        vector_hits: dict[str, tuple[Document, float, list[float] | None]],
        keyword_hits: dict[str, Any],
    ) -> list[Document]:
        wanted = [cid for cid, _ in ranked[: max(self.k, self.fetch_k if (self.reranker or self.mmr) else self.k)]]
        missing = [cid for cid in wanted if cid not in vector_hits]
        fetched: dict[str, Document] = {}
        if missing:
            got = kb._collection.get(ids=missing, include=["documents", "metadatas"])
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                fetched[cid] = Document(page_content=text or "", metadata=dict(meta or {}), id=cid)
        scores = dict(ranked)
        out = []
        for cid in wanted:
            doc = vector_hits[cid][0] if cid in vector_hits else fetched.get(cid)
            if doc is None:  # deleted between the two reads
                continue
            doc.metadata["score"] = round(float(scores[cid]), 4)
            if cid in vector_hits:
                doc.metadata["vector_score"] = round(vector_hits[cid][1], 4)
            if cid in keyword_hits:
                doc.metadata["bm25_score"] = round(keyword_hits[cid].score, 4)
                doc.metadata["keyword_coverage"] = round(keyword_hits[cid].coverage, 4)
            out.append(doc)
        return out

    def _mmr(self, kb: KnowledgeBase, query: str, docs: list[Document]) -> list[Document]:
        """Maximal marginal relevance over the candidates: relevant but not repetitive."""
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        if len(docs) <= 1:
            return docs
        got = kb._collection.get(ids=[d.id for d in docs], include=["embeddings"])
        by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
        vectors = [by_id[d.id] for d in docs]
        picked = maximal_marginal_relevance(
            np.array(kb.embeddings.embed_query(query)), vectors, lambda_mult=self.mmr_lambda, k=self.k
        )
        return [docs[i] for i in picked]


def ensure_keywords(kb: KnowledgeBase) -> None:
    """Bring the keyword index level with Chroma once per knowledge-base object (a knowledge base made before
    the index existed, or a crash between the two writes); a no-op count comparison afterwards."""
    if getattr(kb, "_keywords_checked", False):
        return
    from ingest.keyword_index import sync_from_collection

    sync_from_collection(kb.keywords, kb._collection)
    kb._keywords_checked = True  # type: ignore[attr-defined]
