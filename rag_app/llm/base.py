"""What the chain needs from a model beyond text in, text out: its context window, its own token count
and the chat template stored in the model file."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM


@runtime_checkable
class TokenAwareLLM(Protocol):
    """An LLM runnable that can count its own tokens (used to fit prompts into ``context_window``)."""

    context_window: int
    max_new_tokens: int
    chat_template: str | None
    bos_token: str
    eos_token: str

    def count_tokens(self, text: str) -> int: ...

    # LangChain Runnable methods used by the chain
    def invoke(self, input: str, config: object = None, **kwargs: object) -> str: ...


class LocalLLM(LLM):
    """Base for backends that run a local model (llama.cpp, transformers)."""

    context_window: int = 2048
    max_new_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    model_name: str = ""

    def count_tokens(self, text: str) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        # Backends implement _stream only; a whole answer is the joined stream.
        return "".join(c.text for c in self._stream(prompt, stop, run_manager, **kwargs))
