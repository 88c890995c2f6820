"""The HTTP face (rag_app/server) with fakes: OpenAI routes, sources, errors, uploads, auth, the model queue."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from langchain_core.embeddings import DeterministicFakeEmbedding

from bench.load_test import PacedFakeLLM
from rag_app.errors import RagError, ServerBusyError
from rag_app.prompting import load_prompt
from rag_app.server import create_app
from rag_app.server.app import check_bind
from rag_app.server.queue import GenerationCancelled, GenerationQueue
from rag_app.server.streaming import StopFilter
from rag_app.service import RagService, open_service
from rag_app.settings import Settings
from tests.servers import ServerThread

QUESTION = "Why is the sky blue?"
#: TestClient's default Host, "testserver", is no name of this server: the gate refuses it (tests/security).
LOCAL = "http://localhost"
DOC = "The sky is blue because of Rayleigh scattering of sunlight. Grass is green because of chlorophyll."


def _settings(tmp_path: Path, **server: Any) -> Settings:
    return Settings.load(
        data_dir=tmp_path / "data",
        llm={"backend": "fake", "fake_responses": ["Fake answer [1]."]},
        server=server,
    )


@pytest.fixture
def service(tmp_path: Path) -> RagService:
    settings = _settings(tmp_path)
    svc = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "sky.txt").write_text(DOC, encoding="utf-8")
    assert not svc.ingest([docs]).failed
    return svc


def _client(service: RagService, **server: Any) -> TestClient:
    settings = service.settings.model_copy(update={"server": service.settings.server.model_copy(update=server)})
    return TestClient(create_app(service, settings), base_url=LOCAL, raise_server_exceptions=False)


@pytest.fixture
def client(service: RagService) -> Any:
    with _client(service) as c:
        yield c


def _chat(question: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": "kb/default", "messages": [{"role": "user", "content": question}], **extra}


def _events(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def _assert_error(response: httpx.Response, status: int, words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words.lower() in error["message"].lower()
    assert "Traceback" not in response.text
    return error


# --- OpenAI routes ------------------------------------------------------------------------------------------


def test_models_lists_each_knowledge_base_and_the_llm(client: TestClient, service: RagService) -> None:
    service.create_knowledge_base("产品手册")
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["fake", "kb/default", "kb/产品手册"]


def test_chat_answers_with_sources_grounding_and_usage(client: TestClient, service: RagService) -> None:
    data = client.post("/v1/chat/completions", json=_chat()).json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Fake answer [1]."}
    assert data["choices"][0]["finish_reason"] == "stop"
    [source] = data["sources"]
    assert source["index"] == 1 and source["source"] == "docs/sky.txt" and source["cited"] is True
    assert "Rayleigh" in source["snippet"] and source["page"] is None and isinstance(source["score"], float)
    assert data["grounding"]["cited"] == [1]
    usage = data["usage"]
    assert usage["completion_tokens"] == service.llm.count_tokens("Fake answer [1].")
    assert usage["prompt_tokens"] > service.llm.count_tokens(DOC)  # the prompt holds the passage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_stream_is_openai_chunks_with_sources_first_and_last(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=_chat(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[0]["sources"][0]["index"] == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Fake answer [1]."
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) > 1
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["sources"][0]["cited"] is True and last["grounding"]["cited"] == [1]
    assert last["usage"]["completion_tokens"] > 0
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_chat_uses_earlier_turns_as_history(tmp_path: Path) -> None:
    settings = Settings.load(
        data_dir=tmp_path / "data",
        llm={"backend": "fake", "fake_responses": ["Why is the sky blue?", "Because of scattering [1]."]},
    )
    svc = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32))
    (tmp_path / "sky.txt").write_text(DOC, encoding="utf-8")
    svc.ingest([tmp_path / "sky.txt"])
    messages = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "Tell me about the sky."},
        {"role": "assistant", "content": "It is blue."},
        {"role": "user", "content": "Why is it?"},
    ]
    with TestClient(create_app(svc, settings), base_url=LOCAL, raise_server_exceptions=False) as c:
        data = c.post("/v1/chat/completions", json={"model": "kb/default", "messages": messages}).json()
    # two model calls: the condensed question (first canned answer), then the answer
    assert data["choices"][0]["message"]["content"] == "Because of scattering [1]."
    assert data["usage"]["completion_tokens"] == sum(
        svc.llm.count_tokens(t) for t in ("Why is the sky blue?", "Because of scattering [1].")
    )


def test_stop_sequence_cuts_the_answer_and_still_grounds_it(client: TestClient) -> None:
    data = client.post("/v1/chat/completions", json=_chat(stop=["answer"])).json()
    assert data["choices"][0]["message"]["content"] == "Fake "
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["grounding"]["cited"] == [] and data["sources"][0]["cited"] is False
    events = _events(client.post("/v1/chat/completions", json=_chat(stream=True, stop="[1]")).text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "Fake answer " and events[-1] == "[DONE]"


def test_max_tokens_reached_gives_finish_reason_length(client: TestClient) -> None:
    data = client.post("/v1/chat/completions", json=_chat(max_tokens=2)).json()
    assert data["choices"][0]["finish_reason"] == "length"


def test_not_in_the_documents_is_an_answer(client: TestClient) -> None:
    data = client.post("/v1/chat/completions", json=_chat("Who won the 1998 football world cup in Paris?")).json()
    assert data["choices"][0]["message"]["content"] == load_prompt("no_answer_en").strip()
    assert data["choices"][0]["finish_reason"] == "stop" and data["sources"] == []
    assert data["usage"]["prompt_tokens"] == 0  # the model was not asked


def test_knowledge_base_field_and_bare_model_name(client: TestClient, service: RagService) -> None:
    body = {"model": "fake", "knowledge_base": "default", "messages": [{"role": "user", "content": QUESTION}]}
    assert client.post("/v1/chat/completions", json=body).json()["sources"]
    body = {"model": "fake", "messages": [{"role": "user", "content": QUESTION}]}
    assert client.post("/v1/chat/completions", json=body).json()["knowledge_base"] == "default"


def test_completions_is_the_bare_model(client: TestClient) -> None:
    data = client.post("/v1/completions", json={"model": "fake", "prompt": "Say something"}).json()
    assert data["object"] == "text_completion" and data["choices"][0]["text"] == "Fake answer [1]."
    assert data["usage"]["prompt_tokens"] > 0
    events = _events(client.post("/v1/completions", json={"model": "fake", "prompt": "Hi", "stream": True}).text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "Fake answer [1]."
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"


def test_embeddings_float_and_base64(client: TestClient, service: RagService) -> None:
    data = client.post("/v1/embeddings", json={"input": ["hello", "世界"]}).json()
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert data["data"][0]["embedding"] == pytest.approx(service.embeddings.embed_documents(["hello"])[0])
    assert data["usage"]["prompt_tokens"] > 0
    packed = client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(data["data"][0]["embedding"], abs=1e-6)


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {"llm": True, "embeddings": True}


def test_readyz_is_503_until_models_load(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with TestClient(create_app(RagService(settings), settings, warm_up=False), base_url=LOCAL) as c:
        response = c.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "not_ready"


# --- bad input ----------------------------------------------------------------------------------------------


def test_bad_requests_get_their_status_and_a_clear_message(client: TestClient) -> None:
    bad_json = client.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    _assert_error(bad_json, 400, "malformed JSON")
    _assert_error(client.post("/v1/chat/completions", json=_chat() | {"model": "kb/nope"}), 404, "'nope' does not exist")
    _assert_error(client.post("/v1/chat/completions", json={"model": "gpt-4", "messages": []}), 400, "messages")
    _assert_error(client.post("/v1/chat/completions", json=_chat() | {"messages": []}), 400, "empty")
    _assert_error(client.post("/v1/chat/completions", json=_chat("   ")), 400, "empty")
    last_assistant = {"model": "kb/default", "messages": [{"role": "assistant", "content": "hi"}]}
    _assert_error(client.post("/v1/chat/completions", json=last_assistant), 400, "last message")
    error = _assert_error(client.post("/v1/chat/completions", json=_chat(temperature="hot")), 422, "temperature")
    assert error["param"] == "temperature"
    _assert_error(client.post("/v1/chat/completions", json={"model": "kb/default"}), 422, "messages")
    _assert_error(client.post("/v1/chat/completions", json=_chat(n=2)), 400, "n = 1")
    _assert_error(client.post("/v1/chat/completions", json=_chat() | {"model": "gpt-4"}), 404, "unknown model")
    _assert_error(client.get("/v1/nothing"), 404, "not found")
    _assert_error(client.post("/v1/embeddings", json={"input": []}), 400, "input")
    # and it keeps serving
    assert client.post("/v1/chat/completions", json=_chat()).status_code == 200


def test_empty_knowledge_base_is_a_clear_400(client: TestClient, service: RagService) -> None:
    service.create_knowledge_base("empty")
    _assert_error(client.post("/v1/chat/completions", json=_chat() | {"model": "kb/empty"}), 400, "is empty")
    _assert_error(client.post("/v1/chat/completions", json=_chat(stream=True) | {"model": "kb/empty"}), 400, "empty")


# --- knowledge bases, documents, uploads --------------------------------------------------------------------


def test_knowledge_base_routes(client: TestClient) -> None:
    assert client.post("/v1/knowledge_bases", json={"name": "手册"}).status_code == 201
    _assert_error(client.post("/v1/knowledge_bases", json={"name": "手册"}), 409, "exists")
    names = [kb["name"] for kb in client.get("/v1/knowledge_bases").json()["data"]]
    assert names == ["default", "手册"]
    assert client.delete("/v1/knowledge_bases/手册").json()["deleted"] is True
    _assert_error(client.delete("/v1/knowledge_bases/手册"), 404, "does not exist")
    docs = client.get("/v1/knowledge_bases/default/documents").json()["data"]
    assert [d["source"] for d in docs] == ["docs/sky.txt"] and docs[0]["chunks"] >= 1
    _assert_error(client.get("/v1/knowledge_bases/nope/documents"), 404, "does not exist")
    _assert_error(client.delete("/v1/knowledge_bases/default/documents"), 400, "?file=")
    _assert_error(client.delete("/v1/knowledge_bases/default/documents", params={"file": "x.txt"}), 404, "x.txt")
    removal = client.delete("/v1/knowledge_bases/default/documents", params={"file": "sky.txt"}).json()
    assert removal["sources"] == ["docs/sky.txt"] and removal["chunks_removed"] >= 1


def test_upload_several_files_with_crafted_names_and_garbage(client: TestClient, service: RagService) -> None:
    files = [
        ("files", ("../../etc/passwd.txt", b"root:x:0:0 is not a secret here, only a text file.")),
        ("files", ("notes.txt", ("Uploads are ingested like the CLI does. " * 5).encode())),
        ("files", ("garbage.pdf", bytes(range(256)) * 20)),
        ("files", ("..\\..\\evil.md", b"# Evil\n\nStill only a markdown file in the upload folder.")),
        ("files", ("notes.txt", b"A second file of the same name is kept beside the first.")),
    ]
    response = client.post("/v1/knowledge_bases/uploads/documents", files=files)
    assert response.status_code == 200, response.text
    report = response.json()
    by_path = {f["path"]: f for f in report["files"]}
    assert set(by_path) == {"passwd.txt", "notes.txt", "notes (2).txt", "garbage.pdf", "evil.md"}
    assert {by_path[p]["status"] for p in ("passwd.txt", "notes.txt", "notes (2).txt", "evil.md")} == {"added"}
    assert by_path["garbage.pdf"]["status"] == "failed" and "pdf" in by_path["garbage.pdf"]["reason"].lower()
    assert report["counts"] == {"ok": 4, "skipped": 0, "failed": 1} and "4 file(s) ok" in report["summary"]
    folder = service.uploads_folder("uploads")
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        "evil.md", "notes (2).txt", "notes.txt", "passwd.txt"  # the garbage is not kept
    ]
    data_dir = Path(service.settings.data_dir)
    assert [p for p in data_dir.parent.rglob("passwd.txt") if not p.is_relative_to(folder)] == []
    assert "uploads" in [kb["name"] for kb in client.get("/v1/knowledge_bases").json()["data"]]
    assert client.get("/healthz").status_code == 200


def test_upload_encrypted_pdf_with_password(client: TestClient, shared_eval: Path) -> None:
    pdf = (shared_eval / "pdf_tricky" / "pypdf_encrypted-file_pw-test.pdf").read_bytes()
    no_pw = client.post("/v1/knowledge_bases/enc/documents", files=[("files", ("enc.pdf", pdf))]).json()
    assert no_pw["files"][0]["status"] in ("failed", "skipped") and "password" in no_pw["files"][0]["reason"]
    with_pw = client.post(
        "/v1/knowledge_bases/enc/documents", files=[("files", ("enc.pdf", pdf))],
        data={"passwords": json.dumps({"enc.pdf": "test"})},
    ).json()
    assert with_pw["files"][0]["status"] == "added", with_pw


def test_upload_job_can_be_polled(client: TestClient) -> None:
    response = client.post(
        "/v1/knowledge_bases/jobs/documents", params={"wait": "false"},
        files=[("files", ("a.txt", b"Polling works for long uploads. " * 10))],
    )
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    for _ in range(200):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert job["status"] == "done" and job["report"]["files"][0]["status"] == "added"
    assert job["progress"]["stage"] == "done" and job["progress"]["files_total"] == 1
    _assert_error(client.get("/v1/jobs/nope"), 404, "nope")


def test_bad_uploads(service: RagService) -> None:
    with _client(service, max_upload_mb=0.01) as c:
        big = c.post("/v1/knowledge_bases/x/documents", files=[("files", ("big.txt", b"x" * 20_000))])
        _assert_error(big, 413, "max_upload_mb")
        _assert_error(c.post("/v1/knowledge_bases/x/documents", data={"a": "b"}), 400, "files")
        _assert_error(c.post("/v1/knowledge_bases/x/documents", json={"a": 1}), 400, "multipart")
        bad_zip = c.post("/v1/knowledge_bases/x/documents", files=[("files", ("a.zip", b"PK not a zip"))])
        _assert_error(bad_zip, 400, "zip")
        bad_pw = c.post("/v1/knowledge_bases/x/documents", files=[("files", ("a.txt", b"x"))], data={"passwords": "["})
        _assert_error(bad_pw, 400, "passwords")
        assert c.get("/healthz").status_code == 200


# --- security -----------------------------------------------------------------------------------------------


def test_api_keys_are_required_when_configured(service: RagService) -> None:
    with _client(service, api_keys=["k1", "k2"]) as c:
        error = _assert_error(c.get("/v1/models"), 401, "API key")
        assert error["code"] == "invalid_api_key"
        _assert_error(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "API key")
        _assert_error(c.post("/v1/chat/completions", json=_chat()), 401, "API key")
        assert c.get("/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_no_cors_unless_configured(service: RagService) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with _client(service) as c:
        assert "access-control-allow-origin" not in c.get("/v1/models", headers={"Origin": "https://x.example"}).headers
        assert "access-control-allow-origin" not in c.options("/v1/chat/completions", headers=preflight).headers
    with _client(service, cors_origins=["https://app.example"]) as c:
        allowed = c.get("/v1/models", headers={"Origin": "https://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"


def test_non_loopback_needs_api_keys(tmp_path: Path) -> None:
    check_bind(_settings(tmp_path))
    check_bind(_settings(tmp_path, host="::1"))
    check_bind(_settings(tmp_path, host="0.0.0.0", api_keys=["k" * 16]))
    with pytest.raises(RagError, match="without API keys"):
        check_bind(_settings(tmp_path, host="0.0.0.0"))
    with pytest.raises(RagError, match="without API keys"):
        check_bind(_settings(tmp_path, host="192.168.1.5"))


def test_cli_serve_refuses_public_address_without_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rag_app.cli import cli

    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "without API keys" in result.output and "Traceback" not in result.output


def test_open_service_picks_remote_when_server_url_is_set(tmp_path: Path) -> None:
    from rag_app.remote import RemoteRagService

    assert isinstance(open_service(_settings(tmp_path)), RagService)
    remote = Settings.load(data_dir=tmp_path / "d", server_url="http://127.0.0.1:9")
    assert isinstance(open_service(remote), RemoteRagService)


# --- the queue ----------------------------------------------------------------------------------------------


def test_queue_is_fifo_and_bounded() -> None:
    queue = GenerationQueue(capacity=4)
    holder = queue.admit()
    holder.acquire()
    tickets = [queue.admit() for _ in range(3)]
    with pytest.raises(ServerBusyError) as busy:
        queue.admit()
    assert busy.value.retry_after >= 1
    order: list[int] = []

    def take(i: int) -> None:
        tickets[i].acquire()
        order.append(i)
        tickets[i].leave()

    threads = []
    for i in range(3):  # they line up in this order
        threads.append(threading.Thread(target=take, args=(i,)))
        threads[-1].start()
        while queue.stats()["waiting"] < i + 1:
            time.sleep(0.01)
    holder.leave()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]
    assert queue.stats() == {"admitted": 0, "waiting": 0, "generating": 0, "capacity": 4}


def test_cancelled_ticket_leaves_the_queue() -> None:
    queue = GenerationQueue(capacity=2)
    holder, waiter = queue.admit(), queue.admit()
    holder.acquire()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            waiter.acquire()
        except GenerationCancelled as exc:
            errors.append(exc)
        finally:
            waiter.leave()

    thread = threading.Thread(target=wait)
    thread.start()
    while queue.stats()["waiting"] < 1:
        time.sleep(0.01)
    waiter.cancel()
    thread.join(5)
    assert errors and queue.stats()["waiting"] == 0 and queue.stats()["admitted"] == 1
    holder.leave()


def test_full_queue_answers_503_with_retry_after(service: RagService) -> None:
    with _client(service, queue_size=1) as c:
        ticket = c.app.state.rag.queue.admit()  # type: ignore[attr-defined]
        try:
            response = c.post("/v1/chat/completions", json=_chat())
            _assert_error(response, 503, "busy")
            assert int(response.headers["retry-after"]) >= 1
        finally:
            ticket.leave()
        assert c.post("/v1/chat/completions", json=_chat()).status_code == 200


def test_stop_filter_holds_back_a_partial_stop() -> None:
    f = StopFilter(["END"])
    assert f.feed("abc E") == "abc " and f.feed("N") == "" and f.feed("x") == "ENx"
    assert f.feed("yy END zz") == "yy " and f.stopped and f.feed("more") == "" and f.flush() == ""


def test_disconnecting_client_cancels_generation_and_frees_the_queue(tmp_path: Path) -> None:
    """A real server on loopback: a client reads the first words of a long answer and goes away."""
    llm = PacedFakeLLM(answer=" ".join(["word"] * 400) + " [1].", seconds_per_token=0.02, max_new_tokens=1000)
    settings = _settings(tmp_path)
    svc = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32), llm=llm)
    (tmp_path / "sky.txt").write_text(DOC, encoding="utf-8")
    svc.ingest([tmp_path / "sky.txt"])
    app = create_app(svc, settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
            words = 0
            for line in response.iter_lines():
                if '"content": "' in line and "word" in line:
                    words += 1
                if words >= 3:
                    break
        deadline = time.monotonic() + 10
        while app.state.rag.queue.stats()["admitted"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.rag.queue.stats()["admitted"] == 0
        stopped_at = llm.generated
        time.sleep(0.3)
        assert llm.generated == stopped_at < 100  # the generation stopped, far before its 400 words
        # and the server keeps answering
        assert client.post("/v1/chat/completions", json=_chat()).status_code == 200


class _FailingLLM(PacedFakeLLM):
    def _stream(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        yield from list(super()._stream(prompt, stop, run_manager, **kwargs))[:2]
        raise RuntimeError("the model crashed")


def test_error_during_a_stream_is_an_error_event(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    svc = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32), llm=_FailingLLM(seconds_per_token=0))
    (tmp_path / "sky.txt").write_text(DOC, encoding="utf-8")
    svc.ingest([tmp_path / "sky.txt"])
    with TestClient(create_app(svc, settings), base_url=LOCAL, raise_server_exceptions=False) as c:
        events = _events(c.post("/v1/chat/completions", json=_chat(stream=True)).text)
        assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "server_error"
        assert "Traceback" not in json.dumps(events) and "crashed" not in json.dumps(events)
        _assert_error(c.post("/v1/chat/completions", json=_chat()), 500, "internal server error")
        assert c.app.state.rag.queue.stats()["admitted"] == 0  # type: ignore[attr-defined]
        assert c.get("/healthz").status_code == 200


# --- the app's views: search, chunks, a passage in its context, a PDF page ------------------------------------

GUIDE_PDF = Path(__file__).resolve().parent.parent / "samples" / "guide" / "user-guide.zh.pdf"


@pytest.fixture
def with_pdf(service: RagService) -> RagService:
    """The service with the Chinese guide uploaded (kept, so that its pages can be rendered)."""
    assert not service.ingest_uploads([("guide.pdf", GUIDE_PDF.read_bytes())]).failed
    return service


def test_search_route_is_the_services_hit_test(client: TestClient, service: RagService) -> None:
    data = client.post("/v1/knowledge_bases/default/search", json={"query": " Rayleigh scattering "}).json()
    assert data.pop("object") == "search"
    assert data == service.search("Rayleigh scattering", "default")
    assert data["results"][0]["source"] == "docs/sky.txt" and "Rayleigh" in data["results"][0]["text"]
    assert data["mode"] == "hybrid" and data["results"][0]["rank"] == 1
    _assert_error(client.post("/v1/knowledge_bases/nope/search", json={"query": "sky"}), 404, "'nope' does not exist")
    _assert_error(client.post("/v1/knowledge_bases/default/search", json={"query": "  "}), 400, "query is empty")
    assert _assert_error(client.post("/v1/knowledge_bases/default/search", json={}), 422, "query")["param"] == "query"


def test_chunks_and_passage_routes(client: TestClient, with_pdf: RagService) -> None:
    chunks = client.get("/v1/knowledge_bases/default/chunks", params={"file": "guide.pdf"}).json()
    assert chunks["object"] == "list" and chunks["data"] == with_pdf.chunks("guide.pdf")
    assert [c["index"] for c in chunks["data"]] == list(range(len(chunks["data"]))) and chunks["data"][0]["page"] == 1
    passage = client.get("/v1/knowledge_bases/default/passage", params={"file": "guide.pdf", "start": 2, "end": 3})
    assert passage.json() == {"object": "passage", **dict(zip(("before", "text", "after"),
                                                              with_pdf.passage_context("guide.pdf", 2, 3)))}
    one = client.get("/v1/knowledge_bases/default/passage", params={"file": "guide.pdf", "start": 0}).json()
    assert one["before"] == "" and one["text"] == chunks["data"][0]["text"] and one["after"] == chunks["data"][1]["text"]
    # errors: unknown knowledge base or document, missing or bad parameters
    _assert_error(client.get("/v1/knowledge_bases/nope/chunks", params={"file": "guide.pdf"}), 404, "does not exist")
    error = _assert_error(client.get("/v1/knowledge_bases/default/chunks", params={"file": "x.txt"}), 404, "x.txt")
    assert error["code"] == "not_found" and "document" in error["message"]
    assert _assert_error(client.get("/v1/knowledge_bases/default/chunks"), 422, "file")["param"] == "file"
    url = "/v1/knowledge_bases/default/passage"
    _assert_error(client.get(url, params={"file": "x.txt", "start": 0}), 404, "no stored document")
    assert _assert_error(client.get(url, params={"file": "guide.pdf"}), 422, "start")["param"] == "start"
    _assert_error(client.get(url, params={"file": "guide.pdf", "start": "one"}), 422, "integer")
    _assert_error(client.get(url, params={"file": "guide.pdf", "start": -1}), 422, "start")
    _assert_error(client.get(url, params={"file": "guide.pdf", "start": 3, "end": 2}), 400, "before start")


def test_page_route_renders_the_pdf_page_with_the_passage(client: TestClient, with_pdf: RagService) -> None:
    chunk = with_pdf.chunks("guide.pdf")[2]
    url = "/v1/knowledge_bases/default/page"
    got = client.get(url, params={"file": "guide.pdf", "page": chunk["page"], "passage": chunk["text"]})
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content == with_pdf.page_image("guide.pdf", chunk["page"], chunk["text"], "default")
    plain = client.get(url, params={"file": "guide.pdf", "page": chunk["page"]}).content
    assert plain.startswith(b"\x89PNG") and plain != got.content  # the highlight is drawn
    # a long Chinese passage (the app keeps up to 4000 characters) goes in a POST body, not in the URL
    long = "\n".join(c["text"] for c in with_pdf.chunks("guide.pdf") if c["page"] == 1) * 4
    posted = client.post(url, json={"file": "guide.pdf", "page": 1, "passage": long})
    assert posted.status_code == 200 and posted.content == with_pdf.page_image("guide.pdf", 1, long)
    # no image: a document that is no PDF, a PDF whose file is not kept, a file outside the uploads
    for name in ("docs/sky.txt", "other.pdf", "../../guide.pdf"):
        error = _assert_error(client.get(url, params={"file": name, "page": 1}), 404, "no page image")
        assert error["code"] == "no_page_image"
    error = _assert_error(client.post(url, json={"file": "guide.pdf", "page": 99}), 400, "has no page 99")
    assert error["code"] == "preview_failed"
    _assert_error(client.get(url, params={"file": "guide.pdf", "page": 0}), 422, "page")
    _assert_error(client.post(url, json={"file": "guide.pdf"}), 422, "page")
    _assert_error(client.get("/v1/knowledge_bases/nope/page", params={"file": "guide.pdf", "page": 1}), 404, "nope")


def test_view_routes_need_the_api_key(with_pdf: RagService) -> None:
    routes = [
        ("POST", "/v1/knowledge_bases/default/search", {"json": {"query": "sky"}}),
        ("GET", "/v1/knowledge_bases/default/chunks", {"params": {"file": "guide.pdf"}}),
        ("GET", "/v1/knowledge_bases/default/passage", {"params": {"file": "guide.pdf", "start": 0}}),
        ("GET", "/v1/knowledge_bases/default/page", {"params": {"file": "guide.pdf", "page": 1}}),
        ("POST", "/v1/knowledge_bases/default/page", {"json": {"file": "guide.pdf", "page": 1}}),
    ]
    with _client(with_pdf, api_keys=["k"]) as c:
        for method, url, kwargs in routes:
            _assert_error(c.request(method, url, **kwargs), 401, "API key")
            assert c.request(method, url, headers={"Authorization": "Bearer k"}, **kwargs).status_code == 200, url
