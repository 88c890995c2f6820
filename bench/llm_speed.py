"""First-token latency and generation speed of the default model (SmolLM2-135M GGUF) on a RAG prompt.

    python bench/llm_speed.py [--runs 5] [--new-tokens 128]

The prompt is a real one: the sample guide ingested, a question retrieved against it, the QA prompt built
by the chain (4 chunks). First-token latency includes prompt processing; tokens/s counts generated tokens
after the first.
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

from bench.common import REPO, machine, timer  # noqa: E402

QUESTIONS = ["How do I import documents?", "怎样导入文档？", "What does --hide-source do?", "如何选择知识库？"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from rag_app.chain import PromptBuilder
    from rag_app.prompting import chat_format_for
    from rag_app.service import RagService
    from rag_app.settings import Settings

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.load(data_dir=data, llm={"max_new_tokens": args.new_tokens, "temperature": 0.0})
        service = RagService(settings)
        service.ingest([REPO / "samples" / "guide"])
        with timer() as load:
            llm = service.llm
        print(f"LLM load: {load():.2f} s  (n_ctx={llm.context_window})")
        retriever = service.retriever()
        fmt = chat_format_for("auto", settings.llm.system_prompt, llm)
        builder = PromptBuilder(llm, fmt)
        first_tokens, speeds, prompt_sizes = [], [], []
        for i in range(args.runs):
            question = QUESTIONS[i % len(QUESTIONS)]
            docs = retriever.invoke(question)
            prompt, _, _ = builder.qa_prompt(question, docs, [])
            prompt_sizes.append(llm.count_tokens(prompt))
            start = time.perf_counter()
            first = None
            pieces = []
            for piece in llm.stream(prompt, max_new_tokens=args.new_tokens):
                pieces.append(piece)
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            assert first is not None
            first_tokens.append(first - start)
            n = llm.count_tokens("".join(pieces))
            if n > 1:
                speeds.append((n - 1) / (end - first))
        print(
            f"prompt tokens: median {statistics.median(prompt_sizes):.0f}; "
            f"first-token latency: median {statistics.median(first_tokens):.2f} s "
            f"(min {min(first_tokens):.2f}, max {max(first_tokens):.2f}); "
            f"generation: median {statistics.median(speeds):.1f} tokens/s over {args.runs} runs"
        )


if __name__ == "__main__":
    main()
