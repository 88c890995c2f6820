"""Retrieval: the chunks of a knowledge base that best match a question, as a LangChain retriever."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from ingest.store import KnowledgeBase
from rag_app.errors import EmptyKnowledgeBaseError


class KnowledgeBaseRetriever(BaseRetriever):
    """Vector search over one knowledge base; each document carries its relevance in ``metadata['score']``.

    Raises :class:`EmptyKnowledgeBaseError` when the knowledge base holds no chunks, so a question on an
    empty knowledge base gets a clear message instead of an answer from nothing.
    """

    knowledge_base: Any  # ingest.store.KnowledgeBase (not a pydantic type)
    k: int = 4
    score_threshold: float = 0.0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        kb: KnowledgeBase = self.knowledge_base
        if kb.count() == 0:
            raise EmptyKnowledgeBaseError(f"knowledge base '{kb.name}' is empty")
        out = []
        for doc, distance in kb.vectorstore.similarity_search_with_score(query, k=self.k):
            score = 1.0 - float(distance)  # cosine distance → similarity in [-1, 1]
            if self.score_threshold > 0 and score < self.score_threshold:
                continue
            doc.metadata["score"] = round(score, 4)
            out.append(doc)
        return out
