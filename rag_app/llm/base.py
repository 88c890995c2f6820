"""What the chain needs from a model beyond text in, text out: its context window, its own token count
and the chat template stored in the model file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import GenerationChunk

logger = logging.getLogger(__name__)


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
    #: Stop when the answer starts repeating itself (:func:`stop_loops`); small models loop on long contexts.
    stop_loops: bool = True
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


def at_least_one(chunks: Iterator[GenerationChunk]) -> Iterator[GenerationChunk]:
    """``chunks``, or one empty chunk when there are none. A model may answer nothing (end of text as its
    first token); LangChain's ``LLM.stream`` turns that into ``ValueError("No generation chunks were
    returned")``, i.e. a 500 for a server's client, where an empty answer is the truth."""
    empty = True
    for chunk in chunks:
        empty = False
        yield chunk
    if empty:
        yield GenerationChunk(text="")


#: A loop is a run of text that ends the answer and repeats its last unit: a unit of at least
#: ``_LONG_UNIT`` characters (a sentence, a list item) seen twice in a row, or a shorter one repeated until the
#: run is ``_SHORT_RUN`` characters long ("哈哈哈…", "- - - …"). Units longer than ``_MAX_UNIT`` are not looked for.
_LONG_UNIT = 24
_SHORT_RUN = 64
_MAX_UNIT = 400


def _weight(text: str) -> int:
    """Length with a CJK character counted twice (it carries about a word)."""
    return sum(2 if "\u2e80" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" else 1 for c in text)


def loop_start(text: str) -> int | None:
    """Where the repetition that ``text`` ends with starts repeating (the end of its first copy), or ``None``
    when it does not end in a loop. Whitespace between copies counts as part of the unit."""
    n = len(text)
    for size in range(1, min(_MAX_UNIT, n // 2) + 1):
        unit = text[n - size :]
        if text[n - 2 * size : n - size] != unit:
            continue
        if not unit.strip():
            continue
        weight = _weight(unit)
        if weight >= _LONG_UNIT:
            return n - size
        copies = 2
        while copies * weight < _SHORT_RUN and text[n - (copies + 1) * size : n - copies * size] == unit:
            copies += 1
        if copies * weight >= _SHORT_RUN:
            return n - (copies - 1) * size
    return None


def stop_loops(chunks: Iterator[GenerationChunk], enabled: bool = True) -> Iterator[GenerationChunk]:
    """``chunks`` until the text they make loops (:func:`loop_start`); then generation stops. Nothing is held
    back (the first word matters more than hiding one repeated copy), so a streamed answer shows the loop's
    second copy once; the rest of ``max_new_tokens`` is not spent on it."""
    text = ""
    for chunk in chunks:
        yield chunk
        if not enabled:
            continue
        text = (text + chunk.text)[-4 * _MAX_UNIT :]
        if loop_start(text) is not None:
            logger.info("generation stopped: the answer repeats itself")
            return
