"""Knowledge bases: named Chroma collections in one persistent data directory.

Display names follow :mod:`rag_app.names` when a knowledge base is created (letters of any script, Chinese
included; older ones can be anything); each maps to a valid Chroma collection name and is kept in the
collection's metadata. Vectors use cosine distance and always our own embedding function (Chroma's
default one would download a model).

Every write through :class:`KnowledgeBase` also records the knowledge bases (name, embedder, chunk count) in
the data directory's manifest, so that listing them needs neither Chroma nor LangChain
(:func:`knowledge_bases`, issue 12); what the manifest cannot vouch for is asked of Chroma, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.manifest import MANIFEST_FILE, KnowledgeBaseEntry, Manifest, read_knowledge_bases
from rag_app.errors import ChromaServerError, EmbedderMismatchError, KnowledgeBaseNotFoundError, SettingsError

if TYPE_CHECKING:
    # Chroma and LangChain load when a knowledge base is opened, never for listing (issue 12).
    import chromadb
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}[A-Za-z0-9]|[A-Za-z0-9]")
COLLECTION_PREFIX = "kb-"
HASHED_PREFIX = "kbh-"
# Collection metadata: which embedder built the knowledge base (its vectors only compare with that model's).
EMBEDDER_KEY = "embedder"
DIMENSION_KEY = "embedding_dimension"


def collection_name(display_name: str) -> str:
    """Map any knowledge-base name to a valid, stable Chroma collection name."""
    name = display_name.strip()
    if not name:
        raise SettingsError("the knowledge base name is empty")
    if _SAFE_NAME.fullmatch(name) and ".." not in name:
        return COLLECTION_PREFIX + name
    # Hashed names get their own prefix, which no plain name can produce: two names never collide.
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:24]
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
    return f"{HASHED_PREFIX}{slug + '-' if slug else ''}{digest}"


#: Remote (``chroma_url``) clients → the data directory that holds their knowledge bases' keyword indexes and
#: manifest (which stay on the one service that writes; only the vectors live on the Chroma server).
_LOCAL_DIRS: weakref.WeakKeyDictionary[Any, Path] = weakref.WeakKeyDictionary()
#: Chroma fails ("Could not connect to tenant") when two threads make the first client of a folder at once,
#: e.g. the app's warm-up and its first page (listing no longer opens Chroma before the pages may).
_OPENING = threading.Lock()


def open_client(data_dir: Path, chroma_url: str | None = None) -> chromadb.ClientAPI:
    """The Chroma client for a data directory: persistent in ``data_dir/chroma`` (created if missing), or,
    with ``chroma_url`` (``store.chroma_url``, issue 11), a client of a ``chroma run`` server."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    if chroma_url:
        return _open_http_client(Path(data_dir), chroma_url)
    path = Path(data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    with _OPENING:
        return chromadb.PersistentClient(
            path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=True)
        )


