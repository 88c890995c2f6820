"""Shared by the app's tests: an encrypted PDF made from the shipped guide, free loopback ports, a listener
that records every request it gets (the leak test), and a ``streamlit run`` on loopback."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from urllib.parse import urlsplit

from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
GUIDE_PDF = REPO / "samples" / "guide" / "user-guide.zh.pdf"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


#: Hosts a request may go to: this machine. ``data:`` and ``blob:`` URLs are no requests at all.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def leaves_machine(url: str) -> bool:
    """Whether a URL the browser asked for would be fetched from another machine."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return (parts.hostname or "") not in LOOPBACK_HOSTS


def encrypted_pdf(target: Path, password: str, source: Path = GUIDE_PDF) -> Path:
    """A copy of ``source`` encrypted with ``password`` (AES-128), made with pypdf."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=password, owner_password=None, algorithm="AES-128")
    with target.open("wb") as out:
        writer.write(out)
    return target


class LeakListener:
    """An HTTP server on loopback that records the path of every request; it must stay empty."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LeakListener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def streamlit_server(env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[tuple[str, float]]:
    """``streamlit run streamlit_app.py`` on a free loopback port; yields (URL, seconds until healthy)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"streamlit not healthy after {timeout} s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield url, time.perf_counter() - started
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_FCP_JS = "() => (performance.getEntriesByName('first-contentful-paint')[0] || {startTime: -1}).startTime"
# The newest assistant message has answer text (not the Stop button's label, not the spinner's).
_ANSWER_JS = """(n) => {
  const msgs = document.querySelectorAll('[data-testid="stChatMessage"]');
  if (msgs.length <= n) return false;
  const boxes = msgs[msgs.length - 1].querySelectorAll('[data-testid="stMarkdownContainer"]');
  return Array.from(boxes).some(b => !b.closest('button') && !b.closest('[data-testid="stSpinner"]')
                                     && b.innerText.trim().length > 0);
}"""


def open_app(page: Any, url: str, title: str, timeout_ms: int) -> dict[str, int]:
    """Load the app: milliseconds to the browser's first contentful paint, to the page's title, and until it
    is usable (the chat box and the knowledge-base picker are there, i.e. the store is open)."""
    start = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=timeout_ms)
    title_s = time.perf_counter() - start
    page.get_by_test_id("stChatInputTextArea").wait_for(timeout=timeout_ms)
    page.get_by_test_id("stSelectbox").first.wait_for(timeout=timeout_ms)
    interactive_s = time.perf_counter() - start
    return {"first_contentful_paint_ms": round(page.evaluate(_FCP_JS)), "title_ms": round(title_s * 1000),
            "interactive_ms": round(interactive_s * 1000)}


def ask_in_page(page: Any, question: str, timeout_ms: int) -> float:
    """Type a question in the chat box; seconds from Enter until the answer's first text is on the page."""
    before = page.get_by_test_id("stChatMessage").count()
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    start = time.perf_counter()
    box.press("Enter")
    page.wait_for_function(_ANSWER_JS, arg=before + 1, timeout=timeout_ms, polling=20)
    return time.perf_counter() - start
