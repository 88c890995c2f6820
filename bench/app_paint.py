"""The app's first paint and time to interactive (cold and warm), and the time from a question to its first
token in the page versus the CLI, with the real default models (MiniLM embedder, SmolLM2 GGUF).

Run: ``.venv/bin/python bench/app_paint.py [--runs 3]`` (needs /usr/bin/chromium; prints JSON).
Cold = the first page load after ``streamlit run`` started (store and models warm up behind the status line);
warm = a new browser session against the running app. CLI cold = ``rag ask Q`` from process start; CLI warm =
the interactive ``rag ask`` session, from the question's Enter to the first answer byte.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, git_rev, machine  # noqa: E402
from tests.browser_tools import CHROMIUM, CHROMIUM_ARGS, ask_in_page, open_app, streamlit_server  # noqa: E402

QUESTION = "How do I import documents?"
TIMEOUT_MS = 300_000


def cli_first_token(env: dict[str, str], interactive: bool) -> float:
    """Seconds to the first byte of the answer on stdout (cold: from process start; warm: from the question)."""
    cmd = [sys.executable, "-m", "rag_app.cli", "ask", "--hide-source"] + ([] if interactive else [QUESTION])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    if interactive:
        banner = b""
        while b"Ask a question" not in banner:  # printed once the chain (and so both models) is ready
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("rag ask exited before its prompt")
            banner += line
        proc.stdin.write(QUESTION.encode() + b"\n")
        proc.stdin.flush()
        start = time.perf_counter()
    proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    proc.kill()
    proc.wait()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="page loads and questions per measurement")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="app-paint-") as tmp:
        settings = Path(tmp) / "rag_settings.toml"
        settings.write_text("", encoding="utf-8")
        env = {**os.environ, "RAG_DATA_DIR": str(Path(tmp) / "data"), "RAG_SETTINGS_FILE": str(settings),
               "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "rag_app.cli", "ingest", "-q", str(REPO / "samples" / "guide")],
                       cwd=REPO, env=env, check=True, capture_output=True)
        result: dict[str, object] = {"machine": machine(), "commit": git_rev(), "question": QUESTION,
                                     "load_average_at_start": os.getloadavg()[0]}
        result["cli_cold_first_token_s"] = [round(cli_first_token(env, False), 2) for _ in range(args.runs)]
        result["cli_warm_first_token_s"] = [round(cli_first_token(env, True), 3) for _ in range(args.runs)]
        env_server = {k: v for k, v in env.items() if k.startswith(("RAG_", "HF_"))}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            with streamlit_server(env_server, Path(tmp) / "streamlit.log") as (url, healthy):
                result["server_healthy_s"] = round(healthy, 2)
                loads = []
                for _ in range(args.runs + 1):
                    context = browser.new_context(locale="en-US")
                    page = context.new_page()
                    start = time.perf_counter()
                    loads.append(open_app(page, url, "Chat", TIMEOUT_MS))
                    # Ready: the status line says the models are loaded (the cold run waits for it here).
                    page.get_by_text("Ready —").first.wait_for(timeout=TIMEOUT_MS)
                    loads[-1]["ready_ms"] = round((time.perf_counter() - start) * 1000)  # from the request
                result["page_cold"] = loads[0]
                result["page_warm"] = {k: statistics.median(x[k] for x in loads[1:]) for k in loads[0]}
                firsts = []
                for _ in range(args.runs):  # each in a new session: a first question, as the CLI's (no history)
                    page = browser.new_context(locale="en-US").new_page()
                    open_app(page, url, "Chat", TIMEOUT_MS)
                    firsts.append(round(ask_in_page(page, QUESTION, TIMEOUT_MS), 3))
                result["page_first_token_s"] = firsts
            browser.close()
        result["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
