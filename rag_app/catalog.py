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
        return 2 * self.n_vocab * self.n_embd + self.n_layers * per_layer + self.n_embd


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
    prompt_format: Literal["llama2-chat", "alpaca", "plain"]
    rope: RopeScaling = field(default_factory=RopeScaling)
    base_model: bool = False
    #: Longest window the authors document with NTK extension (None: not documented for this model).
    ntk_max_context: int | None = None
    notes: str = ""

    def profile(self) -> dict[str, Any]:
        """The settings this entry implies (a built-in profile named after it)."""
        llm: dict[str, Any] = {
            "model": self.name,
            "prompt_format": self.prompt_format,
            # The largest window up to the trained one that fits the machine (the planner decides at load).
            "n_ctx": "auto",
            "base_model": self.base_model,
        }
        if self.prompt_format == "llama2-chat":
            llm["system_prompt"] = "default"
        # Retrieved passages fill a quarter of the window (half of a 2K one): answer recall 0.99 at 4K tokens,
        # ≥ 0.996 at 16K on the long-document evaluation, while prompt processing on a CPU stays bearable.
        budget = 0.5 if self.trained_context <= 2048 else 0.25
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


CATALOG: dict[str, CatalogModel] = {m.name: m for m in _family()}

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
