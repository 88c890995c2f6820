"""transformers backend: ``AutoModelForCausalLM`` from a local folder (CPU, CUDA, or spread by ``device_map``).

Long-context models need nothing special here: the RoPE scaling stored in config.json (linear position
interpolation ×4 for the 16K Chinese-Alpaca-2 models, YaRN ×16 over 4096 for the 64K one) is applied by
transformers' own rotary embedding. This module reads it only to know the trained context length, and
changes it only when ``llm.context_extension = "ntk"`` asks for a window past that length.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.outputs import GenerationChunk
from pydantic import PrivateAttr

from rag_app.catalog import RopeScaling, get_model
from rag_app.errors import MissingDependencyError, ModelNotFoundError, SettingsError
from rag_app.llm.base import LocalLLM, stop_loops
from rag_app.llm.gguf import GGUFError
from rag_app.llm.modelinfo import effective_context, from_hf_folder, with_catalog
from rag_app.llm.plan import LoadPlan, Machine, machine, ntk_rope_base, plan_for

if TYPE_CHECKING:
    from rag_app.settings import LLMSettings

logger = logging.getLogger(__name__)

#: How far past the trained length the model family documents NTK: 4K models to 18K+, 16K models to 24K–32K.
NTK_REACH: dict[str, float] = {"default": 4.5, "linear": 2.0}
#: Attention kernels that need a package of their own: (module, pip command).
FLASH_ATTN_PACKAGES: dict[str, tuple[str, str]] = {
    "flash_attention_2": ("flash_attn", "pip install flash-attn --no-build-isolation (CUDA only)"),
    "flash_attention_3": ("flash_attn_interface", "build flash-attention's hopper/ package (Hopper GPUs only)"),
}


class TransformersLLM(LocalLLM):
    """A causal LM and its tokenizer; streams through ``TextIteratorStreamer``."""

    model: Any
    tokenizer: Any
    do_sample: bool = True
    #: Prompt-lookup decoding: up to this many draft tokens copied from the prompt (0: off).
    prompt_lookup: int = 0
    #: A small model of the same tokenizer that drafts tokens for this one (assisted generation).
    assistant_model: Any = None
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "transformers-local"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate_kwargs(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        """``model.generate`` arguments for ``prompt`` (without the streamer): the sampling settings, and the
        draft model or prompt lookup when set. Public so that a benchmark times exactly what a question runs."""
        # The template may already carry BOS; the tokenizer must not add a second one.
        has_bos = bool(self.bos_token) and prompt.startswith(self.bos_token)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not has_bos)
        generate_kwargs: dict[str, Any] = {
            **{k: v.to(self.model.device) for k, v in inputs.items()},
            "max_new_tokens": kwargs.get("max_new_tokens", self.max_new_tokens),
            "repetition_penalty": self.repeat_penalty,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if self.temperature > 0:
            generate_kwargs.update(
                do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
            )
        else:
            generate_kwargs.update(do_sample=False)
        if self.assistant_model is not None:
            generate_kwargs["assistant_model"] = self.assistant_model
        elif self.prompt_lookup:
            generate_kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup
        return generate_kwargs

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        halt = threading.Event()  # set when the caller stops reading: a stop string, a loop, a closed stream

        class Halted(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                return halt.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generate_kwargs = {
            **self.generate_kwargs(prompt, **kwargs),
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Halted()]),
        }
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**generate_kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        ended = threading.Event()  # the streamer has given its end: nothing more to drain

        def texts() -> Iterator[GenerationChunk]:
            text_so_far = ""
            for text in streamer:
                if not text:
                    continue
                text_so_far += text
                if stop and any(s in text_so_far for s in stop):
                    return
                yield GenerationChunk(text=text)
            ended.set()

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            yielded = False
            try:
                for chunk in stop_loops(texts(), self.stop_loops):
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yielded = True
                    yield chunk
            finally:
                halt.set()
                if not ended.is_set():  # stopped early: read to the end, which generate() now reaches
                    for _ in streamer:
                        pass
                worker.join()
        if errors:
            raise errors[0]
        if not yielded:  # an empty answer is one (see rag_app.llm.base.at_least_one)
            yield GenerationChunk(text="")


def _field(config: Any, name: str) -> Any:
    """A field of a transformers config object or of a raw config.json mapping."""
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def rope_parameters(config: Any) -> dict[str, Any]:
    """The config's RoPE dict: ``rope_parameters`` in transformers 5, ``rope_scaling`` in config.json files
    written before it (with ``type`` where 5.x says ``rope_type``)."""
    params = _field(config, "rope_parameters") or _field(config, "rope_scaling") or {}
    return dict(params) if isinstance(params, Mapping) else {}


def _rope_type(rope: Mapping[str, Any]) -> str:
    return str(rope.get("rope_type") or rope.get("type") or "default")


def trained_context(config: Any) -> int:
    """Context length the model was trained (or fine-tuned) for, from its config.

    - ``linear`` (position interpolation): transformers' convention, which the 16K models follow, keeps the
      *original* length in ``max_position_embeddings`` (4096) and the factor (4) in the RoPE dict: 16384.
    - ``yarn``: ``original_max_position_embeddings`` × factor (64K model: 4096 × 16), whether
      ``max_position_embeddings`` holds the original or the scaled length.
    - unscaled, ``dynamic`` (NTK at inference: nothing trained past it) and other types such as ``llama3``
      (which store the scaled length there): ``max_position_embeddings``.
    """
    rope = rope_parameters(config)
    kind = _rope_type(rope)
    scaling = RopeScaling(
        type=kind if kind in ("linear", "yarn") else "none",  # type: ignore[arg-type]
        factor=float(rope.get("factor") or 1.0),
        original_context=rope.get("original_max_position_embeddings"),
    )
    return effective_context(int(_field(config, "max_position_embeddings") or 2048), scaling) or 2048


def extend_context(config: Any, n_ctx: int, method: str) -> None:
    """Change ``config``'s RoPE in place so that a window of ``n_ctx`` tokens works (``llm.context_extension``).

    Unscaled (4K) model: transformers' dynamic NTK with factor 2. Its base at sequence length L is
    θ·(f·L/T − (f−1))^(d/(d−2)); with f = 2 that is θ·(2L/T − 1)^(d/(d−2)), exactly the family's adaptive
    alpha (Chinese-LLaMA-Alpaca-2's ``alpha="auto"`` patch) at the current length, and at L = n_ctx the
    fixed alpha llama.cpp is given. f = n_ctx/T would give f² − f + 1 at L = n_ctx instead of 2f − 1:
    equal at 2× (3), but 13 instead of 7 at 4×, stretching the base further than the family tested.
    Unlike llama.cpp's fixed base, the dynamic one leaves sequences up to T exactly as trained.

    Linear-scaled (16K) model: the file's interpolation factor stays (the model was fine-tuned with it)
    and the base is raised by the same alpha, over the trained 16K, for the whole window: what the family's
    patch does with a fixed alpha and the config's scaling factor, and what llama.cpp does with the GGUF's
    ``freq_scale`` plus a raised ``freq_base``. transformers has no dynamic variant on top of a linear factor.

    YaRN and other scaled models: not changed (a warning says so); YaRN already covers its trained length.
    """
    trained = trained_context(config)
    if n_ctx <= trained:
        return
    if method != "ntk":
        logger.warning(
            "n_ctx %d exceeds the model's trained context %d; set llm.context_extension = \"ntk\" to extend it",
            n_ctx, trained,
        )
        return
    rope = rope_parameters(config)
    kind = _rope_type(rope)
    if kind == "default":
        config.rope_parameters = {**rope, "rope_type": "dynamic", "factor": 2.0}
    elif kind == "linear":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dim = int(head_dim * float(rope.get("partial_rotary_factor") or 1.0))
        theta = ntk_rope_base(float(rope.get("rope_theta") or 10000.0), dim, n_ctx, trained)
        config.rope_parameters = {**rope, "rope_theta": theta}
    else:
        logger.warning(
            "llm.context_extension = \"ntk\" is not applied to a %s-scaled model on transformers: n_ctx %d "
            "exceeds its trained context %d", kind, n_ctx, trained,
        )
        return
    reach = NTK_REACH.get(kind, 1.0)
    if n_ctx > reach * trained:
        logger.warning(
            "n_ctx %d is %.1f× the trained context %d: the model family documents NTK up to about %.1f×",
            n_ctx, n_ctx / trained, trained, reach,
        )
    logger.info("NTK context extension to %d tokens: RoPE %s", n_ctx, config.rope_parameters)


def choose_dtype(setting: str, *, on_cuda: bool, cuda_bf16: bool, cpu_bf16: bool, fp32_fits: bool) -> str:
    """The weights' dtype for ``llm.dtype``; explicit values pass through.

    ``auto``: on CUDA bfloat16 where the GPU has it (Ampere and later), else float16. On a CPU bfloat16 when
    it computes it natively (AVX512-BF16 or AMX: as fast as float32 or faster, half the memory), and also
    when float32 weights would not fit in memory (a 7B model is 27 GB in float32, 13.5 GB in bfloat16: slow
    on a CPU that emulates bfloat16, but it runs); float32 otherwise. Never float16 on a CPU: too slow.
    """
    if setting != "auto":
        return setting
    if on_cuda:
        return "bfloat16" if cuda_bf16 else "float16"
    return "bfloat16" if cpu_bf16 or not fp32_fits else "float32"


def _cpu_has_native_bf16() -> bool:
    import torch

    # Private but stable torch.cpu probes (cpuinfo flags avx512_bf16 / amx_tile); absent: assume no.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def _float32_fits(path: Path, config: Any) -> bool:
    """Whether the model's weights in float32 take at most 80 % of the available memory."""
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    stored = str(getattr(config, "dtype", None) or "float16").removeprefix("torch.")
    stored_bytes = {"float32": 4, "float64": 8}.get(stored, 2)
    fp32_bytes = sum(f.stat().st_size for f in files) * 4 / stored_bytes
    return fp32_bytes <= 0.8 * machine().ram_available


def _dtype_for(settings: LLMSettings, path: Path, config: Any) -> str:
    """``choose_dtype`` with this machine's facts (probed only for ``auto``)."""
    import torch

    if settings.dtype != "auto":
        return settings.dtype
    has_cuda = torch.cuda.is_available()
    on_cuda = settings.device.startswith("cuda") or settings.quantization != "none" or (
        bool(settings.device_map) and has_cuda
    )
    return choose_dtype(
        "auto",
        on_cuda=on_cuda,
        cuda_bf16=on_cuda and has_cuda and torch.cuda.is_bf16_supported(),
        cpu_bf16=not on_cuda and _cpu_has_native_bf16(),
        fp32_fits=on_cuda or _float32_fits(path, config),
    )


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _require(module: str, purpose: str, pip: str) -> None:
    if not _has_module(module):
        raise MissingDependencyError(f"{purpose} needs {module}: {pip}")


def _check_attn_implementation(name: str) -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = {"eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()}
    if name not in known:
        raise SettingsError(
            f"unknown llm.attn_implementation '{name}'", hint="use sdpa (default), eager or flash_attention_2"
        )
    if name in FLASH_ATTN_PACKAGES:
        module, pip = FLASH_ATTN_PACKAGES[name]
        _require(module, f"llm.attn_implementation = {name}", pip)


def _load_kwargs(settings: LLMSettings, dtype: str) -> dict[str, Any]:
    """``from_pretrained`` arguments for the settings; raises before any weight is read when one cannot work.

    (``low_cpu_mem_usage`` is not passed: transformers 5 always loads that way and drops the argument.)
    """
    import torch

    _check_attn_implementation(settings.attn_implementation)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": getattr(torch, dtype),
        "attn_implementation": settings.attn_implementation,
    }
    if settings.device_map:
        _require("accelerate", "llm.device_map", "pip install accelerate")
        kwargs["device_map"] = settings.device_map
    if settings.quantization != "none":
        what = f"llm.quantization = {settings.quantization}"
        if not torch.cuda.is_available():
            raise SettingsError(
                f"{what} needs a CUDA GPU (bitsandbytes), and torch sees none",
                hint="set llm.quantization = none, or use a GGUF quantization with llamacpp",
            )
        if not (settings.device_map or settings.device.startswith("cuda")):
            raise SettingsError(
                f"{what} runs on the GPU", hint="set llm.device = cuda (or llm.device_map = auto)"
            )
        _require("bitsandbytes", what, "pip install bitsandbytes")
        _require("accelerate", what, "pip install accelerate")
        from transformers import BitsAndBytesConfig

        if settings.quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype)
            )
        kwargs.setdefault("device_map", {"": settings.device})
    return kwargs


