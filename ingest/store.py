"""Knowledge bases: named Chroma collections in one persistent data directory.

Display names can be anything (Chinese included); each maps to a valid Chroma collection name and is kept
in the collection's metadata. Vectors use cosine distance and always our own embedding function (Chroma's
default one would download a model).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rag_app.errors import KnowledgeBaseNotFoundError

if TYPE_CHECKING:
    import chromadb
    from langchain_chroma import Chroma

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}[A-Za-z0-9]|[A-Za-z0-9]")
COLLECTION_PREFIX = "kb-"


def collection_name(display_name: str) -> str:
    """Map any knowledge-base name to a valid, stable Chroma collection name."""
    name = display_name.strip()
    if not name:
        raise ValueError("knowledge base name is empty")
    if _SAFE_NAME.fullmatch(name):
        return COLLECTION_PREFIX + name
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:24]
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
    return f"{COLLECTION_PREFIX}{slug + '-' if slug else ''}{digest}"


def open_client(data_dir: Path) -> chromadb.ClientAPI:
    """The persistent Chroma client for a data directory (created if missing)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path = Path(data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=True)
    )


@dataclass(frozen=True)
class KnowledgeBaseInfo:
    name: str
    collection: str
    chunks: int


def list_knowledge_bases(client: chromadb.ClientAPI) -> list[KnowledgeBaseInfo]:
    out = []
    for col in client.list_collections():
        if not col.name.startswith(COLLECTION_PREFIX):
            continue
        meta = col.metadata or {}
        out.append(KnowledgeBaseInfo(str(meta.get("display_name", col.name)), col.name, col.count()))
    return sorted(out, key=lambda kb: kb.name)


class KnowledgeBase:
    """One knowledge base: a LangChain ``Chroma`` vector store plus document bookkeeping."""

    def __init__(self, client: chromadb.ClientAPI, name: str, embeddings: Embeddings, *, create: bool = True):
        from langchain_chroma import Chroma

        self.name = name
        self.collection_name = collection_name(name)
        if not create and self.collection_name not in {c.name for c in client.list_collections()}:
            raise KnowledgeBaseNotFoundError(f"knowledge base '{name}' does not exist")
        self.client = client
        self.embeddings = embeddings
        self.vectorstore: Chroma = Chroma(
            client=client,
            collection_name=self.collection_name,
            embedding_function=embeddings,
            collection_metadata={"hnsw:space": "cosine", "display_name": name},
        )

    @property
    def _collection(self) -> Any:
        return self.vectorstore._collection

    def count(self) -> int:
        return int(self._collection.count())

    def chunk_ids_where(self, where: dict[str, Any]) -> list[str]:
        return list(self._collection.get(where=where, include=[])["ids"])

    def find_sources(self, sha256: str) -> set[str]:
        """Sources (relative paths) already stored with this content hash."""
        got = self._collection.get(where={"sha256": sha256}, include=["metadatas"])
        return {str(m.get("source")) for m in got["metadatas"] or []}

    def add_chunks(
        self,
        chunks: list[Document],
        ids: list[str],
        *,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Embed and upsert chunks in batches no larger than Chroma accepts."""
        batch_size = max(1, min(batch_size, int(self.client.get_max_batch_size())))
        for start in range(0, len(chunks), batch_size):
            part = chunks[start : start + batch_size]
            self.vectorstore.add_texts(
                texts=[d.page_content for d in part],
                metadatas=[_chroma_metadata(d.metadata) for d in part],
                ids=ids[start : start + batch_size],
            )
            if on_batch:
                on_batch(len(part))

    def delete_ids(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if ids:
            self._collection.delete(ids=ids)
        return len(ids)


def _chroma_metadata(meta: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Chroma accepts only scalar, non-null metadata values."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in meta.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return out
