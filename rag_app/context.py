"""Context assembly: fill a token budget of the model's window with passages, not ``k`` loose chunks.

A 16K or 64K model gains nothing from four 200-token chunks. :class:`ContextAssembler` takes the retriever's
hits in rank order (the ``k`` best ones first, as they are), widens each with its neighbouring chunks of the
same document, merges touching chunks into one passage (chunks overlap by ``chunk_overlap``: the repeated text
is kept once, found by ``start_index`` or, where LangChain lost it, by the text) and stops when the budget,
counted in the LLM's own tokens, is used. Passages of one document come in document order; documents in the
order of their best hit. Each passage is one numbered citation (one page of a paged document at most).

Whole-document mode: when every document in scope (the knowledge base, or the documents the caller
selected) fits the budget, they go in whole, one citation per document (per page for paged ones). No hit
means nothing relevant: the result stays empty and the chain still answers "not in the documents".

The budget is a target; :class:`rag_app.chain.PromptBuilder` stays the hard limit of the window.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document

from ingest.store import KnowledgeBase, chunk_id
from rag_app.prompting import format_context, source_label

logger = logging.getLogger(__name__)

#: No chunk is shorter than this many LLM tokens on average: bounds how many chunks whole-document mode
#: reads before it knows that the documents cannot fit.
MIN_CHUNK_TOKENS = 16
#: Candidates asked of the retriever when the caller selected documents (hits elsewhere are dropped after).
SCOPED_CANDIDATES = 200
#: Shortest overlap between consecutive chunks recognised from the text alone.
MIN_OVERLAP_CHARS = 8


def budget_tokens(budget: float, n_ctx: int) -> int:
    """``retrieval.context_budget`` in tokens: a share of the window (0 < x ≤ 1) or a token count."""
    return int(budget * n_ctx) if budget <= 1 else int(budget)


def candidates(budget: int, chunk_tokens: int, k: int) -> int:
    """How many hits to ask the retriever for so that the budget can fill even if no hit had a neighbour."""
    return max(k, math.ceil(budget / max(1, chunk_tokens)) + k)


def _scope_filter(scope: Sequence[str]) -> dict[str, Any]:
    names = list(scope)
    return {"$or": [{"source": {"$in": names}}, {"file_name": {"$in": names}}]}


def in_scope(docs: Iterable[Document], scope: Sequence[str] | None) -> list[Document]:
    """The documents whose source (or file name) is in ``scope``; all of them when there is no scope."""
    if not scope:
        return list(docs)
    wanted = set(scope)
    return [d for d in docs if d.metadata.get("source") in wanted or d.metadata.get("file_name") in wanted]


def resolve_scope(kb: KnowledgeBase | None, names: Sequence[str] | None) -> list[str] | None:
    """Map what a caller selected (source, file name or end of a path, as ``rag docs list`` shows) to the
    sources that hold the chunks; a copy stored once resolves to its original. ``None``: everything."""
    if not names:
        return None
    if kb is None or kb.manifest is None:
        return list(names)
    from ingest.documents import resolve_sources

    records = kb.manifest.records(kb.collection_name)
    owner = {r.source: r.alias_of or r.source for r in records}
    return list(dict.fromkeys(owner[s] for s in resolve_sources(records, names)))


@dataclass(frozen=True)
class _Chunk:
    id: str
    doc: str  # the document it belongs to: content hash, else source
    index: int | None
    page: Any
    start: int | None
    text: str
    meta: dict[str, Any]

    @classmethod
    def of(cls, doc: Document, cid: str | None = None) -> _Chunk:
        meta = doc.metadata
        index, start = meta.get("chunk_index"), meta.get("start_index")
        return cls(
            id=cid or doc.id or "",
            doc=str(meta.get("sha256") or meta.get("source") or cid or doc.id or ""),
            index=int(index) if index is not None else None,
            page=meta.get("page"),
            start=int(start) if start is not None else None,
            text=doc.page_content,
            meta=dict(meta),
        )

    def follows(self, other: _Chunk) -> bool:
        """The next chunk of the same page of the same document (so the two read as one passage)."""
        return (
            self.doc == other.doc and self.page == other.page
            and self.index is not None and other.index is not None and self.index == other.index + 1
        )


def _overlap(before: _Chunk, after: _Chunk) -> int:
    """Characters at the start of ``after`` that repeat the end of ``before`` (the splitter's overlap).

    From the offsets when both are known and the text agrees; otherwise from the text alone (LangChain's
    ``start_index`` is -1 for most chunks when lengths are counted in tokens: it searches for each chunk
    from a position it computes with the overlap taken as characters, past the chunk's real start)."""
    if before.start is not None and after.start is not None and 0 <= before.start <= after.start:
        n = min(before.start + len(before.text) - after.start, len(after.text))
        if n <= 0:
            return 0
        if before.text.endswith(after.text[:n]):
            return n
    return _text_overlap(before.text, after.text)


def _text_overlap(before: str, after: str) -> int:
    """The longest end of ``before`` that begins ``after``, if at least ``MIN_OVERLAP_CHARS`` long (shorter
    matches are as likely chance as overlap)."""
    probe = after[:MIN_OVERLAP_CHARS]
    if len(probe) < MIN_OVERLAP_CHARS:
        return 0
    pos = before.find(probe)
    while pos != -1:  # leftmost first: the longest overlap
        if after.startswith(before[pos:]):
            return len(before) - pos
        pos = before.find(probe, pos + 1)
    return 0


def _joint(before: _Chunk, after: _Chunk) -> str:
    """What goes between two consecutive chunks that do not overlap: the whitespace the splitter stripped,
    a space for a gap of one character, a paragraph break for more, a line break when the gap is unknown."""
    if before.start is not None and after.start is not None and 0 <= before.start <= after.start:
        return " " if after.start - (before.start + len(before.text)) == 1 else "\n\n"
    return "\n"


def merge_text(chunks: Sequence[_Chunk]) -> str:
    """One text from consecutive chunks, each overlap kept once."""
    parts = [chunks[0].text]
    for before, after in zip(chunks, chunks[1:], strict=False):
        cut = _overlap(before, after)
        parts.append(after.text[cut:] if cut else _joint(before, after) + after.text)
    return "".join(parts)


def _runs(chunks: Iterable[_Chunk]) -> list[list[_Chunk]]:
    """Chunks of one document in document order, cut into runs of consecutive chunks of one page."""
    # Stable: chunks without an index keep their (rank) order.
    ordered = sorted(chunks, key=lambda c: (c.index is None, c.index or 0))
    runs: list[list[_Chunk]] = []
    for chunk in ordered:
        if runs and chunk.follows(runs[-1][-1]):
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    return runs


#: A document sent whole: its key, its runs of chunks (passages), its tokens.
_WholeDoc = tuple[str, list[list[_Chunk]], int]


def _passage(run: list[_Chunk], scores: dict[str, float | None]) -> Document:
    first = run[0]
    hit_scores = [s for c in run if (s := scores.get(c.id)) is not None]
    meta = {
        key: first.meta[key]
        for key in ("source", "file_name", "page", "sha256", "knowledge_base")
        if first.meta.get(key) is not None
    }
    meta["score"] = max(hit_scores) if hit_scores else None
    if first.index is not None:
        meta |= {"chunk_start": first.index, "chunk_end": run[-1].index}
    return Document(page_content=merge_text(run), metadata=meta, id=first.id if len(run) == 1 else None)


class ContextAssembler:
    """Passages for one question within ``budget`` tokens of the LLM (see the module docstring).

    ``k``: this many best hits go in before any neighbour (``retrieval.k``, the chunks sent without a budget).
    """

    def __init__(
        self,
        knowledge_base: KnowledgeBase,
        count_tokens: Callable[[str], int],
        budget: int,
        *,
        neighbours: int = 1,
        whole_documents: bool = True,
        k: int = 4,
    ) -> None:
        self.kb = knowledge_base
        # Memoised: the same chunks come back question after question (and in every refill below).
        self.count_tokens = functools.lru_cache(maxsize=8192)(count_tokens)
        self.budget = budget
        self.neighbours = neighbours
        self.whole_documents = whole_documents
        self.k = k
        #: (knowledge-base state, documents in scope or None when they exceeded, the budget checked)
        self._whole_cache: tuple[Any, list[_WholeDoc] | None, int] | None = None

    def assemble(
        self, hits: Sequence[Document], *, scope: Sequence[str] | None = None, budget: int | None = None
    ) -> list[Document]:
        """Passages for ``hits`` (the retriever's result, best first). ``scope``: sources the caller selected
        (already resolved); ``budget``: a smaller limit for this question (what is left of the window)."""
        if not hits:  # nothing relevant: keep the refusal
            return []
        budget = self.budget if budget is None else min(budget, self.budget)
        if self.whole_documents:
            whole = self._whole(hits, scope, budget)
            if whole is not None and self._excess(whole, budget) <= 0:
                return whole
        hits = in_scope(hits, scope)
        target = budget
        for _ in range(3):  # the pieces' counts add up to about the whole's: fill again a little lower if over
            out = self._fill(hits, target)
            excess = self._excess(out, budget)
            if excess <= 0:
                break
            target -= excess
        return out

    def _excess(self, passages: list[Document], budget: int) -> int:
        """Tokens by which the passages, as the prompt numbers them, exceed the budget."""
        return self.count_tokens(format_context(passages)) - budget if passages else -budget

    # --- budget filling ----------------------------------------------------------------------------

    def _header_tokens(self, chunk: _Chunk) -> int:
        """A passage's citation line "[n] (source:page)" (see prompting.format_context)."""
        return self.count_tokens(f"[99] ({source_label(Document(page_content='', metadata=chunk.meta))})\n\n")

    def _fill(self, hits: Sequence[Document], budget: int) -> list[Document]:
        ranked = [_Chunk.of(h, h.id or f"hit-{rank}") for rank, h in enumerate(hits)]
        scores = {c.id: c.meta.get("score") for c in ranked}
        neighbours = self._neighbours(ranked)
        chosen: dict[str, dict[int | str, _Chunk]] = {}  # document → chunk index (or id) → chunk
        doc_rank: dict[str, int] = {}
        used = 0
        # The k best hits first, as they are (what the chain sent before budgets: a budget at least that large
        # never holds less); then hit after hit in rank order, each widened with its neighbours.
        plan = [(rank, hit, False) for rank, hit in enumerate(ranked[: self.k])]
        plan += [(rank, hit, True) for rank, hit in enumerate(ranked)]
        for rank, hit, widen in plan:
            blocked: set[int] = set()  # directions in which a neighbour did not fit: no gaps beyond it
            for direction, chunk in [(0, hit), *(self._around(hit, neighbours) if widen else [])]:
                if direction in blocked:
                    continue
                picked = chosen.setdefault(chunk.doc, {})
                key = chunk.index if chunk.index is not None else chunk.id
                if key in picked:
                    continue
                cost = self._cost(chunk, picked)
                if used + cost > budget:
                    if direction == 0:
                        break  # the hit does not fit: no use widening it, but a shorter later hit may
                    blocked.add(direction)
                    continue
                picked[key] = chunk
                used += cost
                doc_rank.setdefault(chunk.doc, rank)
        out: list[Document] = []
        for doc in sorted(doc_rank, key=doc_rank.__getitem__):
            out += [_passage(run, scores) for run in _runs(chosen[doc].values())]
        logger.debug("assembled %d passages, ~%d of %d tokens", len(out), used, budget)
        return out

    def _around(self, hit: _Chunk, fetched: dict[str, _Chunk]) -> list[tuple[int, _Chunk]]:
        """(direction, chunk) for the hit's neighbours that exist and are visible, nearest first, the
        following one before the preceding one (an answer tends to follow what matched the question)."""
        if hit.index is None or not hit.meta.get("sha256"):
            return []
        out = []
        for step in range(1, self.neighbours + 1):
            for direction in (1, -1):
                index = hit.index + direction * step
                chunk = fetched.get(chunk_id(hit.meta["sha256"], index)) if index >= 0 else None
                if chunk is not None:
                    out.append((direction, chunk))
        return out

    def _neighbours(self, hits: Sequence[_Chunk]) -> dict[str, _Chunk]:
        """Every hit's neighbours, read by ID in one call; half-written or deleted documents stay hidden."""
        if self.neighbours <= 0:
            return {}
        known = {h.id for h in hits}
        ids = [
            cid
            for h in hits
            if h.index is not None and h.meta.get("sha256")
            for step in range(-self.neighbours, self.neighbours + 1)
            if step and h.index + step >= 0 and (cid := chunk_id(h.meta["sha256"], h.index + step)) not in known
        ]
        got = self._get(ids=list(dict.fromkeys(ids)))
        return {**got, **{h.id: h for h in hits}}

    def _get(self, *, ids: list[str] | None = None, where: dict[str, Any] | None = None) -> dict[str, _Chunk]:
        if ids is not None and not ids:
            return {}
        hidden = self.kb.reader_filter()
        clauses = [c for c in (hidden, where) if c]
        where = {"$and": clauses} if len(clauses) > 1 else (clauses[0] if clauses else None)
        got = self.kb._collection.get(ids=ids, where=where, include=["documents", "metadatas"])
        return {
            cid: _Chunk.of(Document(page_content=text or "", metadata=dict(meta or {})), cid)
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }

    def _cost(self, chunk: _Chunk, picked: dict[int | str, _Chunk]) -> int:
        """Tokens this chunk adds beside the chunks already picked of its document: its text less the
        overlaps with the chosen chunks before and after it, plus a citation line when it starts a passage."""
        before = picked.get(chunk.index - 1) if chunk.index is not None else None
        after = picked.get(chunk.index + 1) if chunk.index is not None else None
        before = before if before is not None and chunk.follows(before) else None
        after = after if after is not None and after.follows(chunk) else None
        head = _overlap(before, chunk) if before else 0
        tail = _overlap(chunk, after) if after else 0
        text = chunk.text[head : len(chunk.text) - tail]
        header = 0 if before or after else self._header_tokens(chunk)
        return self.count_tokens(text) + header

    # --- whole documents ---------------------------------------------------------------------------

    def _whole(self, hits: Sequence[Document], scope: Sequence[str] | None, budget: int) -> list[Document] | None:
        """Every document in scope, whole and in the order of its best hit, if together they fit."""
        docs = self._scope_documents(scope, budget)
        if docs is None:
            return None
        ranked = [_Chunk.of(h) for h in hits]
        rank: dict[str, int] = {}
        for i, chunk in enumerate(ranked):
            rank.setdefault(chunk.doc, i)
        scores = {c.id: c.meta.get("score") for c in ranked}
        ordered = sorted(docs, key=lambda d: (rank.get(d[0], len(hits)), str(d[1][0][0].meta.get("source", ""))))
        logger.debug("whole-document mode: %d document(s), %d tokens", len(docs), sum(d[2] for d in docs))
        return [_passage(run, scores) for _, runs, _ in ordered for run in runs]

    def _scope_documents(self, scope: Sequence[str] | None, budget: int) -> list[_WholeDoc] | None:
        """Every document in scope as (document, its runs, tokens); ``None`` when they exceed the budget.
        Remembered until the knowledge base changes: most questions ask the same knowledge base."""
        kb = self.kb
        hidden = tuple(kb.refresh())
        key = (kb.manifest.generation() if kb.manifest else kb.count(), hidden, tuple(scope or ()))
        cached = self._whole_cache
        if cached is not None and cached[0] == key:
            _, docs, limit = cached
            if docs is not None:
                return docs if sum(d[2] for d in docs) <= budget else None
            if budget <= limit:
                return None
        docs = self._read_scope(scope, budget)
        self._whole_cache = (key, docs, budget)
        return docs

    def _read_scope(self, scope: Sequence[str] | None, budget: int) -> list[_WholeDoc] | None:
        where = _scope_filter(scope) if scope else None
        n = len(self.kb.chunk_ids_where(where)) if where else self.kb.count()
        if n == 0 or n * MIN_CHUNK_TOKENS > budget:
            return None
        by_doc: dict[str, list[_Chunk]] = {}
        for chunk in self._get(where=where).values():
            by_doc.setdefault(chunk.doc, []).append(chunk)
        out: list[_WholeDoc] = []
        used = 0
        for doc, chunks in by_doc.items():
            runs = _runs(chunks)
            tokens = sum(self.count_tokens(merge_text(run)) + self._header_tokens(run[0]) for run in runs)
            used += tokens
            if used > budget:
                return None
            out.append((doc, runs, tokens))
        return out
