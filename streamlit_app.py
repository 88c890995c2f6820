"""Streamlit face of the app: upload documents into a knowledge base, then chat with them.

A thin face over :class:`rag_app.service.RagService`, like ``rag_app.cli``: no pipeline logic lives here.
Run with ``streamlit run streamlit_app.py``; settings come from ``Settings.load()`` (``RAG_…`` environment
variables, ``RAG_PROFILE``, ``rag_settings.toml``). Nothing is read or loaded at import, so the helpers
below can be imported and tested without a running app.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

import streamlit as st

from rag_app.errors import EmptyKnowledgeBaseError, KnowledgeBaseNotFoundError, RagError
from rag_app.settings import Settings

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport, ProgressEvent
    from rag_app.service import RagService

TITLE = "Private document Q&A"
ALSO_RETRIEVED = "Also retrieved (not cited in the answer):"
UPLOAD_FALLBACK_NAME = "upload"
MAX_NAME_BYTES = 200  # below every common file system's 255-byte limit, with room for " (2)"

# Session-state keys (one place, so a typo cannot create a second, silent state).
KEY_SETTINGS = "settings"
KEY_CONVERSATIONS = "conversations"
KEY_REPORT = "last_report"
KEY_UPLOADER_GEN = "uploader_generation"
KEY_KB_SELECT = "kb_select"
KEY_KB_NEW = "kb_new"
KEY_KB_PENDING = "kb_pending"

# The library's hints name CLI commands; in the app the same fix is done in the sidebar.
APP_HINTS: dict[type[RagError], str] = {
    EmptyKnowledgeBaseError: "upload documents in the sidebar and press Ingest first",
    KnowledgeBaseNotFoundError: "pick an existing knowledge base in the sidebar, or ingest documents into it",
}


class Uploaded(Protocol):
    """What the ingest helper needs from an upload (Streamlit's ``UploadedFile`` fits)."""

    name: str

    def getvalue(self) -> bytes: ...


class Message(TypedDict):
    """One chat turn as kept in the session: assistant turns keep their sources (marked ``cited``) and the
    support check's notice when the answer is poorly supported."""

    role: str
    content: str
    sources: list[dict[str, Any]]
    notice: NotRequired[str | None]


# --- helpers (no Streamlit calls: unit-testable) ------------------------------------------------


def friendly(exc: RagError) -> str:
    """One line for the user: the error and what to do about it *in this app*."""
    for cls, hint in APP_HINTS.items():
        if isinstance(exc, cls):
            return f"{exc} — {hint}"
    return exc.friendly()


def safe_filename(name: str) -> str:
    """The last path component of an uploaded name, so a crafted name cannot escape the temp folder."""
    base = name.replace("\\", "/").split("/")[-1]
    base = "".join(ch for ch in base if ch >= " " and ch != "\x7f").strip()
    if base in ("", ".", ".."):
        return UPLOAD_FALLBACK_NAME
    if len(base.encode("utf-8")) > MAX_NAME_BYTES:
        suffix = Path(base).suffix
        suffix = suffix if len(suffix.encode("utf-8")) <= 16 else ""
        stem = base[: len(base) - len(suffix)] if suffix else base
        while len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
            stem = stem[:-1]
        base = stem + suffix
    return base


def unique_names(names: Sequence[str]) -> list[str]:
    """Sanitized names, with ``name (2).ext`` for repeats, so no upload overwrites another."""
    out: list[str] = []
    taken: set[str] = set()
    for raw in names:
        name = safe_filename(raw)
        candidate, n = name, 1
        while candidate.lower() in taken:
            n += 1
            path = Path(name)
            candidate = f"{path.stem} ({n}){path.suffix}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def ingest_uploads(
    service: RagService,
    files: Sequence[Uploaded],
    knowledge_base: str,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> IngestReport:
    """Write uploads to a temporary folder under their own names and ingest them.

    The files themselves (not the folder) are passed to the service, so each chunk's stored ``source``
    is the uploaded file's name, not a temporary path that means nothing later.
    """
    with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
        folder = Path(tmp)
        paths: list[Path] = []
        for upload, name in zip(files, unique_names([f.name for f in files]), strict=True):
            path = folder / name
            path.write_bytes(upload.getvalue())
            paths.append(path)
        return service.ingest(paths, knowledge_base=knowledge_base, progress=progress)


def progress_state(event: ProgressEvent) -> tuple[float, str]:
    """Progress-bar fraction and text for one pipeline event."""
    total = event.files_total
    fraction = min(1.0, event.files_done / total) if total else 0.0
    if event.stage == "waiting":
        return fraction, event.message or "Waiting for another ingestion to finish…"
    if event.stage == "done":
        return 1.0, "Done"
    text = f"{event.files_done}/{total} files"
    if event.current:
        text += f" — {event.current}"
    if event.chunks_done:
        text += f" ({event.chunks_done} chunks embedded)"
    return fraction, text


def chat_history(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """(question, answer) pairs for the chain, from the alternating user/assistant transcript."""
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for msg in messages:
        if msg["role"] == "user":
            pending = msg["content"]
        elif msg["role"] == "assistant" and pending is not None:
            pairs.append((pending, msg["content"]))
            pending = None
    return pairs


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$#])")


def escape_markdown(text: str) -> str:
    """Show document text literally: a snippet's ``*`` or ``$`` must not turn into markup or LaTeX."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def source_line(src: dict[str, Any]) -> str:
    """``[index] label — snippet``, the same shape the CLI prints."""
    return f"**[{src['index']}]** {escape_markdown(str(src['label']))} — {escape_markdown(str(src['snippet']))}"


def with_name(path: str, reason: str) -> str:
    """Make sure a per-file message names the file (the pipeline's reasons usually already do)."""
    return reason if reason.startswith(path) else f"{path}: {reason}"


# --- Streamlit parts ------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def get_service(settings_key: str, _settings: Settings) -> RagService:
    """One service (and so one copy of each model) per process and distinct settings."""
    from rag_app.service import RagService

    return RagService(_settings)


def load_settings() -> Settings:
    """Settings built once per browser session, at the first script run (never at import)."""
    if KEY_SETTINGS not in st.session_state:
        st.session_state[KEY_SETTINGS] = Settings.load()
    settings: Settings = st.session_state[KEY_SETTINGS]
    return settings


def conversation(kb: str) -> list[Message]:
    """The transcript of one knowledge base: switching knowledge bases must not mix histories."""
    conversations: dict[str, list[Message]] = st.session_state.setdefault(KEY_CONVERSATIONS, {})
    return conversations.setdefault(kb, [])


def render_sources(sources: Sequence[dict[str, Any]]) -> None:
    """The sources the answer cites first, then the ones only retrieved, under their own heading."""
    from rag_app.support import split_sources

    if not sources:
        return
    cited, others = split_sources(sources)
    with st.expander("Sources"):
        for src in cited:
            st.markdown(source_line(src))
        if others:
            st.caption(ALSO_RETRIEVED)
        for src in others:
            st.markdown(source_line(src))


def render_notice(notice: str | None) -> None:
    """The support check's warning under an answer that its sources hardly back."""
    if notice:
        st.warning(notice, icon="⚠️")


def render_report(report: IngestReport) -> None:
    """Summary first, then every file that needs the user's attention, by name."""
    summary = f"Knowledge base '{report.knowledge_base}': {report.summary()}"
    (st.warning if report.failed else st.success)(summary)
    for item in report.files:
        if item.status == "failed":
            st.error(f"Failed: {with_name(item.path, item.reason)}")
        elif item.status == "skipped":
            st.warning(f"Skipped: {with_name(item.path, item.reason)}")
        elif item.status == "duplicate":
            st.info(f"Duplicate: {with_name(item.path, item.reason)}")
        for warning in item.warnings:
            st.warning(f"{item.path}: {warning}")


def sidebar(service: RagService) -> str:
    """Knowledge-base choice and document upload; returns the selected knowledge base."""
    settings = service.settings
    # A knowledge base created by the last ingestion becomes the selection; widget state may only be
    # changed before the widgets are drawn, hence the hand-over through a pending key.
    pending = st.session_state.pop(KEY_KB_PENDING, None)
    if pending:
        st.session_state[KEY_KB_SELECT] = pending
        st.session_state[KEY_KB_NEW] = ""

    with st.sidebar:
        st.header("Knowledge base")
        try:
            counts = {kb.name: kb.chunks for kb in service.knowledge_bases()}
        except RagError as exc:
            st.error(friendly(exc))
            counts = {}
        options = sorted(set(counts) | {settings.knowledge_base})
        if st.session_state.get(KEY_KB_SELECT) not in options:
            st.session_state[KEY_KB_SELECT] = settings.knowledge_base
        selected: str = st.selectbox(
            "Knowledge base",
            options,
            key=KEY_KB_SELECT,
            format_func=lambda name: f"{name} ({counts[name]} chunks)" if name in counts else f"{name} (empty)",
        )
        new_name = st.text_input(
            "…or a new one", key=KEY_KB_NEW, placeholder="name of a new knowledge base"
        ).strip()
        kb = new_name or selected
        if new_name and new_name not in counts:
            st.caption(f"'{new_name}' is created when you ingest documents into it.")

        st.header("Add documents")
        generation: int = st.session_state.setdefault(KEY_UPLOADER_GEN, 0)
        files = st.file_uploader(
            "Documents (.txt, .md, .pdf)",
            accept_multiple_files=True,
            key=f"uploader_{generation}",
        )
        if st.button("Ingest", disabled=not files, type="primary", width="stretch"):
            run_ingest(service, list(files or []), kb)

        report: IngestReport | None = st.session_state.get(KEY_REPORT)
        if report is not None:
            render_report(report)

        st.divider()
        if st.button("Clear conversation", width="stretch"):
            conversation(kb).clear()
    return kb


def run_ingest(service: RagService, files: list[Any], kb: str) -> None:
    """Ingest with a live progress bar, keep the report for later runs, then start clean."""
    bar = st.progress(0.0, text="Loading the embedding model…")

    def on_progress(event: ProgressEvent) -> None:
        fraction, text = progress_state(event)
        bar.progress(fraction, text=text)

    try:
        report = ingest_uploads(service, files, kb, on_progress)
    except RagError as exc:
        bar.empty()
        st.error(friendly(exc))
        return
    st.session_state[KEY_REPORT] = report
    st.session_state[KEY_KB_PENDING] = report.knowledge_base
    st.session_state[KEY_UPLOADER_GEN] = st.session_state.get(KEY_UPLOADER_GEN, 0) + 1  # empties the uploader
    st.rerun()


def render_history(messages: Sequence[Message]) -> None:
    for msg in messages:
        with st.chat_message(msg["role"]):
            st.markdown(msg["content"])
            if msg["role"] == "assistant":
                render_notice(msg.get("notice"))
                render_sources(msg["sources"])


def answer(service: RagService, kb: str, question: str, messages: list[Message]) -> None:
    """Stream the answer to ``question`` and record the turn; a RagError becomes one red line."""
    from rag_app.support import mark_cited

    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        sources: list[dict[str, Any]] = []
        grounding: dict[str, Any] = {"cited": [], "notice": None}

        def pieces(stream: Iterator[dict[str, Any]]) -> Iterator[str]:
            for chunk in stream:
                if "sources" in chunk:
                    sources[:] = chunk["sources"]
                if chunk.get("answer"):
                    yield str(chunk["answer"])
                if "grounding" in chunk:
                    grounding.update(chunk["grounding"])

        try:
            service.check_answerable(kb)
            with st.spinner("Loading models…"):
                chain = service.chain(kb)
            stream = chain.stream({"question": question, "chat_history": chat_history(messages)})
            written = st.write_stream(pieces(stream))
        except RagError as exc:
            st.error(friendly(exc))
            return
        text = written if isinstance(written, str) else "".join(str(part) for part in written)
        marked = mark_cited(sources, grounding["cited"])
        render_notice(grounding["notice"])
        render_sources(marked)
    messages.append(Message(role="user", content=question, sources=[]))
    messages.append(Message(role="assistant", content=text.strip(), sources=marked, notice=grounding["notice"]))


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon="📄", layout="wide")
    st.title(TITLE)
    try:
        settings = load_settings()
    except RagError as exc:
        st.error(friendly(exc))
        st.stop()
    service = get_service(settings.model_dump_json(), settings)
    if settings.llm.backend == "fake":
        st.caption("Demo mode: fake models, canned answers (profile 'fake').")

    kb = sidebar(service)
    messages = conversation(kb)
    render_history(messages)
    question = st.chat_input(f"Ask a question about '{kb}'")
    if question and question.strip():
        answer(service, kb, question.strip(), messages)


if __name__ == "__main__":
    main()
