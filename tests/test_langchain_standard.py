"""LangChain's own standard suites (``langchain-tests``) against what other apps import from us: the retriever
``RagService.retriever()`` returns and the embeddings ``ingest.embed.build_embeddings`` builds.

Real parts: the MiniLM embedder, a persistent Chroma holding the shipped sample guide, hybrid retrieval.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from ingest.embed import SentenceTransformerEmbeddings
from rag_app.retrieve import HybridRetriever
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.conftest import REPO

# The suites' async tests run on anyio's pytest plugin (asyncio); it leaves the sync tests alone.
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

QUESTION = "How do I import documents into a knowledge base?"


@pytest.fixture(scope="module")
def guide_service(tmp_path_factory: pytest.TempPathFactory, real_embeddings: Any) -> RagService:
    """A service over the shipped sample guide (English, Chinese, PDF), ingested once for the module."""
    data = tmp_path_factory.mktemp("std") / "data"
    service = RagService(Settings.load(data_dir=data), embeddings=real_embeddings)
    report = service.ingest([REPO / "samples" / "guide"])
    assert not report.failed, report.summary()
    return service


class TestRetrieverStandard(RetrieversIntegrationTests):
    """``retriever.invoke(q, k=n)`` and ``HybridRetriever(k=n)`` both return n documents."""

    _service: RagService

    @pytest.fixture(autouse=True)
    def _bind(self, guide_service: RagService) -> None:
        type(self)._service = guide_service

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return HybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"knowledge_base": self._service.retriever().knowledge_base, "k": 2}  # type: ignore[attr-defined]

    @property
    def retriever_query_example(self) -> str:
        return QUESTION

    @pytest.fixture
    def retriever(self) -> BaseRetriever:
        """The retriever other apps get: ``RagService.retriever()``, built from the settings."""
        return self._service.retriever()


def test_invoke_k_overrides_only_that_call(guide_service: RagService) -> None:
    """A per-call ``k`` changes that call only; the next call returns the configured number again."""
    retriever = guide_service.retriever()
    assert len(retriever.invoke(QUESTION, k=1)) == 1
    assert len(retriever.invoke(QUESTION, k=6)) == 6
    assert len(retriever.invoke(QUESTION)) == guide_service.settings.retrieval.k


class _RealEmbeddings:
    """The embedder ``build_embeddings`` returns (loaded once per session) as the suites' model."""

    _embeddings: Embeddings

    @pytest.fixture(autouse=True)
    def _bind(self, real_embeddings: Embeddings) -> None:
        type(self)._embeddings = real_embeddings

    @pytest.fixture
    def model(self) -> Embeddings:
        return self._embeddings

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return SentenceTransformerEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": self._embeddings.model}  # type: ignore[attr-defined]


class TestEmbeddingsStandard(_RealEmbeddings, EmbeddingsIntegrationTests):
    pass


class TestEmbeddingsStandardUnit(_RealEmbeddings, EmbeddingsUnitTests):
    pass
