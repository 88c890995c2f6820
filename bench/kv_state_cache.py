"""KV state cache (issue 20): the second question on a long document, against the first.

    python bench/kv_state_cache.py [--sizes 2048,4096,8192] [--runs 2]

For each size, a QA prompt whose sources are that many tokens of the shipped user guide, with the shipped
SmolLM2-135M GGUF (greedy, one answer token): the first question with an empty state cache (llama.cpp reads
the whole prompt, then the system-and-sources prefix's state is stored), then another question over the same
sources after ``client.reset()`` (what a new process, or a condense prompt in between, leaves), which
restores the stored state and reads only the question. Prints time to first token of each, the ratio,
the prompt tokens llama.cpp evaluated each time, and the state file's size. Ratios are within one run.
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

from bench.common import REPO, machine  # noqa: E402

MIB = 2**20
#: SmolLM2's trained context (its GGUF's ``llama.context_length``): the 8K case stays within it.
TRAINED_CONTEXT = 8192


def guide_documents(llm: object, n_tokens: int) -> list[object]:
    """Guide text (repeated) cut into ~500-token documents, about ``n_tokens`` tokens in all."""
    from langchain_core.documents import Document

    text = "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "samples" / "guide").glob("*.md")))
    paras = [p for p in text.split("\n\n") if p.strip()]
    docs, body, total, i = [], "", 0, 0
    while total < n_tokens:
        body += paras[i % len(paras)] + "\n\n"
        i += 1
        if llm.count_tokens(body) >= 500 or total + llm.count_tokens(body) >= n_tokens:  # type: ignore[attr-defined]
            total += llm.count_tokens(body)  # type: ignore[attr-defined]
            docs.append(Document(page_content=body.strip(), metadata={"source": f"guide-part-{len(docs) + 1}.md"}))
            body = ""
    return docs


def prompt_tokens_evaluated(client: object) -> int:
    import llama_cpp

    return int(llama_cpp.llama_perf_context(client._ctx.ctx).n_p_eval)  # type: ignore[attr-defined]


def first_token(llm: object, prompt: str, prefix: str) -> tuple[float, int]:
    import llama_cpp

    client = llm.client  # type: ignore[attr-defined]
    llama_cpp.llama_perf_context_reset(client._ctx.ctx)
    t0 = time.perf_counter()
    llm.invoke(prompt, max_new_tokens=1, cache_prefix=prefix)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, prompt_tokens_evaluated(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,4096,8192")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]

    from rag_app.llm import create_llm
    from rag_app.prompting import chat_format_for, qa_head, qa_instruction
    from rag_app.settings import LLMSettings

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        settings = LLMSettings(
            packaged_model="smollm2-135m", n_ctx=min(max(sizes) + 512, TRAINED_CONTEXT), max_new_tokens=1,
            temperature=0.0,
            cache_dir=Path(tmp), state_cache_mb=4096,
        )
        llm = create_llm(settings)
        client = llm.client  # type: ignore[attr-defined]
        print(f"model: SmolLM2-135M-Instruct Q4_1, trained context {client._model.n_ctx_train()}, "
              f"n_ctx {llm.context_window}, threads {client.n_threads}")
        fmt = chat_format_for("auto", "default", llm)
        cache = llm.state_cache  # type: ignore[attr-defined]
        print(f"{'sources tokens':>14}{'prompt tokens':>14}{'first s':>9}{'second s':>10}{'ratio':>7}"
              f"{'eval 1st':>9}{'eval 2nd':>9}{'state MB':>9}")
        for size in sizes:
            docs = guide_documents(llm, min(size, llm.context_window - 400))  # room for template and question
            firsts, seconds, evals = [], [], (0, 0)
            state_mb = 0.0
            for run in range(args.runs):
                for p in cache.directory.glob("*.kvstate"):
                    p.unlink()
                q1, q2 = "How do I import documents?", f"Which formats can be read? ({run})"
                p1 = fmt.render(qa_instruction(q1, docs))
                p2 = fmt.render(qa_instruction(q2, docs))
                prefix = p1[: p1.index(qa_head(q1, docs)) + len(qa_head(q1, docs))]
                client.reset()
                t1, e1 = first_token(llm, p1, prefix)
                state_mb = cache.total_bytes() / MIB
                client.reset()
                t2, e2 = first_token(llm, p2, prefix)
                firsts.append(t1)
                seconds.append(t2)
                evals = (e1, e2)
            n = llm.count_tokens(p1)
            a, b = statistics.median(firsts), statistics.median(seconds)
            print(f"{size:>14}{n:>14}{a:>9.2f}{b:>10.2f}{b / a:>7.2f}{evals[0]:>9}{evals[1]:>9}{state_mb:>9.1f}")
        print(f"cache: {cache.stats}")


if __name__ == "__main__":
    main()
