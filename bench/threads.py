"""llama.cpp threads on a quiet and on a busy machine: prompt processing and generation speed for fixed thread
counts and for the planned ones (rag_app.llm.threads.plan_threads, re-read before each request).

"Busy" is one other process spinning on a core, started for the measurement and stopped after it. Each
configuration is measured ``--rounds`` times, interleaved, and the median is printed: compare the rows of one
run with each other, not with another machine's.

    .venv/bin/python bench/threads.py [--model smollm2-135m|qwen2.5-coder-0.5b] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

PROMPT = "<|im_start|>user\n" + "Tell me about libraries and their rules. " * 40 + "<|im_end|>\n<|im_start|>assistant\n"


def measure(llm: Any, threads: tuple[int, int] | None) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) of one request; ``threads`` None: plan them now."""
    from rag_app.llm.threads import plan_threads

    if threads is None:
        plan = plan_threads()
        threads = (plan.generate, plan.prompt)
    llm._ctx.set_n_threads(*threads)
    n_prompt = len(llm.tokenize(PROMPT.encode()))
    llm.reset()
    start = time.perf_counter()
    first = None
    n = 0
    # the end-of-text token is banned so that every configuration generates the same number of tokens
    for _ in llm.create_completion(PROMPT, max_tokens=48, temperature=0.0, stream=True,
                                   logit_bias={llm.token_eos(): -100.0}):
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return n_prompt / (first - start), (n - 1) / max(1e-6, end - first)


def main(argv: list[str] | None = None) -> int:
    from llama_cpp import Llama

    from rag_app.llm.llamacpp import default_gguf_path
    from rag_app.llm.threads import cpu_budget
    from rag_app.settings import LLMSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    path = default_gguf_path(LLMSettings(packaged_model=args.model))
    llm = Llama(model_path=str(path), n_ctx=2048, verbose=False)
    cores = cpu_budget()
    configs: dict[str, tuple[int, int] | None] = {
        f"{cores} / {cores} (all cores)": (cores, cores),
        "1 / 1": (1, 1),
        f"{max(1, cores // 2)} / {cores} (llama-cpp-python's default)": (max(1, cores // 2), cores),
        "planned (rag_app.llm.threads)": None,
    }
    print(f"{path.name}, {cores} cores; generate / prompt threads: prompt tok/s, generated tok/s (median of "
          f"{args.rounds})")
    for condition in ("quiet", "busy"):
        spinner = None
        if condition == "busy":
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        try:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
            for _ in range(args.rounds):
                for name, threads in configs.items():
                    results[name].append(measure(llm, threads))
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        for name, rows in results.items():
            prompt = statistics.median(r[0] for r in rows)
            gen = statistics.median(r[1] for r in rows)
            print(f"  {condition:5s} {name:45s} prompt {prompt:6.0f}  generate {gen:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
