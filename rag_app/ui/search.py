"""Search (a hit test): retrieval alone, each result's score per mode and the calibrated vector weight —
to see why an answer cited what it cited."""

from __future__ import annotations

from typing import Any

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import friendly, header, kb_picker, service, t
from rag_app.ui.render import escape_markdown


def _num(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3f}"


def score_line(result: dict[str, Any]) -> str:
    return t(
        "score_line", score=_num(result["score"]), vector=_num(result["vector"]),
        keyword=_num(result["keyword"]), coverage=_num(result["coverage"]),
    )


def page() -> None:
    header("page_search")
    svc = service()
    kb = kb_picker(svc, "search")
    with st.form("search"):
        query = st.text_input(t("search_query"))
        go = st.form_submit_button(t("search_run"), type="primary")
    if not (go and query.strip()):
        return
    try:
        found = svc.search(query.strip(), kb)
    except RagError as exc:
        st.error(friendly(exc))
        return
    weight = found["vector_weight"]
    st.caption(t("search_weight", mode=found["mode"], weight="—" if weight is None else f"{weight:.2f}"))
    if not found["answerable"]:
        st.warning(t("search_unanswerable"))
    if not found["results"]:
        st.info(t("search_none"))
    for result in found["results"]:
        with st.container(border=True):
            where = str(result["label"]) + (f" — {result['heading']}" if result.get("heading") else "")
            st.markdown(f"**{result['rank']}. {escape_markdown(where)}**")
            st.caption(score_line(result))
            st.markdown(escape_markdown(result["text"]))


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
