"""Chunks sized in the real MiniLM tokenizer's tokens: none is silently cut by the embedder (e2e)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import ingest_paths
from ingest.split import split_documents
from ingest.store import KnowledgeBase, open_client
from langchain_core.documents import Document
from rag_app.settings import Settings

pytestmark = pytest.mark.e2e


def test_no_chunk_exceeds_the_embedder_limit(tmp_path: Path, shared_eval: Path, real_embeddings: Any) -> None:
    limit = real_embeddings.max_tokens - 2  # [CLS] and [SEP]
    settings = Settings.load(data_dir=tmp_path / "data", ingest={"chunk_size": 4000, "chunk_overlap": 40})
    report = ingest_paths(settings, [shared_eval / "docs", shared_eval / "office"], embeddings=real_embeddings)
    assert report.chunks_added > 50
    got = KnowledgeBase(open_client(settings.data_dir), "default", real_embeddings)._collection.get(include=["documents"])
    counts = [real_embeddings.count_tokens(t) for t in got["documents"]]
    assert max(counts) <= limit
    assert sum(c > limit * 0.6 for c in counts) > len(counts) / 3, "chunks should use the room they have"


def test_merged_pieces_are_recounted(real_embeddings: Any) -> None:
    """Pieces glued without a space can tokenize to more than the sum of their counts: chunks are re-split."""
    text = "。".join(["abc" + "x" * 7 + "。中文" * 3] * 200)
    for size in (20, 50, 120):
        chunks = split_documents([Document(page_content=text)], real_embeddings.count_tokens, size, 0)
        assert max(real_embeddings.count_tokens(c.page_content) for c in chunks) <= size
        for c in chunks:
            s = c.metadata["start_index"]
            assert text[s : s + len(c.page_content)] == c.page_content
