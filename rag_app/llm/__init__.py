"""LLM backends, chosen by name from a small registry.

Each backend lives in its own module with a ``create(settings: LLMSettings)`` factory; the module (and its
heavy import: llama_cpp, transformers) is loaded only when that backend is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rag_app.errors import MissingDependencyError, ModelNotFoundError, UnknownBackendError
from rag_app.llm.base import LocalLLM, TokenAwareLLM

if TYPE_CHECKING:
    from rag_app.settings import LLMSettings

_BACKENDS: dict[str, str] = {
    "llamacpp": "rag_app.llm.llamacpp",
    "transformers": "rag_app.llm.hf",
    "fake": "rag_app.llm.fake",
    "openai": "rag_app.llm.openai_backend",  # an OpenAI-compatible server (issue 11); nothing loaded here
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


def token_counter(settings: LLMSettings) -> Callable[[str], int]:
    """Count tokens as the configured model will, without loading its weights (sizing context offline).

    Matches the backends' own ``count_tokens``: llama.cpp's tokenizer from the GGUF (``vocab_only``),
    the transformers tokenizer from the model folder, the fake backend's CJK-aware estimate. A backend added
    with :func:`register_backend` counts with that estimate unless its module defines ``token_counter``.
    """
    if settings.backend == "llamacpp":
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependencyError("counting llama.cpp tokens needs llama-cpp-python") from exc
        from rag_app.llm.llamacpp import default_gguf_path

        path = Path(settings.model_path).expanduser() if settings.model_path else default_gguf_path(settings)
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF model file not found: {path}")
        try:
            vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise ModelNotFoundError(f"llama.cpp cannot read {path}: {exc}") from exc
        return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    if settings.backend == "transformers":
        from transformers import AutoTokenizer

        folder = Path(settings.model_path).expanduser() if settings.model_path else None
        if folder is None or not folder.is_dir():
            raise ModelNotFoundError(f"model folder not found: {settings.model_path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=settings.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot load the tokenizer from {folder}: {exc}") from exc
        return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    module_name = _BACKENDS.get(settings.backend)
    if module_name is None:
        raise UnknownBackendError(
            f"unknown LLM backend '{settings.backend}'", hint=f"choose one of: {', '.join(backend_names())}"
        )
    own = getattr(importlib.import_module(module_name), "token_counter", None)
    if callable(own):
        return own(settings)  # type: ignore[no-any-return]
    from ingest.embed import estimate_tokens

    return estimate_tokens


__all__ = ["LocalLLM", "TokenAwareLLM", "backend_names", "create_llm", "register_backend", "token_counter"]
