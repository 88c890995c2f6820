"""Document and knowledge-base management: list, delete, prune, recover after a crash.

Every function that writes takes the data directory's write lock (:func:`ingest.manifest.write_lock`) or
is called by one that holds it (the pipeline), and removes chunks only through
``KnowledgeBase.delete_ids`` so that indexes beside Chroma (the keyword index) stay in sync.

Duplicate rule: the same bytes under two names are stored once. The first name ingested owns the chunks
(their ``source`` metadata names it); the other is an *alias* in the manifest (``rag docs list`` shows
it, ``duplicate of …``). When the owner goes away (changed, deleted, pruned), its chunks go and its aliases
are dropped from the manifest: an alias file that is part of the same ingestion is indexed again under its
own name in that run; otherwise the next ingestion of it does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.embeddings import Embeddings

from ingest.manifest import DocumentRecord, write_lock
from ingest.store import KnowledgeBase, collection_name, list_knowledge_bases, open_client
from rag_app.errors import DocumentNotFoundError, KnowledgeBaseExistsError, KnowledgeBaseNotFoundError

if TYPE_CHECKING:
    from rag_app.settings import Settings

logger = logging.getLogger(__name__)


class NoEmbeddings(Embeddings):
    """For opening a knowledge base only to list or delete: loading the real model would take seconds."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("this knowledge base handle was opened without an embedding model")

    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("this knowledge base handle was opened without an embedding model")


@dataclass(frozen=True)
class Removal:
    """What removing documents did."""

    sources: list[str]
    chunks_removed: int
    #: Copies (aliases) that pointed to removed content and are no longer indexed.
    dropped_aliases: list[str]


def delete_superseded(kb: KnowledgeBase, records: Iterable[DocumentRecord]) -> tuple[int, list[str]]:
    """Delete the chunks of superseded records (manifest state ``deleting``), then the records.

    Returns (chunks removed, sources of aliases dropped with them). Aliases own no chunks; content that a
    complete document still owns is never deleted.
    """
    assert kb.manifest is not None
    records = list(records)
    removed = 0
    for rec in records:
        if rec.is_alias or kb.manifest.owner_of(kb.collection_name, rec.sha256) is not None:
            continue
        removed += kb.delete_ids(kb.chunk_ids_where({"sha256": rec.sha256}))
    kb.manifest.forget(kb.collection_name, records)
    return removed, [r.source for r in records if r.is_alias]


def recover(kb: KnowledgeBase) -> list[str]:
    """Undo what an interrupted writer left: chunks of documents never committed or half deleted.

    Run under the write lock before writing. Returns the sources cleaned up.
    """
    assert kb.manifest is not None
    _adopt_unrecorded(kb)
    incomplete = kb.manifest.records(kb.collection_name, states=("pending", "deleting"))
    if not incomplete:
        return []
    removed, _ = delete_superseded(kb, incomplete)
    kb.manifest.bump()
    sources = sorted({r.source for r in incomplete})
    logger.warning(
        "recovered from an interrupted ingestion: %d chunk(s) of %s removed", removed, ", ".join(sources)
    )
    return sources


def _adopt_unrecorded(kb: KnowledgeBase) -> None:
    """A collection with chunks but no manifest rows (written before the manifest existed): record it."""
    assert kb.manifest is not None
    if kb.manifest.records(kb.collection_name, states=("pending", "complete", "deleting")) or kb.count() == 0:
        return
    got = kb._collection.get(include=["metadatas"])
    docs: dict[tuple[str, str], dict[str, object]] = {}
    counts: dict[tuple[str, str], int] = {}
    for meta in got["metadatas"] or []:
        key = (str(meta.get("source", "")), str(meta.get("sha256", "")))
        docs.setdefault(key, dict(meta))
        counts[key] = counts.get(key, 0) + 1
    kb.manifest.commit(
        kb.collection_name,
        [
            DocumentRecord(source, sha, "complete", counts[(source, sha)], 0, str(meta.get("file_name", "")),
                           str(meta.get("ingested_at", "")))
            for (source, sha), meta in docs.items()
        ],
    )
    logger.info("recorded %d existing document(s) of %s in the manifest", len(docs), kb.name)


