"""Bounded load test of ``rag serve`` on loopback: N concurrent streaming chat requests, then the numbers.

    .venv/bin/python -m bench.load_test --llm fake --requests 50      # paced fake LLM + real retrieval
    .venv/bin/python -m bench.load_test --llm gguf --requests 8       # the real SmolLM2 GGUF

The server runs in this process (uvicorn on 127.0.0.1, a free port) over a temporary knowledge base built
from the shipped sample guide with the real embedder; the clients are asyncio + httpx streams. Reported: errors,
incomplete streams, p50/p95 of the whole request, of the first token, and of the queue wait (the server
reports each request's wait for the model in the last chunk's extra field ``queue_wait``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too: tests/ is not installed

from langchain_core.callbacks import CallbackManagerForLLMRun  # noqa: E402
from langchain_core.outputs import GenerationChunk  # noqa: E402

from rag_app.llm.base import LocalLLM  # noqa: E402
from tests.servers import ServerThread  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class PacedFakeLLM(LocalLLM):
    """A fake model that streams a canned answer token by token at a fixed pace, so that queueing,
    cancellation and load behave as with a real model (the plain fake answers instantly)."""

    answer: str = "The guide explains how to import documents [1]."
    seconds_per_token: float = 0.01
    context_window: int = 4096
    max_new_tokens: int = 256
    #: Tokens generated so far, over all calls (tests look at it to see a generation stop).
    generated: int = 0

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split())) if text else 0

    @property
    def _llm_type(self) -> str:
        return "paced-fake"

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        words = self.answer.split(" ")
        for i, word in enumerate(words[: self.max_new_tokens]):
            time.sleep(self.seconds_per_token)
            text = word if i == 0 else " " + word
            self.generated += 1
            chunk = GenerationChunk(text=text)
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk


async def _one(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    first: float | None = None
    done = False
    text = ""
    final: dict[str, Any] = {}
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    return {"error": chunk["error"]["message"]}
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter()
                    text += delta
                if chunk["choices"][0]["finish_reason"]:
                    final = chunk
    except Exception as exc:  # counted as an error of the load test
        return {"error": f"{type(exc).__name__}: {exc}"}
    end = time.perf_counter()
    complete = done and bool(final) and bool(text.strip()) and bool(final.get("sources"))
    return {
        "error": None if complete else "incomplete stream",
        "seconds": end - start,
        "first_token": (first or end) - start,
        "queue_wait": float(final.get("queue_wait") or 0.0),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _load(url: str, requests: int, question: str) -> list[dict[str, Any]]:
    import httpx

    body = {"model": "kb/guide", "stream": True, "messages": [{"role": "user", "content": question}]}
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=limits) as client:
        return list(await asyncio.gather(*(_one(client, url, body) for _ in range(requests))))


def run(llm: str, requests: int, seconds_per_token: float) -> dict[str, Any]:
    from rag_app.server import create_app
    from rag_app.service import RagService
    from rag_app.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        conf: dict[str, Any] = {"data_dir": Path(tmp) / "data", "knowledge_base": "guide"}
        if llm == "gguf":
            conf["llm"] = {"n_ctx": 2048, "max_new_tokens": 48, "temperature": 0.0}
        else:
            conf["llm"] = {"backend": "fake"}
        settings = Settings.load(**conf)
        model = None if llm == "gguf" else PacedFakeLLM(seconds_per_token=seconds_per_token)
        service = RagService(settings, llm=model)
        report = service.ingest([REPO / "samples" / "guide"], knowledge_base="guide")
        service.warm_up()
        app = create_app(service, settings, warm_up=False)
        with ServerThread(app) as server:
            started = time.perf_counter()
            results = asyncio.run(_load(server.url, requests, "How do I import documents?"))
            wall = time.perf_counter() - started
    ok = [r for r in results if not r["error"]]
    errors = [r["error"] for r in results if r["error"]]
    out = {
        "llm": llm, "requests": requests, "chunks": report.chunks_added, "errors": len(errors),
        "error_samples": errors[:3], "complete_streams": len(ok), "wall_seconds": round(wall, 2),
    }
    for key in ("seconds", "first_token", "queue_wait"):
        values = [r[key] for r in ok]
        out[key] = {"p50": round(_pct(values, 0.5), 3), "p95": round(_pct(values, 0.95), 3),
                    "max": round(max(values), 3) if values else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=["fake", "gguf"], default="fake")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--seconds-per-token", type=float, default=0.01, help="pace of the fake LLM")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from bench.common import machine

    result = run(args.llm, args.requests, args.seconds_per_token)
    result["machine"] = machine()
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
