"""The transformers backend and long-context models: dtype, device/quantization/attention settings, the RoPE
scaling of the 16K (linear ×4) and 64K (YaRN ×16) Chinese-Alpaca-2 configs, and NTK context extension.

Tiny random Llamas stand in for the real models: RoPE does not depend on the weights, so their rotary
embeddings are checked against formulas computed here in numpy, and their logits against an unscaled twin.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_app.errors import MissingDependencyError, ModelNotFoundError, SettingsError
from rag_app.llm import create_llm, hf
from rag_app.settings import LLMSettings
from tests.tiny_models import build_tiny_llama

THETA = 10000.0
HEAD_DIM = 8  # tiny_models: hidden 32 / 4 heads
ORIGINAL = 64  # the tiny plain and linear models' "4K": trained length before scaling
LINEAR = {"rope_type": "linear", "factor": 4.0}
# The 64K model's own values: head_dim 8's four frequencies then fall before, inside and after YaRN's ramp.
YARN = {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("longctx")
    return {
        "plain": build_tiny_llama(root / "plain", max_positions=ORIGINAL),
        "linear": build_tiny_llama(root / "linear", max_positions=ORIGINAL, rope_scaling=LINEAR),
        "yarn": build_tiny_llama(root / "yarn", max_positions=4096 * 16, rope_scaling=YARN),
    }


def load(path: Path, **llm: Any) -> Any:
    llm.setdefault("dtype", "float32")
    return create_llm(LLMSettings(backend="transformers", model_path=path, max_new_tokens=4, **llm))


def rotary(llm: Any, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin the loaded model's rotary embedding gives these positions, as its attention layers get them."""
    import torch

    model = llm.model
    x = torch.zeros(1, len(positions), model.config.hidden_size)
    cos, sin = model.model.rotary_emb(x, torch.tensor([positions]))
    return cos[0].double().numpy(), sin[0].double().numpy()


def rope_reference(
    inv_freq: np.ndarray, positions: list[float], scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Llama's cos/sin for angle position × inv_freq, halves duplicated (rotate_half layout)."""
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)
    emb = np.concatenate([angles, angles], axis=-1)
    return np.cos(emb) * scale, np.sin(emb) * scale


