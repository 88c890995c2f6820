"""Conversations: every saved chat, with its knowledge base; continue, rename or delete one."""

from __future__ import annotations

import streamlit as st

from rag_app.ui.common import KEY_KB, header, service, t
from rag_app.ui.render import escape_markdown


def page() -> None:
    from rag_app.ui.chat import KEY_CONV

    header("page_conversations")
    svc = service()
    store = svc.conversations()
    convs = store.list()
    kbs = sorted({c.knowledge_base for c in convs})
    scope = st.selectbox(t("knowledge_base"), [None, *kbs], format_func=lambda k: t("all_kbs") if k is None else k)
    shown = [c for c in convs if scope is None or c.knowledge_base == scope]
    if not shown:
        st.info(t("conversations_none"))
        return
    for conv in shown:
        with st.container(border=True):
            st.markdown(f"**{escape_markdown(conv.title)}**")
            st.caption(f"{conv.knowledge_base} · {conv.updated_at} · {t('messages_n', n=conv.messages)}")
            cols = st.columns([1, 2, 1, 1])
            if cols[0].button(t("continue"), key=f"open_{conv.id}", type="primary"):
                st.session_state[KEY_CONV] = conv.id
                st.session_state[KEY_KB] = conv.knowledge_base
                from rag_app.ui.app import page_of

                st.switch_page(page_of("chat"))
            title = cols[1].text_input(t("title"), value=conv.title, key=f"title_{conv.id}", label_visibility="collapsed")
            if cols[2].button(t("rename"), key=f"rename_{conv.id}", disabled=title.strip() in ("", conv.title)):
                store.rename(conv.id, title)
                st.rerun()
            if cols[3].button(t("delete"), key=f"delete_{conv.id}"):
                store.delete(conv.id)
                if st.session_state.get(KEY_CONV) == conv.id:
                    st.session_state.pop(KEY_CONV)
                st.rerun()


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
