"""The embedder exported to ONNX and run by onnxruntime (``embedding.backend = "onnx"``, extra ``onnx``) or
OpenVINO (``"openvino"``, extra ``openvino``): same vectors, less CPU.

sentence-transformers' own ONNX backend needs ``optimum``, which pins an older transformers, so the model
is exported here, once, offline: the folder's transformer with its pooling (mean / CLS / max, as
``1_Pooling/config.json`` says) traced by ``torch.onnx.export`` into ``<data_dir>/models``, optionally
quantized to int8 (onnxruntime's dynamic quantization). An export is used only when it agrees with the
torch model — mean cosine ≥ :data:`MIN_AGREEMENT` over :data:`CHECK_TEXTS`, none below
:data:`MIN_AGREEMENT_EACH` — which is checked once,
at export and per runtime and precision (OpenVINO computes in bfloat16 on CPUs that have it), and recorded
beside the file; otherwise ingestion and queries stay on torch (with a warning).
Texts are tokenized by the folder's ``tokenizer.json`` (``tokenizers``), batched by length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings

from ingest.embed import (
    embedder_name,
    embedding_model_dir,
    folder_dimension,
    folder_max_tokens,
    folder_tokenizer,
    memoised_count,
    pooling_modes,
)
from rag_app.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from rag_app.settings import EmbeddingSettings

logger = logging.getLogger(__name__)

#: Mean cosine with the torch vectors an export must reach over :data:`CHECK_TEXTS`, and the least any
#: one text may have (int8 loses a little everywhere; a real defect loses a lot somewhere).
MIN_AGREEMENT = 0.99
MIN_AGREEMENT_EACH = 0.98
ONNX_EXTRA_HINT = "pip install 'rag-app[onnx]'"
OPENVINO_EXTRA_HINT = "pip install 'rag-app[openvino]'"
#: Texts the export is checked on: English and Chinese, short and long (truncated at the model's limit).
CHECK_TEXTS = [
    "What is retrieval augmented generation?",
    "Documents are split into chunks and embedded into vectors; the closest chunks answer a question.",
    "知识库问答系统先把文档切成小块并计算向量。",
    "用户提问时，系统检索最相关的几个片段，交给本地大模型生成回答，并用编号标出引用的资料。",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "混合检索：向量检索和关键词检索（BM25）的结果融合后再排序。" * 12,
    "a",
    "Install with pip, then run `rag ingest docs/` and `rag ask 'how do I configure OCR?'`.",
]


class ExportedEmbeddings(Embeddings):
    """What every runtime of the export shares: the folder's tokenizer, identity, token counts and limit as
    the torch embedder of the same folder reports them (a knowledge base may switch between them), batches
    of similar length (less padding), normalisation. A runtime supplies :meth:`_infer`."""

    def __init__(self, model_dir: Path, *, name: str, batch_size: int = 16, normalize: bool = True) -> None:
        counter = folder_tokenizer(model_dir)
        dimension = folder_dimension(model_dir)
        if counter is None or dimension is None:
            raise ModelLoadError(f"{model_dir} lacks tokenizer.json or modules.json: cannot run its export")
        self.max_tokens = folder_max_tokens(model_dir) or 512
        self._counter = counter
        self._encoder = folder_tokenizer(model_dir)
        self._encoder.enable_truncation(self.max_tokens)
        self.identity = (name, dimension)
        self.name = name
        self.batch_size = batch_size
        self.normalize = normalize
        self.input_names: set[str] = {"input_ids", "attention_mask", "token_type_ids"}
        self._counts: dict[str, int] = {}

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` (no special tokens, never truncated); memoised."""
        return memoised_count(self._counts, text, lambda t: len(self._counter.encode(t, add_special_tokens=False)))

    #: Batches are padded to a multiple of this many tokens (masked: the vectors do not change). A runtime
    #: that prepares kernels per input shape sees a few widths again and again instead of a new one per batch.
    pad_to_multiple = 1

    def _feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self._encoder.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        width = -(-width // self.pad_to_multiple) * self.pad_to_multiple
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in feeds.items() if k in self.input_names}

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _batches(self, texts: list[str], size: int) -> list[list[int]]:
        """Indices of ``texts`` in batches of similar length."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return [order[start : start + size] for start in range(0, len(order), size)]

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @property
    def agreement_record(self) -> str:
        """File beside the export that keeps this runtime's verdict (the runtime's precision is in its name)."""
        raise NotImplementedError

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Returned in the input order."""
        out: list[Any] = [None] * len(texts)
        for picked in self._batches(texts, self.batch_size):
            vectors = self._finish(self._infer(self._feeds([texts[i] for i in picked])))
            for i, vector in zip(picked, vectors, strict=True):
                out[i] = vector.tolist()
        return out

    def embed_query(self, text: str) -> list[float]:
        return self._finish(self._infer(self._feeds([text])))[0].tolist()  # type: ignore[no-any-return]


