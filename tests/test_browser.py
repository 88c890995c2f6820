"""The app in a real browser: Debian's Chromium driven by Playwright against ``streamlit run`` on loopback.

Upload several files including an encrypted PDF (its password typed in the page) → ingest → ask → answer with
sources → open a citation → see the page image → delete the document → it is gone from answers; switch
knowledge base; reload and find the conversation. The fake model answers with a Markdown image pointing at a
loopback listener started here: the listener must receive nothing. Screenshots of every page are written to
the test's folder and copied to ``build/screenshots/``; timings go to ``build/app_timings.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_tools import (
    CHROMIUM, CHROMIUM_ARGS, REPO, LeakListener, ask_in_page, encrypted_pdf, open_app, streamlit_server,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium; make system-deps)"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install 'rag-app[dev]')")

ZH_MD = "# 用户指南\n\n本系统可以离线回答关于您文档的问题。所有数据都保存在本地计算机上。\n"
EN_TXT = "Release notes.\n\nThe assistant answers questions about your own documents, offline.\n"
QUESTION = "怎样导入文档？"
WAIT_MS = 120_000
SHOTS = REPO / "build" / "screenshots"
TIMINGS = REPO / "build" / "app_timings.json"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Screenshots into the test's folder, copied to build/screenshots (for people and CI artifacts)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        SHOTS.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str) -> None:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, SHOTS / path.name)


def settle(page: Any) -> None:
    """Wait until Streamlit has finished the script run the last action started."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS
    )


def nav(page: Any, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)


