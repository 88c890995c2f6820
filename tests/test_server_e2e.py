"""End to end: a real ``rag serve`` subprocess on a loopback port (real embedder, real SmolLM2 GGUF, persistent
Chroma), driven by the official ``openai`` client and LangChain's ``ChatOpenAI``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rag_app.prompting import load_prompt
from tests.conftest import REPO
from tests.servers import free_port, running_server

pytestmark = pytest.mark.e2e

openai = pytest.importorskip("openai")
KEY = "e2e-secret-of-16-chars"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'rag-app[llamacpp]')")
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {
        "RAG_DATA_DIR": str(tmp / "data"), "RAG_KNOWLEDGE_BASE": "guide", "RAG_LLM__N_CTX": "2048",
        "RAG_LLM__MAX_NEW_TOKENS": "48", "RAG_LLM__TEMPERATURE": "0", "HF_HUB_OFFLINE": "1",
    }
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "rag_app.cli", "serve", "--port", str(port), "--api-key", KEY]
    with running_server(command, f"{url}/readyz", tmp / "server.log", timeout=300, env=env, cwd=tmp):
        files = [("files", (p.name, p.read_bytes())) for p in sorted((REPO / "samples" / "guide").iterdir())]
        report = httpx.post(f"{url}/v1/knowledge_bases/guide/documents", files=files,
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=300).json()
        assert report["counts"]["failed"] == 0 and report["chunks_added"] > 0, report
        yield url


@pytest.fixture
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=300)


def test_models_lists_the_knowledge_base(client: Any) -> None:
    ids = [m.id for m in client.models.list()]
    assert "kb/guide" in ids and len(ids) == 2


def test_chat_answer_with_sources_from_the_real_model(client: Any) -> None:
    response = client.chat.completions.create(
        model="kb/guide", messages=[{"role": "user", "content": "How do I import documents?"}], max_tokens=48
    )
    choice = response.choices[0]
    assert choice.message.content.strip() and choice.finish_reason in ("stop", "length")
    sources = response.model_extra["sources"]
    assert any(s["source"].endswith("user-guide.en.md") for s in sources)
    assert {"index", "source", "page", "snippet", "score", "cited"} <= set(sources[0])
    assert response.model_extra["grounding"]["cited"] is not None
    assert response.usage.prompt_tokens > 100 and 0 < response.usage.completion_tokens <= 48


def test_chat_stream_with_sources_on_the_last_chunk(client: Any) -> None:
    stream = client.chat.completions.create(
        model="kb/guide", messages=[{"role": "user", "content": "How do I import documents?"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert any(s["source"].endswith("user-guide.en.md") for s in last.model_extra["sources"])
    assert "grounding" in last.model_extra and last.usage.completion_tokens > 0


def test_not_in_the_documents_is_an_answer(client: Any) -> None:
    response = client.chat.completions.create(
        model="kb/guide", messages=[{"role": "user", "content": "Who won the 1998 football world cup final in Paris?"}]
    )
    assert response.choices[0].message.content == load_prompt("no_answer_en").strip()


def test_completions_and_embeddings(client: Any) -> None:
    llm_id = next(m.id for m in client.models.list() if not m.id.startswith("kb/"))
    done = client.completions.create(model=llm_id, prompt="The capital of France is", max_tokens=5)
    assert done.choices[0].text and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage.completion_tokens <= 6 and done.usage.prompt_tokens >= 5
    vectors = client.embeddings.create(model="any", input=["hello world", "你好"])
    assert [len(d.embedding) for d in vectors.data] == [384, 384]


def test_errors_reach_the_openai_client_as_its_exceptions(client: Any, server: str) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="kb/nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.chat.completions.create(model="kb/guide", messages=[])
    refused = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        refused.models.list()
    assert httpx.get(f"{server}/v1/models").status_code == 401  # no key at all
    assert client.models.list().data  # still serving


def test_langchain_chat_openai_against_the_server(server: str) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(base_url=f"{server}/v1", api_key=KEY, model="kb/guide", max_retries=0,
                                       max_tokens=48)
    message = chat.invoke("How do I import documents?")
    assert isinstance(message.content, str) and message.content.strip()
    pieces = [c.content for c in chat.stream("How do I import documents?")]
    assert len(pieces) > 1 and "".join(pieces).strip()
