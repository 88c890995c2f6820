"""The Streamlit app, driven headlessly with ``streamlit.testing.v1.AppTest`` on the ``fake`` profile.

Each page is a script under ``rag_app/ui/`` reached with ``at.switch_page``; uploads go through the real
``st.file_uploader`` and the app's own ingest path. The pure helpers are tested directly.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ingest.store import KnowledgeBase, open_client
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.browser_tools import GUIDE_PDF, encrypted_pdf

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
FAKE_ANSWER = "Fake answer [1]."
LEAKY = "See ![x](http://127.0.0.1:9/leak?data) and [here](http://127.0.0.1:9/click) [1]."
# The fake embedder gives every text a pseudo-random (but deterministic) vector and retrieval drops chunks
# whose relevance is below 0, so questions are chosen for which the test files score >= 0.
QUESTION = "What does the assistant do?"

ZH_MD = "# 用户指南\n\n本系统可以离线回答关于您文档的问题。所有数据都保存在本地计算机上。\n".encode()
EN_TXT = b"Release notes.\n\nThe assistant answers questions about your own documents, offline.\n"
TWO_FILES = [("用户指南.md", ZH_MD, "text/markdown"), ("notes.txt", EN_TXT, "text/plain")]


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fake profile (no models), a fresh data directory and settings file, set as a user would: env vars."""
    data = tmp_path / "data"
    settings_file = tmp_path / "rag_settings.toml"
    settings_file.write_text("", encoding="utf-8")
    monkeypatch.setenv("RAG_PROFILE", "fake")
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("RAG_LLM__FAKE_RESPONSES", f'["{FAKE_ANSWER}"]')
    return data


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run(timeout=60)
    assert not at.exception, at.exception
    if page:
        goto(at, page)
    return at


def goto(at: AppTest, page: str) -> None:
    at.switch_page(f"rag_app/ui/{page}.py")
    at.run(timeout=60)
    assert not at.exception, at.exception


def click(at: AppTest, label: str) -> None:
    buttons = [b for b in at.button if b.label == label]
    assert buttons, f"no button {label!r}; have {[b.label for b in at.button]}"
    buttons[0].click()
    at.run(timeout=60)
    assert not at.exception, at.exception


def texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def upload(at: AppTest, files: list[tuple[str, bytes, str]]) -> None:
    goto(at, "upload")
    at.file_uploader[0].set_value(files)
    at.run(timeout=60)
    click(at, "Ingest")


def ask(at: AppTest, question: str) -> None:
    if not at.chat_input:
        goto(at, "chat")
    at.chat_input[0].set_value(question)
    at.run(timeout=60)
    assert not at.exception, at.exception


def assistants(at: AppTest) -> list:  # type: ignore[type-arg]
    return [m for m in at.chat_message if m.name == "assistant"]


# --- through the UI -------------------------------------------------------------------------------


def test_every_page_renders_with_empty_data_dir(app_env: Path) -> None:
    at = start()
    assert texts(at.title) == ["Chat"]
    assert any("Demo mode" in c for c in texts(at.sidebar.caption))
    for page, title in [("conversations", "Conversations"), ("documents", "Documents"), ("upload", "Upload"),
                        ("search", "Search"), ("summarize", "Summarize"), ("settings", "Settings")]:
        goto(at, page)
        assert texts(at.title) == [title]
        assert not at.error, (page, texts(at.error))
    goto(at, "upload")
    assert at.file_uploader[0].accept_multiple_files
    assert next(b for b in at.button if b.label == "Ingest").disabled  # nothing uploaded yet


def test_ui_in_chinese(app_env: Path) -> None:
    at = start()
    at.sidebar.selectbox(key="ui_language").set_value("zh").run()
    assert texts(at.title) == ["对话"]
    goto(at, "upload")
    assert texts(at.title) == ["上传"]
    assert "文档（" in at.file_uploader[0].label


def test_upload_lists_formats_from_the_loaders(app_env: Path) -> None:
    at = start("upload")
    label = at.file_uploader[0].label
    for ext in RagService.supported_extensions():
        assert ext in label
    assert ".zip" in label


