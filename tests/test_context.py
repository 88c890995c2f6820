"""Context assembly (rag_app.context) over a real persistent Chroma with fake embeddings: neighbours, merged
overlaps, document order, the token budget, whole documents, the refusal and a selection of documents; the
chain wired with it; and ``token_counter`` for each backend."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from pydantic import Field

from ingest.embed import estimate_tokens
from ingest.manifest import DocumentRecord
from ingest.pipeline import file_sha256, ingest_paths
from ingest.store import KnowledgeBase, chunk_id, open_client
from rag_app.chain import PromptBuilder, build_rag_chain
from rag_app.context import ContextAssembler, budget_tokens, candidates, merge_text, _Chunk
from rag_app.errors import DocumentNotFoundError
from rag_app.llm import token_counter
from rag_app.llm.fake import FakeLLM
from rag_app.prompting import chat_format_for, format_context, no_answer_text
from rag_app.settings import LLMSettings, Settings


def sentences(name: str, n: int) -> str:
    """Sentences that each say which document and which sentence they are: duplicates are easy to see."""
    return " ".join(f"In {name} sentence {i:03d} tells fact {name}{i:03d}." for i in range(n))


DOCS = {"alpha.txt": sentences("alpha", 40), "beta.txt": sentences("beta", 40), "gamma.txt": sentences("gamma", 6)}


class RecordingFakeLLM(FakeLLM):
    prompts: list[str] = Field(default_factory=list)

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        self.prompts.append(prompt)
        return super()._call(prompt, stop, run_manager, **kwargs)


def make_settings(root: Path, **retrieval: Any) -> Settings:
    return Settings.load(
        data_dir=root / "data",
        llm={"backend": "fake", "n_ctx": 4096, "fake_responses": ["Answer [1]."]},
        embedding={"backend": "fake"},
        ingest={"chunk_size": 40, "chunk_overlap": 12},
        retrieval={"mode": "bm25", **retrieval},
    )


@pytest.fixture(scope="module")
def kb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctx")
    folder = root / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    report = ingest_paths(make_settings(root), [folder], embeddings=DeterministicFakeEmbedding(size=32))
    assert not report.failed
    return root


@pytest.fixture(scope="module")
def kb(kb_root: Path) -> KnowledgeBase:
    return KnowledgeBase(open_client(kb_root / "data"), "default", DeterministicFakeEmbedding(size=32))


def sha(kb_root: Path, name: str) -> str:
    return file_sha256(kb_root / "docs" / name)


def hit(kb: KnowledgeBase, sha256: str, index: int, score: float = 0.5) -> Document:
    cid = chunk_id(sha256, index)
    got = kb._collection.get(ids=[cid], include=["documents", "metadatas"])
    return Document(page_content=got["documents"][0], metadata={**got["metadatas"][0], "score": score}, id=cid)


def sentence_numbers(text: str, name: str) -> list[int]:
    return [int(n) for n in re.findall(rf"fact {name}(\d{{3}})\.", text)]


def assembler(kb: KnowledgeBase, budget: int = 10_000, **kw: Any) -> ContextAssembler:
    return ContextAssembler(kb, estimate_tokens, budget, **{"whole_documents": False, **kw})


# --- budget filling ----------------------------------------------------------------------------------


def test_chunks_really_overlap(kb: KnowledgeBase, kb_root: Path) -> None:
    """The premise of the merging tests: consecutive chunks repeat text, and start_index says where."""
    a, b = hit(kb, sha(kb_root, "alpha.txt"), 4), hit(kb, sha(kb_root, "alpha.txt"), 5)
    assert set(sentence_numbers(a.page_content, "alpha")) & set(sentence_numbers(b.page_content, "alpha"))
    assert b.metadata["start_index"] < a.metadata["start_index"] + len(a.page_content)


def test_neighbours_widen_a_hit_into_one_passage_without_repeated_text(kb: KnowledgeBase, kb_root: Path) -> None:
    doc = sha(kb_root, "alpha.txt")
    out = assembler(kb, neighbours=1).assemble([hit(kb, doc, 5, 0.9)])
    assert len(out) == 1
    passage = out[0]
    assert passage.metadata["chunk_start"] == 4 and passage.metadata["chunk_end"] == 6
    assert passage.metadata["source"] == "docs/alpha.txt" and passage.metadata["score"] == 0.9
    numbers = sentence_numbers(passage.page_content, "alpha")
    assert numbers == sorted(set(numbers)) and numbers == list(range(numbers[0], numbers[-1] + 1))
    assert passage.page_content in DOCS["alpha.txt"]  # one contiguous span of the document, overlaps kept once
    alone = assembler(kb, neighbours=0).assemble([hit(kb, doc, 5)])
    assert len(alone[0].page_content) < len(passage.page_content)


def test_merge_text_drops_the_overlap_and_keeps_section_boundaries() -> None:
    text = "one two three four five six seven"
    a = _Chunk("a", "d", 0, None, 0, text[:18], {})  # "one two three four"
    b = _Chunk("b", "d", 1, None, 8, text[8:27], {})  # "three four five six"
    c = _Chunk("c", "d", 2, None, 28, text[28:], {})  # "seven", after a stripped space
    assert merge_text([a, b, c]) == text
    # Offsets LangChain could not find (-1): the overlap is recognised from the text.
    lost = _Chunk("b", "d", 1, None, -1, text[8:27], {})
    assert merge_text([a, lost]) == text[:27]
    # A new section restarts the offsets: the same offset is no overlap unless the text repeats.
    d = _Chunk("d", "d", 3, None, 0, "eight nine", {})
    assert merge_text([c, d]) == "seven\neight nine"


def test_documents_in_order_of_their_best_hit_passages_in_document_order(kb: KnowledgeBase, kb_root: Path) -> None:
    alpha, beta = sha(kb_root, "alpha.txt"), sha(kb_root, "beta.txt")
    hits = [hit(kb, beta, 3, 0.9), hit(kb, alpha, 12, 0.8), hit(kb, alpha, 2, 0.7), hit(kb, beta, 4, 0.6)]
    out = assembler(kb, neighbours=1).assemble(hits)
    assert [p.metadata["source"] for p in out] == ["docs/beta.txt", "docs/alpha.txt", "docs/alpha.txt"]
    beta_p, alpha_early, alpha_late = out
    assert (beta_p.metadata["chunk_start"], beta_p.metadata["chunk_end"]) == (2, 5)  # two hits' spans merged
    assert beta_p.metadata["score"] == 0.9
    assert alpha_early.metadata["chunk_end"] < alpha_late.metadata["chunk_start"]
    assert (alpha_early.metadata["score"], alpha_late.metadata["score"]) == (0.7, 0.8)
    for p in out:
        name = p.metadata["source"][5:-4]
        numbers = sentence_numbers(p.page_content, name)
        assert numbers == list(range(numbers[0], numbers[-1] + 1))


@pytest.mark.parametrize("budget", [40, 80, 160])
def test_budget_is_respected_and_filled_in_rank_order(kb: KnowledgeBase, kb_root: Path, budget: int) -> None:
    alpha, beta = sha(kb_root, "alpha.txt"), sha(kb_root, "beta.txt")
    hits = [hit(kb, alpha, i * 3) for i in range(4)] + [hit(kb, beta, i * 3) for i in range(4)]
    out = assembler(kb, budget=budget, neighbours=1).assemble(hits)
    used = estimate_tokens(format_context(out))
    assert out and used <= budget  # as the prompt will number them
    assert out[0].metadata["source"] == "docs/alpha.txt" and out[0].metadata["chunk_start"] == 0  # best hit first
    more = assembler(kb, budget=budget * 2, neighbours=1).assemble(hits)
    assert estimate_tokens(format_context(more)) > used


def test_the_k_best_hits_go_in_before_any_neighbour(kb: KnowledgeBase, kb_root: Path) -> None:
    alpha, beta = sha(kb_root, "alpha.txt"), sha(kb_root, "beta.txt")
    hits = [hit(kb, alpha, 0), hit(kb, beta, 6), hit(kb, alpha, 9), hit(kb, beta, 1)]
    alone = assembler(kb, neighbours=0).assemble(hits)
    budget = estimate_tokens(format_context(alone)) + 5  # room for the four hits, not for their neighbours

    def covered(out: list[Document]) -> set[tuple[str, int]]:
        spans = [(p.metadata["source"], p.metadata["chunk_start"], p.metadata["chunk_end"]) for p in out]
        return {(source, i) for source, first, last in spans for i in range(first, last + 1)}

    wanted = {("docs/alpha.txt", 0), ("docs/beta.txt", 6), ("docs/alpha.txt", 9), ("docs/beta.txt", 1)}
    assert wanted <= covered(assembler(kb, budget=budget, neighbours=1, k=4).assemble(hits))
    widened_first = covered(assembler(kb, budget=budget, neighbours=1, k=1).assemble(hits))
    assert ("docs/alpha.txt", 1) in widened_first and not wanted <= widened_first


def test_chunks_without_positions_pass_through_as_they_are(kb: KnowledgeBase) -> None:
    hits = [Document(page_content=f"loose text {i}", metadata={"source": f"x{i}", "score": 0.1}) for i in range(3)]
    out = assembler(kb).assemble(hits)
    assert [p.page_content for p in out] == [h.page_content for h in hits]


# --- whole documents, refusal, selection -------------------------------------------------------------


def test_whole_documents_when_everything_fits(kb: KnowledgeBase, kb_root: Path) -> None:
    beta = sha(kb_root, "beta.txt")
    whole = ContextAssembler(kb, estimate_tokens, 100_000).assemble([hit(kb, beta, 7)])
    assert [p.metadata["source"] for p in whole] == ["docs/beta.txt", "docs/alpha.txt", "docs/gamma.txt"]
    assert [p.page_content for p in whole] == [DOCS["beta.txt"], DOCS["alpha.txt"], DOCS["gamma.txt"]]
    # Too small for everything: back to passages around the hit.
    some = ContextAssembler(kb, estimate_tokens, 300).assemble([hit(kb, beta, 7)])
    assert [p.metadata["source"] for p in some] == ["docs/beta.txt"]
    assert some[0].page_content != DOCS["beta.txt"]


def test_whole_documents_of_a_selection(kb: KnowledgeBase, kb_root: Path) -> None:
    alpha = sha(kb_root, "alpha.txt")
    out = ContextAssembler(kb, estimate_tokens, 600).assemble([hit(kb, alpha, 1)], scope=["docs/gamma.txt"])
    assert [p.page_content for p in out] == [DOCS["gamma.txt"]]


def test_nothing_relevant_stays_empty(kb: KnowledgeBase) -> None:
    assert ContextAssembler(kb, estimate_tokens, 100_000).assemble([]) == []


def test_half_written_documents_stay_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "gamma.txt").write_text(DOCS["gamma.txt"], encoding="utf-8")
    settings = make_settings(tmp_path)
    emb = DeterministicFakeEmbedding(size=32)
    ingest_paths(settings, [folder], embeddings=emb)
    kb = KnowledgeBase(open_client(settings.data_dir), "default", emb)
    assert kb.manifest is not None
    pending = "f" * 64  # an ingestion that crashed between its chunks and its commit
    kb.manifest.begin(kb.collection_name, [DocumentRecord("docs/pending.txt", pending, "pending", 1)])
    meta = {"source": "docs/pending.txt", "file_name": "pending.txt", "sha256": pending, "chunk_index": 0}
    half = Document(page_content="secret half-written text", metadata=meta)
    kb.add_chunks([half], [chunk_id(pending, 0)], batch_size=8)
    gamma = file_sha256(folder / "gamma.txt")
    whole = ContextAssembler(kb, estimate_tokens, 100_000).assemble([hit(kb, gamma, 0)])
    assert [p.metadata["source"] for p in whole] == ["docs/gamma.txt"]


# --- the chain ---------------------------------------------------------------------------------------


def chain_for(kb_root: Path, llm: FakeLLM, **retrieval: Any) -> Any:
    settings = make_settings(kb_root, **retrieval)
    return build_rag_chain(settings, llm=llm, embeddings=DeterministicFakeEmbedding(size=32))


def test_budget_and_candidates_helpers() -> None:
    assert budget_tokens(0.25, 16384) == 4096 and budget_tokens(1.0, 4096) == 4096 and budget_tokens(3000, 4096) == 3000
    assert candidates(4096, 200, 4) == 25 and candidates(100, 200, 4) == 5


def test_chain_sends_passages_within_the_budget(kb_root: Path) -> None:
    llm = RecordingFakeLLM(responses=["Answer [1]."], context_window=4096, max_new_tokens=256)
    chain = chain_for(kb_root, llm, context_budget=0.1, whole_documents=False)
    chunks = list(chain.stream("Which fact does alpha sentence 017 tell?"))
    last_sources = max(i for i, c in enumerate(chunks) if "sources" in c)
    assert last_sources < min(i for i, c in enumerate(chunks) if "answer" in c)  # sources still come first
    out = chain.invoke("Which fact does alpha sentence 017 tell?")
    assert out["sources"][0]["source"] == "docs/alpha.txt"
    assert any("fact alpha017." in d.page_content for d in out["context"])
    assert estimate_tokens(format_context(out["context"])) <= 409
    assert len(out["context"]) == len(out["sources"]) and "alpha017" in llm.prompts[-1]


def test_chain_sends_whole_documents_when_they_fit(kb_root: Path) -> None:
    llm = RecordingFakeLLM(responses=["Answer [1]."], context_window=8192, max_new_tokens=256)
    out = chain_for(kb_root, llm, context_budget=0.5).invoke("Which fact does gamma sentence 003 tell?")
    assert [d.page_content for d in out["context"]][0] == DOCS["gamma.txt"]
    assert sorted(d.page_content for d in out["context"]) == sorted(DOCS.values())


def test_chain_keeps_the_refusal(kb_root: Path) -> None:
    llm = RecordingFakeLLM(responses=["invented"], context_window=8192)
    question = "What do penguins eat during winter?"
    out = chain_for(kb_root, llm, context_budget=0.5).invoke(question)
    assert out["answer"] == no_answer_text(question) and out["sources"] == [] and llm.prompts == []


@pytest.mark.parametrize("budget", [None, 0.5])
def test_chain_answers_from_the_selected_documents(kb_root: Path, budget: float | None) -> None:
    llm = RecordingFakeLLM(responses=["Answer [1]."], context_window=8192)
    chain = chain_for(kb_root, llm, context_budget=budget, whole_documents=False)
    question = "Which fact does beta sentence 010 tell? And alpha sentence 010?"
    everything = {s["source"] for s in chain.invoke(question)["sources"]}
    assert everything == {"docs/alpha.txt", "docs/beta.txt"}
    selected = chain.invoke({"question": question, "documents": ["beta.txt"]})  # a file name is enough
    assert {s["source"] for s in selected["sources"]} == {"docs/beta.txt"}
    with pytest.raises(DocumentNotFoundError):
        chain.invoke({"question": question, "documents": ["nope.txt"]})


def test_prompt_never_overflows_even_with_the_whole_window_as_budget(kb_root: Path) -> None:
    question = "Which fact does alpha sentence 020 tell?"
    llm = RecordingFakeLLM(responses=[question, "Answer [1]."], context_window=512, max_new_tokens=64)
    out = chain_for(kb_root, llm, context_budget=1.0, whole_documents=False).invoke(
        {"question": question, "chat_history": [("hi " * 40, "hello " * 40)]}  # condensed to the same question
    )
    assert out["context"]
    builder = PromptBuilder(llm, chat_format_for("auto", "default", llm))
    assert all(builder.fits(p) for p in llm.prompts)


# --- token_counter -----------------------------------------------------------------------------------


def test_token_counter_fake_backend() -> None:
    count = token_counter(LLMSettings(backend="fake"))
    assert count("你好 world") == FakeLLM(responses=["x"]).count_tokens("你好 world")


def test_token_counter_transformers_reads_only_the_tokenizer(tmp_path: Path) -> None:
    from tests.tiny_models import char_tokenizer

    char_tokenizer().save_pretrained(tmp_path / "tok")  # a folder without weights: nothing else is read
    count = token_counter(LLMSettings(backend="transformers", model_path=tmp_path / "tok"))
    assert count("你好ab") == 4 and count("") == 0


def test_token_counter_llamacpp_matches_the_loaded_model(real_llm: Any) -> None:
    count = token_counter(LLMSettings(packaged_model="smollm2-135m"))
    for text in ("How do I import documents?", "导入文档时运行 rag ingest 命令。", ""):
        assert count(text) == real_llm.count_tokens(text)
