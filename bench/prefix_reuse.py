"""Prefix reuse (issue 20): a follow-up question over the same passages, against the first question.

    python bench/prefix_reuse.py [--sources 900] [--runs 2]

The shipped SmolLM2-135M GGUF, greedy, one answer token, a QA prompt over ``--sources`` tokens of the user
guide. The first question is read cold (``client.reset()``); then a follow-up with the first turn in its
history, three ways:

- ``old order``: history as chat turns before the sources (the prompt before issue 20);
- ``new order``: system → sources → history → question, straight after the first question (llama.cpp keeps
  the previous prompt's tokens and evaluates only past the common prefix);
- ``new + condense``: a condense prompt runs in between (as the chain does for every follow-up), which
  replaces what llama.cpp holds; the KV state cache restores the system-and-sources prefix.

Prints time to first token, prompt tokens llama.cpp evaluated, and tokens reused, per case; ratios are
within one run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from bench.kv_state_cache import guide_documents, prompt_tokens_evaluated  # noqa: E402


def timed(llm: object, prompt: str, prefix: str | None = None) -> tuple[float, int]:
    import llama_cpp

    client = llm.client  # type: ignore[attr-defined]
    llama_cpp.llama_perf_context_reset(client._ctx.ctx)
    t0 = time.perf_counter()
    extra = {"cache_prefix": prefix} if prefix else {}
    llm.invoke(prompt, max_new_tokens=1, **extra)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, prompt_tokens_evaluated(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=900)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from rag_app.chain import PromptBuilder
    from rag_app.llm import create_llm
    from rag_app.prompting import chat_format_for, condense_instruction, qa_instruction
    from rag_app.settings import LLMSettings

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        llm = create_llm(LLMSettings(
            packaged_model="smollm2-135m", n_ctx=4096, max_new_tokens=1, temperature=0.0, cache_dir=Path(tmp),
            state_cache_min_tokens=256,
        ))
        client = llm.client  # type: ignore[attr-defined]
        cache = llm.state_cache  # type: ignore[attr-defined]
        fmt = chat_format_for("auto", "default", llm)
        builder = PromptBuilder(llm, fmt)
        docs = guide_documents(llm, args.sources)
        q1, a1 = "How do I import documents?", "Drop the files into the upload page [1]."
        q2 = "Which of those formats need OCR?"
        history = [(q1, a1)]
        first = fmt.render(qa_instruction(q1, docs))
        cases = {
            "old order": fmt.render(qa_instruction(q2, docs), history),
            "new order": fmt.render(qa_instruction(q2, docs, history=history)),
        }
        prefix = builder.stable_prefix(first, q1, docs)
        rows: dict[str, list[tuple[float, float, int, int]]] = {k: [] for k in [*cases, "new + condense"]}
        for _ in range(args.runs):
            for name, follow in cases.items():
                client.reset()
                t1, e1 = timed(llm, first)
                t2, e2 = timed(llm, follow)
                rows[name].append((t1, t2, e2, len(llm._tokens(follow)) - e2))
            for p in cache.directory.glob("*.kvstate"):
                p.unlink()
            client.reset()
            t1, e1 = timed(llm, first, prefix)  # stores the prefix's state
            timed(llm, fmt.render(condense_instruction(q2, history)))
            follow = cases["new order"]
            t2, e2 = timed(llm, follow, prefix)
            rows["new + condense"].append((t1, t2, e2, len(llm._tokens(follow)) - e2))
        print(f"first prompt: {len(llm._tokens(first))} tokens ({len(docs)} passages, {args.sources} tokens)")
        print(f"{'case':<16}{'first ms':>10}{'follow-up ms':>14}{'ratio':>7}{'evaluated':>11}{'reused':>8}")
        for name, r in rows.items():
            a = statistics.median(x[0] for x in r) * 1000
            b = statistics.median(x[1] for x in r) * 1000
            print(f"{name:<16}{a:>10.0f}{b:>14.0f}{b / a:>7.2f}{r[-1][2]:>11}{r[-1][3]:>8}")
        print(f"cache: {cache.stats}")


if __name__ == "__main__":
    main()
