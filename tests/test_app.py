"""The Streamlit app, driven headlessly with ``streamlit.testing.v1.AppTest`` on the ``fake`` profile.

AppTest 1.67 supports ``st.file_uploader`` (``at.file_uploader[0].set_value([...])``), so uploads go through
the real widget and the app's own ingest path. The helpers are also tested directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from streamlit.testing.v1 import AppTest

from ingest.store import KnowledgeBase, open_client
from rag_app.service import RagService
from rag_app.settings import Settings

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
FAKE_ANSWER = "Fake answer [1]."
# The fake embedder gives every text a pseudo-random (but deterministic) vector and retrieval drops chunks
# whose relevance is below 0, so questions are chosen for which the two test files both score >= 0.
QUESTION = "What does the assistant do?"

ZH_MD = "# 用户指南\n\n本系统可以离线回答关于您文档的问题。所有数据都保存在本地计算机上。\n".encode()
EN_TXT = b"Release notes.\n\nThe assistant answers questions about your own documents, offline.\n"


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fake profile (no models) and a fresh data directory, set the way a user would: env vars."""
    data = tmp_path / "data"
    monkeypatch.setenv("RAG_PROFILE", "fake")
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_LLM__FAKE_RESPONSES", f'["{FAKE_ANSWER}"]')
    return data


