"""Long windows on this machine: how prompt processing grows with the window, and the planner against llama.cpp.

    python bench/long_context.py [--sizes 2048,4096,8192] [--runs 3]

1. Time to first token of the default model (SmolLM2-135M GGUF) for prompts of 2K/4K/8K tokens made of the
   shipped user guide (a RAG prompt of that size), median of ``--runs``; prompt tokens/s next to it.
2. The memory planner's KV-cache and compute-buffer estimates next to the sizes llama.cpp itself reports
   (its log, in a child process) for the same model, window and KV type.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, machine  # noqa: E402

MIB = 2**20


def prompt_of(llm: object, n_tokens: int) -> str:
    """Guide text (both languages, repeated) cut to about ``n_tokens`` tokens of the model, plus a question."""
    text = "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "samples" / "guide").glob("*.md")))
    body = text
    while llm.count_tokens(body) < n_tokens:  # type: ignore[attr-defined]
        body += "\n\n" + text
    lo, hi = 0, len(body)
    while lo < hi:  # the longest prefix within n_tokens - 16 (room for the question)
        mid = (lo + hi + 1) // 2
        if llm.count_tokens(body[:mid]) <= n_tokens - 16:  # type: ignore[attr-defined]
            lo = mid
        else:
            hi = mid - 1
    return body[:lo] + "\n\nQuestion: how do I import documents?\nAnswer:"


def time_to_first_token(sizes: list[int], runs: int, flash: list[bool]) -> None:
    from rag_app.llm import create_llm
    from rag_app.settings import LLMSettings

    print(f"{'flash attn':>10}{'prompt tokens':>14}{'TTFT median s':>15}{'min':>8}{'max':>8}{'prompt tok/s':>14}"
          f"{'vs first':>9}")
    for fa in flash:
        llm = create_llm(LLMSettings(n_ctx=max(sizes) + 256, max_new_tokens=8, temperature=0.0, flash_attn=fa,
                                     n_threads=os.cpu_count()))
        client = llm.client  # type: ignore[attr-defined]
        base = None
        for size in sizes:
            prompt = prompt_of(llm, size)
            n = llm.count_tokens(prompt)
            times = []
            for _ in range(runs):
                client.reset()  # no prefix cache between runs: every run processes the whole prompt
                start = time.perf_counter()
                for _part in llm.stream(prompt, max_new_tokens=1):
                    break
                times.append(time.perf_counter() - start)
            med = statistics.median(times)
            base = base or med
            print(f"{fa!s:>10}{n:>14}{med:>15.2f}{min(times):>8.2f}{max(times):>8.2f}{n / med:>14.0f}"
                  f"{med / base:>9.2f}", flush=True)
        client.close()


_KV = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB")
_COMPUTE = re.compile(r"CPU compute buffer size =\s+([\d.]+) MiB")


def llama_cpp_report(path: Path, n_ctx: int, kv: str) -> tuple[float, float]:
    code = (
        "import llama_cpp\n"
        "from rag_app.llm.llamacpp import llama_kwargs\n"
        "from rag_app.settings import LLMSettings\n"
        f"kw = llama_kwargs(LLMSettings(kv_cache_type={kv!r}), {str(path)!r}, {n_ctx})\n"
        "kw['verbose'] = True\n"
        "llama_cpp.Llama(**kw).close()\n"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stderr
    kv_found, compute_found = _KV.findall(err), _COMPUTE.findall(err)
    return float(kv_found[0]) if kv_found else float("nan"), float(compute_found[-1]) if compute_found else float("nan")


def planner_vs_llama_cpp(paths: list[Path]) -> None:
    from rag_app.llm.modelinfo import from_gguf
    from rag_app.llm.plan import compute_buffer_bytes, kv_cache_bytes

    print(f"{'model':<28}{'n_ctx':>7}{'KV':>6}{'planner KV MiB':>16}{'llama.cpp KV':>14}"
          f"{'planner buf MiB':>17}{'llama.cpp buf':>15}")
    for path in paths:
        info = from_gguf(path)
        assert info.shape is not None
        for n_ctx, kv in ((1024, "f16"), (4096, "f16"), (8192, "f16"), (8192, "q8_0"), (8192, "q4_0")):
            ours = kv_cache_bytes(info.shape, n_ctx, kv) / MIB
            buf = compute_buffer_bytes(info.shape, n_ctx, 512, kv != "f16") / MIB
            theirs, their_buf = llama_cpp_report(path, n_ctx, kv)
            print(f"{info.name[:27]:<28}{n_ctx:>7}{kv:>6}{ours:>16.2f}{theirs:>14.2f}{buf:>17.1f}{their_buf:>15.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,4096,8192")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flash-attn", default="false,true", help="Flash attention settings to compare.")
    parser.add_argument("--gguf", action="append", default=[], help="More GGUF files for the planner check.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from rag_app.llm.llamacpp import default_gguf_path

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    print("\n## Time to first token by prompt size (default model)", flush=True)
    flash = [f.strip().lower() == "true" for f in args.flash_attn.split(",")]
    time_to_first_token([int(s) for s in args.sizes.split(",")], args.runs, flash)
    print("\n## Memory planner vs llama.cpp's own report")
    planner_vs_llama_cpp([default_gguf_path(), *map(Path, args.gguf)])


if __name__ == "__main__":
    main()
