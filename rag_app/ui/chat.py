"""Chat: ask a knowledge base, watch the answer stream in, open what it cites.

Every turn is saved in the conversation store as it completes (a stopped answer too, marked as such), so a
reload or a restart finds the conversation where it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import KEY_KB, friendly, header, kb_picker, service, t
from rag_app.ui.render import escape_markdown, safe_markdown

if TYPE_CHECKING:
    from rag_app.conversations import Turn
    from rag_app.service import RagService

KEY_CONV = "conversation_id"
KEY_INFLIGHT = "inflight_answer"
KEY_PENDING = "pending_question"
KEY_OPEN = "open_source"
#: A passage kept with its citation, for highlighting; a whole document sent to the model is cut here.
PASSAGE_CHARS = 4000
CONTEXT_CHARS = 600


# --- helpers (no Streamlit calls: unit-testable) ------------------------------------------------


def chat_history(turns: Sequence[Turn]) -> list[tuple[str, str]]:
    """(question, answer) pairs for the chain, from the alternating user/assistant transcript."""
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for turn in turns:
        if turn.role == "user":
            pending = turn.content
        elif turn.role == "assistant" and pending is not None:
            pairs.append((pending, turn.content))
            pending = None
    return pairs


def source_entries(sources: Sequence[dict[str, Any]], context: Sequence[Any], cited: Sequence[int]) -> list[dict[str, Any]]:
    """The sources as an answer keeps them: marked ``cited``, each with its passage and chunk range (from the
    context the model saw), so a citation can be opened later without asking the retriever again."""
    from rag_app.support import mark_cited

    out = []
    for src in mark_cited(sources, cited):
        keys = ("index", "source", "file_name", "page", "label", "snippet", "score", "cited", "chunk_start", "chunk_end")
        entry = {k: src.get(k) for k in keys}
        i = int(src["index"]) - 1
        if 0 <= i < len(context):  # locally the passage itself is at hand (through a server: its chunk range)
            entry["passage"] = context[i].page_content[:PASSAGE_CHARS]
        out.append(entry)
    return out


def conversation_markdown(title: str, knowledge_base: str, turns: Sequence[Turn]) -> str:
    """A conversation as a Markdown file: questions, answers, and each answer's sources."""
    lines = [f"# {title}", "", f"Knowledge base: {knowledge_base}", ""]
    for turn in turns:
        if turn.role == "user":
            lines += [f"## Q: {turn.content}", ""]
            continue
        lines += [turn.content, ""]
        for src in turn.extra.get("sources", []):
            mark = "" if src.get("cited") else " (retrieved, not cited)"
            lines.append(f"- [{src['index']}] {src['label']}{mark}: {src.get('snippet', '')}")
        lines.append("")
    return "\n".join(lines)


# --- Streamlit parts ------------------------------------------------------------------------------


def _conversation(svc: RagService, kb: str) -> tuple[str | None, list[Turn]]:
    """The open conversation (if it belongs to ``kb``) and its turns."""
    conv_id = st.session_state.get(KEY_CONV)
    if not conv_id:
        return None, []
    store = svc.conversations()
    try:
        conv = store.get(conv_id)
    except RagError:
        st.session_state.pop(KEY_CONV, None)
        return None, []
    if conv.knowledge_base != kb:
        st.session_state.pop(KEY_CONV, None)
        return None, []
    return conv_id, store.messages(conv_id)


def _save_turn(svc: RagService, kb: str, question: str, answer: str, extra: dict[str, Any]) -> None:
    from rag_app.conversations import Turn

    store = svc.conversations()
    conv_id = st.session_state.get(KEY_CONV)
    if not conv_id:
        conv_id = store.create(kb, question).id
        st.session_state[KEY_CONV] = conv_id
    store.append(conv_id, [Turn("user", question), Turn("assistant", answer, extra)])


def _finish_interrupted(svc: RagService) -> None:
    """An answer cut off by Stop (or any click while it streamed) is saved as far as it got."""
    inflight = st.session_state.pop(KEY_INFLIGHT, None)
    if inflight and inflight.get("text", "").strip():
        extra = {"sources": inflight["sources"], "stopped": True}
        _save_turn(svc, inflight["kb"], inflight["question"], inflight["text"].strip(), extra)


def render_viewer(svc: RagService, kb: str, src: dict[str, Any]) -> None:
    """A cited source opened: its PDF page with the passage highlighted, or the passage in its text."""
    source, page, passage = str(src["source"]), src.get("page"), src.get("passage")
    try:
        png = svc.page_image(source, int(page), passage, kb) if page else None
        if png:
            st.image(png, caption=t("page_of", source=source, page=page))
            return
        if src.get("chunk_start") is None:
            st.markdown(escape_markdown(passage or src.get("snippet", "")))
            return
        before, text, after = svc.passage_context(source, int(src["chunk_start"]), src.get("chunk_end"), kb)
    except RagError as exc:
        st.info(f"{t('no_preview')} ({friendly(exc)})")
        return
    st.caption(t("passage_in_context", source=source))
    highlighted = " ".join(escape_markdown(passage or text).split())
    st.markdown(
        escape_markdown(before[-CONTEXT_CHARS:]) + "\n\n:orange-background[" + highlighted + "]\n\n"
        + escape_markdown(after[:CONTEXT_CHARS])
    )


