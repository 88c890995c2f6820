"""Summarize: pick a document, get its summary (map-reduce or refine, as ``rag summarize``) with progress."""

from __future__ import annotations

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import friendly, header, kb_picker, service, t
from rag_app.ui.render import safe_markdown


def page() -> None:
    header("page_summarize")
    svc = service()
    kb = kb_picker(svc, "summarize")
    try:
        kept = [r.source for r in svc.documents(kb) if svc.source_file(r.source, kb) is not None]
    except RagError:
        kept = []
    if not kept:
        st.info(t("summarize_none"))
        return
    source = st.selectbox(t("summarize_doc"), kept)
    method = st.radio(t("summarize_method"), ["map_reduce", "refine"], horizontal=True)
    if not st.button(t("summarize_run"), type="primary"):
        return
    path = svc.source_file(source, kb)
    assert path is not None
    bar = st.progress(0.0, text=t("summarize_progress", done=0, total="?"))

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 0.0, text=t("summarize_progress", done=done, total=total))

    writing = st.empty()  # the summary (or the step under way) as the model writes it

    def stream(text: str) -> None:
        writing.markdown(safe_markdown(text) + " ▌")

    try:
        summary = svc.summarize(path, method=method, progress=progress, on_text=stream)
    except RagError as exc:
        bar.empty()
        writing.empty()
        st.error(friendly(exc))
        return
    bar.progress(1.0, text=t("done"))
    writing.markdown(safe_markdown(summary.text))
    st.caption(f"{summary.method}: {summary.pieces} pieces, {summary.calls} model calls")


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
