"""A one-question ``rag ask`` ends as soon as its answer is printed (rag_app.cli._end_process_now): the real
process, not click's in-process runner, which must never be ended (every other CLI test runs in-process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RAG = str(Path(sys.executable).with_name("rag"))


def test_rag_ask_prints_everything_then_ends_at_once(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.txt").write_text("Cats purr when they are happy.", encoding="utf-8")
    # An interpreter that tears down normally runs its atexit handlers: this one leaves a mark when it does.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import atexit, os\natexit.register(lambda: open(os.environ['EXIT_MARK'], 'a').write('x'))\n"
    )
    mark = tmp_path / "teardown-ran"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "EXIT_MARK": str(mark),
        "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_EMBEDDING__BACKEND": "fake",
        "RAG_LLM__BACKEND": "fake",
        "RAG_LLM__FAKE_RESPONSES": '["Cats purr when they are happy."]',
    }
    subprocess.run([RAG, "ingest", str(docs), "--quiet"], env=env, check=True, capture_output=True, timeout=120)
    assert mark.read_text() == "x"  # ingestion writes: it ends the ordinary way
    done = subprocess.run([RAG, "ask", "Do cats purr?"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Cats purr when they are happy [1].")  # the app's citation included
    assert "cats.txt" in done.stdout.split("Sources:")[-1]  # the last lines made it out before the end
    assert "Traceback" not in done.stderr
    assert mark.read_text() == "x"  # the question's process skipped the teardown
    failed = subprocess.run([RAG, "ask", "  "], env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "the question is empty" in failed.stderr  # errors keep click's exit codes
