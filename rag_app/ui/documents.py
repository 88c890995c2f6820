"""Documents: every document of a knowledge base with pages, chunks, size, date, status and warnings;
delete, re-ingest or open one; browse its chunks; delete the knowledge base (after typing its name)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import friendly, header, kb_picker, service, t
from rag_app.ui.render import escape_markdown

if TYPE_CHECKING:
    from ingest.manifest import DocumentRecord
    from rag_app.service import RagService

KEY_DOC = "doc_selected"
KEY_FLASH = "documents_flash"


def human_size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def document_rows(svc: RagService, kb: str, records: list[DocumentRecord]) -> list[dict[str, Any]]:
    """One table row per document (what the page lists)."""
    rows = []
    for rec in records:
        path = svc.source_file(rec.source, kb)
        status = t("status_alias", of=rec.alias_of) if rec.alias_of else t("status_complete")
        rows.append({
            t("col_document"): rec.source,
            t("col_pages"): str(rec.pages) if rec.pages else "—",
            t("col_chunks"): rec.chunks,
            t("col_size"): human_size(path.stat().st_size if path else None),
            t("col_date"): rec.ingested_at.replace("T", " ")[:16],
            t("col_status"): status if path or rec.alias_of else f"{status} ({t('not_kept')})",
            t("col_warnings"): "; ".join(rec.warnings),
        })
    return rows


def _chunk_browser(svc: RagService, kb: str, source: str) -> None:
    st.subheader(t("chunk_browser", source=source))
    try:
        chunks = svc.chunks(source, kb)
    except RagError as exc:
        st.error(friendly(exc))
        return
    for chunk in chunks:
        page = f" · p. {chunk['page']}" if chunk.get("page") else ""
        heading = f" · {chunk['heading']}" if chunk.get("heading") else ""
        with st.expander(f"#{chunk['index']}{page}{escape_markdown(heading)} — " + escape_markdown(chunk["text"][:60])):
            st.markdown(escape_markdown(chunk["text"]))


def _open(svc: RagService, kb: str, source: str) -> None:
    """The document itself: its first PDF page as an image, else its text."""
    try:
        png = svc.page_image(source, 1, None, kb) if source.lower().endswith(".pdf") else None
    except RagError as exc:
        st.info(friendly(exc))
        png = None
    if png:
        st.image(png, caption=f"{source}, page 1")
    else:
        text = "\n\n".join(c["text"] for c in svc.chunks(source, kb)[:20])
        st.markdown(escape_markdown(text))


def page() -> None:
    header("page_documents")
    svc = service()
    kb = kb_picker(svc, "documents")
    flash = st.session_state.pop(KEY_FLASH, None)
    if flash:
        st.success(flash)
    try:
        records = svc.documents(kb)
    except RagError as exc:
        st.info(friendly(exc))
        records = []
    if not records:
        st.info(t("documents_none"))
    else:
        st.dataframe(document_rows(svc, kb, records), hide_index=True, width="stretch")
        sources = [r.source for r in records]
        source = st.selectbox(t("document_pick"), sources, key=f"{KEY_DOC}_{kb}")
        cols = st.columns(4)
        action = None
        if cols[0].button(t("open_source"), key="doc_open"):
            action = "open"
        if cols[1].button(t("col_chunks"), key="doc_chunks"):
            action = "chunks"
        if cols[2].button(t("reingest"), key="doc_reingest", disabled=svc.source_file(source, kb) is None):
            try:
                report = svc.reingest([source], kb)
                st.session_state[KEY_FLASH] = t("report_summary", kb=kb, summary=report.summary())
                st.rerun()
            except RagError as exc:
                st.error(friendly(exc))
        if cols[3].button(t("delete"), key="doc_delete", type="primary"):
            try:
                removal = svc.delete_documents([source], kb)
                st.session_state[KEY_FLASH] = t("deleted_doc", source=source, chunks=removal.chunks_removed)
                st.rerun()
            except RagError as exc:
                st.error(friendly(exc))
        if action == "open":
            _open(svc, kb, source)
        elif action == "chunks":
            _chunk_browser(svc, kb, source)

    st.divider()
    with st.expander(t("delete_kb"), icon=":material/delete:"):
        typed = st.text_input(t("delete_kb_confirm", kb=kb), key=f"confirm_delete_{kb}")
        if st.button(t("delete_kb"), key="kb_delete", disabled=typed.strip() != kb, type="primary"):
            try:
                chunks = svc.delete_knowledge_base(kb)
            except RagError as exc:
                st.error(friendly(exc))
            else:
                st.session_state[KEY_FLASH] = t("deleted_kb", kb=kb, chunks=chunks)
                st.rerun()


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
