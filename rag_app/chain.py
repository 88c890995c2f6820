"""The retrieval chain: question (+ history) → standalone question → chunks → prompt that fits → answer.

``build_rag_chain(settings)`` returns an LCEL Runnable. Input: a question string, or
``{"question": str, "chat_history": [(user, assistant), …]}``. Output:
``{"question", "answer", "sources", "context"}`` where ``sources`` are numbered like the answer's [1], [2]
citations. ``.stream()`` yields ``sources`` first, then the answer text piece by piece under ``"answer"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from rag_app.errors import RagError
from rag_app.llm.base import TokenAwareLLM
from rag_app.prompting import (
    ChatFormat,
    Turn,
    chat_format_for,
    condense_instruction,
    no_answer_text,
    qa_instruction,
    source_label,
)

if TYPE_CHECKING:
    from rag_app.settings import Settings

logger = logging.getLogger(__name__)

SNIPPET_CHARS = 160


class ContextOverflowError(RagError):
    hint = "use a shorter question, a larger llm.n_ctx, or a smaller llm.max_new_tokens"


class Source(TypedDict):
    """One cited chunk: ``[index]`` in the answer refers to it."""

    index: int
    source: str
    file_name: str
    page: int | None
    label: str
    snippet: str
    score: float | None


def to_sources(docs: Sequence[Document]) -> list[Source]:
    out: list[Source] = []
    for i, doc in enumerate(docs, 1):
        meta = doc.metadata
        text = " ".join(doc.page_content.split())
        snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
        out.append(
            Source(
                index=i,
                source=str(meta.get("source", "")),
                file_name=str(meta.get("file_name", meta.get("source", ""))),
                page=meta.get("page"),
                label=source_label(doc),
                snippet=snippet,
                score=meta.get("score"),
            )
        )
    return out


def normalize_history(history: Any) -> list[Turn]:
    """Accept [(user, assistant)], [{"role", "content"}] or LangChain messages; return (user, assistant) pairs."""
    if not history:
        return []
    turns: list[Turn] = []
    pending_user: str | None = None
    for item in history:
        if isinstance(item, tuple | list) and len(item) == 2:
            turns.append((str(item[0]), str(item[1])))
            continue
        if isinstance(item, BaseMessage):
            role, content = item.type, str(item.content)
        elif isinstance(item, dict):
            role, content = str(item.get("role")), str(item.get("content", ""))
        else:
            raise TypeError(f"cannot read chat history item {item!r}")
        if role in ("human", "user"):
            pending_user = content
        elif role in ("ai", "assistant") and pending_user is not None:
            turns.append((pending_user, content))
            pending_user = None
    return turns


class PromptBuilder:
    """Fits instruction + history + retrieved chunks + answer room into the model's context window."""

    def __init__(self, llm: TokenAwareLLM, chat_format: ChatFormat) -> None:
        self.llm = llm
        self.format = chat_format

    @property
    def answer_tokens(self) -> int:
        return min(self.llm.max_new_tokens, self.llm.context_window // 2)

    @property
    def budget(self) -> int:
        return self.llm.context_window - self.answer_tokens

    def fits(self, prompt: str) -> bool:
        return self.llm.count_tokens(prompt) + 1 <= self.budget  # +1: BOS

    def qa_prompt(
        self, question: str, docs: Sequence[Document], history: Sequence[Turn]
    ) -> tuple[str, list[Document], list[Turn]]:
        """The QA prompt, with the lowest-ranked chunks (then the oldest turns) dropped until it fits."""
        docs, history = list(docs), list(history)
        while True:
            prompt = self.format.render(qa_instruction(question, docs), history)
            if self.fits(prompt):
                return prompt, docs, history
            if len(docs) > 1:
                docs.pop()
            elif history:
                history.pop(0)
            elif docs:
                docs.pop()
            else:
                raise ContextOverflowError(
                    f"the question does not fit the model's context window "
                    f"({self.llm.count_tokens(prompt)} prompt tokens + {self.answer_tokens} for the answer "
                    f"> n_ctx {self.llm.context_window})"
                )

    def condense_prompt(self, question: str, history: Sequence[Turn]) -> str:
        history = list(history)
        while True:
            prompt = self.format.render(condense_instruction(question, history))
            if self.fits(prompt) or len(history) <= 1:
                return prompt
            history.pop(0)


def build_chain(
    llm: TokenAwareLLM, retriever: BaseRetriever, chat_format: ChatFormat
) -> Runnable[Any, dict[str, Any]]:
    """Wire the chain from parts (the seam tests use with fakes)."""
    builder = PromptBuilder(llm, chat_format)
    generate = llm.bind(stop=chat_format.stop or None) | StrOutputParser()  # type: ignore[attr-defined]

    def normalize(inp: Any) -> dict[str, Any]:
        if isinstance(inp, str):
            return {"question": inp, "chat_history": []}
        if isinstance(inp, dict) and isinstance(inp.get("question"), str):
            return {"question": inp["question"], "chat_history": normalize_history(inp.get("chat_history"))}
        raise TypeError("input must be a question string or {'question': str, 'chat_history': [...]}")

    def standalone(state: dict[str, Any]) -> str:
        question: str = state["question"].strip()
        if not state["chat_history"]:
            return question
        rewritten = generate.invoke(builder.condense_prompt(question, state["chat_history"])).strip()
        first_line = rewritten.splitlines()[0].strip() if rewritten else ""
        logger.debug("condensed %r → %r", question, first_line)
        return first_line or question

    def fit(state: dict[str, Any]) -> dict[str, Any]:
        if not state["context"]:
            return {**state, "prompt": None}
        prompt, docs, history = builder.qa_prompt(
            state["standalone_question"], state["context"], state["chat_history"]
        )
        return {**state, "prompt": prompt, "context": docs, "chat_history": history}

    def answer(state: dict[str, Any]) -> Any:
        if state["prompt"] is None:  # nothing relevant: say so instead of letting the model invent
            return no_answer_text(state["question"])
        return RunnableLambda(lambda s: s["prompt"]) | generate

    chain = (
        RunnableLambda(normalize)
        | RunnablePassthrough.assign(standalone_question=RunnableLambda(standalone))
        | RunnablePassthrough.assign(context=RunnableLambda(lambda s: s["standalone_question"]) | retriever)
        | RunnableLambda(fit)
        | RunnablePassthrough.assign(sources=RunnableLambda(lambda s: to_sources(s["context"])))
        | RunnablePassthrough.assign(answer=RunnableLambda(answer))
    ).pick(["question", "standalone_question", "sources", "answer", "context"])
    return chain.with_config(run_name="rag_chain")


def build_retriever(settings: Settings, embeddings: Embeddings) -> BaseRetriever:
    """The retriever for ``settings.knowledge_base`` as configured in ``settings.retrieval``."""
    from ingest.store import KnowledgeBase, open_client
    from rag_app.retrieve import KnowledgeBaseRetriever

    kb = KnowledgeBase(open_client(settings.data_dir), settings.knowledge_base, embeddings)
    return KnowledgeBaseRetriever(
        knowledge_base=kb, k=settings.retrieval.k, score_threshold=settings.retrieval.score_threshold
    )


def build_rag_chain(
    settings: Settings,
    *,
    llm: TokenAwareLLM | None = None,
    embeddings: Embeddings | None = None,
) -> Runnable[Any, dict[str, Any]]:
    """The question-answering chain for ``settings.knowledge_base``, with models built from ``settings``.

    Pass ``llm`` / ``embeddings`` to reuse models already loaded (the app caches them).
    """
    from ingest.embed import build_embeddings
    from rag_app.llm import create_llm

    embeddings = embeddings or build_embeddings(settings.embedding)
    llm = llm or create_llm(settings.llm)
    retriever = build_retriever(settings, embeddings)
    fmt = chat_format_for(
        settings.llm.prompt_format, settings.llm.system_prompt, llm, base_model=settings.llm.base_model
    )
    return build_chain(llm, retriever, fmt)