def _open_http_client(data_dir: Path, url: str) -> chromadb.ClientAPI:
    from urllib.parse import urlsplit

    import chromadb
    from chromadb.config import Settings as ChromaSettings

    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"store.chroma_url must look like http://host:8000, not {url!r}")
    ssl = parts.scheme == "https"
    try:
        client = chromadb.HttpClient(
            host=parts.hostname, port=parts.port or (443 if ssl else 8000), ssl=ssl,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        client.heartbeat()
    except (ValueError, ConnectionError, OSError) as exc:  # chromadb: "Could not connect to a Chroma server"
        raise ChromaServerError(f"cannot reach the Chroma server at {url}: {exc}") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    _LOCAL_DIRS[client] = data_dir
    return client


def local_data_dir(client: chromadb.ClientAPI) -> Path | None:
    """Where a client's knowledge bases keep their keyword indexes and manifest: the persistent client's data
    directory, or the one a remote client was opened for; ``None`` for an in-memory client."""
    if client in _LOCAL_DIRS:
        return _LOCAL_DIRS[client]
    settings = client.get_settings()
    return Path(settings.persist_directory).parent if settings.is_persistent else None


@dataclass(frozen=True)
class KnowledgeBaseInfo:
    name: str
    collection: str
    chunks: int
    #: The embedder that built it, e.g. "all-MiniLM-L6-v2 (384 dimensions)"; None when not recorded.
    embedder: str | None = None


def list_knowledge_bases(client: chromadb.ClientAPI) -> list[KnowledgeBaseInfo]:
    """The knowledge bases as Chroma has them (collections, their metadata and counts), each count what readers
    see: chunks of documents the manifest does not hold complete (a writer at work, a crash, a write that failed
    on a full disk and could not be undone yet) are left out, as readers leave them out (issue 18)."""
    cols = [col for col in client.list_collections() if _is_knowledge_base(col.name)]
    hidden = _hidden_chunks(client, cols)
    return _infos(dataclasses.replace(e, chunks=e.chunks - hidden.get(e.collection, 0)) for e in map(_entry, cols))


def _hidden_chunks(client: chromadb.ClientAPI, cols: list[Any]) -> dict[str, int]:
    """How many chunks of each collection readers do not see (their documents not complete in the manifest).
    Nothing for a data directory without a manifest (no document is hidden there), or one that cannot be read."""
    data_dir = local_data_dir(client)
    if data_dir is None or not (data_dir / MANIFEST_FILE).is_file():
        return {}
    out: dict[str, int] = {}
    try:
        manifest = Manifest(data_dir)
        for col in cols:
            shas = manifest.hidden_sha256s(col.name)
            if shas:
                where = {"sha256": shas[0]} if len(shas) == 1 else {"sha256": {"$in": shas}}
                out[col.name] = len(col.get(where=where, include=[])["ids"])
    except sqlite3.Error as exc:
        logger.debug("hidden chunks not counted: %s", exc)
    return out


def knowledge_bases(data_dir: Path, chroma_url: str | None = None) -> list[KnowledgeBaseInfo]:
    """The knowledge bases of a data directory: from its manifest when that vouches for Chroma (milliseconds:
    no Chroma or LangChain import), else from Chroma itself (a Chroma server always)."""
    if not chroma_url and not (Path(data_dir) / "chroma" / "chroma.sqlite3").is_file():
        return []  # no store yet: Chroma would make an empty one to list nothing
    entries = None if chroma_url else recorded_knowledge_bases(data_dir)
    if entries is None:
        return list_knowledge_bases(open_client(data_dir, chroma_url))
    return _infos(entries)


def recorded_knowledge_bases(data_dir: Path) -> list[KnowledgeBaseEntry] | None:
    """Every knowledge base as the manifest records it, or ``None`` when it cannot vouch for what Chroma
    holds: a data directory from before the record, an unreadable manifest, a writer's work unfinished, counts
    that disagree with the documents (:func:`ingest.manifest.read_knowledge_bases`), or a collection created or
    dropped behind the manifest's back (Chroma's own list of collections differs)."""
    entries = read_knowledge_bases(Path(data_dir))
    if entries is None:
        return None
    if _chroma_collection_names(Path(data_dir) / "chroma") != {e.collection for e in entries}:
        return None
    return entries


def _chroma_collection_names(folder: Path) -> set[str] | None:
    """The knowledge bases' collection names in the catalogue of a persistent Chroma, read-only and without
    importing chromadb: a check on the manifest's record, never a source. ``None`` when there is no store yet
    or the table cannot be read (e.g. another Chroma version's layout): then Chroma is asked."""
    file = folder / "chroma.sqlite3"
    if not file.is_file():
        return None
    try:
        con = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT name FROM collections").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return {str(name) for (name,) in rows if _is_knowledge_base(str(name))}


def _is_knowledge_base(collection: str) -> bool:
    return collection.startswith((COLLECTION_PREFIX, HASHED_PREFIX))


def _entry(col: Any) -> KnowledgeBaseEntry:
    """A Chroma collection as the manifest records it."""
    meta = col.metadata or {}
    embedder = str(meta[EMBEDDER_KEY]) if EMBEDDER_KEY in meta else None
    return KnowledgeBaseEntry(col.name, str(meta.get("display_name", col.name)), embedder, meta.get(DIMENSION_KEY),
                              int(col.count()))


def _infos(entries: Iterable[KnowledgeBaseEntry]) -> list[KnowledgeBaseInfo]:
    out = [
        KnowledgeBaseInfo(e.display_name, e.collection, e.chunks,
                          None if e.embedder is None else f"{e.embedder} ({e.dimension} dimensions)")
        for e in entries
    ]
    return sorted(out, key=lambda kb: kb.name)


class KnowledgeBase:
    """One knowledge base: a LangChain ``Chroma`` vector store plus document bookkeeping."""

    def __init__(self, client: chromadb.ClientAPI, name: str, embeddings: Embeddings, *, create: bool = True):
        self.name = name
        self.collection_name = collection_name(name)
        if not create and self.collection_name not in {c.name for c in client.list_collections()}:
            raise KnowledgeBaseNotFoundError(f"knowledge base '{name}' does not exist")
        from ingest.embed import embedder_identity
        from ingest.keyword_index import KeywordIndex, index_path

        self.client = client
        self.embeddings = embeddings
        self.embedder = embedder_identity(embeddings)
        self.vectorstore: Chroma = self._open_vectorstore(client)
        self._embedder_recorded = self._check_embedder()
        # The BM25 keyword index follows every add and delete below (issue 4: hybrid retrieval).
        # The manifest (completion record, generation marker) lives in the data directory, beside chroma/ —
        # also when the vectors are on a Chroma server (local_data_dir).
        self.data_dir: Path | None = local_data_dir(client)
        self.keywords = KeywordIndex(index_path(self.data_dir / "chroma", self.collection_name) if self.data_dir else None)
        self.manifest: Manifest | None = Manifest(self.data_dir) if self.data_dir else None
        self._generation = self.manifest.generation() if self.manifest else "0"
        if self.manifest is not None and not self.manifest.records_knowledge_base(self.collection_name):
            self._remember(everything=True)  # created just now, or a data directory from before the record

    def _remember(self, *, everything: bool = False) -> None:
        """Record this knowledge base (``everything``: every one of the data directory) in the manifest as
        Chroma has it now; called after each write, so that listing reads it there. Not for a Chroma server,
        whose collections other clients may change: it is always asked."""
        if self.manifest is None or self.client in _LOCAL_DIRS:
            return
        if everything:
            cols = [c for c in self.client.list_collections() if _is_knowledge_base(c.name)]
            self.manifest.record_knowledge_bases([_entry(c) for c in cols], every=True)
        else:  # the metadata as this handle modified it, the count as written
            self.manifest.record_knowledge_bases([_entry(self._collection)])

    def _open_vectorstore(self, client: chromadb.ClientAPI) -> Chroma:
        from langchain_chroma import Chroma

        metadata: dict[str, Any] = {"hnsw:space": "cosine", "display_name": self.name}
        if self.embedder is not None:  # kept by a new collection only; an existing one keeps its own
            metadata |= {EMBEDDER_KEY: self.embedder[0], DIMENSION_KEY: self.embedder[1]}
        return Chroma(
            client=client,
            collection_name=self.collection_name,
            embedding_function=self.embeddings,
            collection_metadata=metadata,
        )

    def _check_embedder(self) -> bool:
        """Refuse an embedder other than the one that built this knowledge base: questions would be compared
        with another model's vectors and every answer would rest on meaningless matches. Returns whether the
        collection records its embedder (knowledge bases made before this was recorded have only their
        vectors' dimension to check, and get the record on their next ingestion)."""
        if self.embedder is None:
            return True
        meta = self._collection.metadata or {}
        if EMBEDDER_KEY in meta:
            stored = (str(meta[EMBEDDER_KEY]), int(meta.get(DIMENSION_KEY, 0)))
            if stored != self.embedder:
                self._mismatch(_describe(*stored))
            return True
        got = self._collection.get(limit=1, include=["embeddings"])
        vectors = got.get("embeddings")
        if vectors is not None and len(vectors) and len(vectors[0]) != self.embedder[1]:
            self._mismatch(f"an embedder of {len(vectors[0])} dimensions")
        return False

    def _mismatch(self, stored: str) -> None:
        assert self.embedder is not None
        raise EmbedderMismatchError(
            f"knowledge base '{self.name}' was built with {stored}, but the configured one is "
            f"{_describe(*self.embedder)}",
            hint=f"set embedding.model_path back to that model, or rebuild the knowledge base with this one: "
            f"rag kb delete '{self.name}', then rag ingest … --kb '{self.name}'",
        )

    def _record_embedder(self) -> None:
        """Write the embedder into a knowledge base made before this was recorded (under the write lock)."""
        if self._embedder_recorded or self.embedder is None:
            return
        # Chroma refuses metadata that restates the distance function; the configuration keeps it.
        meta = {k: v for k, v in (self._collection.metadata or {}).items() if not k.startswith("hnsw:")}
        self._collection.modify(metadata={**meta, EMBEDDER_KEY: self.embedder[0], DIMENSION_KEY: self.embedder[1]})
        self._embedder_recorded = True

    def refresh(self) -> list[str]:
        """Re-open Chroma if another process wrote since; return the content hashes readers must hide.

        Chroma's client keeps each collection's vector index in memory and a running process does not see
        vectors another process added (its metadata it does). Ingestion bumps the manifest's generation
        on every commit; on a change this evicts the data directory's cached Chroma system and opens a
        fresh client. The old one is not stopped: other objects in this process may still hold it.
        """
        if self.manifest is None:
            return []
        generation, hidden = self.manifest.reader_view(self.collection_name)
        if generation != self._generation and self.client in _LOCAL_DIRS:
            self._generation = generation  # a Chroma server's index is one for every client: always fresh
        if generation != self._generation:
            from chromadb.api.shared_system_client import SharedSystemClient

            identifier = self.client._identifier  # type: ignore[attr-defined]
            with SharedSystemClient._refcount_lock:
                SharedSystemClient._identifier_to_system.pop(identifier, None)
                SharedSystemClient._identifier_to_refcount.pop(identifier, None)
            assert self.data_dir is not None
            self.client = open_client(self.data_dir)
            self.vectorstore = self._open_vectorstore(self.client)
            self._generation = generation
            logger.debug("re-opened Chroma for %s: the data directory changed", self.name)
        return hidden

    def reader_filter(self) -> dict[str, Any] | None:
        """The Chroma ``where`` filter a reader must apply: documents being written or deleted stay hidden.

        Also refreshes a stale client (see :meth:`refresh`). ``None`` when nothing is hidden.
        """
        hidden = self.refresh()
        if not hidden:
            return None
        if len(hidden) == 1:
            return {"sha256": {"$ne": hidden[0]}}
        return {"sha256": {"$nin": hidden}}

    def visible_ids(self, ids: Iterable[str]) -> list[str]:
        """Keep the chunk IDs of complete documents (for indexes beside Chroma, e.g. the keyword index)."""
        hidden_shas = self.manifest.hidden_sha256s(self.collection_name) if self.manifest else []
        hidden = {chunk_id_prefix(sha) for sha in hidden_shas}
        return [i for i in ids if i.rsplit("-", 1)[0] not in hidden]

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
        self._record_embedder()
        batch_size = max(1, min(batch_size, int(self.client.get_max_batch_size())))
        for start in range(0, len(chunks), batch_size):
            part = chunks[start : start + batch_size]
            self.vectorstore.add_texts(
                texts=[d.page_content for d in part],
                metadatas=[_chroma_metadata(d.metadata) for d in part],
                ids=ids[start : start + batch_size],
            )
            self.keywords.add(ids[start : start + batch_size], [d.page_content for d in part])
            if on_batch:
                on_batch(len(part))
        self._remember()

    def all_ids(self) -> list[str]:
        return list(self._collection.get(include=[])["ids"])

    def drop(self) -> int:
        """Delete every chunk (through :meth:`delete_ids`, so indexes beside Chroma follow), then the collection."""
        ids = self.all_ids()
        batch = max(1, int(self.client.get_max_batch_size()))
        for start in range(0, len(ids), batch):
            self.delete_ids(ids[start : start + batch])
        self.client.delete_collection(self.collection_name)
        self.keywords.destroy()
        if self.manifest is not None:
            self.manifest.drop_collection(self.collection_name)
        return len(ids)

    def delete_ids(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if ids:
            self._collection.delete(ids=ids)
            self.keywords.delete(ids)
            self._remember()
        return len(ids)


def _describe(name: object, dimension: object) -> str:
    return f"the embedder '{name}' ({dimension} dimensions)"


def chunk_id(sha256: str, index: int) -> str:
    """Stable chunk ID: the file's content hash and the chunk's index (same content → same IDs)."""
    return f"{chunk_id_prefix(sha256)}-{index:05d}"


def chunk_id_prefix(sha256: str) -> str:
    return sha256[:32]


def _chroma_metadata(meta: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Chroma accepts only scalar, non-null metadata values."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in meta.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return out
