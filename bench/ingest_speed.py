"""Ingestion throughput on the shipped sample guide and on ../shared/eval/docs (real MiniLM, real Chroma).

    python bench/ingest_speed.py [PATH ...]

Reports model load time separately from ingestion, chunks/s of a first ingestion, and the time of a second,
unchanged ingestion (which must embed nothing).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, SHARED_EVAL, machine, timer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from ingest.embed import build_embeddings
    from rag_app.service import RagService
    from rag_app.settings import Settings

    corpora = [Path(p) for p in args.paths] or [REPO / "samples" / "guide"] + (
        [SHARED_EVAL / "docs"] if SHARED_EVAL.is_dir() else []
    )
    print(f"machine: {machine()}")
    with timer() as load:
        embeddings = build_embeddings(Settings.load().embedding)
    print(f"embedding model load: {load():.2f} s")
    for corpus in corpora:
        with tempfile.TemporaryDirectory() as data:
            service = RagService(Settings.load(data_dir=data), embeddings=embeddings)
            with timer() as first:
                report = service.ingest([corpus])
            with timer() as second:
                again = service.ingest([corpus])
            print(
                f"{corpus.name}: {len(report.ok)} files, {report.chunks_added} chunks in {first():.2f} s "
                f"= {report.chunks_added / first():.1f} chunks/s; "
                f"unchanged re-ingest {second():.2f} s ({again.chunks_added} chunks embedded)"
            )


if __name__ == "__main__":
    main()
