"""``rag ask`` through a warm ``rag serve`` on the same data dir against a cold ``rag ask`` that loads the models
itself (issue 20, warm paths), with the real default models on the sample guide.

Run: ``.venv/bin/python bench/warm_ask.py [--runs 3]`` (prints JSON). Each figure is the time from the process
start to the first byte of the answer on stdout (and to its exit); the questions differ from run to run, so no
answer comes from a cache. ``rag kb list`` is timed too: the floor of any ``rag`` command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, git_rev, machine  # noqa: E402
from tests.servers import free_port, running_server  # noqa: E402

QUESTIONS = [
    "How do I import documents?",
    "Which file formats can I add?",
    "How do I delete a knowledge base?",
    "Where are my documents stored?",
    "How do I ask a question from the command line?",
]


def timed(command: list[str], env: dict[str, str]) -> dict[str, float | str | None]:
    """Seconds to the first stdout byte and to the exit of ``command``; its stderr's first line and when it came
    (``rag ask``'s "using the server" line: the client's own start-up, before any model work)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[tuple[float, str]] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append((time.perf_counter() - start, raw.decode(errors="replace").rstrip()))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    first = proc.stdout.read(1)
    first_s = time.perf_counter() - start
    proc.stdout.read()
    proc.wait(timeout=300)
    reader.join(timeout=10)
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(command[2:])} failed ({proc.returncode}): {lines[-5:]}")
    return {"first_byte_s": round(first_s, 2), "exit_s": round(time.perf_counter() - start, 2),
            "stderr_first_line": lines[0][1] if lines else "",
            "stderr_first_line_s": round(lines[0][0], 2) if lines else None}


def direct(url: str, question: str) -> float:
    """Seconds from sending a streamed chat request straight to the server to its first answer piece: what the
    server itself takes (retrieval, prompt, first token), without any client start-up."""
    import httpx

    body = {"model": "kb/default", "messages": [{"role": "user", "content": question}], "stream": True}
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            payload = line[5:].strip() if line.startswith("data:") else "[DONE]"
            if payload == "[DONE]":
                continue
            choice = (json.loads(payload).get("choices") or [{}])[0]
            if (choice.get("delta") or {}).get("content"):
                return round(time.perf_counter() - start, 2)
    raise RuntimeError("no answer piece from the server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rag = [sys.executable, "-m", "rag_app.cli"]
    with tempfile.TemporaryDirectory(prefix="warm-ask-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env |= {"RAG_DATA_DIR": str(Path(tmp) / "data"), "HF_HUB_OFFLINE": "1"}
        subprocess.run([*rag, "ingest", "-q", str(REPO / "samples" / "guide")], cwd=REPO, env=env, check=True,
                       capture_output=True)
        result: dict[str, object] = {"machine": machine(), "git": git_rev(), "runs": args.runs}
        result["kb_list"] = [timed([*rag, "kb", "list"], env) for _ in range(args.runs)]
        questions = iter(QUESTIONS * 4)
        result["cold_ask"] = [timed([*rag, "ask", "--hide-source", next(questions)], env) for _ in range(args.runs)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        with running_server([*rag, "serve", "--port", str(port)], f"{url}/readyz", Path(tmp) / "serve.log",
                            timeout=300, env=env, cwd=REPO):
            result["server_ready_s"] = round(time.perf_counter() - started, 2)
            result["warm_ask"] = [timed([*rag, "ask", "--hide-source", next(questions)], env)
                                  for _ in range(args.runs)]
            result["server_direct_first_piece_s"] = [direct(url, next(questions)) for _ in range(args.runs)]
            result["warm_ask_local"] = [timed([*rag, "ask", "--local", "--hide-source", next(questions)], env)
                                        for _ in range(1)]
    medians: dict[str, float] = {}
    for key in ("kb_list", "cold_ask", "warm_ask"):
        medians[key] = statistics.median(r["first_byte_s"] for r in result[key])  # type: ignore[attr-defined]
        result[f"{key}_median_first_byte_s"] = medians[key]
    direct_runs: list[float] = result["server_direct_first_piece_s"]  # type: ignore[assignment]
    result["server_direct_median_s"] = statistics.median(direct_runs)
    result["ratio_cold_over_warm"] = round(medians["cold_ask"] / medians["warm_ask"], 1)
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
