"""``openai`` backend: generation by any OpenAI-compatible server (vLLM, llama.cpp's llama-server,
llama-cpp-python's server, Ollama …), so many machines can share one retrieval service.

The prompt is rendered *here*, in the model's exact format (the Alpaca-2 template, the GGUF's chat template),
and sent to the server's **completions** endpoint as text: a chat endpoint would re-template it with whatever
the server thinks the model wants, and the token budget the chain keeps (context window minus the answer)
would no longer be ours to keep. Built on LangChain's own ``langchain_openai.OpenAI`` completions LLM, which
streams and passes ``stop``/``max_tokens``; this module adds what the chain needs besides (token counting,
the context window, the chat template) and nothing is loaded locally: the memory planner does not run.

Where the facts come from:

* tokens are counted with a local copy of the served model's tokenizer (``llm.tokenizer_path`` or
  ``llm.model_path``: a GGUF file, read ``vocab_only``, or a Hugging Face tokenizer folder), else by the
  server's tokenize endpoint (llama-cpp-python: ``/extras/tokenize/count``; llama-server and vLLM:
  ``/tokenize``), else by an estimate (with a warning);
* the context window is ``llm.n_ctx``, else what the server reports (llama-server ``/props``, vLLM's
  ``max_model_len`` in ``/v1/models``), else 2048 (llama-cpp-python's server default) with a warning;
* the chat template and BOS/EOS texts come from that GGUF / tokenizer folder (llama-server's ``/props``
  when there is none).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.outputs import GenerationChunk, LLMResult

from rag_app.errors import GenerationServerError, MissingDependencyError, ModelNotFoundError, SettingsError

if TYPE_CHECKING:
    import httpx

    from rag_app.settings import LLMSettings

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-app[openai]'"
#: llama-cpp-python's server's default ``n_ctx``: a safe guess when neither the settings nor the server say.
DEFAULT_SERVER_CTX = 2048


@dataclass(frozen=True)
class Vocabulary:
    """What the chain needs from the served model's tokenizer, found without loading any weights."""

    count: Callable[[str], int]
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    source: str = "estimate"
    #: The server's tokenizer puts BOS before every prompt itself (so a rendered prompt's leading BOS text
    #: must go, or the model would see two). False for e.g. SmolLM2, whose template starts with the BOS text.
    adds_bos: bool = True


def _server_root(api_base: str) -> str:
    """``http://host:port/v1`` → ``http://host:port`` (the servers' extra endpoints live at the root)."""
    base = api_base.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _llm_class() -> type[Any]:
    """The LLM class, built on first use: ``langchain_openai`` is an extra, imported only for this backend."""
    try:
        from langchain_openai import OpenAI
    except ImportError as exc:
        raise MissingDependencyError(f"the openai backend needs langchain-openai: {INSTALL_HINT}") from exc
    return _define(OpenAI)


