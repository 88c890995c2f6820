"""What a model says about itself, read without loading it: GGUF metadata or a transformers config.json.

The planner and ``rag doctor`` need the shape (layers, KV heads, head size, vocabulary), the trained context and
the RoPE values *as the file carries them* — the long-context models depend on those values, so they are
shown as read, never assumed. A catalogue entry fills in when no file is on disk yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rag_app.catalog import CatalogModel, RopeScaling, Shape
from rag_app.llm.gguf import GGUFError, read_metadata

#: ggml's file type codes (``general.file_type``) → the names users know from download pages.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


@dataclass(frozen=True)
class ModelInfo:
    """A model's facts, with where they came from (``gguf``, ``config.json`` or ``catalog``)."""

    source: str
    name: str
    architecture: str
    shape: Shape | None
    #: Context length the model was trained for, rope scaling included (a 16K PI model: 16384).
    trained_context: int | None
    #: ``context_length`` exactly as stored in the file.
    file_context: int | None
    rope_base: float | None
    rope: RopeScaling
    weights_bytes: int | None = None
    quantization: str | None = None
    #: The chat template stored with the model, if any.
    chat_template: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shape = self.shape
        return {
            "source": self.source,
            "name": self.name,
            "architecture": self.architecture,
            "trained_context": self.trained_context,
            "file_context_length": self.file_context,
            "rope_freq_base": self.rope_base,
            "rope_scaling": {
                "type": self.rope.type, "factor": self.rope.factor, "original_context": self.rope.original_context,
            },
            "shape": None if shape is None else {
                "layers": shape.n_layers, "n_embd": shape.n_embd, "heads": shape.n_heads,
                "kv_heads": shape.n_kv_heads, "head_dim": shape.head_dim, "vocab": shape.n_vocab,
            },
            "weights_bytes": self.weights_bytes,
            "quantization": self.quantization,
            "chat_template": bool(self.chat_template),
        }


def effective_context(context_length: int | None, rope: RopeScaling) -> int | None:
    """The trained window. Converters store either the scaled window (16384) or the original one (4096) as
    ``context_length``; with the original stored, the scaled window is original × factor."""
    if context_length is None or rope.type == "none" or rope.factor <= 1:
        return context_length
    original = rope.original_context or context_length
    if context_length <= original:
        return int(original * rope.factor)
    return context_length


def from_gguf(path: str | Path) -> ModelInfo:
    """Facts from a GGUF header (raises GGUFError / OSError for a file that is not one)."""
    path = Path(path)
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", "llama"))

    def get(key: str) -> Any:
        return meta.get(f"{arch}.{key}")

    scaling_type = str(get("rope.scaling.type") or "none").lower()
    factor = get("rope.scaling.factor")
    if factor is None and get("rope.scale_linear") is not None:  # older GGUF key for linear scaling
        scaling_type, factor = "linear", get("rope.scale_linear")
    rope = RopeScaling(
        type=scaling_type if scaling_type in ("linear", "yarn") else "none",  # type: ignore[arg-type]
        factor=float(factor or 1.0),
        original_context=_int(get("rope.scaling.original_context_length")),
    )
    shape = None
    n_embd, n_heads, n_layers = _int(get("embedding_length")), _int(get("attention.head_count")), _int(get("block_count"))
    if n_embd and n_heads and n_layers:
        n_kv = _int(get("attention.head_count_kv")) or n_heads
        key_len = _int(get("attention.key_length"))
        kv_heads = n_kv if not key_len else n_kv * key_len // (n_embd // n_heads)  # shape keeps head_dim = n_embd/heads
        vocab = _int(get("vocab_size")) or _int(meta.get("tokenizer.ggml.tokens#count"))
        shape = Shape(n_layers, n_embd, n_heads, kv_heads, _int(get("feed_forward_length")) or 4 * n_embd, vocab or 0)
    file_ctx = _int(get("context_length"))
    return ModelInfo(
        source="gguf",
        name=str(meta.get("general.name") or path.stem),
        architecture=arch,
        shape=shape,
        trained_context=effective_context(file_ctx, rope),
        file_context=file_ctx,
        rope_base=float(get("rope.freq_base")) if get("rope.freq_base") is not None else 10000.0,
        rope=rope,
        weights_bytes=path.stat().st_size,
        quantization=_FILE_TYPES.get(_int(meta.get("general.file_type")) or -1),
        chat_template=meta.get("tokenizer.chat_template") or None,
    )


def from_hf_folder(path: str | Path) -> ModelInfo:
    """Facts from a transformers model folder's config.json (and the size of its weight files)."""
    folder = Path(path)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = str(scaling.get("rope_type") or scaling.get("type") or "none").lower()
    rope = RopeScaling(
        type=kind if kind in ("linear", "yarn") else "none",  # type: ignore[arg-type]
        factor=float(scaling.get("factor") or 1.0),
        original_context=_int(scaling.get("original_max_position_embeddings")),
    )
    n_embd, n_heads = _int(config.get("hidden_size")), _int(config.get("num_attention_heads"))
    shape = None
    if n_embd and n_heads and config.get("num_hidden_layers"):
        shape = Shape(
            int(config["num_hidden_layers"]), n_embd, n_heads,
            _int(config.get("num_key_value_heads")) or n_heads,
            _int(config.get("intermediate_size")) or 4 * n_embd, _int(config.get("vocab_size")) or 0,
        )
    file_ctx = _int(config.get("max_position_embeddings"))
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.glob("*.bin")
    )
    theta = config.get("rope_theta") or scaling.get("rope_theta")
    return ModelInfo(
        source="config.json",
        name=folder.name,
        architecture=str((config.get("architectures") or [config.get("model_type", "?")])[0]),
        shape=shape,
        trained_context=effective_context(file_ctx, rope),
        file_context=file_ctx,
        rope_base=float(theta) if theta else 10000.0,
        rope=rope,
        weights_bytes=weights or None,
        quantization=str(config.get("torch_dtype") or config.get("dtype") or "") or None,
        chat_template=_hf_chat_template(folder),
    )


def from_catalog(model: CatalogModel) -> ModelInfo:
    """Facts as the model's authors publish them (no file needed)."""
    return ModelInfo(
        source="catalog",
        name=model.display,
        architecture="llama",
        shape=model.shape,
        trained_context=model.trained_context,
        file_context=None,
        rope_base=10000.0,
        rope=model.rope,
    )


def with_catalog(info: ModelInfo, model: CatalogModel | None) -> ModelInfo:
    """Fill what a file left out (e.g. the vocabulary size) from the catalogue entry."""
    if model is None or info.shape is not None:
        return info
    return replace(info, shape=model.shape)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _hf_chat_template(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template")
    return template if isinstance(template, str) else None
