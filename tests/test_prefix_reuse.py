"""Issue 20: prompts whose head stays the same over a conversation, and the KV state cache that keeps it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from rag_app.chain import PromptBuilder, build_chain
from rag_app.llm.fake import FakeLLM
from rag_app.llm.state_cache import KVStateCache
from rag_app.prompting import ChatFormat, qa_head

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FORMATS = [
    ChatFormat("llama2-chat", "SYS"),
    ChatFormat("alpaca", "SYS"),
    ChatFormat("plain", "SYS"),
    ChatFormat("model", "SYS", chat_template=CHATML),
]


def docs(*texts: str) -> list[Document]:
    return [Document(page_content=t, metadata={"source": f"doc{i}.md"}) for i, t in enumerate(texts, 1)]


PASSAGES = docs("Cats purr when they are content.", "Dogs bark at strangers.")


class RecordingLLM(FakeLLM):
    """A fake that says it keeps prompt prefixes, and records what the chain passes."""

    caches_prefixes: bool = True
    calls: list[tuple[str, Any]] = Field(default_factory=list)

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        self.calls.append((prompt, kwargs.get("cache_prefix")))
        return super()._call(prompt, stop, run_manager, **kwargs)


class FixedRetriever(BaseRetriever):
    found: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.found)


# --- order and byte stability (fakes) -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_sources_come_before_history_and_question(fmt: ChatFormat) -> None:
    builder = PromptBuilder(FakeLLM(responses=["x"]), fmt)
    prompt, _, _ = builder.qa_prompt("And dogs?", PASSAGES, [("Do cats purr?", "Yes [1].")])
    parts = ("Dogs bark at strangers.", "Do cats purr?", "And dogs?")
    if fmt.name in ("llama2-chat", "model"):  # the formats with a system prompt
        parts = ("SYS", *parts)
    at = [prompt.index(s) for s in parts]
    assert at == sorted(at)
    assert prompt.count("Do cats purr?") == 1  # the earlier turn is in the prompt once, after the sources


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_follow_up_repeats_the_first_prompts_head_byte_for_byte(fmt: ChatFormat) -> None:
    builder = PromptBuilder(FakeLLM(responses=["x"]), fmt)
    first, _, _ = builder.qa_prompt("Do cats purr?", PASSAGES, [])
    follow, _, _ = builder.qa_prompt("And dogs?", PASSAGES, [("Do cats purr?", "Yes [1].")])
    third, _, _ = builder.qa_prompt("Why?", PASSAGES, [("Do cats purr?", "Yes [1]."), ("And dogs?", "No [2].")])
    prefix = builder.stable_prefix(first, "Do cats purr?", PASSAGES)
    assert prefix is not None and prefix.endswith("Dogs bark at strangers.\n\n")
    assert builder.stable_prefix(follow, "And dogs?", PASSAGES) == prefix
    assert builder.stable_prefix(third, "Why?", PASSAGES) == prefix
    assert follow.startswith(prefix) and third.startswith(prefix)
    assert "Do cats purr?" not in prefix


def test_head_changes_with_the_sources() -> None:
    other = docs("Cats purr when they are content.", "Dogs bark at the postman.")
    assert qa_head("q?", PASSAGES) != qa_head("q?", other)
    assert qa_head("q?", PASSAGES) == qa_head("another question?", PASSAGES)


def test_chain_passes_the_same_prefix_for_a_follow_up() -> None:
    llm = RecordingLLM(responses=["Yes [1].", "And dogs? standalone", "No [2]."])
    chain = build_chain(llm, FixedRetriever(found=PASSAGES), FORMATS[0])
    chain.invoke("Do cats purr?")
    chain.invoke({"question": "And dogs?", "chat_history": [("Do cats purr?", "Yes [1].")]})
    (p1, c1), (_, condense), (p3, c3) = llm.calls
    assert condense is None  # the condense prompt has no sources to keep
    assert c1 is not None and c1 == c3
    assert p1.startswith(c1) and p3.startswith(c1)


# --- LRU by size (files only) ---------------------------------------------------------------------------


def test_eviction_drops_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = KVStateCache(directory=tmp_path, max_bytes=250, identity={"m": 1})
    for i, name in enumerate(["old", "mid", "new"]):
        p = tmp_path / f"{name}.kvstate"
        p.write_bytes(b"x" * 100)
        os.utime(p, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    cache.evict()
    assert sorted(p.stem for p in tmp_path.glob("*.kvstate")) == ["mid", "new"]
    assert cache.stats.evictions == 1


def test_key_depends_on_model_identity_and_tokens(tmp_path: Path) -> None:
    a = KVStateCache(directory=tmp_path, max_bytes=1, identity={"model": "a", "n_ctx": 2048})
    b = KVStateCache(directory=tmp_path, max_bytes=1, identity={"model": "a", "n_ctx": 4096})
    assert a.key([1, 2, 3]) != b.key([1, 2, 3])
    assert a.key([1, 2, 3]) != a.key([1, 2, 4])
    assert a.key([1, 2, 3]) == a.key([1, 2, 3])


# --- the real SmolLM2 -----------------------------------------------------------------------------------


def smol_passages(n: int) -> list[Document]:
    return docs(*[f"Part {i}: the importer reads Markdown, PDF and Word files, and OCR reads scans." for i in range(n)])


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from rag_app.llm import create_llm
    from rag_app.settings import LLMSettings

    yield create_llm(
        LLMSettings(
            packaged_model="smollm2-135m", n_ctx=2048, max_new_tokens=12, temperature=0.0,
            cache_dir=tmp_path_factory.mktemp("kv"), state_cache_min_tokens=256,
        )
    )


def evaluated(llm: Any, prompt: str, **kwargs: Any) -> tuple[int, str]:
    """Prompt tokens llama.cpp evaluated for this answer (its perf counters), and the answer."""
    import llama_cpp

    ctx = llm.client._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    answer = llm.invoke(prompt, **kwargs)
    return int(llama_cpp.llama_perf_context(ctx).n_p_eval), answer


def prompts(llm: Any, passages: list[Document]) -> tuple[str, str, str, str]:
    from rag_app.prompting import chat_format_for

    fmt = chat_format_for("auto", "default", llm)
    builder = PromptBuilder(llm, fmt)
    first, _, _ = builder.qa_prompt("What does the importer read?", passages, [])
    history = [("What does the importer read?", "Markdown, PDF and Word files [1].")]
    follow, _, _ = builder.qa_prompt("Does it read scans?", passages, history)
    old = fmt.render(qa_instruction_old("Does it read scans?", passages), history)
    prefix = builder.stable_prefix(first, "What does the importer read?", passages)
    assert prefix is not None
    return first, follow, old, prefix


def qa_instruction_old(question: str, passages: list[Document]) -> str:
    from rag_app.prompting import qa_instruction

    return qa_instruction(question, passages)


def test_follow_up_evaluates_only_what_follows_the_sources(smol: Any) -> None:
    first, follow, old, prefix = prompts(smol, smol_passages(12))
    smol.client.reset()
    n_first, _ = evaluated(smol, first)
    n_follow, _ = evaluated(smol, follow)
    suffix = len(smol._tokens(follow)) - len(smol._tokens(prefix))
    assert n_first == len(smol._tokens(first))
    assert n_follow <= suffix + 2  # the history and the question, not the sources again
    smol.client.reset()
    evaluated(smol, first)
    n_old, _ = evaluated(smol, old)  # history before the sources (the order before issue 20)
    assert n_old > len(smol._tokens(prefix)) // 2


def test_state_cache_restores_the_sources_and_answers_as_a_cold_run(smol: Any) -> None:
    first, follow, _, prefix = prompts(smol, smol_passages(14))
    cache = smol.state_cache
    hits, stores = cache.stats.hits, cache.stats.stores
    smol.client.reset()
    evaluated(smol, first, cache_prefix=prefix)
    assert cache.stats.stores == stores + 1
    smol.client.reset()  # what a new process (or a condense prompt in between) leaves
    n_warm, warm = evaluated(smol, follow, cache_prefix=prefix)
    assert cache.stats.hits == hits + 1
    assert n_warm <= len(smol._tokens(follow)) - len(smol._tokens(prefix)) + 2
    smol.state_cache = None
    try:
        smol.client.reset()
        n_cold, cold = evaluated(smol, follow)
    finally:
        smol.state_cache = cache
    assert n_cold == len(smol._tokens(follow))
    assert warm == cold


def test_changed_document_misses_and_the_cache_stays_bounded(smol: Any) -> None:
    cache = smol.state_cache
    a = smol_passages(13)
    b = [*a[:-1], Document(page_content="Part 12: the importer was rewritten.", metadata={"source": "doc13.md"})]
    first_a, _, _, prefix_a = prompts(smol, a)
    first_b, _, _, prefix_b = prompts(smol, b)
    smol.client.reset()
    evaluated(smol, first_a, cache_prefix=prefix_a)
    one_state = max(p.stat().st_size for p in cache.directory.glob("*.kvstate"))
    old_max = cache.max_bytes
    cache.max_bytes = one_state + one_state // 2  # room for one state only
    try:
        hits, misses = cache.stats.hits, cache.stats.misses
        smol.client.reset()
        evaluated(smol, first_b, cache_prefix=prefix_b)  # the document changed: another key
        assert (cache.stats.hits, cache.stats.misses) == (hits, misses + 1)
        assert cache.total_bytes() <= cache.max_bytes
        tokens_a, n_a = smol.prefix_tokens(first_a, prefix_a)
        tokens_b, n_b = smol.prefix_tokens(first_b, prefix_b)
        assert not cache.path(tokens_a[:n_a]).exists()  # the old document's state went first
        assert cache.path(tokens_b[:n_b]).exists()
    finally:
        cache.max_bytes = old_max
