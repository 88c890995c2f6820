"""LLM backends, chosen by name from a small registry.

Each backend lives in its own module with a ``create(settings: LLMSettings)`` factory; the module (and its
heavy import: llama_cpp, transformers) is loaded only when that backend is chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rag_app.errors import UnknownBackendError
from rag_app.llm.base import LocalLLM, TokenAwareLLM

if TYPE_CHECKING:
    from rag_app.settings import LLMSettings

_BACKENDS: dict[str, str] = {
    "llamacpp": "rag_app.llm.llamacpp",
    "transformers": "rag_app.llm.hf",
    "fake": "rag_app.llm.fake",
}


def register_backend(name: str, module: str) -> None:
    """Add a backend: ``module`` must define ``create(settings: LLMSettings) -> TokenAwareLLM``."""
    _BACKENDS[name] = module


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def create_llm(settings: LLMSettings) -> TokenAwareLLM:
    """Build the configured backend's LLM (loads the model)."""
    module_name = _BACKENDS.get(settings.backend)
    if module_name is None:
        raise UnknownBackendError(
            f"unknown LLM backend '{settings.backend}'", hint=f"choose one of: {', '.join(backend_names())}"
        )
    module = importlib.import_module(module_name)
    llm: TokenAwareLLM = module.create(settings)
    return llm


__all__ = ["LocalLLM", "TokenAwareLLM", "backend_names", "create_llm", "register_backend"]
