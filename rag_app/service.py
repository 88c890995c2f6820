"""The one public API the faces (CLI, Streamlit app, a server) call.

``RagService`` owns the settings and loads each model once, on first use, so a long-running face keeps
them warm and a short CLI command that only lists knowledge bases loads nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.errors import EmptyKnowledgeBaseError, KnowledgeBaseNotFoundError, RagError
from rag_app.settings import Settings

if TYPE_CHECKING:
    # Types only: LangChain's runnables and retrievers import LangSmith (most of a second), which a command
    # that lists knowledge bases or re-ingests unchanged files never needs (issue 12).
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable

    from rag_app.llm.base import TokenAwareLLM
    from ingest.documents import Removal
    from ingest.manifest import DocumentRecord
    from ingest.pipeline import FileResult, IngestReport, ProgressCallback
    from rag_app.conversations import ConversationStore
    from ingest.store import KnowledgeBaseInfo
    from rag_app.evaluate import Progress as EvalProgress
    from rag_app.summarize import Summary, SummaryProgress, SummaryStream


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
        #: Passwords of encrypted PDFs given in this process (the app shows their pages; never written to disk).
        self._pdf_passwords: dict[str, str] = {}

    @property
    def embeddings(self) -> Embeddings:
        with self._lock:
            if self._embeddings is None:
                from ingest.embed import build_embeddings

                # data_dir/models: where an ONNX export of the embedder is kept (embedding.backend = "onnx").
                self._embeddings = build_embeddings(self.settings.embedding, self.settings.data_dir / "models")
            return self._embeddings

    def _embeddings_when_needed(self) -> Embeddings:
        """The embedder if loaded, else a stand-in that loads it (through :attr:`embeddings`, so it is
        shared) only when something is embedded: a re-ingestion where nothing changed loads no model."""
        with self._lock:
            if self._embeddings is not None:
                return self._embeddings
        from ingest.embed import LazyEmbeddings

        return LazyEmbeddings.for_settings(self.settings.embedding, lambda: self.embeddings)

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
        """Name, chunk count and embedder of each knowledge base; read from the data directory's manifest
        when it can vouch for them (no Chroma opened: ``rag kb list`` takes milliseconds past start-up)."""
        from ingest.store import knowledge_bases

        return knowledge_bases(self.settings.data_dir, self.settings.store.chroma_url)

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
        follow_symlinks: bool | None = None,
    ) -> IngestReport:
        """Ingest files and folders; ``prune`` also removes documents whose files under ``paths`` are gone;
        ``follow_symlinks`` (``None``: the setting) follows symlinks out of the folders given."""
        from ingest.pipeline import ingest_paths

        self._check_new_name(knowledge_base)
        with self._lock:  # not loaded yet: made only when a file needs writing (none, when nothing changed)
            embeddings = self._embeddings if self._embeddings is not None else self._embeddings_when_needed
        report = ingest_paths(
            self._for_kb(knowledge_base),
            paths,
            embeddings=embeddings,
            knowledge_base=knowledge_base,
            progress=progress,
            passwords=passwords,
            prune=prune,
            follow_symlinks=follow_symlinks,
        )
        self._record_origins(knowledge_base, paths)  # so that the app shows these files' pages (rag_app.origins)
        return report

    def create_knowledge_base(self, name: str) -> None:
        """Create an empty knowledge base; its name follows the one rule (:mod:`rag_app.names`: letters of any
        script, Chinese included, digits, ``-_.`` and spaces, 1-64 characters) or :class:`KnowledgeBaseNameError`."""
        from ingest.documents import create_knowledge_base
        from rag_app.names import check_knowledge_base_name

        create_knowledge_base(self.settings, check_knowledge_base_name(name))

    def _check_new_name(self, knowledge_base: str | None) -> None:
        """Refuse to bring a knowledge base into being (an ingestion or upload into a name that does not exist
        yet) under a name that breaks the rule; one that exists already, from before it, stays usable."""
        from rag_app.names import check_knowledge_base_name, name_problem

        name = knowledge_base or self.settings.knowledge_base
        if name_problem(name) is not None and name not in {kb.name for kb in self.knowledge_bases()}:
            check_knowledge_base_name(name)

    def delete_knowledge_base(self, name: str) -> int:
        """Delete a knowledge base and all its chunks; returns how many chunks it held. No name rule here: one
        made before the rule (a '/' in it, say) can still be deleted."""
        from ingest.documents import delete_knowledge_base

        chunks = delete_knowledge_base(self.settings, name)
        self._forget_knowledge_base(name)  # its kept uploads and conversations go with it
        return chunks

    def documents(self, knowledge_base: str | None = None) -> list[DocumentRecord]:
        """The documents stored in a knowledge base (file, chunks, pages, hash, date; copies as aliases)."""
        from ingest.documents import list_documents

        return list_documents(self.settings, knowledge_base or self.settings.knowledge_base)

    def delete_documents(self, names: Sequence[str], knowledge_base: str | None = None) -> Removal:
        """Delete documents by source path or file name (as ``documents()`` lists them)."""
        from ingest.documents import delete_documents

        removal = delete_documents(self.settings, knowledge_base or self.settings.knowledge_base, names)
        self._forget_files(removal.sources, knowledge_base)  # a kept upload goes with its document
        return removal

    def retriever(self, knowledge_base: str | None = None) -> BaseRetriever:
        """Retrieval alone (no LLM): for evaluation, benchmarks and 'search only' views."""
        from rag_app.chain import build_retriever

        return build_retriever(self._for_kb(knowledge_base), self.embeddings)

    def summarize(
        self,
        path: str | Path,
        *,
        method: str = "map_reduce",
        progress: SummaryProgress | None = None,
        on_text: SummaryStream | None = None,
    ) -> Summary:
        """Summary of one file of any length (map-reduce or refine within the model's context window)."""
        from rag_app.prompting import chat_format_for
        from rag_app.summarize import read_document_text, summarize_text

        conf = self.settings.llm
        fmt = chat_format_for(conf.prompt_format, conf.system_prompt, self.llm, base_model=conf.base_model)
        text = read_document_text(path)
        return summarize_text(text, self.llm, fmt, method=method, progress=progress, on_text=on_text)  # type: ignore[arg-type]

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
                self.settings, dataset, embeddings=self.embeddings, seed=seed, limit=limit, progress=progress,
                answers=answers, llm=self.llm if answers else None,
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
        from ingest.embed_folder import default_embedding_model_path
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

    def chain(
        self, knowledge_base: str | None = None, *, generation: dict[str, Any] | None = None
    ) -> Runnable[Any, dict[str, Any]]:
        """The question-answering chain for a knowledge base (see :func:`rag_app.chain.build_rag_chain`).

        ``generation``: per-request sampling for the shared model (see :meth:`llm_for`), e.g. from a server
        request's ``max_tokens`` / ``temperature``."""
        from rag_app.chain import build_rag_chain

        llm = self.llm_for(**generation) if generation else self.llm
        return build_rag_chain(self._for_kb(knowledge_base), llm=llm, embeddings=self.embeddings)

    def llm_for(
        self, *, max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None
    ) -> TokenAwareLLM:
        """The shared model with other sampling for one request: a shallow copy (same weights, same lock),
        so a server's callers can each ask for their own ``max_tokens``/``temperature`` without a reload.
        Settings a backend does not have are ignored; with nothing to change, the model itself."""
        llm = self.llm
        fields = getattr(type(llm), "model_fields", {})
        wanted = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        update = {k: v for k, v in wanted.items() if v is not None and k in fields and getattr(llm, k) != v}
        return llm.model_copy(update=update) if update else llm  # type: ignore[attr-defined,no-any-return]

    def llm_id(self) -> str:
        """A name for the configured LLM without loading it (the server lists it in /v1/models)."""
        conf = self.settings.llm
        if conf.model:
            return conf.model
        return Path(conf.model_path).stem if conf.model_path else conf.backend

    def embedder_id(self) -> str:
        """A name for the configured embedder without loading it (/v1/embeddings reports it)."""
        conf = self.settings.embedding
        return Path(conf.model_path).name if conf.model_path else f"{conf.backend}:default"

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Vectors of ``texts`` from the configured embedder, and the embedder tokens they took (the
        server's /v1/embeddings)."""
        from ingest.embed import token_counter

        embeddings = self.embeddings
        count = token_counter(embeddings)
        return embeddings.embed_documents(list(texts)), sum(count(t) for t in texts)

    def check_support(self, question: str, answer: str, passages: Sequence[str]) -> dict[str, Any]:
        """The support check on an answer the caller cut short (e.g. at a client's stop sequence), as the
        chain's ``grounding`` entry would have it."""
        from rag_app.support import check_support

        return dict(check_support(question, answer, passages, threshold=self.settings.retrieval.support_threshold))

    def loaded(self) -> dict[str, bool]:
        """Which models are loaded (a server is ready when both are)."""
        with self._lock:
            return {"llm": self._llm is not None, "embeddings": self._embeddings is not None}

    def warm_up(self) -> None:
        """Open the vector store and load both models now (a server and the app do it at start so that the
        first request does not wait; listing knowledge bases no longer opens the store)."""
        if not self.settings.store.chroma_url:
            from ingest.store import open_client

            open_client(self.settings.data_dir)  # chromadb's import and first client: about a second
        _ = self.embeddings, self.llm

    # --- the app's rooms (issue 10): kept uploads, previews, hit test, conversations, the settings file --------

    def conversations(self) -> ConversationStore:
        """The saved conversations of this data directory (the app lists, renames and continues them)."""
        from rag_app.conversations import ConversationStore

        return ConversationStore(self.settings.data_dir)

    def uploads_folder(self, knowledge_base: str | None = None) -> Path:
        """Where files uploaded into a knowledge base are kept (see :mod:`rag_app.uploads`)."""
        from ingest.store import collection_name

        return self.settings.data_dir / "uploads" / collection_name(knowledge_base or self.settings.knowledge_base)

    def ingest_uploads(
        self,
        files: Sequence[tuple[str, bytes | Path]],
        *,
        knowledge_base: str | None = None,
        progress: ProgressCallback | None = None,
        passwords: dict[str, str] | None = None,
    ) -> IngestReport:
        """Keep uploaded ``(name, bytes or spooled file)`` files (a zip unpacked) in the data directory and
        ingest them: kept, so that their documents can be opened, shown page by page and re-ingested. A file
        that failed for another reason than a missing password is not kept; one kept under another name than
        its own, or a zip refused whole, says so on its report line (:func:`rag_app.uploads.store_uploads`)."""
        from ingest.loaders.archives import ArchiveLimits
        from rag_app.uploads import store_uploads

        kb = knowledge_base or self.settings.knowledge_base
        self._check_new_name(kb)  # before any file is kept under it
        stored = store_uploads(self.uploads_folder(kb), files, ArchiveLimits.of(self.settings.ingest))
        self._pdf_passwords.update(passwords or {})
        report = self.ingest(stored.paths, knowledge_base=kb, progress=progress, passwords=passwords)
        self._forget_files([f.path for f in report.by_status("failed", "skipped") if not needs_password(f)], kb)
        if stored.gone:  # a zip uploaded again without some of its files: no document stays without its file
            known = {r.source for r in self.documents(kb)}
            if gone := [s for s in stored.gone if s in known]:
                report.pruned.extend(self.delete_documents(gone, kb).sources)
        stored.annotate(report)
        return report

    def source_file(self, source: str, knowledge_base: str | None = None) -> Path | None:
        """The kept file of a document uploaded through the app; ``None`` for one ingested from elsewhere."""
        folder = self.uploads_folder(knowledge_base).resolve()
        path = (folder / source).resolve()
        return path if path.is_file() and path.is_relative_to(folder) else None

    def reingest(
        self,
        sources: Sequence[str],
        knowledge_base: str | None = None,
        *,
        passwords: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Ingest kept files again, from scratch (after a settings change, or with a PDF's password)."""
        from rag_app.errors import DocumentNotFoundError

        kb = knowledge_base or self.settings.knowledge_base
        exists = kb in {info.name for info in self.knowledge_bases()}
        stored = {r.source for r in self.documents(kb)} if exists else set()
        roots: dict[Path, None] = {}
        for source in sources:
            if self.source_file(source, kb) is None:
                raise DocumentNotFoundError(
                    f"the file of '{source}' is not kept (it was not uploaded through the app)",
                    hint="ingest it again from its folder (rag ingest PATH)",
                )
            # A zip's member is ingested through its folder, so that its source keeps the folder's name.
            roots[self.uploads_folder(kb) / Path(source).parts[0]] = None
        again = [s for s in sources if s in stored]
        if again:
            from ingest.documents import delete_documents

            delete_documents(self.settings, kb, again)
        self._pdf_passwords.update(passwords or {})
        return self.ingest(list(roots), knowledge_base=kb, progress=progress, passwords=passwords)

    def chunks(self, source: str, knowledge_base: str | None = None) -> list[dict[str, Any]]:
        """A document's chunks in order: ``index``, ``page``, ``heading`` (the section path, ``None`` when the
        loader found none), ``text`` (the app's chunk browser)."""
        from ingest.documents import open_existing
        from rag_app.errors import DocumentNotFoundError

        kb = open_existing(self.settings, knowledge_base or self.settings.knowledge_base)
        assert kb.manifest is not None
        record = kb.manifest.record(kb.collection_name, source)
        if record is None:
            raise DocumentNotFoundError(f"no stored document '{source}'")
        got = kb.vectorstore.get(where={"sha256": record.sha256}, include=["documents", "metadatas"])
        rows = [
            {"index": int(meta.get("chunk_index", i)), "page": meta.get("page"), "heading": meta.get("heading") or None,
             "text": text or ""}
            for i, (text, meta) in enumerate(zip(got["documents"], got["metadatas"], strict=True))
        ]
        return sorted(rows, key=lambda row: row["index"])

    def passage_context(
        self, source: str, first: int, last: int | None = None, knowledge_base: str | None = None
    ) -> tuple[str, str, str]:
        """(text before, the passage, text after) for chunks ``first``..``last`` of a document: a cited
        passage shown within its surroundings (one chunk on each side)."""
        rows = {row["index"]: row["text"] for row in self.chunks(source, knowledge_base)}
        last = first if last is None else last
        passage = "\n".join(rows[i] for i in range(first, last + 1) if i in rows)
        return rows.get(first - 1, ""), passage, rows.get(last + 1, "")

    def page_image(
        self, source: str, page: int, highlight: str | None = None, knowledge_base: str | None = None
    ) -> bytes | None:
        """PNG of a PDF document's page with ``highlight`` (a cited passage) marked; ``None`` when the
        document is no PDF or its file is not kept (then show :meth:`passage_context`)."""
        from rag_app.preview import render_pdf_page

        path = self.source_file(source, knowledge_base) or self.ingested_file(source, knowledge_base)
        if path is None or path.suffix.lower() != ".pdf":
            return None
        known = self._pdf_passwords | self.settings.ingest.pdf_passwords
        password = known.get(path.name) or known.get(source)
        return render_pdf_page(path, page, highlight, password)

    def search(self, query: str, knowledge_base: str | None = None) -> dict[str, Any]:
        """Retrieval alone, for a hit test: each result's fused score and its parts (vector similarity,
        BM25, keyword coverage), the vector weight used for this question (calibrated per language unless
        set), and whether the relevance check lets the question reach the model at all."""
        from rag_app.prompting import source_label

        retriever: Any = self.retriever(knowledge_base)
        weight = float(retriever.weight_for(query)) if hasattr(retriever, "weight_for") else None
        answerable = True
        if getattr(retriever, "relevance_threshold", False):
            answerable = bool(retriever.invoke(query))
            retriever = retriever.model_copy(update={"relevance_threshold": False})
        results = []
        for rank, doc in enumerate(retriever.invoke(query), 1):
            meta = doc.metadata
            results.append({
                "rank": rank, "source": meta.get("source", ""), "page": meta.get("page"),
                "chunk": meta.get("chunk_index"), "label": source_label(doc), "heading": meta.get("heading") or None,
                "text": doc.page_content,
                "score": meta.get("score"), "vector": meta.get("vector_score"), "keyword": meta.get("bm25_score"),
                "coverage": meta.get("keyword_coverage"),
            })
        return {
            "mode": self.settings.retrieval.mode,
            "vector_weight": weight if weight is not None and weight != float("inf") else None,
            "answerable": answerable,
            "results": results,
        }

    def save_settings(self, updates: dict[str, Any]) -> Settings:
        """Merge ``updates`` (nested like the TOML file; ``None`` unsets a key) into the settings file and
        return the settings it now gives. Checked first: an invalid value raises the CLI's
        :class:`SettingsError` and leaves the file as it was."""
        import os
        import tempfile
        import tomllib

        from rag_app.settings import settings_file, to_toml

        path = settings_file()
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        merged = _merge_unset(data, updates)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rag_settings-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(to_toml(merged))
            Settings.load(config_file=tmp)  # raises SettingsError, with the CLI's message
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return Settings.load(config_file=path)

    def ingested_file(self, source: str, knowledge_base: str | None = None) -> Path | None:
        """The file a document was ingested from on this machine (``rag ingest FOLDER``), while it is still
        there with the bytes the manifest recorded for this source of this knowledge base; else ``None``."""
        from ingest.documents import open_existing
        from rag_app.origins import locate, read_roots

        try:
            kb = open_existing(self.settings, knowledge_base or self.settings.knowledge_base)
        except RagError:
            return None
        record = kb.manifest.record(kb.collection_name, source) if kb.manifest is not None else None
        if record is None:
            return None
        return locate(read_roots(self.settings.data_dir, kb.collection_name), record.source, record.sha256)

    def _record_origins(self, knowledge_base: str | None, paths: Sequence[str | Path]) -> None:
        from ingest.store import collection_name
        from rag_app.origins import record_roots

        record_roots(self.settings.data_dir, collection_name(knowledge_base or self.settings.knowledge_base), paths)

    def models_in_use(self) -> ModelsInUse:
        """The model files that answer and embed, named for a user: the loaded ones where they are, else what
        the settings resolve to; nothing is loaded (the app's sidebar and Settings page show them)."""
        # Not under self._lock: loading a model holds it for seconds, and the app's status line asks every second.
        llm, embeddings = self._llm, self._embeddings
        llm_name, llm_path = _llm_in_use(self.settings, llm)
        embedder, embedder_path = _embedder_in_use(self.settings, embeddings)
        return ModelsInUse(llm=llm_name, llm_path=llm_path, embedder=embedder, embedder_path=embedder_path)

    def _forget_files(self, sources: Sequence[str], knowledge_base: str | None) -> None:
        for source in sources:
            path = self.source_file(source, knowledge_base)
            if path is not None:
                path.unlink(missing_ok=True)

    def _forget_knowledge_base(self, name: str) -> None:
        import shutil

        from ingest.store import collection_name
        from rag_app.origins import forget

        shutil.rmtree(self.uploads_folder(name), ignore_errors=True)
        forget(self.settings.data_dir, collection_name(name))
        self.conversations().delete_knowledge_base(name)


def open_service(settings: Settings) -> Any:
    """The service the faces use: a :class:`rag_app.remote.RemoteRagService` talking to a running ``rag serve``
    when ``settings.server_url`` is set (many users share one warm model), else a local :class:`RagService`."""
    if settings.server_url:
        from rag_app.remote import RemoteRagService

        return RemoteRagService(settings)
    return RagService(settings)


def needs_password(result: FileResult) -> bool:
    """The file failed only because it is an encrypted PDF whose password was not given (or was wrong)."""
    from rag_app.errors import EncryptedDocumentError

    return result.status == "failed" and EncryptedDocumentError.hint in result.reason


def _merge_unset(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base`` table by table; a ``None`` value removes the key."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = _merge_unset(out.get(key) if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class ModelsInUse:
    """What :meth:`RagService.models_in_use` names: the LLM's file (a GGUF's file name, a transformers folder,
    ``model @ server`` for a remote one) and the embedder's name, each with its full path where there is one."""

    llm: str
    llm_path: str | None
    embedder: str
    embedder_path: str | None


def _llm_in_use(settings: Settings, llm: Any) -> tuple[str, str | None]:
    conf = settings.llm
    if conf.backend == "openai":
        return f"{conf.api_model or conf.model or 'model'} @ {conf.api_base or '?'}", None
    if conf.backend == "fake":
        return "fake", None
    loaded = getattr(getattr(llm, "client", None), "model_path", None)  # llama.cpp's Llama keeps its file
    path: Path | None = Path(str(loaded)) if loaded else None
    if path is None and conf.model_path:
        path = Path(conf.model_path).expanduser()
    if path is None and conf.backend == "llamacpp":
        path = _packaged_gguf_unjoined(conf)
    if path is None:
        return str(getattr(llm, "model_name", "") or conf.model or conf.backend), None
    return path.name, str(path)


def _packaged_gguf_unjoined(conf: Any) -> Path | None:
    """Where the packaged default GGUF is (or will be, once joined from its wheels' parts), never joining it
    here: that is the loading's business (it takes a while and writes half a gigabyte)."""
    from rag_app import packaged

    try:
        model = packaged.packaged_model(conf.packaged_model)
        if model.file is not None:
            return packaged.packaged_file(model.file.package, model.file.relative, what="GGUF model",
                                          pip_name=model.file.pip_name, setting="llm.model_path")
        return Path(conf.cache_dir or packaged.default_cache_dir()).expanduser() / model.file_name
    except RagError:
        return None


def _embedder_in_use(settings: Settings, embeddings: Any) -> tuple[str, str | None]:
    from ingest.embed_folder import embedding_model_dir, folder_identity

    conf = settings.embedding
    path: Path | None = Path(conf.model_path).expanduser() if conf.model_path else None
    if path is None and conf.backend in ("sentence-transformers", "onnx", "openvino"):
        try:
            path = embedding_model_dir(conf)
        except RagError:
            path = None
    name = None
    if embeddings is not None:
        from ingest.embed import embedder_identity

        identity = embedder_identity(embeddings)
        name = identity[0] if identity else None
    if name is None and conf.backend != "fake":
        try:  # what knowledge bases record for it, read off its folder (no model loaded)
            identity = folder_identity(conf)
        except RagError:
            identity = None
        name = identity[0] if identity else path.name if path is not None else None
    return name or conf.backend, str(path) if path is not None else None
