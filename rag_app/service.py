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

from rag_app.errors import EmptyKnowledgeBaseError, KnowledgeBaseNotFoundError, RagError
from rag_app.llm.base import TokenAwareLLM
from rag_app.settings import Settings

if TYPE_CHECKING:
    from ingest.documents import Removal
    from ingest.manifest import DocumentRecord
    from ingest.pipeline import IngestReport, ProgressCallback
    from ingest.store import KnowledgeBaseInfo
    from rag_app.evaluate import Progress as EvalProgress
    from rag_app.summarize import Summary, SummaryProgress


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
        prune: bool = False,
    ) -> IngestReport:
        """Ingest files and folders; ``prune`` also removes documents whose files under ``paths`` are gone."""
        from ingest.pipeline import ingest_paths

        return ingest_paths(
            self._for_kb(knowledge_base),
            paths,
            embeddings=self.embeddings,
            knowledge_base=knowledge_base,
            progress=progress,
            passwords=passwords,
            prune=prune,
        )

    def create_knowledge_base(self, name: str) -> None:
        """Create an empty knowledge base (any display name, Chinese included)."""
        from ingest.documents import create_knowledge_base

        create_knowledge_base(self.settings, name)

    def delete_knowledge_base(self, name: str) -> int:
        """Delete a knowledge base and all its chunks; returns how many chunks it held."""
        from ingest.documents import delete_knowledge_base

        return delete_knowledge_base(self.settings, name)

    def documents(self, knowledge_base: str | None = None) -> list[DocumentRecord]:
        """The documents stored in a knowledge base (file, chunks, pages, hash, date; copies as aliases)."""
        from ingest.documents import list_documents

        return list_documents(self.settings, knowledge_base or self.settings.knowledge_base)

    def delete_documents(self, names: Sequence[str], knowledge_base: str | None = None) -> Removal:
        """Delete documents by source path or file name (as ``documents()`` lists them)."""
        from ingest.documents import delete_documents

        return delete_documents(self.settings, knowledge_base or self.settings.knowledge_base, names)

    def retriever(self, knowledge_base: str | None = None) -> BaseRetriever:
        """Retrieval alone (no LLM): for evaluation, benchmarks and 'search only' views."""
        from rag_app.chain import build_retriever

        return build_retriever(self._for_kb(knowledge_base), self.embeddings)

    def summarize(
        self, path: str | Path, *, method: str = "map_reduce", progress: SummaryProgress | None = None
    ) -> Summary:
        """Summary of one file of any length (map-reduce or refine within the model's context window)."""
        from rag_app.prompting import chat_format_for
        from rag_app.summarize import read_document_text, summarize_text

        conf = self.settings.llm
        fmt = chat_format_for(conf.prompt_format, conf.system_prompt, self.llm, base_model=conf.base_model)
        text = read_document_text(path)
        return summarize_text(text, self.llm, fmt, method=method, progress=progress)  # type: ignore[arg-type]

    def evaluate(
        self,
        dataset: str | Path,
        *,
        limit: int | None = None,
        answers: bool = False,
        progress: EvalProgress | None = None,
        long: bool = False,
        budgets: Sequence[int] | None = None,
        unanswerable: bool = False,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Retrieval (and answer) quality on a SQuAD-format file, in a temporary knowledge base.

        ``long``: instead, how often the context assembled within each of ``budgets`` tokens holds the
        answer, on the file's articles as long documents (:func:`rag_app.evaluate.evaluate_long`).
        ``unanswerable``: instead, how well questions the knowledge base cannot answer are refused, with half
        the articles (split by ``seed``) ingested (:func:`rag_app.evaluate.evaluate_unanswerable`).
        """
        from rag_app.evaluate import LONG_BUDGETS, evaluate, evaluate_long, evaluate_unanswerable

        if unanswerable:
            return evaluate_unanswerable(
                self.settings, dataset, embeddings=self.embeddings, seed=seed, limit=limit, progress=progress
            )
        if long:
            return evaluate_long(
                self.settings, dataset, embeddings=self.embeddings, budgets=budgets or LONG_BUDGETS,
                limit=limit, progress=progress,
            )
        return evaluate(
            self.settings,
            dataset,
            embeddings=self.embeddings,
            llm=self.llm if answers else None,
            limit=limit,
            answers=answers,
            progress=progress,
        )

    @staticmethod
    def model_catalog() -> list[dict[str, Any]]:
        """Every model of the family with the memory it needs at its trained context, and whether it fits."""
        from rag_app.doctor import catalog_rows

        return catalog_rows()

    def doctor(self) -> dict[str, Any]:
        """What the current settings will actually do on this machine (``report["problems"]`` says why not)."""
        from ingest.embed import default_embedding_model_path
        from rag_app.doctor import diagnose

        problem = None
        try:
            kbs = self.knowledge_bases()
        except RagError as exc:  # e.g. a data dir that cannot be opened: one more problem to report
            kbs, problem = [], exc.friendly()
        report = diagnose(self.settings, kbs, default_embedding_model_path)
        if problem:
            report["problems"].append(problem)
            report["ok"] = False
        return report

    def chain(self, knowledge_base: str | None = None) -> Runnable[Any, dict[str, Any]]:
        """The question-answering chain for a knowledge base (see :func:`rag_app.chain.build_rag_chain`)."""
        from rag_app.chain import build_rag_chain

        return build_rag_chain(self._for_kb(knowledge_base), llm=self.llm, embeddings=self.embeddings)
