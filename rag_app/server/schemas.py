"""Request bodies of the OpenAI-compatible routes (the parts this server reads; other OpenAI fields are
accepted and ignored, so that existing clients work unchanged)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    #: A string, or OpenAI's list of content parts (only the text parts are read).
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") in ("text", None))
        return self.content or ""


class _Sampling(_Request):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1)

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    #: OpenAI's newer name for ``max_tokens``.
    max_completion_tokens: int | None = Field(default=None, ge=1)
    #: Extra: the knowledge base to answer from (else the one named by ``model``: ``kb/<name>``).
    knowledge_base: str | None = None
    #: Extra: answer from these documents of the knowledge base only (sources as ``documents`` lists them).
    documents: list[str] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False


class EmbeddingRequest(_Request):
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


class CreateKnowledgeBase(_Request):
    name: str = Field(min_length=1)


class SearchRequest(_Request):
    """Retrieval alone (the app's hit test): no model is asked."""

    query: str = Field(min_length=1)


class PageRequest(_Request):
    """A PDF page to render; the passage to highlight travels in the body (a cited passage of a few thousand
    Chinese characters is too long for a URL)."""

    file: str = Field(min_length=1)
    page: int = Field(ge=1)
    passage: str | None = None
