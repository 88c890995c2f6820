"""The embedding model loads only when something needs embedding (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

import ingest.embed as embed
from ingest.embed import LazyEmbeddings, folder_dimension, folder_max_tokens, folder_tokenizer
from rag_app.service import RagService
from rag_app.settings import EmbeddingSettings, Settings
from tests.test_ingest_pipeline import EN_TEXT, ZH_TEXT


def _settings(tmp_path: Path) -> Settings:
    return Settings.load(data_dir=tmp_path / "data", llm={"backend": "fake"}, ingest={"ocr": "off"})


class _MiniLMStandIn(DeterministicFakeEmbedding):
    """Fake vectors under MiniLM's name, as the loaded model would record itself."""

    @property
    def identity(self) -> tuple[str, int]:
        return "all-MiniLM-L6-v2", self.size


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count model loads; the 'model' is a fake of MiniLM's dimension."""
    calls: list[str] = []

    def fake_build(settings: EmbeddingSettings, cache_dir: Path | None = None) -> DeterministicFakeEmbedding:
        calls.append("load")
        return _MiniLMStandIn(size=384)

    monkeypatch.setattr(embed, "build_embeddings", fake_build)
    return calls


def test_no_op_reingest_loads_no_model(tmp_path: Path, loads: list[str]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "en.txt").write_text(EN_TEXT, encoding="utf-8")
    (folder / "zh.md").write_text(ZH_TEXT, encoding="utf-8")
    first = RagService(_settings(tmp_path)).ingest([folder])
    assert first.chunks_added > 0 and loads == ["load"]
    second = RagService(_settings(tmp_path)).ingest([folder])
    assert {f.status for f in second.files} == {"unchanged"}
    assert loads == ["load"]  # nothing changed: no model loaded
    (folder / "new.txt").write_text("A new file arrives with a few words of text.", encoding="utf-8")
    service = RagService(_settings(tmp_path))
    service.ingest([folder])
    assert loads == ["load", "load"]
    service.ingest([folder])
    service.retriever()  # the loaded model is shared with queries, not loaded twice
    assert loads == ["load", "load"]


def test_lazy_embedder_knows_identity_and_tokens_without_loading() -> None:
    path = embed.default_embedding_model_path()
    assert folder_dimension(path) == 384 and folder_max_tokens(path) == 256
    tokenizer = folder_tokenizer(path)
    assert tokenizer is not None
    built: list[int] = []
    lazy = LazyEmbeddings.for_settings(EmbeddingSettings(), lambda: built.append(1) or DeterministicFakeEmbedding(size=384))
    assert isinstance(lazy, LazyEmbeddings)
    assert lazy.identity == ("all-MiniLM-L6-v2", 384) and lazy.max_tokens == 256
    assert lazy.count_tokens("hello world") == 2 and not built and not lazy.loaded
    assert len(lazy.embed_query("hello")) == 384 and built == [1]


def test_folder_without_metadata_falls_back_to_loading(tmp_path: Path) -> None:
    assert folder_dimension(tmp_path) is None and folder_tokenizer(tmp_path) is None
    settings = EmbeddingSettings(model_path=tmp_path)
    real = DeterministicFakeEmbedding(size=8)
    assert LazyEmbeddings.for_settings(settings, lambda: real) is real


@pytest.mark.e2e
def test_lazy_counts_match_the_real_model(real_embeddings: object) -> None:
    lazy = LazyEmbeddings.for_settings(EmbeddingSettings(), lambda: real_embeddings)  # type: ignore[arg-type,return-value]
    for text in (EN_TEXT, ZH_TEXT, "Résumé naïve — tabs\tand\nlines", "x" * 2000):
        assert lazy.count_tokens(text) == real_embeddings.count_tokens(text)  # type: ignore[attr-defined]
    assert lazy.identity == real_embeddings.identity  # type: ignore[attr-defined]
