"""Capacity model for docs/scaling.md (issue 11): retrieval cost per core as the knowledge base grows, memory
and disk per million chunks, the query embedding's share, and SmolLM2's generation time beside it.

The knowledge base is the synthetic one of ``bench/retrieval_latency.py`` (same builder, reused): half English,
half Chinese Zipf text, random normalized 384-d vectors inserted straight into Chroma plus the real keyword
index. It is grown in steps (``--sizes``) under a wall-clock cap (``--build-minutes``); after each step a
*fresh* process measures it, so its resident memory is that of a reader that opened the knowledge base and
answered questions, nothing left over from building:

* CPU seconds per retrieval (``time.process_time``, all threads) → retrievals per second per core. CPU time,
  not wall time: the machine is shared, and a busy neighbour stretches wall time but not our CPU time;
* wall p50/p95 of one retrieval;
* RSS after loading the embedder, and after opening the knowledge base and answering ``--queries``
  questions (the difference is the knowledge base's share), plus its size on disk;
* the query embedding alone (CPU and wall).

Generation: SmolLM2-135M (the shipped GGUF) answering a RAG-sized prompt (``--gen-prompt-tokens`` of context,
``--gen-tokens`` new tokens, greedy), measured once in a fresh process.

    nice .venv/bin/python bench/scaling.py --sizes 50000 100000 200000 300000 --build-minutes 15 \
        --dir /tmp/rag-bench-scaling --json build/scaling.json

Sizes not reached within the cap are skipped (and said so); docs/scaling.md extrapolates from the last ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_rev, machine  # noqa: E402


def rss_mib() -> float:
    """This process's resident set (``VmRSS``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_mib(folder: Path) -> dict[str, float]:
    """Bytes on disk under each top folder of the data directory (chroma/, keyword/ …), MiB."""
    out: dict[str, float] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            top = path.relative_to(folder).parts[0]
            out[top] = out.get(top, 0.0) + path.stat().st_blocks * 512 / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items())}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def measure_retrieval(folder: Path, queries: int, seed: int) -> dict[str, Any]:
    """One reader: open the knowledge base, warm up, time ``queries`` hybrid retrievals (k=4)."""
    from bench.retrieval_latency import vocabularies, zipf_text
    from ingest.embed import build_embeddings
    from ingest.store import KnowledgeBase, open_client
    from rag_app.retrieve import HybridRetriever
    from rag_app.settings import EmbeddingSettings

    embeddings = build_embeddings(EmbeddingSettings())
    embeddings.embed_query("warm up")
    rss_model = rss_mib()
    kb = KnowledgeBase(open_client(folder), "bench", embeddings)
    retriever = HybridRetriever(knowledge_base=kb, k=4)
    rng = random.Random(seed + 1)
    english, chinese = vocabularies(rng)
    weights = [1.0 / (i + 1) for i in range(len(english))]
    texts = [
        zipf_text(rng, english, weights, 8, " ") + "?" if i % 2 == 0 else zipf_text(rng, chinese, weights, 6, "") + "？"
        for i in range(queries + 10)
    ]
    for q in texts[:10]:  # warm: index pages, SQLite caches, jieba
        retriever.invoke(q)
    wall, cpu = [], []
    for q in texts[10:]:
        w0, c0 = time.perf_counter(), time.process_time()
        retriever.invoke(q)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    emb_wall, emb_cpu = [], []
    for q in texts[10:60]:
        w0, c0 = time.perf_counter(), time.process_time()
        embeddings.embed_query(q)
        emb_cpu.append(time.process_time() - c0)
        emb_wall.append(time.perf_counter() - w0)
    cpu_per = statistics.mean(cpu)
    return {
        "chunks": kb.count(),
        "queries": queries,
        "cpu_ms_per_retrieval": round(cpu_per * 1000, 2),
        "retrievals_per_s_per_core": round(1 / cpu_per, 1),
        "wall_p50_ms": round(statistics.median(wall) * 1000, 1),
        "wall_p95_ms": round(percentile(wall, 0.95) * 1000, 1),
        "embed_query_cpu_ms": round(statistics.mean(emb_cpu) * 1000, 2),
        "embed_query_wall_p50_ms": round(statistics.median(emb_wall) * 1000, 1),
        "rss_model_mib": round(rss_model, 1),
        "rss_after_queries_mib": round(rss_mib(), 1),
        "rss_kb_mib": round(rss_mib() - rss_model, 1),
        "disk_mib": disk_mib(folder),
        "loadavg": os.getloadavg(),
    }


def measure_generation(prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """SmolLM2 (shipped GGUF) on a RAG-sized prompt: prompt processing + a greedy answer, twice."""
    from rag_app.llm import create_llm
    from rag_app.prompting import ChatFormat, system_prompt_text
    from rag_app.settings import LLMSettings

    llm = create_llm(LLMSettings(n_ctx=4096, max_new_tokens=new_tokens, temperature=0.0))
    rng = random.Random(3)
    words = "the system stores documents locally and answers questions with cited sources".split()
    context = " ".join(rng.choice(words) for _ in range(prompt_tokens))
    while llm.count_tokens(context) > prompt_tokens:
        context = context.rsplit(" ", 20)[0]
    runs = []
    for i in range(2):
        prompt = ChatFormat("model", system_prompt_text("default"), llm.chat_template).render(
            f"Sources:\n{context}\n\nQuestion {i}: write a long summary of what the sources say."
        )
        w0, c0 = time.perf_counter(), time.process_time()
        first = None
        n = 0
        for piece in llm.stream(prompt):
            if first is None:
                first = time.perf_counter() - w0
            n += 1
        runs.append({"prompt_tokens": llm.count_tokens(prompt), "pieces": n, "wall_s": time.perf_counter() - w0,
                     "cpu_s": time.process_time() - c0, "first_token_s": first})
    best = min(runs, key=lambda r: r["wall_s"])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in best.items()}


def _in_fresh_process(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 200_000, 300_000])
    parser.add_argument("--build-minutes", type=float, default=15.0, help="stop growing after this much building")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rag-bench-scaling"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gen-prompt-tokens", type=int, default=1024)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", choices=["retrieval", "generation"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure == "retrieval":
        print(json.dumps(measure_retrieval(args.dir, args.queries, args.seed)))
        return
    if args.measure == "generation":
        print(json.dumps(measure_generation(args.gen_prompt_tokens, args.gen_tokens)))
        return

    from bench.retrieval_latency import build

    results: dict[str, Any] = {"machine": machine(), "commit": git_rev(), "retrieval": [], "skipped_sizes": []}
    spent, built = 0.0, 0
    for size in sorted(args.sizes):
        # Skip a size whose build would overrun the cap at the rate measured so far.
        if built and spent + (size - built) * spent / built > args.build_minutes * 60:
            results["skipped_sizes"].append(size)
            continue
        t0 = time.perf_counter()
        build(args.dir, size, args.seed)
        spent += time.perf_counter() - t0
        built = size
        row = _in_fresh_process(["--measure", "retrieval", "--dir", str(args.dir), "--queries", str(args.queries)])
        row["build_s_total"] = round(spent, 1)
        results["retrieval"].append(row)
        print(json.dumps(row), file=sys.stderr)
    results["generation"] = _in_fresh_process(
        ["--measure", "generation", "--gen-prompt-tokens", str(args.gen_prompt_tokens),
         "--gen-tokens", str(args.gen_tokens)]
    )
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
