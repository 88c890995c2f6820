"""The retrieval chain: question (+ history) → standalone question → chunks → prompt that fits → answer.

``build_rag_chain(settings)`` returns an LCEL Runnable. Input: a question string, or
``{"question": str, "chat_history": [(user, assistant), …], "documents": [source, …]}`` (``documents``,
optional: answer from these documents only). With ``retrieval.context_budget`` set, the chunks are widened
and merged into passages that fill that much of the window (:mod:`rag_app.context`). Output:
``{"question", "answer", "sources", "context", "grounding"}`` where ``sources`` are numbered like the answer's
[1], [2] citations, each marked ``cited`` when the answer cites it, and ``grounding`` is the support check
(:mod:`rag_app.support`: how much of the answer its cited sources back; citations of sources that do not
exist are taken out of the answer). ``.stream()`` yields ``sources`` first, then the answer text piece by
piece under ``"answer"``, then one ``{"grounding": …}`` chunk (its ``cited`` says which sources are cited).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnablePassthrough

from rag_app.context import (
    SCOPED_CANDIDATES,
    ContextAssembler,
    budget_tokens,
    candidates,
    in_scope,
    resolve_scope,
)
from rag_app.errors import RagError
from rag_app.llm.base import TokenAwareLLM
from rag_app.prompting import (
    ChatFormat,
    Turn,
    chat_format_for,
    combine_instruction,
    condense_instruction,
    no_answer_text,
    qa_head,
    qa_instruction,
    refine_instruction,
    source_label,
)
from rag_app.support import SUPPORT_THRESHOLD, SupportCheck

if TYPE_CHECKING:
    from rag_app.settings import Settings

logger = logging.getLogger(__name__)

SNIPPET_CHARS = 160

ChainType = Literal["stuff", "refine", "map_reduce", "auto"]


class ContextOverflowError(RagError):
    hint = "use a shorter question, a larger llm.n_ctx, or a smaller llm.max_new_tokens"


class Source(TypedDict):
    """One retrieved chunk: ``[index]`` in the answer refers to it."""

    index: int
    source: str
    file_name: str
    page: int | None
    label: str
    snippet: str
    score: float | None
    #: The chunks of its document the passage spans (``None``: not known), so that a face can show it in its
    #: surroundings later (``RagService.passage_context``), through a server too.
    chunk_start: int | None
    chunk_end: int | None
    #: The answer cites it (set by the support check; in a stream, see ``grounding["cited"]``).
    cited: NotRequired[bool]


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
                chunk_start=meta.get("chunk_start", meta.get("chunk_index")),
                chunk_end=meta.get("chunk_end", meta.get("chunk_start", meta.get("chunk_index"))),
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
    """Fits instruction + retrieved chunks + history + answer room into the model's context window.

    The QA prompt is ordered system → sources → earlier turns → question (:func:`qa_instruction`): the part
    that stays the same across a conversation over the same passages comes first, so llama.cpp can keep its
    KV cache for it (and :mod:`rag_app.llm.state_cache` can store it)."""

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
            prompt = self.format.render(qa_instruction(question, docs, history=history))
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

    def stable_prefix(self, prompt: str, question: str, docs: Sequence[Document]) -> str | None:
        """The head of a QA prompt up to the end of its sources (system prompt included), which a follow-up
        over the same sources repeats byte for byte; ``None`` if the format does not keep it intact."""
        head = qa_head(question, docs)
        at = prompt.find(head)
        return prompt[: at + len(head)] if at >= 0 else None

    def all_fit(self, question: str, docs: Sequence[Document], history: Sequence[Turn]) -> bool:
        """Whether one QA prompt holds every chunk and the whole history (``chain_type = auto``)."""
        return self.fits(self.format.render(qa_instruction(question, docs, history=history)))

    def groups(self, question: str, docs: Sequence[Document]) -> list[list[Document]]:
        """Consecutive groups of chunks, in rank order, each fitting one refine step (a prompt that also holds
        an earlier answer of up to ``answer_tokens``). A chunk too big even alone is dropped."""
        room = self.budget - self.answer_tokens
        out: list[list[Document]] = []
        current: list[Document] = []
        for doc in docs:
            trial = [*current, doc]
            start = sum(len(g) for g in out) + 1
            if self.llm.count_tokens(self.format.render(refine_instruction(question, "", trial, start))) + 1 <= room:
                current = trial
                continue
            if current:
                out.append(current)
            start = sum(len(g) for g in out) + 1
            alone = self.format.render(refine_instruction(question, "", [doc], start))
            current = [doc] if self.llm.count_tokens(alone) + 1 <= room else []
            if not current:
                logger.warning("a chunk of %s does not fit the context window; left out", source_label(doc))
        if current:
            out.append(current)
        return out

    def step_prompt(self, instruction: Callable[[list[Document]], str], docs: list[Document]) -> str | None:
        """The prompt for one group, dropping its lowest-ranked chunks if an earlier answer came out long."""
        docs = list(docs)
        while docs:
            prompt = self.format.render(instruction(docs))
            if self.fits(prompt):
                return prompt
            docs.pop()
        return None

    def combine_prompt(self, question: str, answers: Sequence[str]) -> str:
        """The reduce prompt; the answers of the lowest-ranked groups go first if it does not fit."""
        answers = list(answers)
        while len(answers) > 1:
            prompt = self.format.render(combine_instruction(question, answers))
            if self.fits(prompt):
                return prompt
            answers.pop()
        cut = answers[0] if answers else ""
        while cut:  # one partial answer longer than the window: keep its head
            prompt = self.format.render(combine_instruction(question, [cut]))
            if self.fits(prompt):
                return prompt
            cut = cut[: len(cut) * 3 // 4]
        raise ContextOverflowError(f"the question does not fit the model's context window (n_ctx {self.llm.context_window})")

    def condense_prompt(self, question: str, history: Sequence[Turn]) -> str | None:
        """The condense prompt with the oldest turns dropped until it fits; None if even one turn does not."""
        history = list(history)
        while history:
            prompt = self.format.render(condense_instruction(question, history))
            if self.fits(prompt):
                return prompt
            history.pop(0)
        return None


def build_chain(
    llm: TokenAwareLLM,
    retriever: BaseRetriever,
    chat_format: ChatFormat,
    *,
    chain_type: ChainType = "stuff",
    assembler: ContextAssembler | None = None,
    support_threshold: float = SUPPORT_THRESHOLD,
    attribute_citations: bool = True,
) -> Runnable[Any, dict[str, Any]]:
    """Wire the chain from parts (the seam tests use with fakes).

    ``support_threshold``: answers with less of their content in the sources they cite are flagged
    (:mod:`rag_app.support`); ``attribute_citations``: sentences the model left uncited get the [n] of the
    source that holds them (:class:`rag_app.support.Attributor`).

    ``assembler``: turns the retriever's hits into passages that fill its token budget (``None``: the hits
    as they are).

    ``chain_type``: ``stuff`` puts the chunks that fit into one prompt (lowest-ranked dropped first);
    ``refine`` answers from the first group of chunks and improves the answer group by group; ``map_reduce``
    answers from each group, then combines; ``auto`` is ``stuff`` when every chunk fits, else ``refine``.
    """
    builder = PromptBuilder(llm, chat_format)
    generate = llm.bind(stop=chat_format.stop or None) | StrOutputParser()  # type: ignore[attr-defined]

    def normalize(inp: Any) -> dict[str, Any]:
        if isinstance(inp, str):
            return {"question": inp, "chat_history": [], "documents": None}
        if isinstance(inp, dict) and isinstance(inp.get("question"), str):
            documents = inp.get("documents")
            if isinstance(documents, str) or not all(isinstance(d, str) for d in documents or ()):
                raise TypeError("'documents' must be a list of sources")
            return {
                "question": inp["question"],
                "chat_history": normalize_history(inp.get("chat_history")),
                "documents": list(documents) if documents else None,
            }
        raise TypeError("input must be a question string or {'question': str, 'chat_history': [...]}")

    kb = getattr(retriever, "knowledge_base", None)
    scoped_retriever = _widened(retriever, SCOPED_CANDIDATES)
    k = getattr(retriever, "k", None)

    def context(state: dict[str, Any], config: RunnableConfig) -> list[Document]:
        """The retriever's hits (only the selected documents' when there is a selection), or the passages
        the assembler makes of them within what the window leaves after instruction and history."""
        question = state["standalone_question"]
        original = state["question"].strip()
        if state["chat_history"] and question != original:
            from rag_app.grounding import follow_up_on_topic

            if not follow_up_on_topic(retriever, original, state["chat_history"]):
                logger.info("follow-up %r is not about the knowledge base", original)
                return []
        scope = resolve_scope(kb, state["documents"])
        hits = (scoped_retriever if scope else retriever).invoke(question, config=config)
        if assembler is None:
            return in_scope(hits, scope)[:k] if scope else hits
        empty = chat_format.render(qa_instruction(question, [], history=state["chat_history"]))
        room = builder.budget - llm.count_tokens(empty) - 1
        passages = assembler.assemble(hits, scope=scope, budget=max(0, room))
        if not passages and in_scope(hits, scope):  # no room at all: let the builder say so
            return in_scope(hits, scope)[:1]
        return passages

    def standalone(state: dict[str, Any]) -> str:
        question: str = state["question"].strip()
        if not state["chat_history"]:
            return question
        prompt = builder.condense_prompt(question, state["chat_history"])
        if prompt is None:  # the conversation is too long to condense: use the question as it is
            return question
        rewritten = generate.invoke(prompt).strip()
        first_line = rewritten.splitlines()[0].strip() if rewritten else ""
        from rag_app.grounding import usable_condensation

        logger.debug("condensed %r → %r", question, first_line)
        return usable_condensation(question, first_line)

    def fit(state: dict[str, Any]) -> dict[str, Any]:
        if not state["context"]:
            return {**state, "prompt": None, "groups": None}
        question, docs, history = state["standalone_question"], state["context"], state["chat_history"]
        kind = chain_type
        if kind == "auto":
            kind = "stuff" if builder.all_fit(question, docs, history) else "refine"
        if kind == "stuff":
            prompt, docs, history = builder.qa_prompt(question, docs, history)
            prefix = builder.stable_prefix(prompt, question, docs)
            return {
                **state, "prompt": prompt, "prefix": prefix, "context": docs, "chat_history": history, "groups": None
            }
        groups = builder.groups(question, docs)
        if not groups:  # not even one chunk fits beside an answer: stuff what it can (or say it cannot)
            prompt, docs, history = builder.qa_prompt(question, docs, history)
            return {**state, "prompt": prompt, "context": docs, "chat_history": history, "groups": None}
        kept = [d for g in groups for d in g]
        return {**state, "prompt": "", "context": kept, "chat_history": [], "groups": groups, "kind": kind}

    def multi_step(state: dict[str, Any]) -> tuple[str | None, str]:
        """Every step but the last of refine / map_reduce: the final prompt (the caller streams it), or no
        prompt and the finished answer when nothing is left to combine."""
        question, groups = state["standalone_question"], state["groups"]
        starts = [1 + sum(len(g) for g in groups[:i]) for i in range(len(groups))]
        if state["kind"] == "map_reduce":
            partial = []
            for group, start in zip(groups, starts, strict=True):
                prompt = builder.step_prompt(lambda d, s=start: qa_instruction(question, d, s), group)
                if prompt is not None:
                    partial.append(generate.invoke(prompt).strip())
            if len(partial) == 1:
                return None, partial[0]
            return builder.combine_prompt(question, partial), ""
        answer_so_far = ""
        prompt: str | None = None
        for i, (group, start) in enumerate(zip(groups, starts, strict=True)):
            if i == 0:
                prompt = builder.step_prompt(lambda d: qa_instruction(question, d, 1), group)
            else:
                prompt = builder.step_prompt(
                    lambda d, s=start, a=answer_so_far: refine_instruction(question, a, d, s), group
                )
            if prompt is None:
                continue
            if i < len(groups) - 1:
                answer_so_far = generate.invoke(prompt).strip() or answer_so_far
        return prompt, answer_so_far

    def answer(state: dict[str, Any]) -> Any:
        if state["prompt"] is None:  # nothing relevant: say so instead of letting the model invent
            return no_answer_text(state["question"])
        if state["groups"]:
            final, finished = multi_step(state)
            if final is None:
                return finished
            return RunnableLambda(lambda s: final) | generate
        if state.get("prefix") and getattr(llm, "caches_prefixes", False):
            keeping = llm.bind(stop=chat_format.stop or None, cache_prefix=state["prefix"])  # type: ignore[attr-defined]
            return RunnableLambda(lambda s: s["prompt"]) | keeping | StrOutputParser()
        return RunnableLambda(lambda s: s["prompt"]) | generate

    chain = (
        RunnableLambda(normalize)
        | RunnablePassthrough.assign(standalone_question=RunnableLambda(standalone))
        | RunnablePassthrough.assign(context=RunnableLambda(context))
        | RunnableLambda(fit)
        | RunnablePassthrough.assign(sources=RunnableLambda(lambda s: to_sources(s["context"])))
        | RunnablePassthrough.assign(answer=RunnableLambda(answer))
    ).pick(["question", "standalone_question", "sources", "answer", "context"]) | SupportCheck(
        support_threshold, attribute_citations
    )
    return chain.with_config(run_name="rag_chain")


def _widened(retriever: BaseRetriever, n: int) -> BaseRetriever:
    """The same retriever asking for ``n`` candidates (for a selection of documents, filtered after)."""
    fields = type(retriever).model_fields
    update = {name: max(n, getattr(retriever, name)) for name in ("k", "fetch_k") if name in fields}
    return retriever.model_copy(update=update) if update else retriever


def build_retriever(settings: Settings, embeddings: Embeddings) -> BaseRetriever:
    """The retriever for ``settings.knowledge_base`` as configured in ``settings.retrieval``."""
    from ingest.store import KnowledgeBase, open_client
    from rag_app.grounding import thresholds_with
    from rag_app.retrieve import HybridRetriever

    conf = settings.retrieval
    kb = KnowledgeBase(open_client(settings.data_dir, settings.store.chroma_url), settings.knowledge_base, embeddings)
    reranker = None
    if conf.reranker_path is not None:
        from rag_app.rerank import Reranker

        reranker = Reranker.load(conf.reranker_path, device=settings.embedding.device)
    return HybridRetriever(
        knowledge_base=kb,
        k=conf.k,
        mode=conf.mode,
        fetch_k=conf.fetch_k,
        vector_weight=None if conf.vector_weight == "auto" else float(conf.vector_weight),
        relevance_threshold=conf.relevance_threshold,
        answerable_thresholds=thresholds_with(conf.answerable_thresholds) if conf.answerable_thresholds else None,
        min_keyword_coverage=conf.min_keyword_coverage,
        score_threshold=conf.score_threshold,
        mmr=conf.mmr,
        mmr_lambda=conf.mmr_lambda,
        reranker=reranker,
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
    conf = settings.retrieval
    assembler = None
    if conf.context_budget is None:
        retriever = build_retriever(settings, embeddings)
    else:
        budget = budget_tokens(conf.context_budget, llm.context_window)
        wide = conf.model_copy(update={"k": candidates(budget, settings.ingest.chunk_size, conf.k)})
        retriever = build_retriever(settings.model_copy(update={"retrieval": wide}), embeddings)
        assembler = ContextAssembler(
            retriever.knowledge_base,  # type: ignore[attr-defined]
            llm.count_tokens,
            budget,
            neighbours=conf.neighbours,
            whole_documents=conf.whole_documents,
            k=conf.k,
        )
    fmt = chat_format_for(
        settings.llm.prompt_format, settings.llm.system_prompt, llm, base_model=settings.llm.base_model
    )
    return build_chain(
        llm, retriever, fmt, chain_type=conf.chain_type, assembler=assembler, support_threshold=conf.support_threshold,
        attribute_citations=conf.attribute_citations,
    )