@pytest.fixture(scope="module")
def app_module() -> ModuleType:
    """``streamlit_app`` imported by path: importing it must not read settings or load models."""
    spec = importlib.util.spec_from_file_location("streamlit_app", APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("streamlit_app", module)
    spec.loader.exec_module(module)
    return module


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run(timeout=60)
    assert not at.exception, at.exception
    return at


def click(at: AppTest, label: str) -> None:
    buttons = [b for b in at.button if b.label == label]
    assert buttons, f"no button {label!r}; have {[b.label for b in at.button]}"
    buttons[0].click()
    at.run(timeout=60)
    assert not at.exception, at.exception


def upload_and_ingest(at: AppTest, files: list[tuple[str, bytes, str]]) -> None:
    at.file_uploader[0].set_value(files)
    at.run(timeout=60)
    click(at, "Ingest")


def texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def ask(at: AppTest, question: str) -> None:
    at.chat_input[0].set_value(question)
    at.run(timeout=60)
    assert not at.exception, at.exception


TWO_FILES = [("用户指南.md", ZH_MD, "text/markdown"), ("notes.txt", EN_TXT, "text/plain")]


# --- through the UI -------------------------------------------------------------------------------


def test_page_renders_with_empty_data_dir(app_env: Path) -> None:
    at = start()
    assert at.title[0].value == "Private document Q&A"
    assert at.selectbox[0].value == "default"
    assert at.file_uploader[0].accept_multiple_files
    ingest = next(b for b in at.button if b.label == "Ingest")
    assert ingest.disabled  # nothing uploaded yet
    assert not at.error


def test_upload_and_ingest_two_files(app_env: Path) -> None:
    at = start()
    upload_and_ingest(at, TWO_FILES)

    assert not at.error, texts(at.error)
    summary = texts(at.sidebar.success)
    assert len(summary) == 1
    assert "Knowledge base 'default'" in summary[0]
    assert "2 file(s) ok, 0 skipped, 0 failed" in summary[0]
    # The uploader is emptied for the next batch and the knowledge base shows its chunks.
    assert not at.file_uploader[0].value
    assert "chunks" in at.selectbox[0].format_func("default")
    # Stored under the uploaded names, not temporary paths.
    service = RagService(Settings.load())
    [info] = service.knowledge_bases()
    assert info.name == "default" and info.chunks >= 2
    kb = KnowledgeBase(open_client(app_env), "default", service.embeddings, create=False)
    assert kb.find_sources(hashlib.sha256(ZH_MD).hexdigest()) == {"用户指南.md"}
    assert kb.find_sources(hashlib.sha256(EN_TXT).hexdigest()) == {"notes.txt"}


def test_ask_shows_fake_answer_and_sources(app_env: Path) -> None:
    at = start()
    upload_and_ingest(at, TWO_FILES)
    ask(at, QUESTION)

    assert not at.error, texts(at.error)
    assistant = [m for m in at.chat_message if m.name == "assistant"]
    assert len(assistant) == 1
    assert FAKE_ANSWER in texts(assistant[0].markdown)
    [expander] = assistant[0].expander
    assert expander.label == "Sources"
    lines = texts(expander.markdown)
    assert any(line.startswith("**[1]**") for line in lines)
    joined = "\n".join(lines)
    assert "用户指南.md" in joined and "notes.txt" in joined
    assert "rag-upload-" not in joined and "/" not in joined.split(" — ")[0]

    # A follow-up re-renders the first turn with its sources, and the chain gets the history.
    ask(at, "And offline?")
    assistant = [m for m in at.chat_message if m.name == "assistant"]
    users = [m for m in at.chat_message if m.name == "user"]
    assert len(assistant) == 2 and len(users) == 2
    assert texts(users[0].markdown) == [QUESTION]
    assert all(len(m.expander) == 1 for m in assistant)
    assert at.session_state["conversations"]["default"][-1]["content"] == FAKE_ANSWER

    click(at, "Clear conversation")
    assert not at.chat_message


def test_ask_on_empty_knowledge_base_shows_error(app_env: Path) -> None:
    at = start()
    ask(at, "Is anything here?")

    errors = texts(at.error)
    assert len(errors) == 1
    assert "no documents have been ingested yet" in errors[0]
    assert "upload documents in the sidebar" in errors[0]
    assert not [m for m in at.chat_message if m.name == "assistant" and m.markdown]
    assert at.session_state["conversations"]["default"] == []  # a failed turn is not history


def test_failing_files_are_reported_by_name(app_env: Path) -> None:
    at = start()
    upload_and_ingest(
        at,
        [
            ("good.txt", EN_TXT, "text/plain"),
            ("empty.txt", b"", "text/plain"),
            ("broken.pdf", b"%PDF-1.7 this is not really a pdf \x00\x01\x02", "application/pdf"),
        ],
    )

    assert not at.exception
    summary = texts(at.sidebar.warning)
    assert any("1 file(s) ok, 0 skipped, 2 failed" in s for s in summary), summary
    errors = texts(at.sidebar.error)
    assert len(errors) == 2, errors
    assert any(e.startswith("Failed: empty.txt") and "empty" in e for e in errors)
    assert any(e.startswith("Failed: broken.pdf") for e in errors)
    # The good file is in the knowledge base: asking works and cites it.
    ask(at, "What are the release notes?")
    assert not at.main.error, texts(at.main.error)  # the report stays in the sidebar
    [assistant] = [m for m in at.chat_message if m.name == "assistant"]
    assert "good.txt" in "\n".join(texts(assistant.expander[0].markdown))


def test_unsupported_file_is_skipped_with_reason(app_env: Path) -> None:
    at = start()
    upload_and_ingest(at, [("notes.txt", EN_TXT, "text/plain"), ("table.xlsx", b"PK\x03\x04", "application/zip")])
    skipped = [w for w in texts(at.sidebar.warning) if w.startswith("Skipped:")]
    assert skipped and "table.xlsx" in skipped[0] and "unsupported" in skipped[0]


def test_new_knowledge_base_is_created_and_selected(app_env: Path) -> None:
    at = start()
    at.text_input[0].set_value("研究资料")
    at.run(timeout=60)
    upload_and_ingest(at, [("notes.txt", EN_TXT, "text/plain")])

    assert "Knowledge base '研究资料'" in texts(at.sidebar.success)[0]
    assert at.selectbox[0].value == "研究资料"
    assert at.text_input[0].value == ""
    assert any(option.startswith("研究资料 (") and "chunks" in option for option in at.selectbox[0].options)
    ask(at, "What are the release notes?")
    assert not at.error, texts(at.error)
    [assistant] = [m for m in at.chat_message if m.name == "assistant"]
    assert FAKE_ANSWER in texts(assistant.markdown)
    assert "研究资料" in at.session_state["conversations"]


def test_bad_settings_show_error_not_trace(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_PROFILE", "no-such-profile")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run(timeout=60)
    assert not at.exception
    assert "unknown profile 'no-such-profile'" in texts(at.error)[0]


def test_missing_model_file_shows_error(app_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = start()
    upload_and_ingest(at, [("notes.txt", EN_TXT, "text/plain")])
    # Same data, but now a real LLM backend pointed at a file that is not there.
    monkeypatch.setenv("RAG_LLM__BACKEND", "llamacpp")
    monkeypatch.setenv("RAG_LLM__MODEL_PATH", str(tmp_path / "missing.gguf"))
    at = start()
    ask(at, "Anything?")
    errors = texts(at.error)
    assert len(errors) == 1, errors
    assert "missing.gguf" in errors[0]


# --- helpers, directly ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("notes.txt", "notes.txt"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\win.ini", "win.ini"),
        ("..", "upload"),
        ("", "upload"),
        ("dir/", "upload"),
        ("bad\x00name\n.md", "badname.md"),
        ("用户指南.md", "用户指南.md"),
    ],
)
def test_safe_filename(app_module: ModuleType, raw: str, expected: str) -> None:
    assert app_module.safe_filename(raw) == expected


def test_safe_filename_shortens_long_names_keeping_suffix(app_module: ModuleType) -> None:
    name = app_module.safe_filename("长" * 200 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= app_module.MAX_NAME_BYTES


def test_unique_names(app_module: ModuleType) -> None:
    assert app_module.unique_names(["a.txt", "x/a.txt", "A.txt", "b.md"]) == [
        "a.txt",
        "a (2).txt",
        "A (3).txt",
        "b.md",
    ]


class _Upload:
    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self._data = data

    def getvalue(self) -> bytes:
        return self._data


def test_ingest_uploads_stores_plain_names(app_module: ModuleType, tmp_path: Path) -> None:
    settings = Settings.load(profile="fake", data_dir=tmp_path / "data")
    service = RagService(settings)
    events = []
    report = app_module.ingest_uploads(
        service,
        [_Upload("../用户指南.md", ZH_MD), _Upload("notes.txt", EN_TXT)],
        "docs",
        events.append,
    )
    assert report.knowledge_base == "docs"
    assert [f.path for f in report.files] == ["用户指南.md", "notes.txt"]
    assert [f.status for f in report.files] == ["added", "added"]
    assert events[0].stage == "start" and events[-1].stage == "done"
    assert app_module.progress_state(events[-1]) == (1.0, "Done")
    # The chain cites the uploaded names.
    chunks = list(service.chain("docs").stream({"question": QUESTION, "chat_history": []}))
    sources = next(c["sources"] for c in chunks if "sources" in c)
    assert {s["source"] for s in sources} == {"用户指南.md", "notes.txt"}


def test_progress_state(app_module: ModuleType) -> None:
    from ingest.pipeline import ProgressEvent

    assert app_module.progress_state(ProgressEvent("start", 0, 0)) == (0.0, "0/0 files")
    fraction, text = app_module.progress_state(ProgressEvent("file", 1, 4, 3, "a.txt"))
    assert fraction == 0.25 and text == "1/4 files — a.txt (3 chunks embedded)"
    assert app_module.progress_state(ProgressEvent("waiting", 0, 2, message="busy"))[1] == "busy"


def test_chat_history_pairs(app_module: ModuleType) -> None:
    msgs = [
        {"role": "user", "content": "q1", "sources": []},
        {"role": "assistant", "content": "a1", "sources": []},
        {"role": "user", "content": "q2", "sources": []},
    ]
    assert app_module.chat_history(msgs) == [("q1", "a1")]


def test_source_line_escapes_markdown(app_module: ModuleType) -> None:
    line = app_module.source_line({"index": 2, "label": "a_b.md:3", "snippet": "costs $5 *now*"})
    assert line == "**[2]** a\\_b.md:3 — costs \\$5 \\*now\\*"


def test_friendly_uses_app_hints(app_module: ModuleType) -> None:
    from rag_app.errors import EmptyKnowledgeBaseError, ModelNotFoundError

    assert "sidebar" in app_module.friendly(EmptyKnowledgeBaseError("kb is empty"))
    assert "rag ingest" not in app_module.friendly(EmptyKnowledgeBaseError("kb is empty"))
    err = ModelNotFoundError("model file not found: x.gguf")
    assert app_module.friendly(err) == err.friendly()
