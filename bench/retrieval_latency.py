"""Latency of one hybrid retrieval (query embedding + vector search + BM25 + fusion, k=4) on a large
knowledge base.

The knowledge base is synthetic: half English, half Chinese chunks drawn from Zipf-distributed vocabularies
(Chinese words from jieba's own dictionary), inserted with random unit vectors so that 100k chunks build in
minutes instead of hours of embedding. The query embedding is the real one (all-MiniLM-L6-v2), as are Chroma,
the FTS5 keyword index and the fusion. The built knowledge base is kept in --dir and reused.

With random vectors the calibration gives the embedder no weight; every query still runs both sides (hybrid
mode always does), so the numbers are those of a full hybrid retrieval. Times are for a warm process and
a warm OS file cache (the knowledge base's files are read once first), as in a running app.

    .venv/bin/python bench/retrieval_latency.py --chunks 100000 --queries 200
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_rev, machine  # noqa: E402

DIM = 384  # all-MiniLM-L6-v2


def vocabularies(rng: random.Random) -> tuple[list[str], list[str]]:
    import jieba

    dict_path = Path(jieba.__file__).parent / "dict.txt"
    entries = []
    for line in dict_path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and 2 <= len(parts[0]) <= 4:
            entries.append((int(parts[1]), parts[0]))
    entries.sort(reverse=True)
    chinese = [w for _, w in entries[:20000]]
    letters = "abcdefghijklmnopqrstuvwxyz"
    english = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(21000)})[:20000]
    rng.shuffle(english)
    return english, chinese


def zipf_text(rng: random.Random, words: list[str], weights: list[float], n: int, sep: str) -> str:
    return sep.join(rng.choices(words, weights=weights, k=n))


def build(folder: Path, chunks: int, seed: int) -> None:
    import numpy as np

    from ingest.store import KnowledgeBase, open_client
    from rag_app.settings import EmbeddingSettings

    from ingest.embed import build_embeddings

    rng = random.Random(seed)
    english, chinese = vocabularies(rng)
    weights = [1.0 / (i + 1) for i in range(20000)]
    kb = KnowledgeBase(open_client(folder), "bench", build_embeddings(EmbeddingSettings()))
    have = kb.count()
    gen = np.random.default_rng(seed)
    batch = 2000
    started = time.perf_counter()
    for start in range(have, chunks, batch):
        n = min(batch, chunks - start)
        ids = [f"c{start + i:07d}" for i in range(n)]
        texts = [
            zipf_text(rng, english, weights, 120, " ") if (start + i) % 2 == 0 else zipf_text(rng, chinese, weights, 90, "")
            for i in range(n)
        ]
        vectors = gen.standard_normal((n, DIM)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        kb._collection.add(ids=ids, embeddings=vectors, documents=texts, metadatas=[{"source": f"doc{(start + i) // 10}.txt"} for i in range(n)])
        kb.keywords.add(ids, texts)
        print(f"\rbuilt {start + n}/{chunks} chunks ({time.perf_counter() - started:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rag-bench-retrieval"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--query-threads", type=int, default=1,
                        help="embedding.query_threads: torch threads for the query embedding (0 = torch's default)")
    args = parser.parse_args()

    from ingest.embed import build_embeddings
    from ingest.store import KnowledgeBase, open_client
    from rag_app.calibrate import calibrate
    from rag_app.retrieve import HybridRetriever
    from rag_app.settings import EmbeddingSettings

    build(args.dir, args.chunks, args.seed)
    embeddings = build_embeddings(EmbeddingSettings(query_threads=args.query_threads))
    kb = KnowledgeBase(open_client(args.dir), "bench", embeddings)
    t0 = time.perf_counter()
    calibration = calibrate(kb)
    calibration_s = time.perf_counter() - t0
    retriever = HybridRetriever(knowledge_base=kb, k=4)
    rng = random.Random(args.seed + 1)
    english, chinese = vocabularies(rng)
    weights = [1.0 / (i + 1) for i in range(20000)]
    queries = [
        zipf_text(rng, english, weights, 8, " ") + "?" if i % 2 == 0 else zipf_text(rng, chinese, weights, 6, "") + "？"
        for i in range(args.queries)
    ]
    # Warm-up, as in a running app: the knowledge base's files in the OS cache (after a reboot or a test run
    # the first queries read from disk), then the model, SQLite's caches and jieba.
    for path in sorted(p for p in args.dir.rglob("*") if p.is_file()):
        with path.open("rb") as fh:
            while fh.read(1 << 24):
                pass
    for q in queries[:5]:
        retriever.invoke(q)
    import os

    load_before = os.getloadavg()
    times = []
    for q in queries:
        start = time.perf_counter()
        retriever.invoke(q)
        times.append((time.perf_counter() - start) * 1000)
    by_language = {"en": sorted(times[0::2]), "zh": sorted(times[1::2])}
    times.sort()
    p50 = statistics.median(times)
    p95 = times[int(0.95 * (len(times) - 1))]
    print(f"machine: {machine()}  commit: {git_rev()}")
    print(f"knowledge base: {kb.count()} chunks (keyword index {kb.keywords.count()}), calibration {calibration_s:.1f} s, weights {calibration.weights}")
    import os

    import torch

    print(f"torch threads: {torch.get_num_threads()} (query embedding: {args.query_threads or 'default'}), "
          f"load average before/after: {load_before} / {os.getloadavg()}")
    print(f"one retrieval (k=4, hybrid, {len(times)} queries): p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms")
    for lang, values in by_language.items():
        print(f"  {lang}: p50 {statistics.median(values):.1f} ms, p95 {values[int(0.95 * (len(values) - 1))]:.1f} ms")


if __name__ == "__main__":
    main()
