"""The memory planner: will this model, at this window, fit this machine — before anything is loaded.

A long window costs more than the weights: a 7B at 64K tokens needs 32 GiB of f16 KV cache. Loading blind
ends in llama.cpp's "Failed to create llama_context" at best and the OOM killer at worst, so every load is
planned first: weights (the file's size) + KV cache (layers × n_ctx × KV dim × 2 × bytes per element) +
compute buffers, against the memory available (RAM, or VRAM for offloaded layers). When it does not fit,
the planner says so in one line with the numbers and what would fit instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rag_app.catalog import Shape, get_model
from rag_app.errors import ModelDoesNotFitError

if TYPE_CHECKING:
    from rag_app.llm.modelinfo import ModelInfo
    from rag_app.settings import LLMSettings

logger = logging.getLogger(__name__)

KVType = Literal["f16", "q8_0", "q4_0", "f32", "bf16"]

#: Bytes per KV element: ggml blocks of 32 values (q8_0: 32 int8 + an f16 scale = 34 bytes; q4_0: 18 bytes).
KV_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
#: Bits per weight of common GGUF quantizations (averages over a Llama, as llama.cpp's quantize reports them).
WEIGHT_BITS: dict[str, float] = {"Q4_K": 4.85, "Q4_K_M": 4.85, "Q5_K_M": 5.69, "Q6_K": 6.56, "Q8_0": 8.5,
                                 "F16": 16.0, "BF16": 16.0, "F32": 32.0}
#: llama.cpp rounds the window up to a multiple of 256 cells.
KV_PAD = 256
#: Beyond the planned parts: the runtime, the tokenizer, allocator slack, and the rest of this app beside the
#: model (the embedder, Chroma, the keyword index) so that a window that "fits" leaves them room.
OVERHEAD_BYTES = 512 * 2**20
GIB = 2**30


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def kv_cache_bytes(shape: Shape, n_ctx: int, kv_type: str = "f16") -> int:
    """K and V for every layer and every cell of the window (llama.cpp pads the window to 256 cells)."""
    cells = -(-n_ctx // KV_PAD) * KV_PAD
    return int(shape.n_layers * cells * shape.kv_dim * 2 * KV_BYTES[kv_type])


def compute_buffer_bytes(shape: Shape, n_ctx: int, n_ubatch: int, flash_attn: bool) -> int:
    """llama.cpp's scratch for one micro-batch. Its allocator reuses memory, so the largest tensor dominates:
    the logits (ubatch × vocabulary, f32) or — without flash attention — the attention scores (ubatch × window
    × heads, f32), plus the hidden states and feed-forward activations. Checked against llama.cpp's own
    report (bench/long_context.py: within about 10 %, erring high)."""
    ub = min(n_ubatch, max(n_ctx, 1))
    activations = ub * (4 * shape.n_embd + 2 * shape.n_ff) * 4
    logits = ub * shape.n_vocab * 4
    scores = 0 if flash_attn else ub * (-(-n_ctx // KV_PAD) * KV_PAD) * shape.n_heads * 4
    return int(max(logits, 1.1 * scores) + activations)


def weights_bytes_for(shape: Shape, quant: str) -> int:
    """Weights of a model not yet downloaded, at a named quantization (embeddings and output included)."""
    return int(shape.n_params * WEIGHT_BITS[quant] / 8)


# --- the machine ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    total: int
    free: int


@dataclass(frozen=True)
class Machine:
    ram_total: int
    #: What a new allocation can use without swapping or hitting a cgroup limit.
    ram_available: int
    cpus: int
    gpus: tuple[Gpu, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "ram_total": self.ram_total, "ram_available": self.ram_available, "cpus": self.cpus,
            "gpus": [{"name": g.name, "total": g.total, "free": g.free} for g in self.gpus],
        }


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _cgroup_room() -> int | None:
    """Room left under this process's cgroup memory limit (v2, then v1), if one is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max" or int(raw) >= 2**60:
                return None
            return max(0, int(raw) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def _gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs as nvidia-smi reports them (none when it is not installed)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        name, total, free = (p.strip() for p in line.split(","))
        gpus.append(Gpu(name, int(float(total)) * 2**20, int(float(free)) * 2**20))
    return tuple(gpus)


def machine() -> Machine:
    info = _meminfo()
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", total)
    room = _cgroup_room()
    if room is not None:
        available = min(available, room)
    return Machine(ram_total=total, ram_available=available, cpus=os.cpu_count() or 1, gpus=_gpus())


# --- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Memory a configuration needs, where it goes, and whether it fits."""

    n_ctx: int
    kv_type: str
    flash_attn: bool
    weights: int
    kv_cache: int
    compute: int
    ram_needed: int
    vram_needed: int
    ram_available: int
    vram_available: int

    @property
    def total(self) -> int:
        return self.ram_needed + self.vram_needed

    @property
    def fits(self) -> bool:
        return self.ram_needed <= self.ram_available and self.vram_needed <= self.vram_available

    def summary(self) -> str:
        where = f"{gib(self.ram_needed)} RAM" + (f" + {gib(self.vram_needed)} VRAM" if self.vram_needed else "")
        return (
            f"n_ctx {self.n_ctx} needs {where} (weights {gib(self.weights)} + KV cache {gib(self.kv_cache)} "
            f"{self.kv_type} + buffers {gib(self.compute + OVERHEAD_BYTES)}); available {gib(self.ram_available)} RAM"
            + (f", {gib(self.vram_available)} VRAM" if self.vram_needed else "")
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "n_ctx": self.n_ctx, "kv_type": self.kv_type, "flash_attn": self.flash_attn,
            "weights": self.weights, "kv_cache": self.kv_cache, "compute": self.compute + OVERHEAD_BYTES,
            "ram_needed": self.ram_needed, "vram_needed": self.vram_needed,
            "ram_available": self.ram_available, "vram_available": self.vram_available, "fits": self.fits,
        }


def plan(
    shape: Shape,
    weights: int,
    n_ctx: int,
    *,
    kv_type: str = "f16",
    flash_attn: bool = False,
    n_ubatch: int = 512,
    n_gpu_layers: int = 0,
    host: Machine,
) -> Plan:
    """Memory for one llama.cpp context. Offloaded layers (``n_gpu_layers``; -1 = all) take their share of
    the weights and of the KV cache to the first GPU, with the compute buffer."""
    kv = kv_cache_bytes(shape, n_ctx, kv_type)
    compute = compute_buffer_bytes(shape, n_ctx, n_ubatch, flash_attn)
    layers = shape.n_layers if n_gpu_layers < 0 else min(n_gpu_layers, shape.n_layers)
    share = layers / shape.n_layers if host.gpus else 0.0
    vram = int((weights + kv) * share + (compute if share else 0))
    ram = int((weights + kv) * (1 - share) + (0 if share else compute)) + OVERHEAD_BYTES
    return Plan(
        n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn, weights=weights, kv_cache=kv, compute=compute,
        ram_needed=ram, vram_needed=vram, ram_available=host.ram_available,
        vram_available=host.gpus[0].free if host.gpus else 0,
    )


def largest_fitting_ctx(
    shape: Shape, weights: int, limit: int, *, kv_type: str, flash_attn: bool, n_ubatch: int,
    n_gpu_layers: int, host: Machine, step: int = 1024,
) -> int | None:
    """The largest window (a multiple of ``step``, at most ``limit``) that fits, or None if not even ``step`` does."""

    def fits(n: int) -> bool:
        return plan(shape, weights, n, kv_type=kv_type, flash_attn=flash_attn, n_ubatch=n_ubatch,
                    n_gpu_layers=n_gpu_layers, host=host).fits

    if fits(limit):
        return limit
    lo, hi = 0, limit // step  # fits(lo*step) assumed for lo = 0; memory grows with n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * step):
            lo = mid
        else:
            hi = mid - 1
    return lo * step if lo else None


def alternatives(
    shape: Shape, weights: int, n_ctx: int, *, kv_type: str, n_ubatch: int, n_gpu_layers: int, host: Machine
) -> list[str]:
    """What would fit instead of a plan that does not: a smaller window, a quantized KV cache."""
    out: list[str] = []
    flash = kv_type != "f16"
    if not flash and plan(shape, weights, n_ctx, kv_type=kv_type, flash_attn=True, n_ubatch=n_ubatch,
                          n_gpu_layers=n_gpu_layers, host=host).fits:
        out.append(f"llm.flash_attn = true fits n_ctx {n_ctx} (no attention-score buffer)")
    smaller = largest_fitting_ctx(shape, weights, n_ctx, kv_type=kv_type, flash_attn=flash, n_ubatch=n_ubatch,
                                  n_gpu_layers=n_gpu_layers, host=host)
    if smaller:
        out.append(f"llm.n_ctx = {smaller} fits")
    for cheaper in ("q8_0", "q4_0"):
        if KV_BYTES[cheaper] >= KV_BYTES[kv_type]:
            continue
        if plan(shape, weights, n_ctx, kv_type=cheaper, flash_attn=True, n_ubatch=n_ubatch,
                n_gpu_layers=n_gpu_layers, host=host).fits:
            out.append(f"llm.kv_cache_type = \"{cheaper}\" fits n_ctx {n_ctx}")
            break
    if not out:
        out.append("not even a 1024-token window fits: use a smaller or more quantized model file")
    return out


# --- the window a configuration will run with -----------------------------------------------------------


def ntk_rope_base(base: float, head_dim: int, n_ctx: int, trained: int) -> float:
    """The model family's adaptive NTK rule: alpha = 2·n_ctx/n_trained − 1, base × alpha^(d/(d−2)).

    Only past the trained length (alpha > 1); a linear (PI) factor stored in the file stays as it is."""
    alpha = 2 * n_ctx / trained - 1
    if alpha <= 1:
        return base
    return base * alpha ** (head_dim / (head_dim - 2))


@dataclass(frozen=True)
class Window:
    """The context window a configuration resolves to, with the RoPE base it needs and notes for the user."""

    n_ctx: int
    rope_freq_base: float | None
    notes: tuple[str, ...] = ()


def context_limit(trained: int | None, extension: str, ntk_max: int | None, max_auto: int) -> int:
    """The largest window ``n_ctx = "auto"`` may pick: the trained one, or with NTK the documented extension
    (twice the trained one where the authors document none)."""
    base = trained or 2048
    if extension == "ntk":
        return ntk_max or 2 * base
    return base if trained else min(base, max_auto)


def resolve_window(
    n_ctx_setting: int | str | None,
    *,
    trained: int | None,
    head_dim: int | None,
    rope_base: float | None,
    rope_base_override: float | None,
    extension: str,
    ntk_max: int | None,
    max_auto_ctx: int,
    largest_fitting: int | None = None,
) -> Window:
    """n_ctx from the setting (``None``: trained capped at ``max_auto_ctx``; ``"auto"``: ``largest_fitting``,
    which the caller computed with :func:`largest_fitting_ctx`), and the NTK RoPE base when asked for."""
    notes: list[str] = []
    if n_ctx_setting == "auto":
        n_ctx = largest_fitting or min(trained or 2048, max_auto_ctx)
    elif n_ctx_setting is None:
        n_ctx = min(trained or 2048, max_auto_ctx)
    else:
        n_ctx = int(n_ctx_setting)
    freq_base = rope_base_override
    if trained and n_ctx > trained:
        if extension == "ntk" and rope_base_override is None and head_dim and rope_base:
            freq_base = ntk_rope_base(rope_base, head_dim, n_ctx, trained)
            notes.append(
                f"NTK extension: n_ctx {n_ctx} over the trained {trained}, rope base {rope_base:g} → {freq_base:.0f}"
            )
            if ntk_max and n_ctx > ntk_max:
                notes.append(f"quality drops beyond the documented NTK range ({ntk_max} tokens)")
        elif rope_base_override is None:
            notes.append(
                f"n_ctx {n_ctx} exceeds the model's trained context {trained}: answers degrade past it "
                "(set llm.context_extension = \"ntk\" to extend it the model family's way)"
            )
    return Window(n_ctx=n_ctx, rope_freq_base=freq_base, notes=tuple(notes))


# --- a whole load: the model's facts, its window, its memory -----------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    """What loading a GGUF with these settings will do: the file's facts, the window and its memory."""

    path: Path
    info: ModelInfo
    window: Window
    memory: Plan | None
    #: What would fit instead, when the plan does not.
    suggestions: tuple[str, ...] = ()

    def check(self, mode: str) -> None:
        """Raise ModelDoesNotFitError (``mode = "error"``) or log (``"warn"``) when the plan does not fit."""
        if self.memory is None or self.memory.fits or mode == "off":
            return
        message = f"{self.info.name} does not fit this machine: {self.memory.summary()}"
        if mode == "warn":
            logger.warning(message)
            return
        raise ModelDoesNotFitError(message, hint="; ".join(self.suggestions) or None)


def plan_for(
    info: ModelInfo, settings: LLMSettings, host: Machine, path: Path, *, kv_type: str, flash_attn: bool,
    n_gpu_layers: int | None = None,
) -> LoadPlan:
    """The window and memory plan for a model's facts (from its file, or from the catalogue before download),
    with the KV cache's element type and whether attention scores are materialised (no flash attention)."""
    entry = get_model(settings.model) if settings.model else None
    gpu_layers = settings.n_gpu_layers if n_gpu_layers is None else n_gpu_layers
    ntk_max = entry.ntk_max_context if entry else None
    shape, weights = info.shape, info.weights_bytes or 0
    largest = None
    if settings.n_ctx == "auto" and shape is not None:
        limit = context_limit(info.trained_context, settings.context_extension, ntk_max, settings.max_auto_ctx)
        largest = largest_fitting_ctx(
            shape, weights, limit, kv_type=kv_type, flash_attn=flash_attn,
            n_ubatch=settings.n_ubatch, n_gpu_layers=gpu_layers, host=host,
        )
    window = resolve_window(
        settings.n_ctx, trained=info.trained_context, head_dim=shape.head_dim if shape else None,
        rope_base=info.rope_base, rope_base_override=settings.rope_freq_base,
        extension=settings.context_extension, ntk_max=ntk_max, max_auto_ctx=settings.max_auto_ctx,
        largest_fitting=largest,
    )
    if shape is None:
        return LoadPlan(path=path, info=info, window=window, memory=None)
    memory = plan(shape, weights, window.n_ctx, kv_type=kv_type, flash_attn=flash_attn,
                  n_ubatch=settings.n_ubatch, n_gpu_layers=gpu_layers, host=host)
    suggestions: tuple[str, ...] = ()
    if not memory.fits:
        suggestions = tuple(alternatives(
            shape, weights, window.n_ctx, kv_type=kv_type, n_ubatch=settings.n_ubatch,
            n_gpu_layers=gpu_layers, host=host,
        ))
    return LoadPlan(path=path, info=info, window=window, memory=memory, suggestions=suggestions)