class OnnxEmbeddings(ExportedEmbeddings):
    """LangChain embeddings over an exported ONNX model, run by onnxruntime."""

    def __init__(self, model_file: Path, model_dir: Path, *, name: str, batch_size: int = 16,
                 normalize: bool = True, threads: int = 0) -> None:
        import onnxruntime as ort

        super().__init__(model_dir, name=name, batch_size=batch_size, normalize=normalize)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads that spin while waiting steal the cores other work needs (measured 40 % faster with it
        # off on a busy 2-core machine: docs/benchmarks.md, issue 12).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]  # type: ignore[no-any-return]

    @property
    def agreement_record(self) -> str:
        return "agreement.json"


class OpenVinoEmbeddings(ExportedEmbeddings):
    """The same export run by OpenVINO: bfloat16 where the CPU computes it natively (AMX, AVX-512 BF16),
    and, for documents, one batch in flight per CPU stream (OpenVINO's throughput mode: on 2 cores two
    one-thread streams embed ~1.4× more than one two-thread stream; docs/benchmarks.md, issue 12). Widths
    are padded to multiples of 16 tokens: OpenVINO builds its kernels per shape, and a new width per batch
    cost 20–35 % of a first pass over new texts (measured, issue 12). Questions go through a second,
    latency-tuned compilation made on first use, on ``query_threads`` threads as torch's questions are (one:
    the keyword search has the other core; measured faster under load)."""

    pad_to_multiple = 16

    def __init__(self, model_file: Path, model_dir: Path, *, name: str, batch_size: int = 16,
                 normalize: bool = True, precision: str = "auto", cache: Path | None = None,
                 query_threads: int = 1) -> None:
        import openvino as ov

        super().__init__(model_dir, name=name, batch_size=batch_size, normalize=normalize)
        self._ov = ov
        self._core = ov.Core()
        if cache is not None:  # compiled blobs: later loads skip the compilation
            self._core.set_property({"CACHE_DIR": str(cache)})
        self._model_file = model_file
        self._precision = precision
        self._query_threads = query_threads
        self._documents = self._compile("THROUGHPUT")
        self._queries: Any = None
        self.input_names = {i.get_any_name() for i in self._documents.inputs}
        self.precision = self._documents.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.streams = int(self._documents.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    @property
    def agreement_record(self) -> str:
        # bf16 on one CPU and f32 on another are different numbers: each is checked on its own.
        return f"agreement-openvino-{self.precision}.json"

    def _compile(self, hint: str, threads: int = 0) -> Any:
        config = {"PERFORMANCE_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if self._precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = self._precision
        return self._core.compile_model(str(self._model_file), "CPU", config)

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self._queries is None:
            self._queries = self._compile("LATENCY", self._query_threads)
        request = self._queries.create_infer_request()  # one per call: callers may be concurrent
        return np.array(request.infer(feeds)[0])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """``batch_size`` texts in flight, split over the streams; returned in the input order."""
        out: list[Any] = [None] * len(texts)
        if not texts:
            return out
        queue = self._ov.AsyncInferQueue(self._documents, self.streams)

        def done(request: Any, picked: list[int]) -> None:
            vectors = self._finish(np.array(request.get_output_tensor(0).data))
            for i, vector in zip(picked, vectors, strict=True):
                out[i] = vector.tolist()

        queue.set_callback(done)
        for picked in self._batches(texts, max(1, self.batch_size // self.streams)):
            queue.start_async(self._feeds([texts[i] for i in picked]), picked)
        queue.wait_all()
        if any(v is None for v in out):
            raise ModelLoadError(f"OpenVINO returned no vector for some of {len(texts)} texts")
        return out


def _fingerprint(model_dir: Path, quantize: str) -> str:
    """Names the export: the weights (size, time) and how it was made; a changed folder is exported again."""
    parts = [str(model_dir.resolve()), quantize, "v1"]
    for file in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        stat = file.stat()
        parts.append(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def checked_embeddings(settings: EmbeddingSettings, cache_dir: Path,
                       make: Callable[[Path], ExportedEmbeddings]) -> ExportedEmbeddings:
    """``make`` run on the export for these settings, exporting (about half a minute) on first use, once
    its vectors are known to agree with torch's (checked once per export and runtime, and recorded).

    Raises :class:`ModelLoadError` when they do not (recorded, so the check is not repeated) or the export
    cannot be made.
    """
    model_dir = embedding_model_dir(settings)
    name = embedder_name(settings, model_dir)
    folder = cache_dir / f"{name}-onnx-{_fingerprint(model_dir, settings.quantize)}"
    target = folder / ("model_int8.onnx" if settings.quantize == "int8" else "model.onnx")
    model = None
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        model = _sentence_transformer(model_dir, settings.device)
        fp32 = folder / "model.onnx"
        if not fp32.is_file():
            export_transformer(model, model_dir, fp32)
        if settings.quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per-channel weights of the matrix products only: per-tensor int8 (the default) measured a
            # cosine of 0.86 with torch on MiniLM, per-channel 0.98–0.996.
            tmp = target.with_suffix(".tmp.onnx")
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
            tmp.replace(target)
    embeddings = make(target)
    record = folder / embeddings.agreement_record
    if record.is_file():
        verdict = json.loads(record.read_text(encoding="utf-8"))
        if not verdict.get("ok"):
            raise ModelLoadError(_disagreement(name, verdict))
        return embeddings
    mean, least = measure_agreement(model or _sentence_transformer(model_dir, settings.device), embeddings)
    verdict = {"ok": mean >= MIN_AGREEMENT and least >= MIN_AGREEMENT_EACH, "mean_cosine": mean,
               "min_cosine": least, "quantize": settings.quantize, "runtime": type(embeddings).__name__,
               "precision": getattr(embeddings, "precision", "f32")}
    record.write_text(json.dumps(verdict), encoding="utf-8")
    logger.info("%s of %s (%s): cosine with torch mean %.4f, min %.4f", type(embeddings).__name__, name,
                settings.quantize, mean, least)
    if not verdict["ok"]:
        raise ModelLoadError(_disagreement(name, verdict))
    return embeddings


def _disagreement(name: str, verdict: dict[str, Any]) -> str:
    return (
        f"the ONNX export ({verdict.get('quantize')}) of {name} disagrees with the torch model: cosine mean "
        f"{verdict.get('mean_cosine', 0):.4f}, min {verdict.get('min_cosine', 0):.4f} "
        f"(needs {MIN_AGREEMENT} and {MIN_AGREEMENT_EACH})"
    )


def _sentence_transformer(model_dir: Path, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    model.eval()
    return model


def export_transformer(model: Any, model_dir: Path, target: Path) -> None:
    """Trace the model's transformer plus pooling (not normalisation: done after, in numpy) to ONNX."""
    import torch

    modules = list(model)
    transformer, pooling = modules[0], modules[1] if len(modules) > 1 else None
    kinds = [type(m).__name__ for m in modules[1:]]
    if any(k not in ("Pooling", "Normalize") for k in kinds):
        raise ModelLoadError(f"{model_dir.name}: modules {kinds} are not supported by the ONNX export")
    modes = pooling_modes(pooling.get_config_dict()) if pooling is not None else ["mean"]
    if len(modes) != 1 or modes[0] not in ("mean", "cls", "max"):
        raise ModelLoadError(f"{model_dir.name}: pooling {modes} is not supported by the ONNX export")
    mode = modes[0]
    auto_model = transformer.auto_model
    import inspect

    takes_types = "token_type_ids" in inspect.signature(auto_model.forward).parameters

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = auto_model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if mode == "cls":
                return hidden[:, 0]
            if mode == "max":
                return (hidden + (mask - 1.0) * 1e9).max(dim=1).values
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    sample = transformer.tokenizer(["hello world", "你好"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    tmp = target.with_suffix(".tmp")
    import warnings

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as constant: not for users
        torch.onnx.export(
            Pooled().eval(), args, str(tmp), input_names=names, output_names=["sentence_embedding"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    tmp.replace(target)


def measure_agreement(model: Any, embeddings: Embeddings) -> tuple[float, float]:
    """(mean, lowest) cosine between torch's and ``embeddings``' vectors over :data:`CHECK_TEXTS`."""
    reference = model.encode(CHECK_TEXTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    got = np.asarray(embeddings.embed_documents(CHECK_TEXTS))
    cosines = np.sum(reference * got, axis=1)
    return float(np.mean(cosines)), float(np.min(cosines))


def build_onnx_embeddings(settings: EmbeddingSettings, cache_dir: Path) -> ExportedEmbeddings:
    """``embedding.backend = "onnx"`` (onnxruntime) or ``"openvino"``: the checked export, ready to embed."""
    model_dir = embedding_model_dir(settings)
    name = embedder_name(settings, model_dir)
    if settings.backend == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("embedding.backend = 'openvino' needs OpenVINO",
                                         hint=OPENVINO_EXTRA_HINT) from exc

        def make(target: Path) -> ExportedEmbeddings:
            return OpenVinoEmbeddings(target, model_dir, name=name, batch_size=settings.batch_size,
                                      normalize=settings.normalize, precision=settings.precision,
                                      cache=cache_dir / "openvino-cache", query_threads=settings.query_threads)
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("embedding.backend = 'onnx' needs onnxruntime", hint=ONNX_EXTRA_HINT) from exc

        def make(target: Path) -> ExportedEmbeddings:
            return OnnxEmbeddings(target, model_dir, name=name, batch_size=settings.batch_size,
                                  normalize=settings.normalize)
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
    except ImportError as exc:
        raise MissingDependencyError("exporting the embedder needs the onnx package",
                                     hint=OPENVINO_EXTRA_HINT if settings.backend == "openvino" else ONNX_EXTRA_HINT) from exc
    return checked_embeddings(settings, cache_dir, make)
