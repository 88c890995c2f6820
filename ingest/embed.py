"""Embeddings from a local sentence-transformers folder (or the multilingual USE, :mod:`ingest.use_embed`),
behind LangChain's ``Embeddings`` interface."""

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

# Re-exported: what a model folder says about itself lives apart, free of LangChain (issue 12).
from ingest.embed_folder import (  # noqa: F401
    DEFAULT_EMBEDDING_NAME,
    DEFAULT_EMBEDDING_PACKAGE,
    default_embedding_model_path,
    embedder_name,
    embedding_model_dir,
    folder_dimension,
    folder_identity,
    folder_max_tokens,
    pooling_modes,
)
from rag_app.errors import ModelNotFoundError

if TYPE_CHECKING:
    from rag_app.settings import EmbeddingSettings

logger = logging.getLogger(__name__)

#: Token counts remembered per embedder (texts of one ingestion batch; cleared when full).
_TOKEN_CACHE_SIZE = 50_000


def memoised_count(cache: dict[str, int], text: str, count: Callable[[str], int]) -> int:
    """``count(text)`` remembered in ``cache`` (emptied when full): the splitter asks for the same pieces
    several times while it merges them."""
    value = cache.get(text)
    if value is None:
        if len(cache) >= _TOKEN_CACHE_SIZE:
            cache.clear()
        value = cache[text] = count(text)
    return value


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
        return memoised_count(self._token_counts, text, self._counter)

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


def folder_tokenizer(path: Path) -> Any | None:
    """The folder's fast tokenizer (``tokenizer.json``) without truncation or padding, or ``None``."""
    file = path / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class LazyEmbeddings(Embeddings):
    """An embedder that loads its model only when something is embedded.

    Ingestion needs the embedder's identity (checked against the knowledge base), its token count (chunk
    sizes) and its token limit before it knows whether any file changed: all three are read off the model
    folder's small files (milliseconds), so a re-ingestion where nothing changed never loads the model
    (issue 12: that load was most of a no-op's 6 s). ``factory`` builds the real one on first use.
    """

    def __init__(self, factory: Callable[[], Embeddings], *, identity: tuple[str, int] | None,
                 tokenizer: Any | None, max_tokens: int | None) -> None:
        self._factory = factory
        self._identity = identity
        self._tokenizer = tokenizer
        self._max_tokens = max_tokens
        self._real: Embeddings | None = None
        self._counts: dict[str, int] = {}

    @classmethod
    def for_settings(cls, settings: EmbeddingSettings, factory: Callable[[], Embeddings]) -> Embeddings:
        """A lazy stand-in for ``build_embeddings(settings)``; the real one when the folder cannot tell
        its identity or tokenizer (then loading is the only way to know)."""
        identity = folder_identity(settings)
        if identity is None or settings.backend == "use":  # USE loads nothing until it embeds or counts
            return factory()
        path = embedding_model_dir(settings)
        return cls(factory, identity=identity, tokenizer=folder_tokenizer(path), max_tokens=folder_max_tokens(path))

    @property
    def loaded(self) -> bool:
        return self._real is not None

    @property
    def real(self) -> Embeddings:
        if self._real is None:
            self._real = self._factory()
            identity = embedder_identity(self._real)
            if identity is not None and self._identity is not None and identity != self._identity:
                logger.warning("embedder identity %s differs from what its folder says (%s)", identity, self._identity)
        return self._real

    @property
    def identity(self) -> tuple[str, int] | None:
        return self._identity

    @property
    def max_tokens(self) -> int | None:
        return self._max_tokens if self._max_tokens is not None else getattr(self.real, "max_tokens", None)

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text``, counted with the folder's own tokenizer (no model load);
        memoised like :meth:`SentenceTransformerEmbeddings.count_tokens`."""
        return memoised_count(self._counts, text, lambda t: len(self._tokenizer.encode(t, add_special_tokens=False)))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.real.embed_documents(texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.real.embed_query(text)


def build_embeddings(settings: EmbeddingSettings, cache_dir: Path | None = None) -> Embeddings:
    """Load the configured sentence-transformers model, offline (or the fake one for tests).

    ``backend = "onnx"`` / ``"openvino"``: the ONNX export kept in ``cache_dir`` (made there on first use; see
    :mod:`ingest.onnx_embed`); torch, with a warning, when the export is missing its extra or does not
    agree with the torch model. ``"use"``: the Universal Sentence Encoder multilingual v3 in numpy
    (:mod:`ingest.use_embed`; no folder, no torch).
    """
    if settings.backend == "fake":
        from langchain_core.embeddings import DeterministicFakeEmbedding

        return DeterministicFakeEmbedding(size=64)
    if settings.backend == "use":
        from ingest.use_embed import build_use_embeddings

        return build_use_embeddings(settings)
    if settings.backend in ("onnx", "openvino"):
        from rag_app.errors import RagError

        from ingest.onnx_embed import build_onnx_embeddings

        try:
            return build_onnx_embeddings(settings, cache_dir or Path("data") / "models")
        except RagError as exc:
            logger.warning("%s embedder not used, falling back to torch: %s", settings.backend, exc.friendly())
    path = embedding_model_dir(settings)
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
    name = embedder_name(settings, path)
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
