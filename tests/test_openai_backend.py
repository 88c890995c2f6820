"""``llm.backend = "openai"``: generation by an OpenAI-compatible server through the completions endpoint,
with the prompt rendered by us.

Unit tests talk to a fake server (an httpx ``MockTransport``) and check the exact request bodies; the e2e
tests start llama-cpp-python's own server on a loopback port with the shipped SmolLM2 GGUF.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from rag_app.errors import GenerationServerError, MissingDependencyError, SettingsError
from rag_app.llm import create_llm
from rag_app.llm.openai_backend import create
from rag_app.prompting import ChatFormat, qa_instruction, system_prompt_text
from rag_app.service import RagService
from rag_app.settings import LLMSettings, Settings
from tests.servers import free_port, running_server


class FakeServer:
    """An OpenAI-compatible completions server in miniature: records each request, answers ``reply``;
    counts a token per word (plus a BOS it adds, as llama-cpp-python's ``/extras/tokenize/count`` does)."""

    def __init__(self, reply: str = "Cats purr [1].", *, status: int = 200, tokenize: bool = True) -> None:
        self.reply, self.status, self.tokenize = reply, status, tokenize
        self.completions: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served-model", "object": "model"}]})
        if path == "/extras/tokenize/count" and self.tokenize:
            text = json.loads(request.content)["input"]
            return httpx.Response(200, json={"count": len(text.split()) + 1})
        if path == "/v1/completions":
            body = json.loads(request.content)
            self.completions.append(body)
            if self.status != 200:
                return httpx.Response(self.status, json={"error": {"message": "model crashed", "type": "server"}})
            return self._stream() if body.get("stream") else self._whole()
        return httpx.Response(404, json={"detail": "Not Found"})

    def _choice(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "served-model",
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

    def _whole(self) -> httpx.Response:
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        return httpx.Response(200, json=self._choice(self.reply, "stop") | {"usage": usage})

    def _stream(self) -> httpx.Response:
        words = self.reply.split(" ")
        parts = [self._choice(w if i == 0 else " " + w, None) for i, w in enumerate(words)]
        parts.append(self._choice("", "stop"))
        sse = "".join(f"data: {json.dumps(p)}\n\n" for p in parts) + "data: [DONE]\n\n"
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def _settings(**llm: Any) -> LLMSettings:
    return LLMSettings(backend="openai", api_base="http://gen.test/v1", **llm)


def test_completion_request_carries_prompt_stop_and_max_tokens() -> None:
    server = FakeServer()
    llm = create(_settings(max_new_tokens=20, temperature=0.0, n_ctx=512), http_client=server.client())
    assert llm.invoke("Question: why do cats purr?", stop=["### Instruction:"]) == "Cats purr [1]."
    body = server.completions[-1]
    assert body["prompt"] == ["Question: why do cats purr?"]
    assert body["model"] == "served-model"
    assert body["stop"] == ["### Instruction:"]
    assert body["max_tokens"] == 20 and body["temperature"] == 0.0
    assert body["top_k"] == 40 and body["repeat_penalty"] == 1.1  # the local backend's sampling, sent along
    assert llm.context_window == 512


def test_streaming_yields_the_servers_pieces() -> None:
    server = FakeServer("one two three")
    llm = create(_settings(n_ctx=512), http_client=server.client())
    # the last, empty piece carries the finish reason (stop / length)
    assert list(llm.stream("hello")) == ["one", " two", " three", ""]
    assert server.completions[-1]["stream"] is True and server.completions[-1]["prompt"] == "hello"


def test_max_tokens_capped_by_what_the_window_leaves() -> None:
    server = FakeServer()
    llm = create(_settings(max_new_tokens=300, n_ctx=40), http_client=server.client())
    prompt = " ".join(["word"] * 30)
    assert llm.count_tokens(prompt) == 30  # the server's BOS is not counted as text
    llm.invoke(prompt)
    assert server.completions[-1]["max_tokens"] == 40 - 30 - 1


def test_per_request_sampling_through_the_service() -> None:
    """``RagService.llm_for`` (the server face's per-request max_tokens/temperature) reaches the wire."""
    server = FakeServer()
    llm = create(_settings(n_ctx=512), http_client=server.client())
    service = RagService(Settings.load(llm={"backend": "openai", "api_base": "http://gen.test/v1"}), llm=llm)
    service.llm_for(max_new_tokens=7, temperature=0.5).invoke("hi")
    assert server.completions[-1]["max_tokens"] == 7 and server.completions[-1]["temperature"] == 0.5


def test_rag_answer_sends_the_exact_alpaca_prompt(tmp_path: Path) -> None:
    """The whole chain: the completions endpoint gets the Alpaca-2 prompt rendered here, with its stop."""
    text = "Cats purr when they are happy and sleep most of the day."
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.txt").write_text(text, encoding="utf-8")
    server = FakeServer()
    settings = Settings.load(
        data_dir=tmp_path / "data",
        llm={"backend": "openai", "api_base": "http://gen.test/v1", "prompt_format": "alpaca", "n_ctx": 1024},
        retrieval={"context_budget": None, "relevance_threshold": False, "k": 1},
    )
    service = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32),
                         llm=create(settings.llm, http_client=server.client()))
    assert not service.ingest([docs]).failed
    question = "Why do cats purr?"
    result = service.chain().invoke(question)
    assert result["answer"] == "Cats purr [1]."
    source = result["sources"][0]["source"]
    expected = ChatFormat("alpaca", system_prompt_text("default")).render(
        qa_instruction(question, [Document(page_content=text, metadata={"source": source})])
    )
    body = server.completions[-1]
    assert body["prompt"] == [expected]
    assert expected.startswith("Below is an instruction that describes a task.")
    assert expected.endswith("### Response: ")
    assert body["stop"] == ["### Instruction:"]