def plain_inv_freq(theta: float = THETA, dim: int = HEAD_DIM) -> np.ndarray:
    return 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def yarn_inv_freq(
    factor: float, original: int, dim: int = HEAD_DIM, beta_fast: float = 32, beta_slow: float = 1
) -> np.ndarray:
    """YaRN (Peng et al. 2023) as its reference code computes it: dimensions that turn more than beta_fast
    times over the original length keep their frequency, those turning less than beta_slow times are
    interpolated by ``factor``. In between, the code ramps linearly over the dimension index (bounds
    rounded outwards), where the paper's equation ramps over the number of turns."""
    extrapolated = plain_inv_freq(dim=dim)
    interpolated = extrapolated / factor

    def dim_for(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(THETA))

    low, high = max(math.floor(dim_for(beta_fast)), 0), min(math.ceil(dim_for(beta_slow)), dim - 1)
    ramp = np.clip((np.arange(dim // 2) - low) / max(high - low, 1e-3), 0.0, 1.0)
    return interpolated * ramp + extrapolated * (1.0 - ramp)


# --- trained context ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"max_position_embeddings": 4096}, 4096),
        # Chinese-Alpaca-2-7B-16K's config.json (pre-5.x key names)
        ({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 4.0}}, 16384),
        # Chinese-Alpaca-2-7B-64K: YaRN ×16 over 4096, whichever max_position_embeddings the file carries
        ({"max_position_embeddings": 4096,
          "rope_scaling": {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}}, 65536),
        ({"max_position_embeddings": 65536,
          "rope_scaling": {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}}, 65536),
        ({"max_position_embeddings": 131072, "rope_parameters": {
            "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}}, 131072),
        ({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, 4096),
    ],
)
def test_trained_context_of_config_json(config: dict[str, Any], expected: int) -> None:
    assert hf.trained_context(config) == expected


def test_trained_context_of_transformers_configs() -> None:
    from transformers import LlamaConfig

    assert hf.trained_context(LlamaConfig(max_position_embeddings=4096)) == 4096
    assert hf.trained_context(LlamaConfig(max_position_embeddings=4096, rope_scaling=dict(LINEAR))) == 16384
    yarn = {**YARN, "original_max_position_embeddings": 4096}
    assert hf.trained_context(LlamaConfig(max_position_embeddings=65536, rope_scaling=yarn)) == 65536


def test_legacy_config_json_loads_with_its_scaling(models: dict[str, Path], tmp_path: Path) -> None:
    """A config.json written the 2023 way (``rope_scaling`` with ``type``) as the 16K model ships it."""
    import shutil

    folder = shutil.copytree(models["plain"], tmp_path / "legacy-16k")
    config = json.loads((folder / "config.json").read_text())
    for key in ("rope_parameters", "rope_scaling", "rope_theta"):
        config.pop(key, None)
    config.update(rope_scaling={"type": "linear", "factor": 4.0}, rope_theta=THETA)
    (folder / "config.json").write_text(json.dumps(config))
    llm = load(folder)
    assert llm.context_window == ORIGINAL * 4
    cos, _ = rotary(llm, [200])
    assert np.allclose(cos, rope_reference(plain_inv_freq(), [50])[0], atol=1e-5)


# --- RoPE scaling from config.json -------------------------------------------------------------------------


def test_linear_scaling_interpolates_positions(models: dict[str, Path]) -> None:
    llm = load(models["linear"])
    assert llm.context_window == ORIGINAL * 4
    positions = [3, 200, 255]  # 200, 255: past the original 64
    cos, sin = rotary(llm, positions)
    ref_cos, ref_sin = rope_reference(plain_inv_freq(), [p / 4 for p in positions])
    assert np.allclose(cos, ref_cos, atol=1e-5) and np.allclose(sin, ref_sin, atol=1e-5)
    assert not np.allclose(cos, rope_reference(plain_inv_freq(), positions)[0], atol=1e-2)


def test_yarn_scaling_matches_reference(models: dict[str, Path]) -> None:
    llm = load(models["yarn"])
    assert llm.context_window == LLMSettings().max_auto_ctx  # trained 65536, capped
    inv = yarn_inv_freq(16.0, 4096)
    plain = plain_inv_freq()
    # The paper's regimes: dimensions turning > 32 times in 4096 tokens keep their frequency, < 1 time: ÷16.
    turns = 4096 * plain / (2 * math.pi)
    assert turns[1] > 32 and inv[:2] == pytest.approx(plain[:2])
    assert turns[3] < 1 and inv[3] == pytest.approx(plain[3] / 16)
    assert plain[2] / 16 < inv[2] < plain[2]
    mscale = 0.1 * math.log(16.0) + 1.0  # YaRN's attention temperature, folded into cos/sin
    positions = [5, 30000, 65000]
    cos, sin = rotary(llm, positions)
    ref_cos, ref_sin = rope_reference(inv, positions, scale=mscale)
    assert np.allclose(cos, ref_cos, atol=1e-4) and np.allclose(sin, ref_sin, atol=1e-4)


@pytest.mark.parametrize("scaled", ["linear", "yarn"])
def test_scaled_logits_differ_from_unscaled_at_long_positions(models: dict[str, Path], scaled: str) -> None:
    import torch

    plain, other = load(models["plain"]), load(models[scaled])
    ids = torch.tensor([[1] + [10 + i % 90 for i in range(63)]])
    start = 4 * trained_original(scaled)  # long positions: far past the original length
    positions = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
    with torch.inference_mode():
        # One token attends to itself only: RoPE cannot matter, so equal logits show equal weights (same seed).
        first = ids[:, :1]
        assert torch.allclose(plain.model(input_ids=first).logits, other.model(input_ids=first).logits)
        a = plain.model(input_ids=ids, position_ids=positions).logits[0]
        b = other.model(input_ids=ids, position_ids=positions).logits[0]
    assert (a[1:] - b[1:]).abs().max() > 1e-3


def trained_original(scaled: str) -> int:
    return 4096 if scaled == "yarn" else ORIGINAL


# --- NTK context extension ---------------------------------------------------------------------------------


def test_ntk_on_4k_model_is_dynamic_ntk_with_the_family_alpha(models: dict[str, Path]) -> None:
    n_ctx = ORIGINAL * 4
    llm = load(models["plain"], n_ctx=n_ctx, context_extension="ntk")
    rope = llm.model.config.rope_parameters
    assert rope["rope_type"] == "dynamic" and rope["factor"] == 2.0
    assert llm.context_window == n_ctx
    # Within the trained length: exactly the trained RoPE.
    short = list(range(ORIGINAL))
    assert np.allclose(rotary(llm, short)[0], rope_reference(plain_inv_freq(), short)[0], atol=1e-5)
    # A full window: base raised by the family's alpha = 2·L/T − 1 = 7 at L = 4T.
    full = list(range(n_ctx))
    alpha = 2 * n_ctx / ORIGINAL - 1
    raised = plain_inv_freq(THETA * alpha ** (HEAD_DIM / (HEAD_DIM - 2)))
    cos, sin = rotary(llm, full)
    ref_cos, ref_sin = rope_reference(raised, full)
    assert np.allclose(cos[-1], ref_cos[-1], atol=1e-4) and np.allclose(sin[-1], ref_sin[-1], atol=1e-4)


def test_ntk_on_linear_model_keeps_pi_and_raises_base(models: dict[str, Path], caplog: Any) -> None:
    trained = ORIGINAL * 4
    with caplog.at_level(logging.WARNING, logger="rag_app.llm.hf"):
        llm = load(models["linear"], n_ctx=2 * trained, context_extension="ntk")
    assert not caplog.records  # 2× the trained 16K: within what the family documents
    rope = llm.model.config.rope_parameters
    assert rope["rope_type"] == "linear" and rope["factor"] == 4.0
    theta = THETA * 3.0 ** (HEAD_DIM / (HEAD_DIM - 2))  # alpha = 2·2 − 1
    assert rope["rope_theta"] == pytest.approx(theta)
    cos, _ = rotary(llm, [500])
    assert np.allclose(cos, rope_reference(plain_inv_freq(theta), [500 / 4])[0], atol=1e-5)


def test_ntk_warnings(caplog: pytest.LogCaptureFixture) -> None:
    from transformers import LlamaConfig

    def warnings_for(config: Any, n_ctx: int, method: str) -> str:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rag_app.llm.hf"):
            hf.extend_context(config, n_ctx, method)
        return " ".join(r.getMessage() for r in caplog.records)

    linear = LlamaConfig(max_position_embeddings=4096, rope_scaling=dict(LINEAR))
    assert "documents NTK up to about 2.0×" in warnings_for(linear, 3 * 16384, "ntk")
    assert linear.rope_parameters["factor"] == 4.0
    yarn = {**YARN, "original_max_position_embeddings": 4096}
    config = LlamaConfig(max_position_embeddings=65536, rope_scaling=yarn)
    before = dict(config.rope_parameters)
    assert "not applied to a yarn-scaled model" in warnings_for(config, 2 * 65536, "ntk")
    assert config.rope_parameters == before
    plain = LlamaConfig(max_position_embeddings=4096)
    assert 'context_extension = "ntk"' in warnings_for(plain, 8192, "none")
    assert warnings_for(plain, 4096, "ntk") == ""  # nothing to extend
    assert plain.rope_parameters["rope_type"] == "default"


# --- dtype, devices, quantization, attention ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"on_cuda": True, "cuda_bf16": True, "cpu_bf16": False, "fp32_fits": True}, "bfloat16"),
        ({"on_cuda": True, "cuda_bf16": False, "cpu_bf16": True, "fp32_fits": True}, "float16"),
        ({"on_cuda": False, "cuda_bf16": False, "cpu_bf16": True, "fp32_fits": True}, "bfloat16"),
        ({"on_cuda": False, "cuda_bf16": False, "cpu_bf16": False, "fp32_fits": True}, "float32"),
        ({"on_cuda": False, "cuda_bf16": False, "cpu_bf16": False, "fp32_fits": False}, "bfloat16"),
    ],
)
def test_choose_dtype_auto(facts: dict[str, bool], expected: str) -> None:
    assert hf.choose_dtype("auto", **facts) == expected
    assert hf.choose_dtype("float16", **facts) == "float16"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_explicit_dtype_is_the_weights_dtype(models: dict[str, Path], dtype: str) -> None:
    import torch

    llm = load(models["plain"], dtype=dtype)
    assert {p.dtype for p in llm.model.parameters()} == {getattr(torch, dtype)}


@pytest.mark.parametrize(
    ("native_bf16", "memory", "expected"),
    [(True, None, "bfloat16"), (False, None, "float32"), (False, 100_000, "bfloat16")],
)
def test_auto_dtype_on_cpu(
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    native_bf16: bool,
    memory: int | None,
    expected: str,
) -> None:
    import torch

    from rag_app.llm.plan import Machine

    room = memory if memory is not None else 2**40
    monkeypatch.setattr(hf, "_cpu_has_native_bf16", lambda: native_bf16)
    # 100 kB: the tiny model (226 kB) won't fit in float32 (nor at all: the memory check is off for this one)
    monkeypatch.setattr(hf, "machine", lambda: Machine(ram_total=room, ram_available=room, cpus=2))
    llm = load(models["plain"], dtype="auto", memory_check="off")
    assert llm.model.dtype == getattr(torch, expected)


def test_quantization_needs_cuda(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingsError, match="needs a CUDA GPU"):
        load(models["plain"], quantization="4bit", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hf, "_has_module", lambda name: name != "bitsandbytes")
    with pytest.raises(MissingDependencyError, match="pip install bitsandbytes"):
        load(models["plain"], quantization="8bit", device="cuda", dtype="float16")
    with pytest.raises(SettingsError, match="runs on the GPU"):
        load(models["plain"], quantization="8bit", dtype="float16")


def test_device_map_needs_accelerate(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf, "_has_module", lambda name: name != "accelerate")
    with pytest.raises(MissingDependencyError, match="pip install accelerate"):
        load(models["plain"], device_map="auto")


def test_attention_implementation_is_checked(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="unknown llm.attn_implementation 'magic'"):
        load(models["plain"], attn_implementation="magic")
    monkeypatch.setattr(hf, "_has_module", lambda name: name != "flash_attn")
    with pytest.raises(MissingDependencyError, match="flash-attn"):
        load(models["plain"], attn_implementation="flash_attention_2")
    llm = load(models["plain"], attn_implementation="eager")
    assert llm.model.config._attn_implementation == "eager"


def test_unloadable_folder_is_model_not_found(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="cannot load model"):
        load(tmp_path)


# --- end to end --------------------------------------------------------------------------------------------


def test_long_context_model_generates_through_create_llm(models: dict[str, Path]) -> None:
    llm: Any = create_llm(
        LLMSettings(backend="transformers", model_path=models["linear"], n_ctx="auto", max_new_tokens=5,
                    temperature=0.0)
    )
    assert llm.context_window == ORIGINAL * 4  # "auto" without the planner: the trained length
    prompt = "[INST] " + "文档" * 100 + " [/INST]"  # 207 tokens: past the original 64
    text = llm.invoke(prompt)
    assert isinstance(text, str) and text
    assert text == llm.invoke(prompt)  # greedy: repeatable


def test_memory_is_planned_before_loading(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_app.errors import ModelDoesNotFitError
    from rag_app.llm.plan import Machine

    settings = LLMSettings(backend="transformers", model_path=models["plain"], dtype="float32", n_ctx="auto")
    load_plan, dtype = hf.plan_load(settings)
    assert dtype == "float32" and load_plan.info.source == "config.json"
    assert load_plan.memory is not None and load_plan.memory.fits and load_plan.memory.kv_type == "f32"
    shape = load_plan.info.shape
    assert shape is not None and load_plan.memory.weights == shape.n_params * 4
    tiny = Machine(ram_total=10**6, ram_available=10**6, cpus=2)
    monkeypatch.setattr(hf, "machine", lambda: tiny)
    with pytest.raises(ModelDoesNotFitError, match="does not fit this machine"):
        load(models["plain"], n_ctx=256)
