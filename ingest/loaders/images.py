"""OCR (optional extra ``ocr``): images (.png, .jpg) and PDF pages without a text layer, Chinese and English.

RapidOCR 3.x runs PP-OCR models on onnxruntime. Its wheel ships the three models it uses by default
(``rapidocr/models/``: PP-OCRv6 small detection and recognition, the mobile orientation classifier), so
nothing is downloaded at run time; :class:`OcrEngine` points RapidOCR at those files explicitly and
refuses to start (rather than let it download) when one is missing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, register_loader
from rag_app.errors import MissingDependencyError, UnsupportedFileTypeError

logger = logging.getLogger(__name__)

OCR_EXTRA_HINT = "pip install 'rag-app[ocr]'"
#: The models inside the rapidocr wheel (``rapidocr/models``) and the config keys that select them.
_SHIPPED_MODELS = {
    "Det.model_path": "PP-OCRv6_det_small.onnx",
    "Rec.model_path": "PP-OCRv6_rec_small.onnx",
    "Cls.model_path": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}
#: Longest side, in pixels, a page is rendered at for OCR: RapidOCR scales larger images down to 2000 px
#: anyway (``Global.max_side_len``), so rendering bigger only costs time.
PAGE_PIXELS = 2000


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float


def ocr_available() -> bool:
    """Whether the ``ocr`` extra is installed (import check only; loads nothing)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("rapidocr", "onnxruntime", "cv2"))


def shipped_model_paths() -> dict[str, Path]:
    """Config key → model file inside the installed rapidocr wheel (raises when the extra is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("OCR needs the 'ocr' extra", hint=OCR_EXTRA_HINT)
    root = Path(next(iter(spec.submodule_search_locations))) / "models"
    return {key: root / name for key, name in _SHIPPED_MODELS.items()}


class OcrEngine:
    """RapidOCR, created on the first page or image that needs it (about 2 s) and reused after that.

    One per ingestion (the pipeline makes it); calls are serialised, the engine is not thread-safe.
    """

    def __init__(self, *, min_score: float = 0.5) -> None:
        self.min_score = min_score
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._engine is None:
            models = shipped_model_paths()
            missing = [str(p) for p in models.values() if not p.is_file()]
            if missing:
                raise MissingDependencyError(
                    f"the OCR models are missing from the rapidocr installation: {', '.join(missing)}",
                    hint=f"reinstall it: {OCR_EXTRA_HINT} (its wheel ships them; nothing is downloaded)",
                )
            from rapidocr import RapidOCR

            params: dict[str, Any] = {key: str(path) for key, path in models.items()}
            params |= {"Global.log_level": "warning", "Global.text_score": self.min_score}
            self._engine = RapidOCR(params=params)
            # Its own stderr handler reports e.g. "detection result is empty" per blank page: the file's
            # report says that better (see ingest.loaders.pdf); errors still show.
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        return self._engine

    def read(self, image: Any) -> list[OcrLine]:
        """Text lines of an image (numpy array, RGB or BGR, or a path), in reading order."""
        with self._lock:
            result = self._load()(image)
        texts = getattr(result, "txts", None) or ()
        scores = getattr(result, "scores", None) or [1.0] * len(texts)
        return [OcrLine(str(t), float(s)) for t, s in zip(texts, scores, strict=False) if str(t).strip()]

    def read_text(self, image: Any) -> str:
        return "\n".join(line.text for line in self.read(image))


@register_loader(".png", ".jpg", ".jpeg")
def load_image(path: Path, options: LoadOptions) -> LoadedDocument:
    """The text in an image, by OCR; metadata ``ocr: True``. Without OCR the file is skipped, as before."""
    if options.ocr is None:
        raise UnsupportedFileTypeError(
            str(path), f"unsupported file type '{path.suffix}' without OCR (off or not installed)",
            hint=f"{OCR_EXTRA_HINT} and set ingest.ocr = 'auto'",
        )
    import cv2
    import numpy as np

    # cv2.imread cannot open non-ASCII paths on every platform; decoding the bytes always works.
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UnsupportedFileTypeError(str(path), "not a readable image")
    text = options.ocr.read_text(image)
    return LoadedDocument([Section(text=text, metadata={"ocr": True}, layout_breaks=True)] if text else [],
                          ["read by OCR"])


def render_page(page: Any) -> Any:
    """A pypdfium2 page as an RGB numpy array, its longest side about :data:`PAGE_PIXELS`."""
    width, height = page.get_size()
    scale = min(3.0, PAGE_PIXELS / max(width, height, 1.0))
    return page.render(scale=scale).to_numpy()
