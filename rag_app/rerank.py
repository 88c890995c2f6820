"""Optional cross-encoder reranking: reads question and chunk together, so it orders candidates better than
either retriever, at the price of one model call per candidate. Off unless ``retrieval.reranker_path`` is set."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag_app.errors import RerankerError

logger = logging.getLogger(__name__)


class Reranker:
    """A local sentence-transformers ``CrossEncoder`` folder; higher score = more relevant."""

    def __init__(self, model: Any, top_n: int = 30) -> None:
        self.model = model
        self.top_n = top_n

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Reranker:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise RerankerError(f"reranker folder not found: {folder}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            model = CrossEncoder(str(folder), device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise RerankerError(f"cannot load the reranker from {folder}: {exc}") from exc
        logger.info("loaded reranker %s", folder)
        return cls(model)

    def rerank(self, query: str, docs: Sequence[Document]) -> list[Document]:
        """The first ``top_n`` candidates reordered by the cross-encoder (the rest keep their order after them)."""
        head, tail = list(docs[: self.top_n]), list(docs[self.top_n :])
        if len(head) <= 1:
            return [*head, *tail]
        scores = self.model.predict([(query, d.page_content) for d in head], show_progress_bar=False)
        order = sorted(range(len(head)), key=lambda i: float(scores[i]), reverse=True)
        for i in order:
            head[i].metadata["rerank_score"] = round(float(scores[i]), 4)
        return [head[i] for i in order] + tail
