"""chain_type stuff / refine / map_reduce / auto, summaries, and the token budget with a tiny n_ctx (fake and
real GGUF): no prompt sent may overflow the context window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from rag_app.chain import PromptBuilder, build_chain
from rag_app.llm.fake import FakeLLM
from rag_app.prompting import ChatFormat, load_prompt
from rag_app.summarize import summarize_text


class RecordingLLM(FakeLLM):
    prompts: list[str] = Field(default_factory=list)

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        self.prompts.append(prompt)
        return super()._call(prompt, stop, run_manager, **kwargs)


class ListRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [Document(page_content=d.page_content, metadata=dict(d.metadata)) for d in self.docs]


DOCS = [
    Document(page_content=f"Fact {i}: " + " ".join(f"topic{i} detail {j}." for j in range(60)), metadata={"source": f"d{i}.txt"})
    for i in range(4)
]


def llama2() -> ChatFormat:
    return ChatFormat("llama2-chat", load_prompt("system_default"))


def fits(llm: FakeLLM, prompt: str) -> bool:
    return PromptBuilder(llm, llama2()).fits(prompt)


def test_auto_is_stuff_when_everything_fits() -> None:
    llm = RecordingLLM(responses=["one answer [1]"], context_window=8192, max_new_tokens=64)
    out = build_chain(llm, ListRetriever(docs=DOCS), llama2(), chain_type="auto").invoke("What is topic2?")
    assert len(llm.prompts) == 1 and len(out["sources"]) == 4
    assert out["answer"] == "one answer [1]"


@pytest.mark.parametrize("chain_type", ["auto", "refine"])
def test_refine_walks_all_chunks_in_groups_that_fit(chain_type: str) -> None:
    llm = RecordingLLM(responses=["draft [1]", "better [1][2]", "best", "final"], context_window=700, max_new_tokens=64)
    chain = build_chain(llm, ListRetriever(docs=DOCS), llama2(), chain_type=chain_type)  # type: ignore[arg-type]
    out = chain.invoke("What is topic3?")
    assert len(llm.prompts) >= 2  # did not fit in one prompt, and nothing was dropped
    assert [s["label"] for s in out["sources"]] == [d.metadata["source"] for d in DOCS]
    assert all(fits(llm, p) for p in llm.prompts)
    assert "Question: What is topic3?\nAnswer in one complete sentence. [/INST]" in llm.prompts[0]  # first group: the QA prompt
    assert "Existing answer:\ndraft [1]" in llm.prompts[1]  # then refine with the answer so far
    numbers = [n for n in range(1, 5) if any(f"[{n}] (d{n - 1}.txt)" in p for p in llm.prompts)]
    assert numbers == [1, 2, 3, 4]  # citations keep one numbering across the groups
    assert out["answer"] == llm.responses[len(llm.prompts) - 1]


def test_map_reduce_answers_each_group_then_combines() -> None:
    llm = RecordingLLM(responses=["a1", "a2", "a3", "a4", "combined"], context_window=700, max_new_tokens=64)
    out = build_chain(llm, ListRetriever(docs=DOCS), llama2(), chain_type="map_reduce").invoke("What is topic1?")
    *maps, combine = llm.prompts
    assert len(maps) >= 2
    assert "Partial answers:\n- a1" in combine
    assert out["answer"] == llm.responses[len(llm.prompts) - 1]
    assert all(fits(llm, p) for p in llm.prompts)


def test_stream_of_refine_yields_sources_then_final_answer() -> None:
    llm = RecordingLLM(responses=["draft", "final answer"] * 3, context_window=700, max_new_tokens=64)
    chain = build_chain(llm, ListRetriever(docs=DOCS), llama2(), chain_type="refine")
    chunks = list(chain.stream("What is topic0?"))
    keys = [k for c in chunks for k in c]
    assert keys.index("sources") < keys.index("answer")
    assert "".join(c["answer"] for c in chunks if "answer" in c) == llm.responses[len(llm.prompts) - 1]


def test_stuff_drops_chunks_but_refine_keeps_them() -> None:
    stuffed = RecordingLLM(responses=["x"], context_window=700, max_new_tokens=64)
    kept = build_chain(stuffed, ListRetriever(docs=DOCS), llama2(), chain_type="stuff").invoke("topic?")["sources"]
    assert 1 <= len(kept) < 4 and fits(stuffed, stuffed.prompts[0])


# --- summaries ---------------------------------------------------------------------------------------

LONG_TEXT = "\n\n".join(f"Section {i}. " + " ".join(f"Sentence {j} of section {i} says something." for j in range(30)) for i in range(8))


@pytest.mark.parametrize("method", ["map_reduce", "refine"])
def test_summarize_long_text_in_steps_that_fit(method: str) -> None:
    llm = RecordingLLM(responses=["short summary."], context_window=600, max_new_tokens=48)
    assert llm.count_tokens(LONG_TEXT) > llm.context_window * 2
    seen: list[tuple[int, int]] = []
    summary = summarize_text(LONG_TEXT, llm, llama2(), method=method, progress=lambda d, t: seen.append((d, t)))  # type: ignore[arg-type]
    assert summary.text == "short summary." and summary.pieces > 2
    assert summary.calls == len(llm.prompts) == seen[-1][0] == seen[-1][1]
    assert all(fits(llm, p) for p in llm.prompts)
    assert "Section 7" in "".join(llm.prompts)  # the end of the document was read
    if method == "map_reduce":
        assert "Summaries:" in llm.prompts[-1]
    else:
        assert "Summary so far:\nshort summary." in llm.prompts[-1]


def test_summarize_streams_each_step_and_ends_with_the_summary() -> None:
    llm = RecordingLLM(responses=["piece summary.", "piece summary.", "the whole summary."], context_window=600,
                       max_new_tokens=48)
    shown: list[str] = []
    summary = summarize_text(LONG_TEXT, llm, llama2(), method="map_reduce", on_text=shown.append)  # type: ignore[arg-type]
    starts = [i for i, text in enumerate(shown) if text == ""]
    assert len(starts) == summary.calls  # each model call streams from the start
    assert len(shown) > 3 * summary.calls  # piece by piece, not once per call
    last = shown[starts[-1]:]
    assert all(b.startswith(a) for a, b in zip(last, last[1:]))  # growing text
    assert last[-1].strip() == summary.text


def test_summarize_chinese_uses_chinese_instructions() -> None:
    llm = RecordingLLM(responses=["摘要。"], context_window=2048, max_new_tokens=48)
    summarize_text("这是一段很短的中文文字，讲的是知识库。", llm, llama2())
    assert "请用几句话概括下面的文字" in llm.prompts[0]


def test_rag_summarize_cli(tmp_path: Path) -> None:
    from rag_app.cli import cli

    doc = tmp_path / "long.txt"
    doc.write_text(LONG_TEXT, encoding="utf-8")
    result = CliRunner().invoke(cli, ["--profile", "fake", "summarize", str(doc), "-q"])
    assert result.exit_code == 0, result.output
    assert "This is a fake answer." in result.output


def test_rag_summarize_cli_bad_file(tmp_path: Path) -> None:
    from rag_app.cli import cli

    bad = tmp_path / "x.unknownext"
    bad.write_bytes(b"\x00\x01")
    result = CliRunner().invoke(cli, ["--profile", "fake", "summarize", str(bad), "-q"])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output


# --- the real GGUF with a tiny window ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_window_llm() -> Any:
    """The real SmolLM2 GGUF with n_ctx 512, recording the token length of every prompt llama.cpp receives."""
    pytest.importorskip("llama_cpp")
    from rag_app.llm import create_llm
    from rag_app.settings import LLMSettings

    llm = create_llm(LLMSettings(packaged_model="smollm2-135m", n_ctx=512, max_new_tokens=16, temperature=0.0))
    sent: list[int] = []
    original = llm.client.create_completion

    def spy(*args: Any, **kwargs: Any) -> Any:
        sent.append(len(llm.client.tokenize(kwargs["prompt"].encode("utf-8"), add_bos=True, special=True)))
        return original(*args, **kwargs)

    object.__setattr__(llm.client, "create_completion", spy)
    object.__setattr__(llm, "sent", sent)  # pydantic model: attach the record without a field
    return llm


@pytest.mark.e2e
@pytest.mark.parametrize("chain_type", ["stuff", "auto", "map_reduce"])
def test_real_gguf_small_window_never_overflows(tiny_window_llm: Any, chain_type: str) -> None:
    from rag_app.prompting import chat_format_for

    llm = tiny_window_llm
    llm.sent.clear()
    fmt = chat_format_for("auto", "default", llm)
    history = [("Tell me about topic 0.", "It is about details. " * 30)]
    docs = [Document(page_content=d.page_content[:600], metadata=d.metadata) for d in DOCS]
    out = build_chain(llm, ListRetriever(docs=docs), fmt, chain_type=chain_type).invoke(  # type: ignore[arg-type]
        {"question": "What is topic 2 about?", "chat_history": history}
    )
    assert isinstance(out["answer"], str) and out["sources"]
    assert llm.sent and all(n + 16 <= 512 for n in llm.sent), llm.sent


@pytest.mark.e2e
def test_real_gguf_summary_of_a_text_longer_than_the_window(tiny_window_llm: Any) -> None:
    from rag_app.prompting import chat_format_for

    llm = tiny_window_llm
    llm.sent.clear()
    text = "\n\n".join(LONG_TEXT.split("\n\n")[:3])
    assert llm.count_tokens(text) > 512
    summary = summarize_text(text, llm, chat_format_for("auto", "default", llm))
    assert summary.pieces > 1 and summary.text
    assert llm.sent and all(n + 16 <= 512 for n in llm.sent), llm.sent
