"""Request bodies of the OpenAI-compatible routes (the parts this server reads; other OpenAI fields are
accepted and ignored, so that existing clients work unchanged)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

#: The longest message, prompt, query or passage accepted (characters): far beyond any model's context window
#: here, and short enough that refusing a longer one (422, before retrieval or generation) costs nothing.
MAX_TEXT_CHARS = 64_000
#: The most messages in one chat, texts in one embedding request, documents to answer from.
MAX_ITEMS = 2048

_Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
_Texts = Annotated[list[_Text], Field(max_length=MAX_ITEMS)]


def _bounded_texts(value: str | list[str]) -> str | list[str]:
    """A string or a list of at most MAX_ITEMS strings, each at most MAX_TEXT_CHARS (one clear error, not one
    per member of the union)."""
    texts = [value] if isinstance(value, str) else value
    if len(texts) > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} texts")
    if any(len(t) > MAX_TEXT_CHARS for t in texts):
        raise ValueError(f"longer than {MAX_TEXT_CHARS} characters")
    return value


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

    @model_validator(mode="after")
    def _bounded(self) -> ChatMessage:
        if len(self.text()) > MAX_TEXT_CHARS:  # one clear error for a string or a list of parts alike
            raise ValueError(f"the message is longer than {MAX_TEXT_CHARS} characters")
        return self


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
    messages: list[ChatMessage] = Field(max_length=MAX_ITEMS)
    #: OpenAI's newer name for ``max_tokens``.
    max_completion_tokens: int | None = Field(default=None, ge=1)
    #: Extra: the knowledge base to answer from (else the one named by ``model``: ``kb/<name>``).
    knowledge_base: str | None = None
    #: Extra: answer from these documents of the knowledge base only (sources as ``documents`` lists them).
    documents: _Texts | None = None


class CompletionRequest(_Sampling):
    prompt: Annotated[str | list[str], AfterValidator(_bounded_texts)]
    echo: bool = False


class EmbeddingRequest(_Request):
    model: str | None = None
    input: Annotated[str | list[str], AfterValidator(_bounded_texts)]
    encoding_format: Literal["float", "base64"] = "float"


class CreateKnowledgeBase(_Request):
    name: str = Field(min_length=1)


class SearchRequest(_Request):
    """Retrieval alone (the app's hit test): no model is asked."""

    query: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class PageRequest(_Request):
    """A PDF page to render; the passage to highlight travels in the body (a cited passage of a few thousand
    Chinese characters is too long for a URL)."""

    file: str = Field(min_length=1)
    page: int = Field(ge=1)
    passage: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