def render_sources(svc: RagService, kb: str, turn_no: int, sources: Sequence[dict[str, Any]]) -> None:
    """Cited sources first, then the ones only retrieved; each opens its page or passage."""
    from rag_app.support import split_sources

    if not sources:
        return
    cited, others = split_sources(sources)
    opened = st.session_state.get(KEY_OPEN)
    with st.expander(t("sources"), expanded=opened is not None and opened[0] == turn_no):
        for group, caption in ((cited, None), (others, t("also_retrieved"))):
            if group and caption:
                st.caption(caption)
            for src in group:
                key = f"src_{turn_no}_{src['index']}"
                label = f"[{src['index']}] {src['label']}"
                if st.button(label, key=key, type="tertiary"):
                    now = (turn_no, src["index"])
                    st.session_state[KEY_OPEN] = None if opened == now else now
                    st.rerun()
                st.markdown(escape_markdown(str(src.get("snippet", ""))))
                if opened == (turn_no, src["index"]):
                    render_viewer(svc, kb, src)


def render_turn(svc: RagService, kb: str, turn_no: int, turn: Turn, *, last: bool) -> None:
    with st.chat_message(turn.role):
        if turn.role == "user":
            st.markdown(escape_markdown(turn.content))
            return
        extra = turn.extra
        if extra.get("refused"):
            st.info(t("not_in_docs"), icon=":material/inbox:")
        st.markdown(safe_markdown(turn.content))
        if extra.get("stopped"):
            st.caption(t("stopped"))
        if extra.get("notice"):
            st.warning(extra["notice"], icon=":material/warning:")
        if extra.get("error"):
            st.error(extra["error"])
        render_sources(svc, kb, turn_no, extra.get("sources", []))
        with st.expander(t("copy")):
            st.code(turn.content, language=None, wrap_lines=True)
        if last and st.button(t("regenerate"), key=f"regen_{turn_no}"):
            st.session_state[KEY_PENDING] = "regenerate"
            st.rerun()


def answer(svc: RagService, kb: str, question: str, history: list[tuple[str, str]]) -> None:
    """Stream the answer with a Stop button beside it, then save the turn."""
    with st.chat_message("user"):
        st.markdown(escape_markdown(question))
    with st.chat_message("assistant"):
        stop = st.empty()
        stop.button(t("stop"), key="stop", icon=":material/stop:")
        state: dict[str, Any] = {"sources": [], "context": [], "grounding": {"cited": [], "notice": None}}
        inflight = {"kb": kb, "question": question, "text": "", "sources": []}
        st.session_state[KEY_INFLIGHT] = inflight

        def pieces(stream: Iterator[dict[str, Any]]) -> Iterator[str]:
            for chunk in stream:
                if "context" in chunk:
                    state["context"] = chunk["context"]
                if "sources" in chunk:
                    state["sources"] = chunk["sources"]
                    inflight["sources"] = source_entries(chunk["sources"], state["context"], [])
                if chunk.get("answer"):
                    inflight["text"] += str(chunk["answer"])
                    yield safe_markdown(str(chunk["answer"]))
                if "grounding" in chunk:
                    state["grounding"].update(chunk["grounding"])

        try:
            svc.check_answerable(kb)
            with st.spinner(t("thinking")):
                chain = svc.chain(kb)
                stream = chain.stream({"question": question, "chat_history": history})
            st.write_stream(pieces(stream))
        except RagError as exc:
            st.session_state.pop(KEY_INFLIGHT, None)
            stop.empty()
            st.error(friendly(exc))
            return
        stop.empty()
    st.session_state.pop(KEY_INFLIGHT, None)
    extra = {
        "sources": source_entries(state["sources"], state["context"], state["grounding"]["cited"]),
        "notice": state["grounding"]["notice"],
        "refused": not state["sources"],
    }
    _save_turn(svc, kb, question, inflight["text"].strip(), extra)
    st.rerun()  # draw the saved turn with its sources and buttons


def page() -> None:
    header("page_chat")
    svc = service()
    _finish_interrupted(svc)
    with st.sidebar:
        kb = kb_picker(svc, "chat")
        if st.button(t("new_conversation"), icon=":material/add:", width="stretch"):
            st.session_state.pop(KEY_CONV, None)
            st.session_state.pop(KEY_OPEN, None)
    conv_id, turns = _conversation(svc, kb)
    question: str | None = None
    if st.session_state.pop(KEY_PENDING, None) == "regenerate" and conv_id and len(turns) >= 2:
        question = turns[-2].content
        svc.conversations().truncate(conv_id, len(turns) - 2)
        turns = turns[:-2]
    if turns and conv_id:
        conv = svc.conversations().get(conv_id)
        st.download_button(
            t("export"), conversation_markdown(conv.title, kb, turns), file_name=f"{conv.title[:40]}.md",
            mime="text/markdown", icon=":material/download:",
        )
    for i, turn in enumerate(turns):
        render_turn(svc, kb, i, turn, last=i == len(turns) - 1)

    typed = st.chat_input(t("ask_placeholder", kb=kb))
    question = question or typed
    if question and question.strip():
        st.session_state[KEY_KB] = kb
        answer(svc, kb, question.strip(), chat_history(turns))


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