def test_leading_bos_text_dropped_only_when_the_server_adds_bos() -> None:
    server = FakeServer()
    llm = create(_settings(n_ctx=512), http_client=server.client())
    adds = llm.model_copy(update={"bos_token": "<s>", "adds_bos": True})
    adds.invoke("<s>[INST] hi [/INST]")
    assert server.completions[-1]["prompt"] == ["[INST] hi [/INST]"]
    keeps = llm.model_copy(update={"bos_token": "<|im_start|>", "adds_bos": False})
    keeps.invoke("<|im_start|>user\nhi")
    assert server.completions[-1]["prompt"] == ["<|im_start|>user\nhi"]


def test_api_key_sent_as_bearer() -> None:
    server = FakeServer()
    llm = create(_settings(n_ctx=512, api_key="sk-test"), http_client=server.client())
    llm.invoke("hi")
    assert all(h["authorization"] == "Bearer sk-test" for h in server.headers)


def test_no_tokenize_endpoint_falls_back_to_an_estimate(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer(tokenize=False)
    llm = create(_settings(n_ctx=512), http_client=server.client())
    assert llm.count_tokens("猫咪很可爱") == 6  # the CJK-aware estimate: a token per character, plus one
    assert "estimates" in caplog.text


def test_server_error_is_a_friendly_error() -> None:
    llm = create(_settings(n_ctx=512), http_client=FakeServer(status=500).client())
    with pytest.raises(GenerationServerError, match="model crashed") as err:
        llm.invoke("hi")
    assert "llm.api_base" in err.value.friendly()
    with pytest.raises(GenerationServerError):
        list(llm.stream("hi"))


def test_unreachable_server_is_a_friendly_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(GenerationServerError, match="cannot reach"):
        create(_settings(), http_client=httpx.Client(transport=httpx.MockTransport(refuse)))


def test_api_base_is_required() -> None:
    with pytest.raises(SettingsError, match="api_base"):
        create_llm(LLMSettings(backend="openai"))


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_openai", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rag-app\[openai\]'"):
        create(_settings(), http_client=FakeServer().client())


def test_doctor_says_remote_server() -> None:
    from rag_app.doctor import diagnose

    report = diagnose(Settings.load(llm={"backend": "openai", "api_base": "http://gen.test/v1"}))
    assert report["llm"]["runs_on"] == "remote server"
    assert "memory" not in report["llm"]
    assert any("remote server" in note for note in report["notes"])


# ---------------------------------------------------------------------------------------------- e2e


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with the shipped SmolLM2 GGUF, on a loopback port."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    from rag_app.llm.llamacpp import smollm2_gguf_path

    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--seed", "42"]
    with running_server(command, base + "/models", tmp_path_factory.mktemp("llama_server") / "server.log"):
        yield base


@pytest.mark.e2e
def test_rag_answer_through_llama_cpp_server(llama_server: str, tmp_path: Path, real_embeddings: Any) -> None:
    """A real RAG answer: real embedder, persistent Chroma, SmolLM2 served over HTTP."""
    from rag_app.llm.llamacpp import smollm2_gguf_path

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "privacy.md").write_text(
        "# Privacy\n\nAll documents stay on this computer. Nothing is uploaded to any cloud service. "
        "The index and the models are stored in the local data directory.\n",
        encoding="utf-8",
    )
    settings = Settings.load(
        data_dir=tmp_path / "data",
        llm={"backend": "openai", "api_base": llama_server, "model_path": str(smollm2_gguf_path()),
             "n_ctx": 2048, "max_new_tokens": 48, "temperature": 0.0},
    )
    service = RagService(settings, embeddings=real_embeddings)
    assert not service.ingest([docs]).failed
    llm = service.llm
    assert llm.chat_template and "<|im_start|>" in llm.chat_template  # the GGUF's own template, read locally
    assert llm.count_tokens("Where are my documents stored?") > 3
    result = service.chain().invoke("Are my documents uploaded to a cloud service?")
    assert result["answer"].strip()
    assert result["sources"] and result["sources"][0]["source"].endswith("privacy.md")
    pieces = [c["answer"] for c in service.chain().stream("Where is the index stored?") if "answer" in c]
    assert len(pieces) > 1 and "".join(pieces).strip()


@pytest.mark.e2e
def test_same_greedy_output_as_the_local_backend(llama_server: str, real_llm: Any) -> None:
    """The same prompt, greedy, gives the same text through the server as through llama-cpp-python locally."""
    llm = create_llm(LLMSettings(backend="openai", api_base=llama_server, n_ctx=2048, max_new_tokens=48,
                                 temperature=0.0))
    prompt = ChatFormat("alpaca", system_prompt_text("default")).render("Name three colours of the rainbow.")
    stop = ["### Instruction:"]
    local = real_llm.invoke(prompt, stop=stop)
    assert local.strip()
    assert llm.invoke(prompt, stop=stop) == local
    assert "".join(llm.stream(prompt, stop=stop)) == local