#: Bytes per weight as loaded, by dtype / quantization.
_WEIGHT_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "8bit": 1.0, "4bit": 0.5}


def model_folder_for(settings: LLMSettings) -> Path:
    if settings.model_path is None:
        raise ModelNotFoundError("the transformers backend needs llm.model_path (a local model folder)")
    path = Path(settings.model_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        raise ModelNotFoundError(
            f"the transformers backend reads a model folder, and {path} is a GGUF file",
            hint="use llm.backend = llamacpp for it, or write a folder once with "
            "rag_app.llm.hf.folder_from_gguf (float32: 4 bytes per weight)",
        )
    if not path.is_dir():
        raise ModelNotFoundError(f"model folder not found: {path}")
    return path


def folder_from_gguf(gguf: Path, dest: Path) -> Path:
    """Write a GGUF model (Llama family; any quantization transformers' GGUF reader knows, Q4_1 included) as
    a float32 transformers folder at ``dest``, once: loading a GGUF through transformers dequantizes the whole
    file and converts its tokenizer at every start (about 40 s for the 135M SmolLM2 on 2 cores), a folder
    loads in seconds. The weights are the GGUF's rounded values, so the model answers as llama.cpp's does,
    up to float rounding. Needs the ``gguf`` package."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            "the transformers backend needs torch and transformers: pip install torch==2.13.0 transformers"
        ) from exc
    _require("gguf", "reading a GGUF with transformers", "pip install gguf")
    where = {"pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"transformers cannot read {gguf}: {exc}") from exc
    # The legacy GGUF loader leaves plain float32 weights behind a "gguf" quantizer that refuses to save;
    # nothing is quantized any more, so the model is saved as the ordinary model it now is.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def plan_load(settings: LLMSettings, host: Machine | None = None, config: Any = None) -> tuple[LoadPlan, str]:
    """The window and memory this folder needs at the dtype it will load in, before loading: weights
    (parameters × bytes per weight), KV cache in the weights' precision, buffers. Returns the plan and the dtype."""
    from transformers import AutoConfig

    path = model_folder_for(settings)
    if config is None:
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True,
                                                trust_remote_code=settings.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot load model from {path}: {exc}") from exc
    try:
        info = with_catalog(from_hf_folder(path), get_model(settings.model) if settings.model else None)
    except GGUFError as exc:
        raise ModelNotFoundError(str(exc)) from exc
    dtype = _dtype_for(settings, path, config)
    if info.shape is not None:
        per_weight = _WEIGHT_BYTES[settings.quantization if settings.quantization != "none" else dtype]
        info = replace(info, weights_bytes=int(info.shape.n_params * per_weight))
    on_gpu = settings.device.startswith("cuda") or bool(settings.device_map)
    load = plan_for(
        info, settings, host or machine(), path, kv_type="f32" if dtype == "float32" else "f16",
        flash_attn=settings.attn_implementation != "eager", n_gpu_layers=-1 if on_gpu else 0,
    )
    return load, dtype


def create(settings: LLMSettings) -> TransformersLLM:
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            "the transformers backend needs torch and transformers: pip install torch==2.13.0 transformers"
        ) from exc
    path = model_folder_for(settings)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(settings.seed)
    remote = {"local_files_only": True, "trust_remote_code": settings.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(str(path), **remote)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load model from {path}: {exc}") from exc
    trained = trained_context(config)
    load, dtype = plan_load(settings, config=config)
    load.check(settings.memory_check)
    n_ctx = load.window.n_ctx  # "auto": the largest window that fits, as for llama.cpp
    extend_context(config, n_ctx, settings.context_extension)
    kwargs = _load_kwargs(settings, dtype)
    logger.info("loading %s (dtype=%s, n_ctx=%d, trained context %d)", path, dtype, n_ctx, trained)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **remote)
        model = AutoModelForCausalLM.from_pretrained(str(path), config=config, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load model from {path}: {exc}") from exc
    if "device_map" not in kwargs:
        model.to(settings.device)
    model.eval()
    return TransformersLLM(
        model=model,
        tokenizer=tokenizer,
        prompt_lookup=settings.prompt_lookup,
        assistant_model=_draft_model(settings, kwargs),
        context_window=n_ctx,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repeat_penalty=settings.repeat_penalty,
        stop_loops=settings.stop_loops,
        chat_template=getattr(tokenizer, "chat_template", None),
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
        model_name=path.name,
    )


def _draft_model(settings: LLMSettings, kwargs: dict[str, Any]) -> Any:
    """The draft model for assisted generation (``llm.draft_model_path``), loaded like the main one."""
    if settings.draft_model_path is None:
        return None
    from transformers import AutoModelForCausalLM

    path = Path(settings.draft_model_path).expanduser()
    if settings.prompt_lookup:
        logger.warning("llm.draft_model_path and llm.prompt_lookup both set: the draft model is used")
    try:
        draft = AutoModelForCausalLM.from_pretrained(str(path), **{"local_files_only": True, **kwargs})
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load the draft model from {path}: {exc}") from exc
    if "device_map" not in kwargs:
        draft.to(settings.device)
    return draft.eval()
