"""Issue 18: what a small zip of many 1 MiB members costs an upload (time, bytes written under data_dir).

    .venv/bin/python -m bench.zip_amplification

Builds a zip of 150 members of 1 MiB of one repeated byte (about 169 KB), uploads it through
RagService.ingest_uploads (the code the server's and the app's uploads run) with the fake embedder, and
prints the time, the bytes the process wrote and whether it was refused.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)


def amplifying_zip(members: int = 150, size: int = 1 << 20) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for i in range(members):
            archive.writestr(f"m{i:03d}.txt", b"a" * size)
    return buf.getvalue()


def _written() -> int:
    """Bytes this process has passed to write() so far (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from rag_app.errors import RagError
    from rag_app.service import RagService
    from rag_app.settings import Settings

    data = amplifying_zip()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(data_dir=Path(tmp) / "data", llm={"backend": "fake"})
        service = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32))
        start, before = time.perf_counter(), _written()
        outcome = "ingested"
        try:
            report = service.ingest_uploads([("bomb.zip", data)], knowledge_base="bench")
            failed = [f"{f.path}: {f.reason}" for f in report.failed]
            outcome = f"{len(report.ok)} ok, failed: {failed[:1]}"
        except RagError as exc:
            outcome = f"refused: {exc}"
        seconds, written = time.perf_counter() - start, _written() - before
    print(f"zip {len(data) / 1024:.0f} KB → {seconds:.2f} s, {written / 2**20:.1f} MiB written; {outcome[:160]}")


if __name__ == "__main__":
    main()
