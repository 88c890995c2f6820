"""Upload: several files or a whole zip into a knowledge base, with per-file progress, an ETA, the per-file
report, and a password field right there for each encrypted PDF."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import streamlit as st

from rag_app.errors import KnowledgeBaseNameError, RagError, as_disk_full
from rag_app.ui.common import KEY_KB, friendly, header, kb_picker, service, t, uploader_in_language
from rag_app.ui.render import escape_markdown

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport, ProgressEvent
    from rag_app.service import RagService

KEY_REPORT = "last_report"
KEY_UPLOADER_GEN = "uploader_generation"
KEY_NEW_KB = "kb_new"
STATUS_ICONS = {
    "added": ":material/check:", "replaced": ":material/check:", "unchanged": ":material/remove:",
    "duplicate": ":material/remove:", "skipped": ":material/warning:", "failed": ":material/close:",
}  # Material icons ship with Streamlit (no emoji font needed)


def progress_state(event: ProgressEvent, lang: str = "en") -> tuple[float, str]:
    """Progress-bar fraction and text for one pipeline event (files done, the current file, the ETA)."""
    from rag_app.ui.i18n import translate

    total = event.files_total
    fraction = min(1.0, event.files_done / total) if total else 0.0
    if event.stage == "waiting":
        return fraction, event.message or translate(lang, "waiting")
    if event.stage == "done":
        return 1.0, translate(lang, "done")
    text = translate(lang, "progress", done=event.files_done, total=total)
    if event.current:
        text += f" — {event.current}"
    if event.chunks_done:
        text += f" ({event.chunks_done} chunks)"
    if event.eta_seconds is not None and event.files_done < total:
        text += " · " + translate(lang, "eta", s=f"{event.eta_seconds:.0f}")
    return fraction, text


def new_kb_name_error(svc: RagService, name: str) -> KnowledgeBaseNameError | None:
    """Why the name typed for a new knowledge base breaks the one rule (:mod:`rag_app.names`), said under the
    field before anything is uploaded; ``None`` for a good name, an empty field, or one that exists already."""
    from rag_app.names import name_problem

    problem = name_problem(name) if name else None
    if problem is None or name in {info.name for info in svc.knowledge_bases()}:
        return None
    return KnowledgeBaseNameError(problem)


def format_list(extensions: list[str]) -> str:
    return ", ".join(extensions)


def _run(svc: RagService, kb: str, action: Any) -> None:
    from rag_app.ui.common import lang

    bar = st.progress(0.0, text=t("loading_embedder"))
    done_box = st.empty()
    done: list[str] = []

    def on_progress(event: ProgressEvent) -> None:
        fraction, text = progress_state(event, lang())
        bar.progress(fraction, text=text)
        if event.stage == "file" and event.current and event.current not in done:
            done.append(event.current)
            done_box.caption(" · ".join(escape_markdown(d) for d in done[-12:]))

    try:
        report = action(on_progress)
    except RagError as exc:
        bar.empty()
        st.error(friendly(exc))
        return
    except OSError as exc:  # keeping the uploaded files themselves can meet a full disk
        if (full := as_disk_full(exc)) is None:
            raise
        bar.empty()
        st.error(friendly(full))
        return
    st.session_state[KEY_REPORT] = report
    st.session_state[KEY_KB] = report.knowledge_base
    st.session_state[KEY_NEW_KB + "_reset"] = True  # a drawn widget's value may only change before it is drawn
    st.session_state[KEY_UPLOADER_GEN] = st.session_state.get(KEY_UPLOADER_GEN, 0) + 1  # empties the uploader
    st.rerun()


def render_report(svc: RagService, report: IngestReport) -> None:
    """Summary first, then each file with its status; an encrypted PDF gets a password field."""
    from rag_app.service import needs_password

    summary = t("report_summary", kb=report.knowledge_base, summary=report.summary())
    (st.warning if report.failed else st.success)(summary)
    for item in report.files:
        icon = STATUS_ICONS.get(item.status, "")
        detail = f"{item.chunks} chunks" + (f", {item.pages} pages" if item.pages else "")
        line = f"{icon} **{t(item.status)}** — {escape_markdown(item.path)} ({detail})"
        locked = needs_password(item)
        if item.status in ("failed", "skipped"):
            # An encrypted PDF's reason ends with the CLI's hint; here the fix is the field below it.
            reason = item.reason.split(" — ")[0] if locked else item.reason
            (st.error if item.status == "failed" else st.warning)(f"{t(item.status)}: {reason}")
        elif item.status == "duplicate":
            st.info(f"{t('duplicate')}: {item.path}: {item.reason}")
        else:
            st.markdown(line)
        for warning in item.warnings:
            st.warning(f"{item.path}: {warning}")
        if locked:
            name = PurePosixPath(item.path).name
            st.info(t("needs_password", name=item.path), icon=":material/lock:")
            password = st.text_input(t("password_for", name=item.path), type="password", key=f"pw_{item.path}")
            if st.button(t("retry_password"), key=f"pw_go_{item.path}", disabled=not password):
                kb = report.knowledge_base
                _run(svc, kb, lambda cb: svc.reingest([item.path], kb, passwords={name: password}, progress=cb))


def page() -> None:
    header("page_upload")
    svc = service()
    if st.session_state.pop(KEY_NEW_KB + "_reset", False):
        st.session_state[KEY_NEW_KB] = ""
    kb = kb_picker(svc, "upload", label=t("upload_target"))
    new_name = st.text_input(t("new_kb"), key=KEY_NEW_KB, placeholder=t("new_kb_placeholder")).strip()
    bad_name = new_kb_name_error(svc, new_name)
    if bad_name is not None:
        st.error(friendly(bad_name))
    target = new_name or kb
    formats = format_list([e for e in svc.supported_extensions() if e != ".zip"])  # a zip is unpacked here
    generation: int = st.session_state.setdefault(KEY_UPLOADER_GEN, 0)
    uploader_in_language()
    files = st.file_uploader(t("formats", formats=formats), accept_multiple_files=True, key=f"uploader_{generation}")
    if st.button(t("ingest"), disabled=not files or bad_name is not None, type="primary"):
        uploads = [(f.name, f.getvalue()) for f in files or []]
        _run(svc, target, lambda cb: svc.ingest_uploads(uploads, knowledge_base=target, progress=cb))
    report = st.session_state.get(KEY_REPORT)
    if report is not None:
        render_report(svc, report)


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
