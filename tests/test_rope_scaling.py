"""RoPE scaling stored in a GGUF is applied, and llama.cpp and transformers agree on long-context Llamas.

The 16K Chinese-Alpaca-2 models use linear scaling ×4 and the 64K one YaRN ×16 over 4096 positions. The llama.cpp
backend passes no RoPE arguments (``llama_kwargs``), so the scaling must come from the file: these tests prove
it does, bit for bit, and that the same weights give the same logits under transformers. The tiny models
shrink the original context to 64 positions so that "beyond it" costs a 256-token forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'rag-app[llamacpp]')"
)
pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'rag-app[dev]')")

from rag_app.llm.llamacpp import smollm2_gguf_path, llama_kwargs  # noqa: E402
from rag_app.settings import LLMSettings  # noqa: E402
from tests.gguf_tools import convert_llama_to_gguf, with_rope_metadata  # noqa: E402
from tests.tiny_models import build_tiny_llama  # noqa: E402

ORIG_CTX = 64  # the tiny models' "original" (pre-extension) context
SEQ = 256  # tokens fed; positions ORIG_CTX.. are beyond the original context
SCALINGS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": ORIG_CTX},
}
#: llama.cpp vs transformers, relative to the largest |logit|. Both compute in float32 and the KV cache is made
#: float32 too (llama.cpp's default f16 cache alone costs up to 9e-4 relative here); what remains is summation
#: order, about 3e-6. Scaling changes these logits by about 0.7 relative, so the bound still tells them apart.
TOLERANCE = 1e-4
F32_CACHE = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}
NO_ROPE_KEYS = {"scaling_type": None, "scaling_factor": None, "original_context_length": None}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Per scaling: (transformers folder, f32 GGUF) of one and the same random tiny Llama."""
    root = tmp_path_factory.mktemp("rope")
    out: dict[str, tuple[Path, Path]] = {}
    for name, rope in SCALINGS.items():
        folder = build_tiny_llama(
            root / name, rope_scaling=rope, max_positions=ORIG_CTX * 16 if name == "yarn" else SEQ
        )
        sharpen(folder)
        out[name] = (folder, convert_llama_to_gguf(folder, root / f"{name}.gguf"))
    return out


