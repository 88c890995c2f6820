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


def test_token_count_is_the_models_own_and_never_truncated(real_embeddings: Any) -> None:
    """The fast, memoised count agrees with the model's tokenizer, also past its 256-token reading limit."""
    tokenizer = real_embeddings.model.tokenizer
    texts = ["", "hello world", "中文分词，按词元计数。", "Ünïcödé naïve café " * 3, "长文本，" * 400 + "end " * 300]
    for text in texts:
        expected = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        assert real_embeddings.count_tokens(text) == expected
        assert real_embeddings.count_tokens(text) == expected  # second call: from the memo
    assert real_embeddings.count_tokens(texts[-1]) > 4 * real_embeddings.max_tokens
    real_embeddings.embed_documents([texts[-1]])  # the model's own truncation does not leak into the count
    assert real_embeddings.count_tokens(texts[-1] + "!") == real_embeddings.count_tokens(texts[-1]) + 1


def test_query_embedding_is_the_models_own_on_a_one_thread_worker(real_embeddings: Any) -> None:
    """The short query path gives the vector ``encode`` gives, on its own thread with one torch thread,
    and leaves the caller's torch thread count alone (documents keep all cores)."""
    import threading

    import numpy as np
    import torch

    before = torch.get_num_threads()
    seen: list[tuple[str, int]] = []
    original = real_embeddings._embed_one

    def spy(text: str) -> list[float]:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return original(text)

    real_embeddings._embed_one = spy
    try:
        for text in ("What does the privacy policy say?", "隐私政策怎么说？", "x"):
            got = np.array(real_embeddings.embed_query(text))
            want = real_embeddings.model.encode([text], normalize_embeddings=True)[0]
            assert np.allclose(got, want, atol=1e-5)
            assert abs(np.linalg.norm(got) - 1) < 1e-5
    finally:
        del real_embeddings._embed_one
    assert all(name.startswith("embed-query") and threads == 1 for name, threads in seen) and len(seen) == 3
    assert torch.get_num_threads() == before
