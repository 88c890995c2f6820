"""Issue 18, the server's runtime share: a hostile PDF page, an empty completion, usage with ``stop``, and
/healthz under a burst of chats. Real requests against a real server on loopback (:class:`ServerThread`)."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from bench.load_test import PacedFakeLLM
from rag_app.llm.llamacpp import LlamaCppLLM
from rag_app.preview import MAX_PIXELS
from rag_app.server import create_app
from rag_app.server import app as server_app
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.servers import ServerThread

DOC = "The sky is blue because of Rayleigh scattering of sunlight. Basalt is a dark volcanic rock."
PAGE = "/v1/knowledge_bases/default/page"


def _service(tmp_path: Path, llm: Any = None, embeddings: Any = None, **server: Any) -> RagService:
    settings = Settings.load(data_dir=tmp_path / "data", server=server,
                             llm={"backend": "fake", "fake_responses": ["Fake answer [1]. It is blue."]})
    svc = RagService(settings, embeddings=embeddings or DeterministicFakeEmbedding(size=32), llm=llm)
    (tmp_path / "sky.txt").write_text(DOC, encoding="utf-8")
    assert not svc.ingest([tmp_path / "sky.txt"]).failed
    return svc


def _serve(svc: RagService) -> ServerThread:
    return ServerThread(create_app(svc, svc.settings, warm_up=False))


def _chat(content: str = "Why is the sky blue?", **extra: Any) -> dict[str, Any]:
    return {"model": "kb/default", "messages": [{"role": "user", "content": content}], **extra}


def _last_event(text: str) -> dict[str, Any]:
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert text.rstrip().endswith("data: [DONE]") and "error" not in events[-1], text[-500:]
    return events[-1]


# --- the page renderer --------------------------------------------------------------------------------------


def big_page_pdf(size: float = 7200, text: str = "Basalt is a dark volcanic rock.") -> bytes:
    """A valid PDF of about 600 bytes whose one page is ``size`` × ``size`` pt (with a line of text, so that it
    ingests without OCR); at the old fixed scale 2 a 7200 pt page renders to 14400² px, 207 Mpx."""
    content = f"BT /F1 96 Tf 300 {size - 400:g} Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size:g} {size:g}] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>".encode(),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


class _PeakRss:
    """The largest resident size of this process (the server's: it runs in a thread here) while the block runs."""

    def __enter__(self) -> _PeakRss:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join()

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def test_a_huge_pdf_page_renders_within_a_pixel_budget(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    pdf = big_page_pdf()
    assert len(pdf) < 700
    assert not svc.ingest_uploads([("huge.pdf", pdf)]).failed
    with _serve(svc) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        with _PeakRss() as rss:
            started = time.perf_counter()
            got = client.get(PAGE, params={"file": "huge.pdf", "page": 1, "passage": "Basalt is a dark volcanic rock."})
            seconds = time.perf_counter() - started
        assert got.status_code == 200, got.text
        width, height = _png_size(got.content)
        print(f"7200 pt page: {seconds:.2f} s, {width}x{height} px, RSS +{rss.grown_mb:.0f} MB")
        assert width * height <= MAX_PIXELS * 1.01 and width == height > 1000  # capped, still readable
        assert seconds < 5 and rss.grown_mb < 400  # was 4-10 s and +1.6 GB
        # an ordinary page keeps the usual scale: A4 at scale 2
        assert not svc.ingest_uploads([("a4.pdf", big_page_pdf(595))]).failed
        a4 = client.get(PAGE, params={"file": "a4.pdf", "page": 1})
        assert _png_size(a4.content) == (1190, 1190)


def test_page_renders_are_bounded_and_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One render slot: while a (slow) render holds it, a second page request waits briefly then gets 503 with
    Retry-After, and /healthz answers at once."""
    svc = _service(tmp_path, page_renders=1)
    release = threading.Event()
    rendering = threading.Event()

    def slow_page_image(*args: Any) -> bytes:
        rendering.set()
        release.wait(20)
        return b"\x89PNG fake"

    monkeypatch.setattr(svc, "page_image", slow_page_image)
    monkeypatch.setattr(server_app, "_RENDER_WAIT", 0.5)
    params = {"file": "sky.pdf", "page": 1}
    with _serve(svc) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.setdefault("r", client.get(PAGE, params=params)))
        worker.start()
        try:
            assert rendering.wait(10)
            started = time.perf_counter()
            health = httpx.get(server.url + "/healthz", timeout=5)
            assert health.status_code == 200 and time.perf_counter() - started < 0.5
            busy = httpx.get(server.url + PAGE, params=params, timeout=10)
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
            assert busy.json()["error"]["code"] == "server_busy"
        finally:
            release.set()
            worker.join(20)
        assert first["r"].status_code == 200 and first["r"].content == b"\x89PNG fake"
        assert client.get(PAGE, params=params).status_code == 200  # the slot was given back


# --- an empty completion ------------------------------------------------------------------------------------


class _SilentLlama:
    """A llama.cpp client whose model ends its text at once (EOS first), as SmolLM2 does for "basalt " * 3000."""

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        return list(range(len(text.split())))

    def create_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield {"choices": [{"text": "", "finish_reason": "stop"}]}


def test_an_empty_completion_is_an_empty_answer_not_a_500(tmp_path: Path) -> None:
    llm = LlamaCppLLM(client=_SilentLlama(), context_window=8192, max_new_tokens=64)
    svc = _service(tmp_path, llm=llm)
    question = "basalt " * 3000
    with _serve(svc) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        chat = client.post("/v1/chat/completions", json=_chat(question))
        assert chat.status_code == 200, chat.text
        data = chat.json()
        assert data["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": ""},
                                      "finish_reason": "stop"}
        assert data["usage"]["completion_tokens"] == 0 and data["usage"]["prompt_tokens"] > 3000
        streamed = client.post("/v1/chat/completions", json=_chat(question, stream=True))
        assert _last_event(streamed.text)["choices"][0]["finish_reason"] == "stop"
        for stream in (False, True):
            done = client.post("/v1/completions", json={"model": "default", "prompt": question, "stream": stream})
            assert done.status_code == 200, done.text
            if not stream:
                assert done.json()["choices"][0]["text"] == "" and done.json()["usage"]["completion_tokens"] == 0
            else:
                assert _last_event(done.text)["choices"][0]["finish_reason"] == "stop"


@pytest.mark.e2e
def test_the_real_model_answering_nothing_is_a_clean_200(tmp_path: Path, real_llm: Any) -> None:
    """The default SmolLM2 GGUF, greedy: this prompt makes its first token end-of-text (one request)."""
    svc = _service(tmp_path, llm=real_llm)
    prompt = "<|im_start|>user\n" + "basalt " * 200 + "<|im_end|>\n<|im_start|>assistant\n"
    with _serve(svc) as server, httpx.Client(base_url=server.url, timeout=300) as client:
        started = time.perf_counter()
        got = client.post("/v1/completions", json={"model": "default", "prompt": prompt, "max_tokens": 8,
                                                   "temperature": 0})
        print(f"empty completion from the real model: HTTP {got.status_code} in {time.perf_counter() - started:.1f} s")
    assert got.status_code == 200, got.text
    choice = got.json()["choices"][0]
    assert choice["text"] == "" and choice["finish_reason"] == "stop"
    assert got.json()["usage"]["completion_tokens"] == 0 and got.json()["usage"]["prompt_tokens"] > 200


# --- usage with stop sequences ------------------------------------------------------------------------------


def test_stop_sequences_keep_the_usage_counts(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    count = svc.llm.count_tokens
    with _serve(svc) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        prompt = {"model": "default", "prompt": "Why is the sky blue?"}
        for route, body, text_of in (
            ("/v1/chat/completions", _chat(), lambda d: d["choices"][0]["message"]["content"]),
            ("/v1/completions", prompt, lambda d: d["choices"][0]["text"]),
        ):
            plain = client.post(route, json=body).json()
            assert plain["usage"]["prompt_tokens"] > 0
            cut = client.post(route, json={**body, "stop": ["It is"]}).json()
            text = text_of(cut)
            assert text == "Fake answer [1]. " and cut["choices"][0]["finish_reason"] == "stop"
            assert cut["usage"] == {"prompt_tokens": plain["usage"]["prompt_tokens"],
                                    "completion_tokens": count(text),
                                    "total_tokens": plain["usage"]["prompt_tokens"] + count(text)}, route
            streamed = _last_event(client.post(route, json={**body, "stop": ["It is"], "stream": True}).text)
            assert streamed["usage"] == cut["usage"], route


# --- /healthz under load ------------------------------------------------------------------------------------


class _GilHeavyEmbedding(DeterministicFakeEmbedding):
    """Query embedding that holds the GIL for a while, as tokenisers and BM25 scoring in Python do."""

    def embed_query(self, text: str) -> list[float]:
        start = time.thread_time()
        while time.thread_time() - start < 0.1:
            pass
        return super().embed_query(text)


def test_healthz_answers_promptly_under_50_concurrent_chats(tmp_path: Path) -> None:
    llm = PacedFakeLLM(answer="The sky is blue because of scattering [1].", seconds_per_token=0.02)
    svc = _service(tmp_path, llm=llm, embeddings=_GilHeavyEmbedding(size=32))

    async def load(url: str) -> tuple[list[int], list[float]]:
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as chats, \
                httpx.AsyncClient(base_url=url, timeout=30) as probe:

            async def one() -> int:
                async with chats.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
                    async for _ in response.aiter_lines():
                        pass
                    return response.status_code

            tasks = [asyncio.create_task(one()) for _ in range(50)]
            latencies: list[float] = []
            while not all(task.done() for task in tasks):
                started = time.perf_counter()
                assert (await probe.get("/healthz")).status_code == 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
            return [await task for task in tasks], latencies

    with _serve(svc) as server:
        codes, latencies = asyncio.run(load(server.url))
    latencies.sort()
    print(f"/healthz during 50 chats: n={len(latencies)} p50={latencies[len(latencies) // 2] * 1000:.0f} ms "
          f"max={latencies[-1] * 1000:.0f} ms")
    assert codes == [200] * 50
    assert len(latencies) >= 10 and latencies[-1] < 0.5
