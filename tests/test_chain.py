"""The retrieval chain with FakeLLM and a real KnowledgeBaseRetriever over Chroma (fake embeddings)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import Field

from ingest.embed import estimate_tokens
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from rag_app.chain import (
    SNIPPET_CHARS,
    ContextOverflowError,
    PromptBuilder,
    build_chain,
    build_rag_chain,
    normalize_history,
)
from rag_app.errors import EmptyKnowledgeBaseError, RagError
from rag_app.llm.fake import FakeLLM
from rag_app.prompting import ChatFormat, chat_format_for, load_prompt
from rag_app.retrieve import KnowledgeBaseRetriever
from rag_app.settings import Settings

DOCS = {
    "cats.txt": "Cats are small furry animals. They purr when they are happy and sleep most of the day.",
    "dogs.txt": "Dogs are loyal companions. They bark at strangers and love long walks in the park.",
    "install.md": "To install the app, run make install. It installs the CPU build of torch first.",
    "导入.md": "导入文档时运行 rag ingest 命令。系统会把文档切成小块并保存到本地知识库。",
    "privacy.txt": "All data stays on this machine. Nothing is uploaded to any server, ever.",
}

LONG_DOCS = {
    f"long{i}.txt": " ".join(f"Paragraph {i} sentence {j} talks about topic {i} in some detail." for j in range(6))
    for i in range(5)
}


class PositiveFakeEmbedding(DeterministicFakeEmbedding):
    """DeterministicFakeEmbedding with non-negative components: every cosine relevance lies in (0, 1]."""

    def _get_embedding(self, seed: int) -> list[float]:
        return [abs(x) for x in super()._get_embedding(seed)]


class RecordingFakeLLM(FakeLLM):
    """FakeLLM that keeps every prompt it was sent."""

    prompts: list[str] = Field(default_factory=list)

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        self.prompts.append(prompt)
        return super()._call(prompt, stop, run_manager, **kwargs)


def fill_kb(root: Path, files: dict[str, str], embeddings: Embeddings, kb: str = "default") -> Settings:
    folder = root / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    settings = Settings.load(
        data_dir=root / "data",
        llm={"backend": "fake"},
        embedding={"backend": "fake"},
        ingest={"chunk_size": 200, "chunk_overlap": 0},
    )
    report = ingest_paths(settings, [folder], embeddings=embeddings, knowledge_base=kb)
    assert not report.failed
    return settings


def retriever_for(settings: Settings, embeddings: Embeddings, kb: str = "default", **kw: Any) -> KnowledgeBaseRetriever:
    return KnowledgeBaseRetriever(knowledge_base=KnowledgeBase(open_client(settings.data_dir), kb, embeddings), **kw)


@pytest.fixture(scope="module")
def embeddings() -> PositiveFakeEmbedding:
    return PositiveFakeEmbedding(size=32)


@pytest.fixture(scope="module")
def kb_settings(tmp_path_factory: pytest.TempPathFactory, embeddings: Embeddings) -> Settings:
    return fill_kb(tmp_path_factory.mktemp("kb"), DOCS, embeddings)


@pytest.fixture(scope="module")
def long_settings(tmp_path_factory: pytest.TempPathFactory, embeddings: Embeddings) -> Settings:
    return fill_kb(tmp_path_factory.mktemp("long"), LONG_DOCS, embeddings)


def llama2() -> ChatFormat:
    return ChatFormat("llama2-chat", load_prompt("system_default"))


def fits(llm: FakeLLM, prompt: str) -> bool:
    answer = min(llm.max_new_tokens, llm.context_window // 2)
    return llm.count_tokens(prompt) + 1 <= llm.context_window - answer


# --- invoke ----------------------------------------------------------------------------------------


def test_invoke_with_string(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["Fake answer [1]."])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings, k=3), llama2())
    out = chain.invoke("Do cats purr?")
    assert out["question"] == "Do cats purr?"
    assert out["standalone_question"] == "Do cats purr?"
    assert out["answer"] == "Fake answer [1]."
    sources = out["sources"]
    assert [s["index"] for s in sources] == [1, 2, 3]
    assert len(out["context"]) == 3
    for src, doc in zip(sources, out["context"], strict=True):
        assert src["source"] == doc.metadata["source"]
        assert src["source"].startswith("docs/")
        assert src["label"] == src["source"]
        assert src["file_name"] == doc.metadata["file_name"]
        assert src["page"] is None
        assert src["snippet"] == " ".join(doc.page_content.split())
        assert 0.0 <= src["score"] <= 1.0
    scores = [s["score"] for s in sources]
    assert scores == sorted(scores, reverse=True)
    # exactly one LLM call, whose prompt is the llama2-chat QA prompt with numbered sources
    assert len(llm.prompts) == 1
    prompt = llm.prompts[0]
    assert prompt.startswith("[INST] <<SYS>>\n")
    assert prompt.endswith("Question: Do cats purr?\nAnswer in one complete sentence. [/INST]")
    for src in sources:
        assert f"[{src['index']}] ({src['label']})" in prompt


def test_exact_chunk_text_is_the_top_source(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["ok"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings, k=2), llama2())
    out = chain.invoke(DOCS["privacy.txt"])
    assert out["sources"][0]["file_name"] == "privacy.txt"
    assert out["sources"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_snippet_is_shortened(tmp_path: Path, embeddings: Embeddings) -> None:
    settings = fill_kb(tmp_path, {"long.txt": "abcdefghij " * 30}, embeddings)
    chain = build_chain(RecordingFakeLLM(responses=["ok"]), retriever_for(settings, embeddings), llama2())
    (src,) = chain.invoke("word?")["sources"]
    assert len(src["snippet"]) == SNIPPET_CHARS
    assert src["snippet"].endswith("…")


def test_chinese_question_uses_chinese_prompt(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["回答 [1]"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings), llama2())
    out = chain.invoke("怎样导入文档？")
    assert out["answer"] == "回答 [1]"
    assert "资料：\n[1] (" in llm.prompts[0]
    assert llm.prompts[0].endswith("问题：怎样导入文档？\n请用完整的句子回答。 [/INST]")


def test_condense_step_calls_the_llm_first(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["Do dogs purr?", "final answer"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings), llama2())
    out = chain.invoke({"question": "And dogs?", "chat_history": [("Do cats purr?", "Yes [1].")]})
    assert out["answer"] == "final answer"
    assert out["standalone_question"] == "Do dogs purr?"
    assert out["question"] == "And dogs?"
    assert len(llm.prompts) == 2
    condense, qa = llm.prompts
    assert "Follow-up question: And dogs?" in condense
    assert "User: Do cats purr?\nAssistant: Yes [1]." in condense
    # the QA prompt asks the standalone question and carries the earlier turn
    assert "Question: Do dogs purr?\nAnswer in one complete sentence. [/INST]" in qa
    assert "Conversation so far:\nUser: Do cats purr?\nAssistant: Yes [1].\n\nQuestion: Do dogs purr?" in qa
    assert qa.index("Sources:\n[1] (") < qa.index("Conversation so far:")  # sources before history


def test_condense_keeps_only_the_first_line(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["  Do dogs purr?  \nSure! Here is why...", "final"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings), llama2())
    out = chain.invoke({"question": "And dogs?", "chat_history": [("Do cats purr?", "Yes.")]})
    assert out["standalone_question"] == "Do dogs purr?"


def test_empty_condense_output_falls_back_to_question(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["   ", "final"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings), llama2())
    out = chain.invoke({"question": "And dogs?", "chat_history": [("Do cats purr?", "Yes.")]})
    assert out["standalone_question"] == "And dogs?"
    assert out["answer"] == "final"


@pytest.mark.parametrize(
    "history",
    [
        [("Do cats purr?", "Yes.")],
        [["Do cats purr?", "Yes."]],
        [{"role": "user", "content": "Do cats purr?"}, {"role": "assistant", "content": "Yes."}],
        [HumanMessage("Do cats purr?"), AIMessage("Yes.")],
    ],
)
def test_history_formats_in_chain(kb_settings: Settings, embeddings: Embeddings, history: list[Any]) -> None:
    llm = RecordingFakeLLM(responses=["Do dogs purr?", "final"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings), llama2())
    out = chain.invoke({"question": "And dogs?", "chat_history": history})
    assert out["answer"] == "final"
    assert "User: Do cats purr?\nAssistant: Yes." in llm.prompts[0]


def test_bad_input_is_type_error(kb_settings: Settings, embeddings: Embeddings) -> None:
    chain = build_chain(RecordingFakeLLM(responses=["x"]), retriever_for(kb_settings, embeddings), llama2())
    with pytest.raises(TypeError):
        chain.invoke({"q": "no question key"})
    with pytest.raises(TypeError):
        chain.invoke(42)


# --- stream ----------------------------------------------------------------------------------------


def test_stream_yields_sources_before_answer(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["Streaming answer [1]."])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings, k=2), llama2())
    chunks = list(chain.stream("Do dogs bark?"))
    keys = [k for c in chunks for k in c]
    assert "sources" in keys and "answer" in keys
    assert keys.index("sources") < keys.index("answer")
    pieces = [c["answer"] for c in chunks if "answer" in c]
    assert len(pieces) > 1  # really streamed
    assert "".join(pieces) == "Streaming answer [1]."
    (sources,) = [c["sources"] for c in chunks if "sources" in c]
    assert [s["index"] for s in sources] == [1, 2]
    # every sources chunk comes before every answer chunk
    last_sources = max(i for i, c in enumerate(chunks) if "sources" in c)
    first_answer = min(i for i, c in enumerate(chunks) if "answer" in c)
    assert last_sources < first_answer


def test_stream_matches_invoke(kb_settings: Settings, embeddings: Embeddings) -> None:
    chain = build_chain(RecordingFakeLLM(responses=["Same answer."]), retriever_for(kb_settings, embeddings), llama2())
    invoked = chain.invoke("What is stored?")
    streamed = "".join(c["answer"] for c in chain.stream("What is stored?") if "answer" in c)
    assert streamed == invoked["answer"] == "Same answer."


# --- nothing to answer from ------------------------------------------------------------------------


def test_empty_knowledge_base(tmp_path: Path, embeddings: Embeddings) -> None:
    client = open_client(tmp_path / "data")
    kb = KnowledgeBase(client, "empty", embeddings)
    llm = RecordingFakeLLM(responses=["never"])
    chain = build_chain(llm, KnowledgeBaseRetriever(knowledge_base=kb), llama2())
    with pytest.raises(EmptyKnowledgeBaseError, match="empty"):
        chain.invoke("anything?")
    with pytest.raises(EmptyKnowledgeBaseError):
        list(chain.stream("anything?"))
    assert llm.prompts == []


@pytest.mark.parametrize(("question", "name"), [("What is the moon made of?", "no_answer_en"), ("月亮是什么做的？", "no_answer_zh")])
def test_nothing_relevant_gives_no_answer_text(
    kb_settings: Settings, embeddings: Embeddings, question: str, name: str
) -> None:
    llm = RecordingFakeLLM(responses=["must not be used"])
    chain = build_chain(llm, retriever_for(kb_settings, embeddings, score_threshold=1.0), llama2())
    out = chain.invoke(question)
    assert out["answer"] == load_prompt(name)
    assert out["sources"] == [] and out["context"] == []
    assert llm.prompts == [] and llm.i == 0
    streamed = "".join(c["answer"] for c in chain.stream(question) if "answer" in c)
    assert streamed == load_prompt(name)
    assert llm.prompts == []


def test_zero_threshold_keeps_every_hit(tmp_path: Path) -> None:
    # retrieval.score_threshold = 0 is documented as "keeps everything": k hits whatever their similarity,
    # also with an embedder whose cosine similarity can be negative (plain DeterministicFakeEmbedding).
    embeddings = DeterministicFakeEmbedding(size=32)
    settings = fill_kb(tmp_path, DOCS, embeddings)
    retriever = retriever_for(settings, embeddings, k=4, score_threshold=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = {q: len(retriever.invoke(q)) for q in ("Do cats purr?", "How to install?", "隐私", "x", "dogs")}
    assert counts == dict.fromkeys(counts, 4)


def test_scores_are_cosine_similarities_best_first(tmp_path: Path) -> None:
    embeddings = DeterministicFakeEmbedding(size=32)
    settings = fill_kb(tmp_path, DOCS, embeddings)
    retriever = retriever_for(settings, embeddings, k=5, score_threshold=0.0)
    for question in ("Do cats purr?", "How to install?", "x", DOCS["dogs.txt"]):
        scores = [d.metadata["score"] for d in retriever.invoke(question)]
        assert len(scores) == 5
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= s <= 1.0 for s in scores)
    top = retriever.invoke(DOCS["dogs.txt"])[0]
    assert top.metadata["file_name"] == "dogs.txt"
    assert top.metadata["score"] == pytest.approx(1.0, abs=1e-3)


# --- token budget ----------------------------------------------------------------------------------


def test_prompt_fits_small_window_dropping_lowest_ranked(long_settings: Settings, embeddings: Embeddings) -> None:
    question = "Which paragraph talks about topic 3?"
    big = RecordingFakeLLM(responses=["big"], context_window=8192, max_new_tokens=64)
    full = build_chain(big, retriever_for(long_settings, embeddings, k=4), llama2()).invoke(question)
    ranking = [s["source"] for s in full["sources"]]
    assert len(ranking) == 4

    small = RecordingFakeLLM(responses=["small"], context_window=300, max_new_tokens=64)
    out = build_chain(small, retriever_for(long_settings, embeddings, k=4), llama2()).invoke(question)
    kept = [s["source"] for s in out["sources"]]
    assert 1 <= len(kept) < 4
    assert kept == ranking[: len(kept)]  # the lowest-ranked chunks went first
    assert [s["index"] for s in out["sources"]] == list(range(1, len(kept) + 1))
    (prompt,) = small.prompts
    assert fits(small, prompt)
    # and it keeps as many as fit: one more chunk would not have fitted
    assert not fits(small, big.prompts[0])


def test_question_too_long_for_the_window(long_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["never"], context_window=300, max_new_tokens=64)
    chain = build_chain(llm, retriever_for(long_settings, embeddings), llama2())
    question = "Why " + "really " * 400 + "?"
    with pytest.raises(ContextOverflowError) as info:
        chain.invoke(question)
    assert isinstance(info.value, RagError)
    assert "n_ctx" in info.value.hint
    assert llm.prompts == []


def test_builder_drops_docs_then_oldest_turns() -> None:
    from langchain_core.documents import Document

    llm = FakeLLM(responses=["x"], context_window=400, max_new_tokens=64)
    builder = PromptBuilder(llm, llama2())
    docs = [Document(page_content=f"doc {i} " + "filler " * 60, metadata={"source": f"d{i}"}) for i in range(3)]
    history = [(f"old question {i}", "answer " * 60) for i in range(3)]
    prompt, kept_docs, kept_history = builder.qa_prompt("q?", docs, history)
    assert builder.fits(prompt)
    assert kept_docs == docs[:1]  # docs are dropped down to one before any turn goes
    assert kept_history == history[len(history) - len(kept_history) :]  # the oldest turns go first
    assert len(kept_history) < len(history)


def test_every_prompt_sent_fits_even_with_a_long_history(long_settings: Settings, embeddings: Embeddings) -> None:
    # The condense prompt must fit the window too (llama.cpp fails on an over-long prompt).
    llm = RecordingFakeLLM(responses=["Do dogs purr?", "final"], context_window=300, max_new_tokens=64)
    chain = build_chain(llm, retriever_for(long_settings, embeddings), llama2())
    history = [("Tell me everything.", "A very long earlier answer. " * 80)]
    out = chain.invoke({"question": "And then?", "chat_history": history})
    assert out["answer"]
    assert llm.prompts
    for prompt in llm.prompts:
        assert fits(llm, prompt), f"prompt of {estimate_tokens(prompt)} tokens sent to a 300-token window"


# --- history normalisation -------------------------------------------------------------------------


def test_normalize_history_tuples_and_lists() -> None:
    assert normalize_history(None) == []
    assert normalize_history([]) == []
    assert normalize_history([("q1", "a1"), ["q2", "a2"]]) == [("q1", "a1"), ("q2", "a2")]


def test_normalize_history_role_dicts() -> None:
    history = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "unanswered"},
    ]
    assert normalize_history(history) == [("q1", "a1"), ("q2", "a2")]


def test_normalize_history_messages() -> None:
    history = [SystemMessage("sys"), HumanMessage("q1"), AIMessage("a1"), HumanMessage("q2"), AIMessage("a2")]
    assert normalize_history(history) == [("q1", "a1"), ("q2", "a2")]


def test_normalize_history_mixed() -> None:
    history: list[Any] = [("q1", "a1"), {"role": "human", "content": "q2"}, AIMessage("a2")]
    assert normalize_history(history) == [("q1", "a1"), ("q2", "a2")]


def test_normalize_history_rejects_garbage() -> None:
    with pytest.raises(TypeError):
        normalize_history([42])


# --- the settings-level builder ----------------------------------------------------------------------


def test_build_rag_chain_from_settings(kb_settings: Settings, embeddings: Embeddings) -> None:
    settings = kb_settings.model_copy(
        update={"llm": kb_settings.llm.model_copy(update={"fake_responses": ["From settings [1]."]})}
    )
    chain = build_rag_chain(settings, embeddings=embeddings)
    out = chain.invoke("Do cats purr?")
    assert out["answer"] == "From settings [1]."
    # The default budget (1024 tokens) holds this small knowledge base whole: every document, once, numbered.
    files = {s["source"] for s in out["sources"]}
    assert [s["index"] for s in out["sources"]] == list(range(1, len(files) + 1))
    assert len(files) > settings.retrieval.k
    # Without a budget the k best chunks go as they are.
    fixed_k = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"context_budget": None})})
    out = build_rag_chain(fixed_k, embeddings=embeddings).invoke("Do cats purr?")
    assert [s["index"] for s in out["sources"]] == list(range(1, settings.retrieval.k + 1))


def test_chat_format_for_fake_llm_is_plain(kb_settings: Settings, embeddings: Embeddings) -> None:
    llm = RecordingFakeLLM(responses=["plain answer"])
    fmt = chat_format_for("auto", "default", llm)
    chain = build_chain(llm, retriever_for(kb_settings, embeddings), fmt)
    assert chain.invoke("Do cats purr?")["answer"] == "plain answer"
    assert llm.prompts[0].endswith("Question: Do cats purr?\nAnswer in one complete sentence.\n")
