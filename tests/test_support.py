"""The support check (rag_app.support): scores in English and Chinese, dangling citations, the chain's
``grounding`` output (invoke and stream), and how the CLI and the Streamlit app show cited and other sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from rag_app.chain import build_chain
from rag_app.prompting import load_prompt, no_answer_text
from rag_app.support import (
    Attributor,
    attribute,
    SUPPORT_THRESHOLD,
    CitationFilter,
    check_support,
    cited_numbers,
    content_units,
    is_refusal,
    mark_cited,
    remove_dangling,
    score_distribution,
    split_sources,
    support_score,
)
from tests.test_app import QUESTION, TWO_FILES, app_env, ask, assistants, start, texts, upload  # noqa: F401
from tests.test_chain import RecordingFakeLLM, llama2
from tests.test_chain_types import ListRetriever
from tests.test_cli import run

CATS = "Cats are small furry animals. They purr when they are happy and sleep most of the day."
DOGS = "Dogs are loyal companions. They bark at strangers and love long walks in the park."
CATS_ZH = "猫在高兴的时候会发出呼噜声，一天大部分时间都在睡觉。"
DOCS = [
    Document(page_content=CATS, metadata={"source": "cats.txt"}),
    Document(page_content=DOGS, metadata={"source": "dogs.txt"}),
]
EN_NOTICE = load_prompt("low_support_en")
ZH_NOTICE = load_prompt("low_support_zh")


# --- content units and the score -----------------------------------------------------------------


def test_english_units_are_stemmed_content_words() -> None:
    # Stop words, citation markers and words about the sources ("according", "documents") are not claims.
    assert content_units("According to the documents, cats purr when they are happy [1].") == {"cat", "purr", "happy"}


def test_chinese_units_are_bigrams_without_function_characters() -> None:
    # 在 and 的 are function characters: no bigram holds them; 根据资料 talks about the sources.
    assert content_units("根据资料，猫在高兴的时候[2]") == {"高兴", "时候"}
    assert content_units("猫") == {"猫"}  # too short for a bigram: its content character


def test_english_score_is_share_of_answer_units_found() -> None:
    passage = "Dogs purr rarely; they are happy outside."
    assert support_score("Cats purr when they are happy [1].", [passage]) == pytest.approx(2 / 3)
    assert support_score("Cats purr when they are happy [1].", [passage, CATS]) == 1.0
    assert support_score("The moon is made of green cheese.", [CATS, DOGS]) == 0.0


def test_chinese_score_is_share_of_bigrams_found() -> None:
    # The answer's bigrams: 猫高 高兴 兴时 时会 会发 发出 出呼 呼噜 噜声 (9).
    # In the source: 高兴 会发 发出 出呼 呼噜 噜声 (6).
    assert support_score("猫高兴时会发出呼噜声[1]。", [CATS_ZH]) == pytest.approx(6 / 9)
    assert support_score("月亮是用奶酪做的[1]。", [CATS_ZH]) == 0.0


def test_answer_without_content_scores_full() -> None:
    assert support_score("[1].", [CATS]) == 1.0


# --- citations -----------------------------------------------------------------------------------


def test_cited_numbers_in_order_of_first_mention() -> None:
    assert cited_numbers("a [2] b [1, 3] c [2] d【4】e [1、5]") == [2, 1, 3, 4, 5]
    assert cited_numbers("no markers, a year [2023] is not one") == []


@pytest.mark.parametrize(
    ("text", "cleaned", "removed"),
    [
        ("Paris is big [7]. It is old [1].", "Paris is big. It is old [1].", [7]),
        ("Old [1, 9] and [2，5].", "Old [1] and [2].", [9, 5]),
        ("巴黎很大【5】。", "巴黎很大。", [5]),
        ("Zero [0] is no source [4].", "Zero is no source [4].", [0]),
        ("All fine [1][4].", "All fine [1][4].", []),
    ],
)
def test_remove_dangling(text: str, cleaned: str, removed: list[int]) -> None:
    assert remove_dangling(text, 4) == (cleaned, removed)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_citation_filter_on_pieces_matches_whole_text(size: int) -> None:
    text = "Paris is big [7]. It is old [1, 9]. 巴黎很大 【12】，也很老[2]。 End [3"
    f = CitationFilter(4)
    out = "".join(f.feed(text[i : i + size]) for i in range(0, len(text), size)) + f.flush()
    assert (out, f.removed) == remove_dangling(text, 4)
    assert "[7]" not in out and "12" not in out


def test_citation_filter_holds_only_what_may_become_a_marker() -> None:
    f = CitationFilter(4)
    assert f.feed("Cats purr ") == "Cats purr"  # the space may precede a dangling marker
    assert f.feed("[") == ""
    assert f.feed("9] loudly") == " loudly"
    assert f.flush() == "" and f.removed == [9]


# --- the verdict ---------------------------------------------------------------------------------


def test_only_cited_sources_count() -> None:
    # The claim is in source 1, but the answer cites source 2: not backed by what it cites.
    assert check_support("Do cats purr?", "Cats purr when happy [2].", [CATS, DOGS])["score"] == 0.0
    right = check_support("Do cats purr?", "Cats purr when happy [1].", [CATS, DOGS])
    assert right == {"supported": True, "score": 1.0, "cited": [1], "removed_citations": [], "notice": None}
    # No marker at all: checked against every source.
    assert check_support("Do cats purr?", "Cats purr when happy.", [CATS, DOGS])["score"] == 1.0


@pytest.mark.parametrize(
    ("question", "notice"), [("What is the moon made of?", EN_NOTICE), ("月亮是什么做的？", ZH_NOTICE)]
)
def test_unsupported_answer_gets_notice_in_question_language(question: str, notice: str) -> None:
    verdict = check_support(question, "The moon is made of green cheese [1].", [CATS, DOGS], removed=[7])
    assert verdict == {"supported": False, "score": 0.0, "cited": [1], "removed_citations": [7], "notice": notice}


def test_threshold_decides() -> None:
    answer, passages = "Cats purr loudly [1].", [CATS]  # cat, purr found; loudly not: 2/3
    assert check_support("q?", answer, passages, threshold=0.6)["supported"]
    assert not check_support("q?", answer, passages, threshold=0.7)["supported"]
    assert 0.0 < SUPPORT_THRESHOLD < 1.0


@pytest.mark.parametrize(
    "answer",
    [
        "The documents do not contain the answer.",
        "The documents do not contain the answer [1].",
        "资料中没有找到答案。",
        load_prompt("no_answer_en"),
        load_prompt("no_answer_zh"),
    ],
)
def test_refusals_are_not_checked(answer: str) -> None:
    assert is_refusal(answer)
    verdict = check_support("Is the moon cheese?", answer, [CATS])
    assert verdict["score"] is None and verdict["supported"] and verdict["notice"] is None


def test_an_answer_is_no_refusal() -> None:
    assert not is_refusal("The documents say cats purr [1].")
    assert not is_refusal("")


def test_mark_and_split_sources() -> None:
    sources = [{"index": i, "label": f"s{i}"} for i in (1, 2, 3)]
    marked = mark_cited(sources, [3, 1])
    assert [s["cited"] for s in marked] == [True, False, True]
    assert "cited" not in sources[0]  # copies
    assert split_sources(marked) == ([marked[0], marked[2]], [marked[1]])
    # Nothing cited: no "also retrieved" list, every source is listed as a source.
    assert split_sources(mark_cited(sources, [])) == (mark_cited(sources, []), [])


def test_score_distribution() -> None:
    dist = score_distribution([0.0, 0.5, None, 1.0, 0.25, 0.75], threshold=0.5)
    assert dist == {
        "checked": 5, "unchecked": 1, "threshold": 0.5, "flagged": 0.4, "mean": 0.5,
        "min": 0.0, "p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0,
    }
    assert score_distribution([None]) == {"checked": 0, "unchecked": 1, "threshold": SUPPORT_THRESHOLD}


# --- the chain -----------------------------------------------------------------------------------


def chain_for(answer: str, docs: list[Document] = DOCS, **options: Any) -> tuple[Any, RecordingFakeLLM]:
    llm = RecordingFakeLLM(responses=[answer])
    return build_chain(llm, ListRetriever(docs=docs), llama2(), **options), llm


def streamed(chain: Any, question: str) -> list[dict[str, Any]]:
    return list(chain.stream(question))


def test_chain_supported_answer() -> None:
    chain, _ = chain_for("Cats purr when they are happy [1].")
    out = chain.invoke("Do cats purr?")
    assert set(out) == {"question", "standalone_question", "sources", "answer", "context", "grounding"}
    assert out["answer"] == "Cats purr when they are happy [1]."
    assert out["grounding"] == {"supported": True, "score": 1.0, "cited": [1], "removed_citations": [], "notice": None}
    assert [(s["index"], s["cited"]) for s in out["sources"]] == [(1, True), (2, False)]  # numbering kept


def test_chain_unsupported_answer_with_dangling_citation() -> None:
    chain, _ = chain_for("The moon is made of green cheese [2] [7].")
    out = chain.invoke("What is the moon made of?")
    assert out["answer"] == "The moon is made of green cheese [2]."
    assert out["grounding"] == {
        "supported": False, "score": 0.0, "cited": [2], "removed_citations": [7], "notice": EN_NOTICE,
    }
    assert [s["cited"] for s in out["sources"]] == [False, True]
    zh = chain_for("月亮是用奶酪做的[1]。")[0].invoke("月亮是什么做的？")
    assert zh["grounding"]["notice"] == ZH_NOTICE and not zh["grounding"]["supported"]


def test_support_threshold_is_a_setting(tmp_path: Path) -> None:
    from rag_app.chain import build_rag_chain
    from rag_app.settings import Settings

    assert Settings.load().retrieval.support_threshold == SUPPORT_THRESHOLD
    lenient = chain_for("The moon is made of green cheese [2].", support_threshold=0.0)[0]
    assert lenient.invoke("What is the moon made of?")["grounding"]["supported"] is True
    settings = Settings.load(profile="fake", data_dir=tmp_path / "data", retrieval={"support_threshold": 0.0})
    chain = build_rag_chain(settings)
    assert chain.bound.last.threshold == 0.0  # type: ignore[attr-defined]  # the SupportCheck ends the chain


def test_chain_refusal_is_not_checked() -> None:
    chain, llm = chain_for("never used", docs=[])
    out = chain.invoke("What is the moon made of?")
    assert out["answer"] == no_answer_text("What is the moon made of?") and out["sources"] == []
    assert out["grounding"] == {"supported": True, "score": None, "cited": [], "removed_citations": [], "notice": None}
    assert llm.prompts == []
    chunks = streamed(chain, "What is the moon made of?")
    assert chunks[-1] == {"grounding": out["grounding"]}
    # The model's own refusal, with sources retrieved: not checked either.
    model_refusal = chain_for("The documents do not contain the answer.")[0].invoke("Is the moon cheese?")
    assert model_refusal["grounding"]["score"] is None and model_refusal["grounding"]["notice"] is None


def test_stream_ends_with_the_check_and_never_shows_a_dangling_citation() -> None:
    answer = "The moon is made of green cheese [2] [7]."
    chain, _ = chain_for(answer)
    chunks = streamed(chain, "What is the moon made of?")
    keys = [k for c in chunks for k in c]
    assert keys.index("sources") < keys.index("answer")
    assert chunks[-1].keys() == {"grounding"}  # after the answer's last piece
    assert max(i for i, c in enumerate(chunks) if "answer" in c) < len(chunks) - 1
    pieces = [c["answer"] for c in chunks if "answer" in c]
    assert len(pieces) > 1  # still streamed (the fake model yields characters)
    so_far = ""
    for piece in pieces:
        so_far += piece
        assert "[7" not in so_far
    invoked = chain.invoke("What is the moon made of?")
    assert so_far == invoked["answer"] == "The moon is made of green cheese [2]."
    assert chunks[-1]["grounding"] == invoked["grounding"]
    (sources,) = [c["sources"] for c in chunks if "sources" in c]
    assert mark_cited(sources, chunks[-1]["grounding"]["cited"]) == invoked["sources"]


def test_async_stream_is_checked_the_same_way() -> None:
    import asyncio

    chain, _ = chain_for("Cats purr [1] [5].")

    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in chain.astream("Do cats purr?")]

    chunks = asyncio.run(collect())
    assert "".join(c["answer"] for c in chunks if "answer" in c) == "Cats purr [1]."
    assert chunks[-1]["grounding"]["removed_citations"] == [5] and chunks[-1]["grounding"]["cited"] == [1]


# --- citations the app adds ---------------------------------------------------------------------

GUIDE = ["借书证押金为 100 元，退证时全额退还。", "每人最多借 5 本图书，借期为 30 天。"]


@pytest.mark.parametrize(
    ("answer", "cited"),
    [
        ("借书证押金为 100 元。每人最多可以借 5 本图书。", "借书证押金为 100 元 [1]。每人最多可以借 5 本图书 [2]。"),
        ("借书证押金为 100 元[2]。", "借书证押金为 100 元[2]。"),  # the model's own citation stays
        ("押金 100 元。[1] 借期 30 天。", "押金 100 元。[1] 借期 30 天 [2]。"),  # cited after the mark
        ("借期是 30 天", "借期是 30 天 [2]"),  # no end mark
        ("资料中没有找到答案。", "资料中没有找到答案。"),  # a refusal cites nothing
        ("火星的直径是 6779 公里。", "火星的直径是 6779 公里。"),  # in no source
        ("The fee is 0.1 yuan per day.", "The fee is 0.1 yuan per day."),
    ],
)
def test_attribute_cites_each_sentence_from_its_source(answer: str, cited: str) -> None:
    assert attribute(answer, GUIDE) == cited


@pytest.mark.parametrize("size", [1, 2, 5])
def test_attributor_on_pieces_matches_whole_text(size: int) -> None:
    answer = "借书证押金为 100 元。每人最多可以借 5 本图书。[2] Cats purr. The rate is 0.1."
    attributor = Attributor(GUIDE + ["Cats purr when they are happy."])
    pieces = [attributor.feed(answer[i : i + size]) for i in range(0, len(answer), size)]
    assert "".join(pieces) + attributor.flush() == attribute(answer, GUIDE + ["Cats purr when they are happy."])


def test_chain_cites_for_a_model_that_does_not() -> None:
    chain, _ = chain_for("Cats purr when they are happy.")
    out = chain.invoke("Do cats purr?")
    assert out["answer"] == "Cats purr when they are happy [1]."
    assert out["grounding"]["cited"] == [1] and out["grounding"]["supported"]
    streamed_answer = "".join(c.get("answer", "") for c in streamed(chain, "Do cats purr?"))
    assert streamed_answer == out["answer"]
    plain = chain_for("Cats purr when they are happy.", attribute_citations=False)[0].invoke("Do cats purr?")
    assert plain["answer"] == "Cats purr when they are happy."


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_data(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.txt").write_text("Cats are small furry animals. They purr when happy.", encoding="utf-8")
    (docs / "guide.md").write_text("# 使用指南\n\n导入文档时运行 rag ingest 命令。", encoding="utf-8")
    data = tmp_path / "data"
    assert run(data, "ingest", "-q", str(docs)).exit_code == 0
    return data


def fake_answer(text: str) -> dict[str, str]:
    return {"RAG_LLM__FAKE_RESPONSES": json.dumps([text])}


def test_cli_lists_cited_sources_first_and_shows_notice(cli_data: Path) -> None:
    result = run(cli_data, "ask", "Do cats purr?", env=fake_answer("The moon is made of green cheese [2] [7]."))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("The moon is made of green cheese [2].\n")  # [7] names no source: gone
    assert "[7]" not in result.output
    # Cited [2] under "Sources:", then [1] as only retrieved; numbers as in the answer.
    assert out.index("\nSources:\n  [2] docs/") < out.index("\nAlso retrieved (not cited in the answer):\n  [1] docs/")
    # The notice: its own line, on stderr, so that stdout stays the answer and its sources.
    assert EN_NOTICE in result.stderr.splitlines()
    assert EN_NOTICE not in out


def test_cli_supported_answer_without_markers(cli_data: Path) -> None:
    answer = "Cats are small furry animals. 导入文档时运行 rag ingest 命令。"
    result = run(cli_data, "ask", "Do cats purr?", env=fake_answer(answer))
    assert result.exit_code == 0, result.output
    assert EN_NOTICE not in result.output
    assert "Also retrieved" not in result.stdout  # nothing cited: every source is simply a source
    assert "  [1] docs/" in result.stdout and "  [2] docs/" in result.stdout


def test_cli_notice_in_chinese_also_with_hide_source(cli_data: Path) -> None:
    result = run(cli_data, "ask", "--hide-source", "猫会叫吗？", env=fake_answer("月亮是用奶酪做的[1]。"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "月亮是用奶酪做的[1]。"
    assert ZH_NOTICE in result.stderr.splitlines()


# --- the Streamlit app ---------------------------------------------------------------------------


def test_app_shows_notice_and_marks_other_sources(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__FAKE_RESPONSES", json.dumps(["The moon is made of green cheese [2] [9]."]))
    at = start()
    upload(at, TWO_FILES)
    ask(at, QUESTION)

    [assistant] = assistants(at)
    assert "The moon is made of green cheese \\[2\\]." in texts(assistant.markdown)  # [9] removed
    assert texts(assistant.warning) == [EN_NOTICE]
    sources = assistant.expander[0]
    labels = [b.label for b in sources.button]
    assert labels[0].startswith("[2] ") and labels[1].startswith("[1] ")  # the cited source first
    assert texts(sources.caption) == ["Also retrieved (not cited in the answer):"]

    # Re-drawn from the saved conversation on the next run: the notice and the marking stay with that answer.
    ask(at, "And offline?")
    first = assistants(at)[0]
    assert texts(first.warning) == [EN_NOTICE]
    assert texts(first.expander[0].caption) == ["Also retrieved (not cited in the answer):"]