def test_upload_and_ingest_two_files(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)

    assert not at.error, texts(at.error)
    [summary] = texts(at.success)
    assert "Knowledge base 'default'" in summary and "2 file(s) ok, 0 skipped, 0 failed" in summary
    assert not at.file_uploader[0].value  # emptied for the next batch
    service = RagService(Settings.load())
    [info] = service.knowledge_bases()
    assert info.name == "default" and info.chunks >= 2
    kb = KnowledgeBase(open_client(app_env), "default", service.embeddings, create=False)
    assert kb.find_sources(hashlib.sha256(ZH_MD).hexdigest()) == {"用户指南.md"}
    assert kb.find_sources(hashlib.sha256(EN_TXT).hexdigest()) == {"notes.txt"}
    # Kept, so that the document can be opened and re-ingested later.
    assert service.source_file("notes.txt").read_bytes() == EN_TXT  # type: ignore[union-attr]


def test_ask_shows_answer_sources_and_saves_the_conversation(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)
    ask(at, QUESTION)

    assert not at.error, texts(at.error)
    [assistant] = assistants(at)
    assert "Fake answer \\[1\\]." in texts(assistant.markdown)
    sources = assistant.expander[0]
    assert sources.label == "Sources"
    labels = [b.label for b in sources.button]
    assert labels[0].startswith("[1] ") and {"[1] 用户指南.md", "[2] notes.txt"} >= set(labels) or len(labels) == 2
    assert "rag-upload-" not in "".join(labels)
    # The turn is saved: a restarted app lists the conversation and continues it.
    at2 = start("conversations")
    assert any(QUESTION in m for m in texts(at2.markdown))
    click(at2, "Continue")
    assert texts(at2.title) == ["Chat"]
    assert len(assistants(at2)) == 1
    goto(at2, "chat")  # AppTest keeps its own idea of the page: follow the app's switch
    assert len(assistants(at2)) == 1
    ask(at2, "And offline?")
    assert len(assistants(at2)) == 2
    [conv] = RagService(Settings.load()).conversations().list()
    assert conv.messages == 4 and conv.knowledge_base == "default"