def pick(page: Any, label: str, option: str) -> None:
    """Choose ``option`` in the selectbox labelled ``label``."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    page.get_by_role("option", name=option).first.click()
    settle(page)


def ask(page: Any, question: str) -> tuple[float, Any]:
    """Ask in the chat box; seconds to the first answer text on the page, and the answer once complete."""
    before = page.get_by_test_id("stChatMessage").count()
    first_token = ask_in_page(page, question, WAIT_MS)
    answer = page.get_by_test_id("stChatMessage").nth(before + 1)
    answer.get_by_test_id("stExpander").filter(has_text="Sources").wait_for(timeout=WAIT_MS)
    settle(page)
    return first_token, page.get_by_test_id("stChatMessage").nth(before + 1)


def source_buttons(answer: Any) -> list[str]:
    expander = answer.get_by_test_id("stExpander").filter(has_text="Sources")
    expander.locator("summary").click()
    labels = [b.inner_text() for b in expander.get_by_role("button").all()]
    expander.locator("summary").click()
    return labels


@pytest.fixture
def app_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], LeakListener]]:
    with LeakListener() as listener:
        leak = f"http://127.0.0.1:{listener.port}/leak?data=secret"
        settings = tmp_path / "rag_settings.toml"
        settings.write_text("", encoding="utf-8")
        env = {
            "RAG_PROFILE": "fake",
            "RAG_DATA_DIR": str(tmp_path / "data"),
            "RAG_SETTINGS_FILE": str(settings),
            "RAG_LLM__FAKE_RESPONSES": json.dumps([f"Fake answer [1]. ![x]({leak}) [more]({leak}&link) {leak}"]),
            "HF_HUB_OFFLINE": "1",
        }
        yield env, listener


def test_the_whole_journey(browser: Any, app_env: tuple[dict[str, str], LeakListener], tmp_path: Path) -> None:
    env, listener = app_env
    shots = Shots(tmp_path / "screenshots")
    started = time.perf_counter()
    docs = tmp_path / "docs"
    docs.mkdir()
    secret = encrypted_pdf(docs / "secret.pdf", "s3cret")
    (docs / "notes.txt").write_text(EN_TXT, encoding="utf-8")
    (docs / "用户指南.md").write_text(ZH_MD, encoding="utf-8")
    timings: dict[str, Any] = {}

    with streamlit_server(env, tmp_path / "streamlit.log") as (url, healthy_s):
        timings["server_healthy_s"] = round(healthy_s, 2)
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("request", lambda r: listener.requests.append(f"browser:{r.url}") if "/leak" in r.url else None)
        timings["cold"] = open_app(page, url, "Chat", WAIT_MS)
        shots.take(page, "01-chat-empty")

        # Upload three files, one an encrypted PDF: the report asks for its password right there.
        nav(page, "Upload")
        page.locator('input[type="file"]').set_input_files([str(secret), str(docs / "notes.txt"), str(docs / "用户指南.md")])
        page.get_by_role("button", name="Ingest", exact=True).click()
        page.get_by_text("Knowledge base 'default'").wait_for(timeout=WAIT_MS)
        settle(page)
        shots.take(page, "02-upload-report-password")
        page.get_by_label("Password for secret.pdf").fill("s3cret")
        page.get_by_label("Password for secret.pdf").press("Enter")
        settle(page)
        page.get_by_role("button", name="Ingest with the password").click()
        page.get_by_text("secret.pdf", exact=False).first.wait_for(timeout=WAIT_MS)
        page.get_by_text("1 file(s) ok, 0 skipped, 0 failed").wait_for(timeout=WAIT_MS)
        settle(page)
        shots.take(page, "03-upload-done")

        # Ask: the answer streams in with its sources; the injected image and link stay text.
        nav(page, "Chat")
        first_token, answer = ask(page, QUESTION)
        timings["question_to_first_token_s"] = round(first_token, 3)
        assert "image: x" in answer.inner_text()
        labels = source_buttons(answer)
        pdf_labels = [label for label in labels if label.startswith("[") and "secret.pdf:" in label]
        assert pdf_labels, labels
        # Open a citation: the PDF page, rendered by the app, with the passage highlighted.
        expander = answer.get_by_test_id("stExpander").filter(has_text="Sources")
        expander.locator("summary").click()
        expander.get_by_role("button", name=pdf_labels[0]).click()
        image = page.get_by_test_id("stImage").first
        image.wait_for(timeout=WAIT_MS)
        settle(page)
        src = image.locator("img").get_attribute("src") or ""
        assert src.startswith("/media/") or src.startswith(url), src
        assert page.get_by_text("the cited passage is highlighted").count() >= 1
        shots.take(page, "04-chat-citation-page")
        page.wait_for_timeout(500)
        assert listener.requests == [], listener.requests  # the browser fetched nothing from the answer

        # The other pages.
        nav(page, "Search")
        page.get_by_label("Query").fill("导入文档")
        page.get_by_role("button", name="Search", exact=True).click()
        page.get_by_text("vector weight for this question").wait_for(timeout=WAIT_MS)
        settle(page)
        shots.take(page, "05-search")
        nav(page, "Summarize")
        shots.take(page, "06-summarize")
        nav(page, "Settings")
        page.get_by_text("rag doctor").first.wait_for(timeout=WAIT_MS)
        shots.take(page, "07-settings")

        # Delete the PDF: it is gone from the answers.
        nav(page, "Documents")
        shots.take(page, "08-documents")
        pick(page, "Document", "secret.pdf")
        page.get_by_role("button", name="Delete", exact=True).click()
        page.get_by_text("Deleted secret.pdf").wait_for(timeout=WAIT_MS)
        settle(page)
        nav(page, "Chat")
        _, answer = ask(page, QUESTION)
        labels = source_buttons(answer)
        assert labels and not [label for label in labels if "secret.pdf" in label], labels

        # A second knowledge base; switching shows its own (empty) conversation.
        nav(page, "Upload")
        page.get_by_label("…or a new one").fill("第二")
        page.get_by_label("…or a new one").press("Enter")
        settle(page)
        page.locator('input[type="file"]').set_input_files([str(docs / "notes.txt")])
        page.get_by_role("button", name="Ingest", exact=True).click()
        page.get_by_text("Knowledge base '第二'").wait_for(timeout=WAIT_MS)
        settle(page)
        nav(page, "Chat")
        assert page.get_by_test_id("stChatMessage").count() == 0
        pick(page, "Knowledge base", "default (")
        assert page.get_by_test_id("stChatMessage").count() == 0  # a new session of the chat page

        # Reload: the conversation is still there, and continues.
        page.reload()
        page.get_by_role("heading", name="Chat", exact=True).first.wait_for(timeout=WAIT_MS)
        nav(page, "Conversations")
        page.get_by_text(QUESTION).first.wait_for(timeout=WAIT_MS)
        shots.take(page, "09-conversations")
        page.get_by_role("button", name="Continue").first.click()
        page.get_by_role("heading", name="Chat", exact=True).first.wait_for(timeout=WAIT_MS)
        page.get_by_test_id("stChatMessage").first.wait_for(timeout=WAIT_MS)
        assert page.get_by_test_id("stChatMessage").count() >= 2
        shots.take(page, "10-chat-continued")

        # Chinese, as a Chinese browser gets it.
        zh = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
        zh_page = zh.new_page()
        timings["warm"] = open_app(zh_page, url, "对话", WAIT_MS)
        shots.take(zh_page, "11-chat-zh")
        zh.close()
        context.close()

    assert listener.requests == [], listener.requests
    timings["browser_test_s"] = round(time.perf_counter() - started, 1)
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(timings, indent=2), encoding="utf-8")



def guide_in_chat(browser: Any, url: str) -> tuple[Any, Any]:
    """A new browser session that uploads the English user guide, then stands on the Chat page."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    open_app(page, url, "Chat", WAIT_MS)
    nav(page, "Upload")
    page.locator('input[type="file"]').set_input_files([str(REPO / "samples" / "guide" / "user-guide.en.md")])
    page.get_by_role("button", name="Ingest", exact=True).click()
    page.get_by_text("1 file(s) ok, 0 skipped, 0 failed").wait_for(timeout=WAIT_MS)
    nav(page, "Chat")
    return context, page


