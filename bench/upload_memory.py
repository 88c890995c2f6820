"""Issue 18: memory a queued ``?wait=false`` upload costs the server while it waits (Python allocations).

    .venv/bin/python -m bench.upload_memory [MB]

Serves the app on loopback in this process (tests.servers.ServerThread), holds the ingestion worker busy,
streams an upload of MB (20) from a file and prints the peak of Python allocations during the request and
what stays allocated while the job waits in the queue.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any


def main(mb: int = 20) -> None:
    import httpx
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from rag_app.server.app import create_app
    from rag_app.service import RagService
    from rag_app.settings import Settings
    from tests.servers import ServerThread

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(data_dir=Path(tmp) / "data", llm={"backend": "fake"})
        service = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32))
        gate, started = threading.Event(), threading.Event()
        real = service.ingest_uploads

        def held(*args: Any, **kwargs: Any) -> Any:
            started.set()
            gate.wait(120)
            return real(*args, **kwargs)

        service.ingest_uploads = held  # type: ignore[method-assign]
        payload = Path(tmp) / "big.txt"
        payload.write_bytes(b"words and more words " * (mb * 2**20 // 21))
        with ServerThread(create_app(service, settings, warm_up=False)) as server:
            url = f"{server.url}/v1/knowledge_bases/kb/documents"
            httpx.post(url, files=[("files", ("first.txt", b"first"))], params={"wait": "false"}, timeout=60)
            started.wait(60)
            tracemalloc.start()
            with payload.open("rb") as fh:
                httpx.post(url, files=[("files", ("big.txt", fh))], params={"wait": "false"}, timeout=120)
            held_now, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            gate.set()
    print(f"{mb} MB queued upload: peak {peak / 2**20:.1f} MiB during the request, "
          f"{held_now / 2**20:.1f} MiB still allocated while it waits")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
