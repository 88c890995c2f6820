"""The one public API the faces (CLI, Streamlit app, a server) call.

``RagService`` owns the settings and loads each model once, on first use, so a long-running face keeps
them warm and a short CLI command that only lists knowledge bases loads nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable

from rag_app.errors import EmptyKnowledgeBaseError, KnowledgeBaseNotFoundError
from rag_app.llm.base import TokenAwareLLM
from rag_app.settings import Settings

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport, ProgressCallback
    from ingest.store import KnowledgeBaseInfo


class RagService:
    """Ingest documents and answer questions, with models loaded lazily and shared."""

    def __init__(
        self,
        settings: Settings,
        *,
        embeddings: Embeddings | None = None,
        llm: TokenAwareLLM | None = None,
    ) -> None:
        self.settings = settings
        self._embeddings = embeddings
        self._llm = llm
        self._lock = threading.Lock()

    @property
    def embeddings(self) -> Embeddings:
        with self._lock:
            if self._embeddings is None:
                from ingest.embed import build_embeddings

                self._embeddings = build_embeddings(self.settings.embedding)
            return self._embeddings

    @property
    def llm(self) -> TokenAwareLLM:
        with self._lock:
            if self._llm is None:
                from rag_app.llm import create_llm

                self._llm = create_llm(self.settings.llm)
            return self._llm

    def _for_kb(self, knowledge_base: str | None) -> Settings:
        if not knowledge_base or knowledge_base == self.settings.knowledge_base:
            return self.settings
        return self.settings.model_copy(update={"knowledge_base": knowledge_base})

    @staticmethod
    def supported_extensions() -> list[str]:
        """File extensions the loaders read (with the dot), e.g. for an upload widget's filter."""
        from ingest.loaders import supported_extensions

        return supported_extensions()

    def knowledge_bases(self) -> list[KnowledgeBaseInfo]:
        from ingest.store import list_knowledge_bases, open_client

        return list_knowledge_bases(open_client(self.settings.data_dir))

    def check_answerable(self, knowledge_base: str | None = None) -> None:
        """Raise a clear error when the knowledge base does not exist or holds nothing."""
        name = knowledge_base or self.settings.knowledge_base
        known = {kb.name: kb for kb in self.knowledge_bases()}
        if name not in known:
            if known:
                raise KnowledgeBaseNotFoundError(
                    f"knowledge base '{name}' does not exist (existing: {', '.join(sorted(known))})"
                )
            raise EmptyKnowledgeBaseError("no documents have been ingested yet")
        if known[name].chunks == 0:
            raise EmptyKnowledgeBaseError(f"knowledge base '{name}' is empty")

    def ingest(
        self,
        paths: Sequence[str | Path],
        *,
        knowledge_base: str | None = None,
        progress: ProgressCallback | None = None,
        passwords: dict[str, str] | None = None,
    ) -> IngestReport:
        from ingest.pipeline import ingest_paths

        return ingest_paths(
            self._for_kb(knowledge_base),
            paths,
            embeddings=self.embeddings,
            knowledge_base=knowledge_base,
            progress=progress,
            passwords=passwords,
        )

    def retriever(self, knowledge_base: str | None = None) -> BaseRetriever:
        """Retrieval alone (no LLM): for evaluation, benchmarks and 'search only' views."""
        from rag_app.chain import build_retriever

        return build_retriever(self._for_kb(knowledge_base), self.embeddings)

    def chain(self, knowledge_base: str | None = None) -> Runnable[Any, dict[str, Any]]:
        """The question-answering chain for a knowledge base (see :func:`rag_app.chain.build_rag_chain`)."""
        from rag_app.chain import build_rag_chain

        return build_rag_chain(self._for_kb(knowledge_base), llm=self.llm, embeddings=self.embeddings)