def test_real_models_answer_in_the_page(browser: Any, tmp_path: Path) -> None:
    """The default models (MiniLM embedder, SmolLM2 GGUF) behind the page: upload the English guide, ask, and
    get a streamed answer that cites it."""
    settings = tmp_path / "rag_settings.toml"
    settings.write_text("", encoding="utf-8")
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_SETTINGS_FILE": str(settings), "HF_HUB_OFFLINE": "1"}
    shots = Shots(tmp_path / "screenshots")
    with streamlit_server(env, tmp_path / "streamlit.log") as (url, _):
        context, page = guide_in_chat(browser, url)
        page.get_by_text("Ready —").first.wait_for(timeout=WAIT_MS)
        ask_in_page(page, "How do I import documents?", WAIT_MS)
        answer = page.get_by_test_id("stChatMessage").nth(1)
        answer.get_by_test_id("stExpander").filter(has_text="Sources").wait_for(timeout=WAIT_MS)
        settle(page)
        assert len(answer.inner_text().strip()) > 20
        assert "user-guide.en.md" in " ".join(source_buttons(answer))
        shots.take(page, "12-chat-real-model")
        context.close()


def test_stop_cuts_the_answer_and_keeps_it(browser: Any, tmp_path: Path) -> None:
    """A slow (fake) model: Stop while it writes ends the answer there; what it wrote is shown and saved with the
    conversation, marked as stopped."""
    words = " ".join(f"word{i}" for i in range(400))
    settings = tmp_path / "rag_settings.toml"
    settings.write_text("", encoding="utf-8")
    env = {
        "RAG_PROFILE": "fake", "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_SETTINGS_FILE": str(settings),
        "RAG_LLM__FAKE_RESPONSES": json.dumps([f"Slow answer [1]: {words} THE-END"]),
        "RAG_LLM__FAKE_DELAY": "0.02", "HF_HUB_OFFLINE": "1",
    }
    with streamlit_server(env, tmp_path / "streamlit.log") as (url, _):
        context, page = guide_in_chat(browser, url)
        ask_in_page(page, "How do I import documents?", WAIT_MS)  # the answer has begun (~60 s to write it all)
        # Its first words are on the page (Stop after three letters would leave "Slo": a race, not a defect).
        page.get_by_test_id("stChatMessage").nth(1).get_by_text("Slow answer").wait_for(timeout=WAIT_MS)
        page.get_by_role("button", name="Stop").click(timeout=WAIT_MS)
        page.get_by_text("(stopped)").first.wait_for(timeout=WAIT_MS)
        settle(page)
        answer = page.get_by_test_id("stChatMessage").nth(1).inner_text()
        assert "Slow" in answer and "THE-END" not in answer  # cut where it was
        Shots(tmp_path / "screenshots").take(page, "13-chat-stopped")
        context.close()
    from rag_app.conversations import ConversationStore

    store = ConversationStore(tmp_path / "data")  # saved with the conversation, as far as it got
    [conv] = store.list()
    kept = store.messages(conv.id)[-1]
    assert kept.extra.get("stopped") and kept.content.startswith("Slow") and "THE-END" not in kept.content
