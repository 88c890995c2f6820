"""Fake backend: LangChain's streaming fake LLM with canned answers, for tests and UI demos."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.language_models.fake import FakeStreamingListLLM

if TYPE_CHECKING:
    from rag_app.settings import LLMSettings


class FakeLLM(FakeStreamingListLLM):
    """Returns the configured responses in turn; counts tokens with a CJK-aware estimate."""

    context_window: int = 4096
    max_new_tokens: int = 256
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    def count_tokens(self, text: str) -> int:
        from ingest.embed import estimate_tokens

        return estimate_tokens(text)


def create(settings: LLMSettings) -> FakeLLM:
    return FakeLLM(
        responses=list(settings.fake_responses),
        context_window=settings.n_ctx or 4096,
        max_new_tokens=settings.max_new_tokens,
        sleep=settings.fake_delay or None,
    )