def sharpen(folder: Path, gain: float = 16.0) -> None:
    """Scale q/k projections so attention depends on position: random init (std 0.02) attends almost uniformly,
    which would hide RoPE entirely."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(gain)
            layer.self_attn.k_proj.weight.mul_(gain)
    model.save_pretrained(folder)


def token_ids(vocab_size: int, n: int = SEQ) -> list[int]:
    rng = np.random.default_rng(0)
    return [1] + rng.integers(4, vocab_size, n - 1).tolist()


def explicit(kind: str, orig_ctx: int = ORIG_CTX) -> dict[str, Any]:
    """The scaling as llama.cpp arguments, for a file that carries none."""
    if kind == "linear":
        return {"rope_scaling_type": llama_cpp.LLAMA_ROPE_SCALING_TYPE_LINEAR, "rope_freq_scale": 1 / 4}
    return {
        "rope_scaling_type": llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN, "rope_freq_scale": 1 / 16,
        "yarn_orig_ctx": orig_ctx,
    }


def hf_logits(folder: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def gguf_logits(ids: list[int], **kwargs: Any) -> np.ndarray:
    llm = llama_cpp.Llama(logits_all=True, **kwargs)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def backend_logits(path: Path, ids: list[int], **overrides: Any) -> np.ndarray:
    """Logits as the llama.cpp backend loads ``path`` (``llama_kwargs`` with default settings), plus overrides."""
    return gguf_logits(ids, **(llama_kwargs(LLMSettings(), path, SEQ) | overrides))


def rel_diff(a: np.ndarray, b: np.ndarray, start: int = ORIG_CTX) -> tuple[float, float]:
    """(max abs difference, that divided by the largest |logit|) past the original context."""
    a, b = a[start:], b[start:]
    diff = float(np.abs(a - b).max())
    return diff, diff / float(np.abs(b).max())


def vocab_size(path: Path) -> int:
    return int(json.loads((path / "config.json").read_text())["vocab_size"])


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_scaling_from_file_equals_explicit_arguments(tiny: dict[str, tuple[Path, Path]], kind: str,
                                                     tmp_path: Path) -> None:
    folder, scaled = tiny[kind]
    plain = with_rope_metadata(scaled, tmp_path / "plain.gguf", **NO_ROPE_KEYS)
    ids = token_ids(vocab_size(folder))
    from_file = backend_logits(scaled, ids)
    by_args = backend_logits(plain, ids, **explicit(kind))
    unscaled = backend_logits(plain, ids)
    assert np.array_equal(from_file, by_args), f"{kind}: max diff {np.abs(from_file - by_args).max():.3g}"
    diff, rel = rel_diff(from_file, unscaled)
    assert rel > 0.1, f"{kind} scaling barely changes logits: {diff:.3g} ({rel:.3g} relative)"


@pytest.mark.parametrize("kind", list(SCALINGS))
def test_llamacpp_matches_transformers(tiny: dict[str, tuple[Path, Path]], kind: str) -> None:
    folder, path = tiny[kind]
    ids = token_ids(vocab_size(folder))
    diff, rel = rel_diff(backend_logits(path, ids, **F32_CACHE), hf_logits(folder, ids))
    assert rel < TOLERANCE, f"{kind}: llama.cpp vs transformers max abs {diff:.3g}, relative {rel:.3g}"


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_transformers_scaling_changes_logits(tiny: dict[str, tuple[Path, Path]], kind: str) -> None:
    folder, _ = tiny[kind]
    plain = tiny["none"][0]
    assert (folder / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    ids = token_ids(vocab_size(folder))
    diff, rel = rel_diff(hf_logits(folder, ids), hf_logits(plain, ids))
    assert rel > 1000 * TOLERANCE, f"{kind} scaling barely changes logits: {diff:.3g} ({rel:.3g} relative)"


def test_yarn_attention_factor_comes_from_the_file(tiny: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """llama.cpp recomputes the YaRN magnitude factor (0.1·ln(factor) + 1, as transformers) and drops an explicit
    ``yarn_attn_factor``; only the file's ``rope.scaling.attn_factor`` scales it."""
    folder, path = tiny["yarn"]
    ids = token_ids(vocab_size(folder))
    base = backend_logits(path, ids)
    assert np.array_equal(base, backend_logits(path, ids, yarn_attn_factor=2.0))
    doubled = with_rope_metadata(path, tmp_path / "attn2.gguf", attn_factor=2.0)
    diff, rel = rel_diff(backend_logits(doubled, ids), base)
    assert rel > 0.1, f"rope.scaling.attn_factor = 2 barely changes logits: {diff:.3g} ({rel:.3g} relative)"


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_smollm2_scaling_from_file(kind: str, tmp_path: Path) -> None:
    """The shipped quantized GGUF with rewritten metadata: the file's scaling equals the explicit arguments."""
    orig_ctx, n = 16, 64  # SmolLM2 was trained on 8192; a small "original" keeps three passes cheap
    source = smollm2_gguf_path()
    keys: dict[str, Any] = {"scaling_type": kind, "scaling_factor": 4.0 if kind == "linear" else 16.0}
    if kind == "yarn":
        keys["original_context_length"] = orig_ctx
    scaled = with_rope_metadata(source, tmp_path / "scaled.gguf", **keys)
    ids = token_ids(1000, n)
    from_file = backend_logits(scaled, ids)
    by_args = backend_logits(source, ids, **explicit(kind, orig_ctx))
    assert np.array_equal(from_file, by_args), f"{kind}: max diff {np.abs(from_file - by_args).max():.3g}"
    diff, rel = rel_diff(from_file, backend_logits(source, ids), orig_ctx)
    assert rel > 0.01, f"{kind} scaling barely changes SmolLM2's logits: {diff:.3g} ({rel:.3g} relative)"
