"""Grounding on small knowledge bases and honest follow-ups (fakes; the real models: test_conversation_e2e).

A knowledge base of a few chunks is judged by the smoothed lexical share (rag_app.grounding.small_kb_share)
whichever the embedder; in a conversation the condensed question never bypasses answerability: a junk
condensation falls back to the question, and an off-topic question is refused however it was condensed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from ingest.store import KnowledgeBase, open_client
from rag_app.chain import build_chain
from rag_app.grounding import (
    SMALL_KB_CHUNKS,
    THRESHOLDS,
    lexical_share,
    small_kb_answerable,
    usable_condensation,
)
from rag_app.llm.fake import FakeLLM
from rag_app.prompting import ChatFormat, load_prompt
from rag_app.retrieve import HybridRetriever

#: A one-document library guide in Chinese, split as ingestion would into a handful of chunks.
GUIDE = [
    "市图书馆读者指南。开放时间：图书馆开放时间为周一至周六，上午九点至晚上八点。每周日闭馆，国家法定节假日另行通知。",
    "借书证：办理借书证需要携带本人身份证到一楼服务台办理。借书证押金为 100 元，退证时全额退还。借书证遗失应及时挂失，补办收取工本费 10 元。",
    "借阅规则：每人最多借 5 本图书，借期为 30 天。到期前可以在网上续借一次，续借期为 15 天。逾期归还的图书每本每天收取滞纳金 0.1 元。",
    "阅览室：二楼为报刊阅览室，三楼为自习室。阅览室内请保持安静，禁止饮食。",
]
ANSWERABLE = ["图书馆周日开放吗？", "借书证押金是多少？", "每人最多可以借几本书？", "一次能借多少本书？"]
OFF_TOPIC = ["火星的直径是多少？", "What is the boiling point of mercury?", "水银的沸点是多少？", "如何做红烧肉？"]


class UnitFakeEmbedding(DeterministicFakeEmbedding):
    """Non-negative unit vectors (a second embedder with another similarity scale, as USE has next to
    MiniLM): the small-knowledge-base rule must not depend on which one is configured."""

    def _get_embedding(self, seed: int) -> list[float]:
        values = [abs(x) for x in super()._get_embedding(seed)]
        norm = sum(v * v for v in values) ** 0.5 or 1.0
        return [v / norm for v in values]


@pytest.fixture(params=["deterministic", "unit"])
def embedder(request: pytest.FixtureRequest) -> Embeddings:
    return DeterministicFakeEmbedding(size=16) if request.param == "deterministic" else UnitFakeEmbedding(size=24)


def guide_kb(tmp_path: Path, embeddings: Embeddings, chunks: list[str] = GUIDE) -> KnowledgeBase:
    kb = KnowledgeBase(open_client(tmp_path / "data"), "guide", embeddings)
    docs = [Document(page_content=t, metadata={"source": f"guide#{i}"}) for i, t in enumerate(chunks)]
    kb.add_chunks(docs, [f"c{i}" for i in range(len(chunks))], batch_size=64)
    return kb


def test_the_kbs_own_statistics_refuse_an_answerable_question_on_a_small_kb(tmp_path: Path) -> None:
    # Why the small-KB rule exists: on four chunks a term the question lacks in the KB weighs the most and
    # the terms it shares weigh next to nothing, so the big-KB share refuses this answerable question.
    kb = guide_kb(tmp_path, DeterministicFakeEmbedding(size=16))
    question = "每人最多可以借几本书？"
    share = lexical_share(kb.keywords, question, kb.keywords.search(question, 30))
    assert share < THRESHOLDS["zh"]["lexical"]
    assert small_kb_answerable(question, GUIDE)[0]


@pytest.mark.parametrize("mode", ["hybrid", "bm25"])
def test_a_small_kb_answers_what_it_holds_and_refuses_the_rest(tmp_path: Path, embedder: Embeddings, mode: str) -> None:
    retriever = HybridRetriever(knowledge_base=guide_kb(tmp_path, embedder), mode=mode)
    for question in ANSWERABLE:
        assert retriever.invoke(question), question
    for question in OFF_TOPIC:
        assert retriever.invoke(question) == [], question


def test_the_small_kb_rule_stops_at_its_size(tmp_path: Path) -> None:
    chunks = [f"第{i}号房间的钥匙放在{i}号柜子里，管理员编号{i}。" for i in range(SMALL_KB_CHUNKS)]
    retriever = HybridRetriever(knowledge_base=guide_kb(tmp_path, DeterministicFakeEmbedding(size=16), chunks))
    assert retriever._small_kb_texts() is None  # the measured big-KB rule, unchanged
    small = HybridRetriever(knowledge_base=guide_kb(tmp_path / "s", DeterministicFakeEmbedding(size=16), chunks[:-1]))
    assert small._small_kb_texts() is not None and len(small._small_kb_texts() or []) == SMALL_KB_CHUNKS - 1


@pytest.mark.parametrize(
    ("question", "condensed", "used"),
    [
        ("What is the boiling point of mercury?", "The answer is:", "What is the boiling point of mercury?"),
        ("What is the boiling point of mercury?", "", "What is the boiling point of mercury?"),
        ("每人最多可以借几本书？", "借书", "每人最多可以借几本书？"),  # much shorter
        ("What is the boiling point of mercury?", "What is the deposit for a library card?",
         "What is the boiling point of mercury?"),  # lost the question's terms
        ("And the deposit?", "What is the deposit for a library card?", "What is the deposit for a library card?"),
        ("那押金呢？", "借书证的押金是多少？", "借书证的押金是多少？"),
    ],
)
def test_a_junk_condensation_falls_back_to_the_question(question: str, condensed: str, used: str) -> None:
    assert usable_condensation(question, condensed) == used


def chat(tmp_path: Path, condensations: list[str]) -> Any:
    """The chain over the guide with a model that condenses as told and answers 'ANSWER'."""
    llm = FakeLLM(responses=[r for c in condensations for r in (c, "ANSWER [1]")])
    retriever = HybridRetriever(knowledge_base=guide_kb(tmp_path, DeterministicFakeEmbedding(size=16)))
    return build_chain(llm, retriever, ChatFormat("plain", load_prompt("system_default")), chain_type="stuff")


HISTORY = [("借书证押金是多少？", "借书证押金为 100 元 [1]。")]


def test_an_off_topic_follow_up_condensed_to_junk_is_refused_in_its_language(tmp_path: Path) -> None:
    out = chat(tmp_path, ["The answer is:"]).invoke(
        {"question": "What is the boiling point of mercury?", "chat_history": HISTORY}
    )
    assert out["standalone_question"] == "What is the boiling point of mercury?"
    assert out["answer"] == load_prompt("no_answer_en") and out["sources"] == []


def test_an_off_topic_follow_up_is_refused_even_when_condensed_on_topic(tmp_path: Path) -> None:
    # The model rewrote the question into one the guide answers: the original is still off-topic.
    out = chat(tmp_path, ["火星的直径和借书证押金是多少？"]).invoke({"question": "火星的直径是多少？", "chat_history": HISTORY})
    assert out["answer"] == load_prompt("no_answer_zh") and out["sources"] == []


def test_an_elliptic_follow_up_leaning_on_the_conversation_is_answered(tmp_path: Path) -> None:
    # "那学生卡呢？" alone is refused (the guide never says 学生卡), but its terms come from the conversation,
    # and the condensed question is answerable: answered. "火星呢？" brings a subject of its own: refused.
    history = [("学生卡可以当借书证用吗？", "指南只说需要携带身份证办理借书证 [1]。")]
    follow_up = {"question": "那学生卡呢？", "chat_history": history}
    assert HybridRetriever(knowledge_base=guide_kb(tmp_path / "alone", DeterministicFakeEmbedding(size=16))).invoke(
        follow_up["question"]
    ) == []
    out = chat(tmp_path, ["学生卡可以代替借书证办理借阅吗？"]).invoke(follow_up)
    assert out["answer"] == "ANSWER [1]" and out["sources"]
    out = chat(tmp_path / "2", ["火星和学生卡可以代替借书证办理借阅吗？"]).invoke(
        {"question": "火星呢？", "chat_history": history}
    )
    assert out["answer"] == load_prompt("no_answer_zh")


def test_the_refusal_follows_the_latest_question_not_the_history(tmp_path: Path) -> None:
    history = [("What are the opening hours?", "Monday to Saturday [1].")]
    out = chat(tmp_path, ["水银的沸点是多少？"]).invoke({"question": "水银的沸点是多少？", "chat_history": history})
    assert out["answer"] == load_prompt("no_answer_zh")
    out = chat(tmp_path / "2", ["What is the boiling point of mercury?"]).invoke(
        {"question": "What is the boiling point of mercury?", "chat_history": HISTORY}
    )
    assert out["answer"] == load_prompt("no_answer_en")
