"""Acceptance, on the shipped default models: a one-document Chinese knowledge base answers its questions in
Chinese, and in a conversation an off-topic follow-up is refused while the first question is answered.

Real parts only: the default embedder and GGUF (through llama-cpp-python) from the settings' defaults, a
persistent Chroma in a fresh data directory, ingestion through the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_app.prompting import load_prompt
from rag_app.service import RagService
from rag_app.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.shipped_default]

GUIDE = """# 市图书馆读者指南

## 开放时间
图书馆开放时间为周一至周六，上午九点至晚上八点。每周日闭馆，国家法定节假日另行通知。

## 借书证
办理借书证需要携带本人身份证到一楼服务台办理。借书证押金为 100 元，退证时全额退还。借书证遗失应及时挂失，补办收取工本费 10 元。

## 借阅规则
每人最多借 5 本图书，借期为 30 天。到期前可以在网上续借一次，续借期为 15 天。逾期归还的图书每本每天收取滞纳金 0.1 元。

## 阅览室
二楼为报刊阅览室，三楼为自习室。阅览室内请保持安静，禁止饮食。
"""
_CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RagService]:
    root = tmp_path_factory.mktemp("library")
    (root / "图书馆指南.md").write_text(GUIDE, encoding="utf-8")
    # The shipped defaults; only greedy decoding and a short answer, so that the facts checked are stable.
    settings = Settings.load(data_dir=root / "data", llm={"temperature": 0.0, "max_new_tokens": 128})
    svc = RagService(settings)
    report = svc.ingest([root / "图书馆指南.md"])
    assert not report.failed
    yield svc


def ask(svc: RagService, question: str, history: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return svc.chain().invoke({"question": question, "chat_history": history or []})


def chinese(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(1 for c in letters if _CJK.match(c)) * 2 >= len(letters)


@pytest.mark.parametrize(
    ("question", "facts"),
    [
        ("借书证押金是多少？", ["100"]),
        ("每人最多可以借几本书？", ["5"]),
        pytest.param(
            "图书馆周日开放吗？", ["闭馆|不开放|不开|休息|关闭"],
            # Qwen2.5-Coder-0.5B reads "周一至周六" and answers "图书馆周日开放" whatever the prompt (eight
            # wordings tried); the 1.5B answers it. Strict: the day the default gets it right, this says so.
            marks=pytest.mark.xfail(strict=True, reason="the 0.5B default misreads the opening days"),
        ),
    ],
)
def test_chinese_questions_are_answered_in_chinese(service: RagService, question: str, facts: list[str]) -> None:
    out = ask(service, question)
    answer = out["answer"]
    assert answer != load_prompt("no_answer_zh"), "refused an answerable question"
    assert out["sources"], answer
    assert chinese(answer), answer
    for fact in facts:
        assert re.search(fact, answer), answer


def test_an_off_topic_follow_up_is_refused_after_an_answer(service: RagService) -> None:
    first = ask(service, "借书证押金是多少？")
    assert "100" in first["answer"], first["answer"]
    history = [("借书证押金是多少？", first["answer"])]
    follow_up = ask(service, "What is the boiling point of mercury?", history)
    assert follow_up["answer"] == load_prompt("no_answer_en"), follow_up["answer"]
    assert follow_up["sources"] == []
    assert ask(service, "火星的直径是多少？", history)["answer"] == load_prompt("no_answer_zh")