def test_answer_cannot_fetch_anything(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__FAKE_RESPONSES", f'["{LEAKY}"]')
    at = start()
    upload(at, TWO_FILES)
    ask(at, QUESTION)
    [assistant] = assistants(at)
    shown = assistant.markdown[0].value
    assert "![" not in shown and "](" not in shown
    assert "image: x — http\\://127.0.0.1:9/leak?data" in shown
    assert "here (http\\://127.0.0.1:9/click)" in shown


def test_open_citation_shows_pdf_page_or_passage(app_env: Path) -> None:
    at = start()
    upload(at, [("guide.pdf", GUIDE_PDF.read_bytes(), "application/pdf"), TWO_FILES[1]])
    ask(at, "怎样导入文档？")
    [assistant] = assistants(at)
    pdf_button = next(b for b in assistant.button if b.label.startswith("[1] guide.pdf:"))
    pdf_button.click()
    at.run(timeout=60)
    assert not at.exception
    [image] = at.get("image")
    assert image.proto.imgs[0].url.startswith("/")  # served by this app, never a remote URL
    assert "the cited passage is highlighted" in image.proto.imgs[0].caption


def test_open_text_citation_shows_the_passage_in_its_surroundings(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)
    ask(at, QUESTION)
    [assistant] = assistants(at)
    next(b for b in assistant.button if b.label.startswith("[1] ")).click()
    at.run(timeout=60)
    assert not at.exception
    assert any("the cited passage in its surroundings" in c for c in texts(at.caption))
    highlighted = [m for m in texts(at.markdown) if ":orange-background[" in m]
    assert len(highlighted) == 1
    assert "offline" in highlighted[0] or "离线" in highlighted[0]
    assert not at.get("image")


def test_not_in_the_documents_is_shown_as_such(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETRIEVAL__MODE", "bm25")  # lexical evidence only: nothing matches the question
    at = start()
    upload(at, TWO_FILES)
    ask(at, "Quantum chromodynamics gluon lattice?")
    [assistant] = assistants(at)
    assert any("Not in the documents" in i for i in texts(assistant.info))


def test_regenerate_export_and_new_conversation(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)
    ask(at, QUESTION)
    click(at, "Regenerate")
    assert len(assistants(at)) == 1
    [conv] = RagService(Settings.load()).conversations().list()
    assert conv.messages == 2
    [download] = at.get("download_button")
    assert download.proto.label == "Export (Markdown)"
    click(at, "New conversation")
    assert not at.chat_message


def test_documents_page_lists_deletes_and_reingests(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)
    goto(at, "documents")
    [table] = at.dataframe
    assert set(table.value["Document"]) == {"用户指南.md", "notes.txt"}
    at.selectbox(key="doc_selected_default").set_value("notes.txt").run()
    click(at, "Chunks")
    assert any("Release notes" in e.label for e in at.expander)
    click(at, "Re-ingest")
    assert any("1 file(s) ok" in s for s in texts(at.success))
    at.selectbox(key="doc_selected_default").set_value("notes.txt").run()
    click(at, "Delete")
    assert any("Deleted notes.txt" in s for s in texts(at.success))
    assert set(at.dataframe[0].value["Document"]) == {"用户指南.md"}
    service = RagService(Settings.load())
    assert service.source_file("notes.txt") is None  # the kept file went with it
    ask(at, QUESTION)
    [assistant] = assistants(at)
    assert all("notes.txt" not in b.label for b in assistant.button)


def test_an_answer_cut_off_by_stop_is_kept_as_far_as_it_got(app_env: Path) -> None:
    """Stop (or any click) while an answer streams ends that script run; the next run saves what had arrived,
    marked as stopped. The run is cut here by leaving an answer in flight, as an interrupted run leaves it."""
    from rag_app.ui.chat import KEY_INFLIGHT

    at = start()
    upload(at, TWO_FILES)
    goto(at, "chat")
    at.session_state[KEY_INFLIGHT] = {
        "kb": "default", "question": QUESTION, "text": "The assistant answers from", "sources": [],
    }
    at.run(timeout=60)
    assert not at.exception, at.exception
    [assistant] = assistants(at)
    assert "The assistant answers from" in texts(assistant.markdown)
    assert "(stopped)" in " ".join(texts(assistant.caption))
    [conv] = RagService(Settings.load()).conversations().list()
    assert conv.messages == 2  # saved: the question and the partial answer
    at.run(timeout=60)
    assert len(assistants(at)) == 1  # saved once, not again on the next run


def test_summarize_page_writes_the_summary(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__FAKE_RESPONSES", '["A short summary of the notes."]')
    at = start()
    upload(at, TWO_FILES)
    goto(at, "summarize")
    [pick] = [box for box in at.selectbox if "notes.txt" in box.options]
    pick.set_value("notes.txt").run()
    click(at, "Summarize")
    assert not at.error, texts(at.error)
    assert "A short summary of the notes." in texts(at.markdown)  # the streamed text, ending as the summary
    assert any("model calls" in c for c in texts(at.caption))


def test_delete_knowledge_base_needs_its_name(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)
    goto(at, "documents")
    assert next(b for b in at.button if b.key == "kb_delete").disabled
    at.text_input(key="confirm_delete_default").set_value("default").run()
    next(b for b in at.button if b.key == "kb_delete").click().run()
    assert any("Deleted knowledge base 'default'" in s for s in texts(at.success))
    assert RagService(Settings.load()).knowledge_bases() == []


def test_encrypted_pdf_password_asked_in_the_page(app_env: Path, tmp_path: Path) -> None:
    secret = encrypted_pdf(tmp_path / "secret.pdf", "s3cret").read_bytes()
    at = start()
    upload(at, [("secret.pdf", secret, "application/pdf"), TWO_FILES[1]])
    assert any("secret.pdf" in e and "encrypted" in e for e in texts(at.error))
    field = at.text_input(key="pw_secret.pdf")
    assert field.proto.type == field.proto.PASSWORD  # masked
    field.set_value("s3cret").run()
    click(at, "Ingest with the password")
    assert not at.error, texts(at.error)
    assert "secret.pdf" in {d.source for d in RagService(Settings.load()).documents()}


def test_zip_upload_and_new_knowledge_base(app_env: Path) -> None:
    buf, hostile = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("docs/notes.txt", EN_TXT)
        archive.writestr("docs/用户指南.md", ZH_MD)
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("docs/notes.txt", EN_TXT)
        archive.writestr("../evil.txt", b"escape attempt")
    at = start("upload")
    at.text_input(key="kb_new").set_value("研究资料").run()
    # A zip with a member that climbs out is refused whole, in the words `rag ingest` reports it.
    at.file_uploader[0].set_value([("bundle.zip", hostile.getvalue(), "application/zip")])
    at.run(timeout=60)
    click(at, "Ingest")
    assert "bundle.zip!../evil.txt: unsafe member path" in texts(at.error)[0]
    assert not [p for p in (app_env / "uploads").rglob("*") if p.is_file()]
    at.file_uploader[0].set_value([("bundle.zip", buf.getvalue(), "application/zip")])
    at.run(timeout=60)
    click(at, "Ingest")
    assert "Knowledge base '研究资料'" in texts(at.success)[0]
    sources = {d.source for d in RagService(Settings.load()).documents("研究资料")}
    assert sources == {"bundle/docs/notes.txt", "bundle/docs/用户指南.md"}
    assert not (app_env / "uploads" / "evil.txt").exists()
    assert at.text_input(key="kb_new").value == ""
    goto(at, "chat")
    assert at.sidebar.selectbox(key="kb_chat").value == "研究资料"


def test_search_page_shows_scores_per_mode(app_env: Path) -> None:
    at = start()
    upload(at, TWO_FILES)
    goto(at, "search")
    at.text_input[0].set_value("assistant documents offline")
    at.button[0].click().run() if False else None
    at.get("button")  # form submit buttons are reached through the form
    submit = next(b for b in at.button if b.label == "Search")
    submit.click().run()
    assert not at.exception
    captions = texts(at.caption)
    assert any(c.startswith("Mode: hybrid · vector weight for this question:") for c in captions)
    assert any(c.startswith("fused ") and "vector" in c and "keyword" in c for c in captions)


def test_settings_validated_and_saved(app_env: Path, tmp_path: Path) -> None:
    at = start("settings")
    save = next(b for b in at.button if b.label == "Save settings")
    at.text_input[1].set_value("not-a-number")  # the context window; a form sends its values on submit
    save.click().run()
    assert any("invalid settings" in e and "n_ctx" in e for e in texts(at.error)), texts(at.error)
    assert (tmp_path / "rag_settings.toml").read_text(encoding="utf-8") == ""  # unchanged
    at.text_input[1].set_value("2048")
    at.number_input[0].set_value(3)
    next(b for b in at.button if b.label == "Save settings").click().run()
    assert any("Saved to" in s for s in texts(at.success)), texts(at.error)
    saved = (tmp_path / "rag_settings.toml").read_text(encoding="utf-8")
    assert "n_ctx = 2048" in saved and "k = 3" in saved
    assert Settings.load().retrieval.k == 3
    assert any("rag doctor" in e.label for e in at.expander)


def test_bad_settings_show_error_not_trace(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_PROFILE", "no-such-profile")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run(timeout=60)
    assert not at.exception
    assert "unknown profile 'no-such-profile'" in texts(at.error)[0]


def test_missing_model_file_shows_error(app_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = start()
    upload(at, [("notes.txt", EN_TXT, "text/plain")])
    monkeypatch.setenv("RAG_LLM__BACKEND", "llamacpp")
    monkeypatch.setenv("RAG_LLM__MODEL_PATH", str(tmp_path / "missing.gguf"))
    at = start()
    ask(at, "Anything?")
    errors = texts(at.error)
    assert len(errors) == 1, errors
    assert "missing.gguf" in errors[0]
    assert RagService(Settings.load()).conversations().list() == []  # a failed turn is not history


def test_ask_on_empty_knowledge_base_shows_error(app_env: Path) -> None:
    at = start()
    ask(at, "Is anything here?")
    [error] = texts(at.error)
    assert "no documents have been ingested yet" in error and "Upload page" in error
    assert not assistants(at) or not assistants(at)[0].markdown


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
def test_safe_filename(raw: str, expected: str) -> None:
    from rag_app.uploads import safe_filename

    assert safe_filename(raw) == expected


def test_unique_names_and_long_names() -> None:
    from rag_app.uploads import MAX_NAME_BYTES, safe_filename, unique_names

    assert unique_names(["a.txt", "x/a.txt", "A.txt", "b.md"]) == ["a.txt", "a (2).txt", "A (3).txt", "b.md"]
    name = safe_filename("长" * 200 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= MAX_NAME_BYTES


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("![x](http://h/leak?d)", "\\[image: x — http\\://h/leak?d\\]"),
        ('[a](http://e.com "t") [1]', "a (http\\://e.com) \\[1\\]"),
        ("<img src=http://h/x>", "\\<img src=http\\://h/x\\>"),
        ("<http://h/x> www.h.com", "http\\://h/x www\\.h.com"),
        ("costs $5 and $6", "costs \\$5 and \\$6"),
        ("**bold** and `![c](d)` stay", "**bold** and `![c](d)` stay"),
        ("1. 第一\n2. 第二", "1. 第一\n2. 第二"),
    ],
)
def test_safe_markdown(text: str, shown: str) -> None:
    from rag_app.ui.render import safe_markdown

    assert safe_markdown(text) == shown


def test_escape_markdown_shows_document_text_literally() -> None:
    from rag_app.ui.render import escape_markdown

    assert escape_markdown("a_b $5 *now* ![x](y)") == "a\\_b \\$5 \\*now\\* \\!\\[x\\]\\(y\\)"


def test_conversation_store_survives_reopening(tmp_path: Path) -> None:
    from rag_app.conversations import ConversationStore, Turn

    store = ConversationStore(tmp_path)
    conv = store.create("研究资料", "  What   is\nthis?  ")
    store.append(conv.id, [Turn("user", "What is this?"), Turn("assistant", "答案 [1]", {"sources": [{"index": 1}]})])
    other = store.create("default", "x" * 200)
    assert len(other.title) == 80 and other.title.endswith("…")
    again = ConversationStore(tmp_path)
    [listed] = again.list("研究资料")
    assert listed.title == "What is this?" and listed.messages == 2
    assert again.messages(conv.id)[1].extra == {"sources": [{"index": 1}]}
    again.rename(conv.id, "新标题")
    again.truncate(conv.id, 1)
    assert [c.title for c in again.list("研究资料")] == ["新标题"]
    assert len(again.messages(conv.id)) == 1
    assert again.delete_knowledge_base("研究资料") == 1
    again.delete(other.id)
    assert again.list() == []


def test_to_toml_round_trips() -> None:
    import tomllib

    from rag_app.settings import to_toml

    data = {"profile": "fake", "data_dir": "/数据", "llm": {"n_ctx": 2048, "system_prompt": '说 "hi"\n'},
            "retrieval": {"k": 3, "context_budget": 0.25, "answerable_thresholds": {"zh": {"lexical": 0.5}}}}
    assert tomllib.loads(to_toml(data)) == data


def test_find_span_tolerates_whitespace_and_normalisation() -> None:
    from rag_app.preview import find_span

    page = "本地文档问答 用户指南\r\n这是什么\r\n本应用是一个私有、本地的\r\n文档问答工具。后面"
    start, end = find_span(page, "本应用是一个私有、本地的文档问答工具。")  # type: ignore[misc]
    assert page[start:end] == "本应用是一个私有、本地的\r\n文档问答工具。"
    assert find_span(page, "完全不同的内容") is None


def test_language_follows_the_browser() -> None:
    from rag_app.ui.i18n import STRINGS, language_from

    assert language_from("zh-CN") == "zh" and language_from(None, "zh-TW,zh;q=0.9") == "zh"
    assert language_from("en-US") == "en" and language_from(None, None) == "en"
    assert all(en and zh for en, zh in STRINGS.values())


def test_progress_state_with_eta() -> None:
    from ingest.pipeline import ProgressEvent
    from rag_app.ui.upload import progress_state

    fraction, text = progress_state(ProgressEvent("file", 1, 4, 3, "a.txt", eta_seconds=12.4))
    assert fraction == 0.25 and text == "1/4 files — a.txt (3 chunks) · about 12 s left"
    assert progress_state(ProgressEvent("done", 4, 4), "zh") == (1.0, "完成")


def test_conversation_markdown_export() -> None:
    from rag_app.conversations import Turn
    from rag_app.ui.chat import chat_history, conversation_markdown

    turns = [
        Turn("user", "q1"),
        Turn("assistant", "a1 [1]", {"sources": [{"index": 1, "label": "f.pdf:2", "snippet": "s", "cited": True},
                                                 {"index": 2, "label": "g.md", "snippet": "t"}]}),
    ]
    text = conversation_markdown("T", "kb", turns)
    assert "## Q: q1" in text and "- [1] f.pdf:2: s" in text and "- [2] g.md (retrieved, not cited): t" in text
    assert chat_history(turns) == [("q1", "a1 [1]")]