@functools.cache
def _define(base: type[Any]) -> type[Any]:
    import openai

    class OpenAICompletionsLLM(base):  # type: ignore[valid-type,misc]
        """A model served elsewhere, prompted through the completions endpoint with our rendered prompt.

        ``max_new_tokens`` is the answer's limit (``max_tokens`` on the wire), capped per request at what is
        left of the server's window after the prompt, so a long prompt never makes the server refuse.
        """

        context_window: int = DEFAULT_SERVER_CTX
        max_new_tokens: int = 256
        chat_template: str | None = None
        bos_token: str = ""
        eos_token: str = ""
        #: See :attr:`Vocabulary.adds_bos`.
        adds_bos: bool = True
        counter: Any = None  # Callable[[str], int]

        @property
        def _llm_type(self) -> str:
            return "openai-completions"

        def count_tokens(self, text: str) -> int:
            return int(self.counter(text))

        def get_num_tokens(self, text: str) -> int:
            return self.count_tokens(text)

        @property
        def _default_params(self) -> dict[str, Any]:
            return {**super()._default_params, "max_tokens": self.max_new_tokens}

        def _request(self, prompt: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            """The prompt as sent (without a leading BOS text when the server adds BOS itself) and the
            request's ``max_tokens``."""
            kwargs = dict(kwargs)
            wanted = int(kwargs.pop("max_new_tokens", None) or kwargs.pop("max_tokens", None) or self.max_new_tokens)
            if self.adds_bos and self.bos_token and prompt.startswith(self.bos_token):
                prompt = prompt[len(self.bos_token) :]
            room = self.context_window - self.count_tokens(prompt) - 1
            kwargs["max_tokens"] = max(1, min(wanted, room))
            return prompt, kwargs

        def _failed(self, exc: Exception) -> GenerationServerError:
            detail = getattr(exc, "message", None) or str(exc)
            return GenerationServerError(f"the generation server at {self.openai_api_base} failed: {detail}")

        def _stream(
            self,
            prompt: str,
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> Iterator[GenerationChunk]:
            prompt, kwargs = self._request(prompt, kwargs)
            try:
                for chunk in super()._stream(prompt, stop or None, run_manager, **kwargs):
                    if chunk.text or (chunk.generation_info or {}).get("finish_reason"):
                        yield chunk
            except openai.APIError as exc:
                raise self._failed(exc) from exc

        async def _astream(
            self,
            prompt: str,
            stop: list[str] | None = None,
            run_manager: AsyncCallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> AsyncIterator[GenerationChunk]:
            prompt, kwargs = self._request(prompt, kwargs)
            try:
                async for chunk in super()._astream(prompt, stop or None, run_manager, **kwargs):
                    if chunk.text or (chunk.generation_info or {}).get("finish_reason"):
                        yield chunk
            except openai.APIError as exc:
                raise self._failed(exc) from exc

        def _generate(
            self,
            prompts: list[str],
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> LLMResult:
            # One request per prompt: each has its own room left in the window.
            results = []
            for text in prompts:
                sent, params = self._request(text, kwargs)
                try:
                    results.append(super()._generate([sent], stop or None, run_manager, **params))
                except openai.APIError as exc:
                    raise self._failed(exc) from exc
            return _merged(results)

        async def _agenerate(
            self,
            prompts: list[str],
            stop: list[str] | None = None,
            run_manager: AsyncCallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> LLMResult:
            results = []
            for text in prompts:
                sent, params = self._request(text, kwargs)
                try:
                    results.append(await super()._agenerate([sent], stop or None, run_manager, **params))
                except openai.APIError as exc:
                    raise self._failed(exc) from exc
            return _merged(results)

    return OpenAICompletionsLLM


def _merged(results: list[LLMResult]) -> LLMResult:
    usage: dict[str, int] = {}
    for result in results:
        for key, value in ((result.llm_output or {}).get("token_usage") or {}).items():
            usage[key] = usage.get(key, 0) + int(value)
    return LLMResult(generations=[g for r in results for g in r.generations], llm_output={"token_usage": usage})


class _Server:
    """The few non-completion calls made to the server at start (model name, window, tokenizer)."""

    def __init__(self, settings: LLMSettings, api_key: str, client: httpx.Client | None) -> None:
        import httpx

        assert settings.api_base is not None
        self.base = settings.api_base.rstrip("/")
        self.root = _server_root(self.base)
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.client = client or httpx.Client(timeout=settings.request_timeout)

    def get(self, url: str) -> dict[str, Any] | None:
        import httpx

        try:
            response = self.client.get(url, headers=self.headers)
        except httpx.HTTPError as exc:
            raise GenerationServerError(f"cannot reach the generation server at {self.base}: {exc}") from exc
        if response.status_code in (401, 403):
            raise GenerationServerError(f"the generation server at {self.base} refused the API key (HTTP "
                                        f"{response.status_code})", hint="set llm.api_key (or $OPENAI_API_KEY)")
        if response.status_code != 200:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        import httpx

        try:
            response = self.client.post(self.root + path, json=payload, headers=self.headers)
        except httpx.HTTPError as exc:
            raise GenerationServerError(f"the generation server at {self.base} failed: {exc}") from exc
        if response.status_code != 200:
            return None
        body = response.json()
        return body if isinstance(body, dict) else None

    def models(self) -> list[dict[str, Any]]:
        body = self.get(self.base + "/models")
        if body is None:
            raise GenerationServerError(f"{self.base}/models did not answer as an OpenAI-compatible server does")
        return [m for m in body.get("data") or [] if isinstance(m, dict)]

    def context_window(self, model: dict[str, Any]) -> int | None:
        """What the server says its window is: vLLM's ``max_model_len``, llama-server's ``/props``."""
        if isinstance(model.get("max_model_len"), int):
            return int(model["max_model_len"])
        props = self.get(self.root + "/props") or {}
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
        return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None

    def vocabulary(self, model: str) -> Vocabulary | None:
        """Counting by the server's tokenizer (each text counted once, then cached)."""
        if self.post("/extras/tokenize/count", {"input": "", "model": model}) is not None:  # llama-cpp-python

            def count(text: str) -> int:
                body = self.post("/extras/tokenize/count", {"input": text, "model": model}) or {}
                return int(body.get("count", 0))

            overhead = count("")  # it adds BOS (when the model wants one); the chain counts text alone
            vocab = self._cached(lambda text: max(0, count(text) - overhead), "server /extras/tokenize/count")
            return Vocabulary(vocab.count, source=vocab.source, adds_bos=overhead > 0)
        probe = {"content": "", "prompt": "", "model": model, "add_special": False, "add_special_tokens": False}
        if self.post("/tokenize", probe) is not None:  # llama-server (content), vLLM (prompt)

            def count_tokens(text: str) -> int:
                body = self.post("/tokenize", probe | {"content": text, "prompt": text}) or {}
                return int(body["count"]) if "count" in body else len(body.get("tokens") or [])

            props = self.get(self.root + "/props") or {}
            vocab = self._cached(count_tokens, "server /tokenize")
            template = props.get("chat_template")
            return Vocabulary(vocab.count, template if isinstance(template, str) and template else None,
                              str(props.get("bos_token") or ""), str(props.get("eos_token") or ""), vocab.source)
        return None

    @staticmethod
    def _cached(count: Callable[[str], int], source: str) -> Vocabulary:
        return Vocabulary(functools.lru_cache(maxsize=4096)(count), source=source)


def local_vocabulary(settings: LLMSettings, path: Path) -> Vocabulary:
    """The tokenizer, chat template and BOS/EOS texts of a local GGUF file or tokenizer folder."""
    from rag_app.llm import token_counter

    path = path.expanduser()
    if path.is_file():
        from rag_app.llm.gguf import GGUFError, read_metadata

        count = token_counter(settings.model_copy(update={"backend": "llamacpp", "model_path": path}))
        try:
            meta = read_metadata(path, keep_arrays=True)
        except (OSError, GGUFError) as exc:
            raise ModelNotFoundError(f"cannot read GGUF {path}: {exc}") from exc
        tokens = meta.get("tokenizer.ggml.tokens") or []

        def token(key: str) -> str:
            index = meta.get(key)
            return str(tokens[index]) if isinstance(index, int) and 0 <= index < len(tokens) else ""

        template = meta.get("tokenizer.chat_template") or None
        return Vocabulary(count, template, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"),
                          f"GGUF {path.name}", adds_bos=bool(meta.get("tokenizer.ggml.add_bos_token", True)))
    if path.is_dir():
        count = token_counter(settings.model_copy(update={"backend": "transformers", "model_path": path}))
        try:
            config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}

        def text(value: Any) -> str:
            return str(value.get("content", "")) if isinstance(value, dict) else str(value or "")

        template, bos = config.get("chat_template"), text(config.get("bos_token"))
        return Vocabulary(count, template if isinstance(template, str) else None, bos, text(config.get("eos_token")),
                          f"tokenizer {path.name}", adds_bos=bool(config.get("add_bos_token", bool(bos))))
    raise ModelNotFoundError(f"tokenizer not found: {path} (a GGUF file or a tokenizer folder)",
                             hint="set llm.tokenizer_path to a local copy of the served model's tokenizer")


def _api_key(settings: LLMSettings) -> str:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    # Local servers take any key, but the OpenAI client refuses to start without one.
    return os.environ.get("OPENAI_API_KEY") or "none"


def create(settings: LLMSettings, *, http_client: httpx.Client | None = None) -> Any:
    """The served model as a TokenAwareLLM. ``http_client``: an httpx client for every call (tests pass one
    with a mock transport)."""
    if not settings.api_base:
        raise SettingsError("llm.backend = \"openai\" needs llm.api_base, e.g. http://127.0.0.1:8080/v1")
    cls = _llm_class()
    key = _api_key(settings)
    server = _Server(settings, key, http_client)
    listed = server.models()
    names = [str(m.get("id")) for m in listed if m.get("id")]
    model = settings.api_model or (names[0] if names else None)
    if model is None:
        raise GenerationServerError(f"the generation server at {server.base} lists no model",
                                    hint="set llm.api_model to the model's name on the server")
    if settings.api_model and names and settings.api_model not in names:
        logger.warning("llm.api_model %r is not among the server's models: %s", settings.api_model, ", ".join(names))

    tokenizer = settings.tokenizer_path or settings.model_path
    vocab = local_vocabulary(settings, Path(tokenizer)) if tokenizer else server.vocabulary(model)
    if vocab is None:
        from ingest.embed import estimate_tokens

        logger.warning("the generation server has no tokenize endpoint: token counts are estimates; set "
                       "llm.tokenizer_path to a local copy of the model's tokenizer for exact ones")
        vocab = Vocabulary(estimate_tokens)
    if isinstance(settings.n_ctx, int):
        n_ctx = settings.n_ctx
    else:
        entry = next((m for m in listed if m.get("id") == model), {})
        reported = server.context_window(entry)
        n_ctx = reported or DEFAULT_SERVER_CTX
        if reported is None:
            logger.warning("the generation server does not say its context window: assuming %d tokens; set "
                           "llm.n_ctx to the server's", DEFAULT_SERVER_CTX)
    logger.info("openai backend: %s model %s, window %d, tokens counted by %s", server.base, model, n_ctx,
                vocab.source)
    return cls(
        model=model,
        base_url=server.base,
        api_key=key,
        timeout=settings.request_timeout,
        max_retries=1,
        http_client=http_client,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
        # Not in OpenAI's API, understood by llama.cpp's servers (and vLLM's top_k): same sampling as local.
        extra_body={"top_k": settings.top_k, "repeat_penalty": settings.repeat_penalty},
        context_window=n_ctx,
        max_new_tokens=settings.max_new_tokens,
        chat_template=vocab.chat_template,
        bos_token=vocab.bos_token,
        eos_token=vocab.eos_token,
        adds_bos=vocab.adds_bos,
        counter=vocab.count,
    )


def token_counter(settings: LLMSettings) -> Callable[[str], int]:
    """Counting without a server when a local tokenizer is configured (``rag_app.llm.token_counter``)."""
    tokenizer = settings.tokenizer_path or settings.model_path
    if tokenizer:
        return local_vocabulary(settings, Path(tokenizer)).count
    if settings.api_base:
        return create(settings).count_tokens  # type: ignore[no-any-return]
    from ingest.embed import estimate_tokens

    return estimate_tokens
