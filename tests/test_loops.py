"""Answers that loop stop (rag_app.llm.base.stop_loops): small models repeat a sentence or a short run until
max_new_tokens; both local backends stop there, and ordinary text (a word twice, a table rule) goes on."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.outputs import GenerationChunk

from rag_app.llm.base import loop_start, stop_loops


def chunks(text: str, size: int = 3) -> list[GenerationChunk]:
    return [GenerationChunk(text=text[i : i + size]) for i in range(0, len(text), size)]


@pytest.mark.parametrize(
    "text",
    [
        "The library opens at nine. " * 8,
        "图书馆周日闭馆，国家法定节假日另行通知。" * 6,
        "答案是：" + "哈" * 100,
        "Yes [1]. " + "- " * 60,
    ],
)
def test_a_loop_is_cut_after_its_second_copy(text: str) -> None:
    out = "".join(c.text for c in stop_loops(iter(chunks(text))))
    assert len(out) < len(text) / 2, out
    assert loop_start(out) is not None  # it stopped right where the loop showed


@pytest.mark.parametrize(
    "text",
    [
        "It is very very good, and the deposit is 100 yuan [1]. Loans last 30 days [2].",
        "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n",
        "借书证押金为 100 元 [1]。每人最多借 5 本图书 [2]。借期为 30 天，可以续借一次 [2]。",
        "1. Bring your ID.\n2. Pay the deposit.\n3. Collect the card.\n",
    ],
)
def test_ordinary_text_passes_whole(text: str) -> None:
    assert loop_start(text) is None
    assert "".join(c.text for c in stop_loops(iter(chunks(text)))) == text


def test_the_guard_can_be_switched_off() -> None:
    text = "Again and again I say. " * 6
    assert "".join(c.text for c in stop_loops(iter(chunks(text)), enabled=False)) == text


@pytest.mark.e2e
def test_the_real_model_stops_looping(real_llm: Any) -> None:
    """SmolLM2 without a repeat penalty repeats a line of its poem until max_new_tokens; guarded, it stops
    at the line's second copy."""
    prompt = "<|im_start|>user\nWrite a poem about cats.<|im_end|>\n<|im_start|>assistant\n"
    plain = real_llm.model_copy(update={"repeat_penalty": 1.0, "stop_loops": False})
    unguarded = plain.invoke(prompt, max_new_tokens=160)
    guarded = plain.model_copy(update={"stop_loops": True}).invoke(prompt, max_new_tokens=160)
    assert loop_start(unguarded) is not None, unguarded  # the model does loop here
    assert unguarded.startswith(guarded)
    assert len(guarded) < len(unguarded) * 0.6, (guarded, unguarded)