def remove_documents(kb: KnowledgeBase, sources: Sequence[str]) -> Removal:
    """Hide, then delete, the documents stored under these sources (the caller holds the write lock)."""
    assert kb.manifest is not None
    retired = kb.manifest.retire(kb.collection_name, sources)
    removed, aliases = delete_superseded(kb, retired)
    return Removal(sorted(set(sources)), removed, sorted(set(aliases) - set(sources)))


def prune_missing(kb: KnowledgeBase, roots: Sequence[str | Path], present: set[str]) -> Removal:
    """Remove documents that came from under ``roots`` and whose files are no longer there.

    ``present`` holds the sources found under the roots now. Only documents under the given roots are
    considered: pruning one folder never touches what was ingested from another.
    """
    from ingest.pipeline import source_root_name

    assert kb.manifest is not None
    prefixes: list[str] = []
    exact: set[str] = set()
    for root in roots:
        path = Path(root).expanduser()
        name = source_root_name(path)
        if path.is_dir():
            prefixes.append(name + "/")
        else:
            exact.add(name)
            prefixes.append(name + "!")  # the members of an archive given by name
    gone = [
        rec.source
        for rec in kb.manifest.records(kb.collection_name)
        if rec.source not in present and (rec.source in exact or rec.source.startswith(tuple(prefixes)))
    ]
    if not gone:
        return Removal([], 0, [])
    return remove_documents(kb, gone)


# --- faces' operations (each takes the lock itself) -------------------------------------------------------


def open_existing(settings: Settings, knowledge_base: str, embeddings: Embeddings | None = None) -> KnowledgeBase:
    client = open_client(settings.data_dir, settings.store.chroma_url)
    known = {kb.name for kb in list_knowledge_bases(client)}
    if knowledge_base not in known:
        existing = f" (existing: {', '.join(sorted(known))})" if known else ""
        raise KnowledgeBaseNotFoundError(f"knowledge base '{knowledge_base}' does not exist{existing}")
    return KnowledgeBase(client, knowledge_base, embeddings or NoEmbeddings())


def list_documents(settings: Settings, knowledge_base: str) -> list[DocumentRecord]:
    """The complete documents of a knowledge base (aliases included), sorted by source."""
    kb = open_existing(settings, knowledge_base)
    assert kb.manifest is not None
    if not kb.manifest.records(kb.collection_name, states=("complete", "pending", "deleting")) and kb.count():
        with write_lock(settings.data_dir):
            _adopt_unrecorded(kb)
    return kb.manifest.records(kb.collection_name)


def resolve_sources(records: Sequence[DocumentRecord], names: Sequence[str]) -> list[str]:
    """Map what a user typed (a source, a file name, or the end of a source path) to stored sources."""
    out: list[str] = []
    by_source = {r.source: r for r in records}
    for name in names:
        wanted = name.replace("\\", "/").strip()
        if wanted in by_source:
            out.append(wanted)
            continue
        matches = [s for s in by_source if s.endswith("/" + wanted) or by_source[s].file_name == wanted]
        if len(matches) == 1:
            out.append(matches[0])
        elif not matches:
            raise DocumentNotFoundError(f"no stored document matches '{name}'")
        else:
            raise DocumentNotFoundError(
                f"'{name}' matches several documents: {', '.join(sorted(matches))}",
                hint="give the source path exactly as 'rag docs list' shows it",
            )
    return out


def delete_documents(settings: Settings, knowledge_base: str, names: Sequence[str]) -> Removal:
    kb = open_existing(settings, knowledge_base)
    with write_lock(settings.data_dir):
        recover(kb)
        assert kb.manifest is not None
        sources = resolve_sources(kb.manifest.records(kb.collection_name), names)
        return remove_documents(kb, sources)


def create_knowledge_base(settings: Settings, name: str) -> str:
    """Create an empty knowledge base; returns its Chroma collection name."""
    client = open_client(settings.data_dir, settings.store.chroma_url)
    cname = collection_name(name)
    if cname in {c.name for c in client.list_collections()}:
        raise KnowledgeBaseExistsError(f"knowledge base '{name.strip()}' already exists")
    with write_lock(settings.data_dir):
        KnowledgeBase(client, name.strip(), NoEmbeddings())
    return cname


def delete_knowledge_base(settings: Settings, name: str) -> int:
    """Delete a knowledge base with all its chunks; returns how many chunks it held."""
    kb = open_existing(settings, name.strip())
    with write_lock(settings.data_dir):
        return kb.drop()
