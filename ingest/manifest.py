"""The document manifest: which documents a knowledge base holds, and which of them are complete.

Chroma has no transactions, so a document's chunks cannot appear all at once. The manifest (one SQLite
file per data directory, WAL mode) is the completion record that makes them *look* atomic:

1. before any chunk of a document is written, its row is committed with state ``pending``;
2. the chunks are written to Chroma;
3. one SQLite transaction flips the row to ``complete`` and the row of the version it replaces to
   ``deleting`` (and bumps the data directory's *generation*);
4. the replaced chunks are deleted, then their row.

Readers hide every chunk whose document is not ``complete`` (:meth:`Manifest.hidden_sha256s`), so they see
a document's chunks all or nothing, old version or new. After a crash (``kill -9``), the next ingestion
finds the rows still ``pending``/``deleting`` and removes their chunks (:func:`ingest.pipeline` recovery):
no half document survives and none is mistaken for complete.

The *generation* changes on every commit; a long-running reader compares it to the one it opened Chroma
at and re-opens its client when another process has written (see ``KnowledgeBase.refresh``).

It also records the knowledge bases themselves (display name, embedder, chunk count; table
``knowledge_bases``), written by every write through ``ingest.store.KnowledgeBase``: listing them, and a
re-ingestion where nothing changed, read them here without opening Chroma (issue 12).
:func:`read_knowledge_bases` vouches for that record only when it agrees with the documents.

Also here: :func:`write_lock`, the inter-process lock that lets one writer at a time into a data
directory, with a "busy, waiting" notice naming who holds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.sqlite3"
LOCK_FILE = ".ingest.lock"

State = Literal["pending", "complete", "deleting"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection  TEXT NOT NULL,
    source      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'complete', 'deleting')),
    chunks      INTEGER NOT NULL DEFAULT 0,
    pages       INTEGER NOT NULL DEFAULT 0,
    file_name   TEXT NOT NULL DEFAULT '',
    ingested_at TEXT NOT NULL DEFAULT '',
    alias_of    TEXT,
    warnings    TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (collection, source, sha256)
);
CREATE INDEX IF NOT EXISTS documents_sha ON documents (collection, sha256);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS knowledge_bases (
    collection   TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    embedder     TEXT,
    dimension    INTEGER,
    chunks       INTEGER NOT NULL DEFAULT 0
);
"""
#: Set in ``meta`` once ``knowledge_bases`` was filled from every collection of the data directory's Chroma.
CATALOG_KEY = "catalog"


@dataclass(frozen=True)
class DocumentRecord:
    """One document of a knowledge base, as the manifest knows it."""

    source: str
    sha256: str
    state: State
    chunks: int = 0
    pages: int = 0
    file_name: str = ""
    ingested_at: str = ""
    #: Same bytes as this (complete) document: stored once, under that source.
    alias_of: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def is_alias(self) -> bool:
        return self.alias_of is not None


_COLUMNS = "source, sha256, state, chunks, pages, file_name, ingested_at, alias_of, warnings"


@dataclass(frozen=True)
class KnowledgeBaseEntry:
    """One knowledge base (a Chroma collection) as the manifest records it."""

    collection: str
    display_name: str
    #: The embedder that built it and its vectors' dimension (``None``: not recorded).
    embedder: str | None
    dimension: int | None
    #: Chunks in Chroma after the last write.
    chunks: int


def read_knowledge_bases(data_dir: Path) -> list[KnowledgeBaseEntry] | None:
    """The knowledge bases the manifest records (read only; a missing manifest is not created); ``None`` when
    the record cannot be trusted: no manifest (or one written before the record), an unreadable one, a
    document of one of them not ``complete`` (a writer at work, or a crash to recover), or a chunk count
    that differs from what its documents add up to. The caller then asks Chroma."""
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=60, isolation_level=None)
        try:
            con.execute("BEGIN")  # one snapshot for all three reads
            marked = con.execute("SELECT 1 FROM meta WHERE key=?", (CATALOG_KEY,)).fetchone()
            rows = con.execute(
                "SELECT collection, display_name, embedder, dimension, chunks FROM knowledge_bases"
            ).fetchall()
            busy = {r[0] for r in con.execute("SELECT DISTINCT collection FROM documents WHERE state!='complete'")}
            # Chunks live once per content hash: aliases own none.
            sums = dict(con.execute(
                "SELECT collection, SUM(chunks) FROM (SELECT collection, sha256, MAX(chunks) AS chunks "
                "FROM documents WHERE state='complete' AND alias_of IS NULL GROUP BY collection, sha256) "
                "GROUP BY collection"
            ).fetchall())
            con.execute("COMMIT")
        finally:
            con.close()
    except sqlite3.Error as exc:
        logger.debug("knowledge bases not read from the manifest: %s", exc)
        return None
    entries = [
        KnowledgeBaseEntry(str(c), str(name), None if emb is None else str(emb), dim, int(chunks))
        for c, name, emb, dim, chunks in rows
    ]
    if not marked or any(e.collection in busy or sums.get(e.collection, 0) != e.chunks for e in entries):
        return None
    return entries


def _record(row: tuple[object, ...]) -> DocumentRecord:
    source, sha, state, chunks, pages, name, at, alias, warnings = row
    return DocumentRecord(
        str(source), str(sha), state, int(chunks), int(pages), str(name), str(at),  # type: ignore[arg-type]
        None if alias is None else str(alias), list(json.loads(str(warnings) or "[]")),
    )


class Manifest:
    """The manifest of one data directory. Cheap to create; each thread keeps one connection to it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / MANIFEST_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (autocommit), opened on first use and kept: ingestion asks the manifest
        thousands of questions, and opening a connection for each cost more than answering it. A forked
        child opens its own."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None or self._local.pid != os.getpid():
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA synchronous=FULL")  # a committed state survives power loss, not just kill -9
            self._local.con, self._local.pid = con, os.getpid()
        try:
            yield con
        finally:
            if con.in_transaction:  # an error inside an explicit BEGIN: never leave it open on a kept connection
                con.execute("ROLLBACK")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # --- reading -----------------------------------------------------------------------------------

    def records(self, collection: str, *, states: Iterable[State] = ("complete",)) -> list[DocumentRecord]:
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE collection=? AND state IN ({marks}) ORDER BY source",
                (collection, *wanted),
            ).fetchall()
        return [_record(r) for r in rows]

    def record(self, collection: str, source: str) -> DocumentRecord | None:
        """The complete record stored for ``source``, if any."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE collection=? AND source=? AND state='complete'",
                (collection, source),
            ).fetchone()
        return _record(row) if row else None

    def owner_of(self, collection: str, sha256: str) -> DocumentRecord | None:
        """The complete, non-alias document whose chunks hold this content, if any."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE collection=? AND sha256=? AND state='complete' "
                "AND alias_of IS NULL ORDER BY source LIMIT 1",
                (collection, sha256),
            ).fetchone()
        return _record(row) if row else None

    def reader_view(self, collection: str) -> tuple[str, list[str]]:
        """(generation, content hashes whose chunks readers must not see) in one consistent read."""
        with self._connect() as con:
            con.execute("BEGIN")
            gen = con.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
            rows = con.execute(
                "SELECT DISTINCT sha256 FROM documents WHERE collection=? AND state!='complete' "
                "AND sha256 NOT IN (SELECT sha256 FROM documents WHERE collection=? AND state='complete' "
                "AND alias_of IS NULL)",
                (collection, collection),
            ).fetchall()
            con.execute("COMMIT")
        return (gen[0] if gen else "0"), sorted(r[0] for r in rows)

    def hidden_sha256s(self, collection: str) -> list[str]:
        return self.reader_view(collection)[1]

    def generation(self) -> str:
        with self._connect() as con:
            row = con.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return str(row[0]) if row else "0"

    def records_knowledge_base(self, collection: str) -> bool:
        """Whether the knowledge bases are recorded (see :func:`read_knowledge_bases`), this one included."""
        with self._connect() as con:
            row = con.execute(
                "SELECT 1 FROM meta, knowledge_bases WHERE meta.key=? AND knowledge_bases.collection=?",
                (CATALOG_KEY, collection),
            ).fetchone()
        return row is not None

    # --- writing (only under write_lock) -------------------------------------------------------------

    def begin(self, collection: str, docs: Iterable[DocumentRecord]) -> None:
        """Record documents as ``pending`` before any of their chunks is written."""
        with self._transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO documents (collection, source, sha256, state, chunks, pages, file_name, "
                "ingested_at, alias_of, warnings) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, NULL, ?)",
                [
                    (collection, d.source, d.sha256, d.chunks, d.pages, d.file_name, d.ingested_at,
                     json.dumps(d.warnings, ensure_ascii=False))
                    for d in docs
                ],
            )

    def commit(
        self, collection: str, docs: Iterable[DocumentRecord]
    ) -> tuple[list[DocumentRecord], list[DocumentRecord]]:
        """Make documents visible at once; earlier versions of the same sources become ``deleting``.

        Aliases are stored ``complete`` directly (they own no chunks), after the documents, and only if
        their owner is still complete then. Returns (superseded records — their chunks must now be deleted,
        then :meth:`forget` them; aliases of superseded content are among them, dropped here because the
        chunks they pointed to are going away —, aliases refused because their owner is gone).
        """
        docs = sorted(docs, key=lambda d: d.is_alias)
        superseded: list[DocumentRecord] = []
        refused: list[DocumentRecord] = []
        with self._transaction() as con:
            for d in docs:
                if d.is_alias and not con.execute(
                    "SELECT 1 FROM documents WHERE collection=? AND source=? AND sha256=? AND state='complete' "
                    "AND alias_of IS NULL",
                    (collection, d.alias_of, d.sha256),
                ).fetchone():
                    refused.append(d)
                    continue
                old = [
                    _record(r)
                    for r in con.execute(
                        f"SELECT {_COLUMNS} FROM documents WHERE collection=? AND source=? AND sha256!=?",
                        (collection, d.source, d.sha256),
                    ).fetchall()
                ]
                superseded += self._supersede(con, collection, old)
                con.execute(
                    "INSERT OR REPLACE INTO documents (collection, source, sha256, state, chunks, pages, "
                    "file_name, ingested_at, alias_of, warnings) VALUES (?, ?, ?, 'complete', ?, ?, ?, ?, ?, ?)",
                    (collection, d.source, d.sha256, d.chunks, d.pages, d.file_name, d.ingested_at,
                     d.alias_of, json.dumps(d.warnings, ensure_ascii=False)),
                )
            self._bump(con)
        return superseded, refused

    def retire(self, collection: str, sources: Iterable[str]) -> list[DocumentRecord]:
        """Hide documents that are being deleted (one transaction); returns what must be deleted."""
        retired: list[DocumentRecord] = []
        with self._transaction() as con:
            for source in sources:
                old = [
                    _record(r)
                    for r in con.execute(
                        f"SELECT {_COLUMNS} FROM documents WHERE collection=? AND source=?", (collection, source)
                    ).fetchall()
                ]
                retired += self._supersede(con, collection, old)
            self._bump(con)
        return retired

    def _supersede(
        self, con: sqlite3.Connection, collection: str, old: list[DocumentRecord]
    ) -> list[DocumentRecord]:
        out: list[DocumentRecord] = []
        for rec in old:
            con.execute(
                "UPDATE documents SET state='deleting' WHERE collection=? AND source=? AND sha256=?",
                (collection, rec.source, rec.sha256),
            )
            out.append(rec)
            if rec.alias_of is None:
                aliases = con.execute(
                    f"SELECT {_COLUMNS} FROM documents WHERE collection=? AND alias_of=? AND sha256=?",
                    (collection, rec.source, rec.sha256),
                ).fetchall()
                for row in aliases:
                    alias = _record(row)
                    con.execute(
                        "DELETE FROM documents WHERE collection=? AND source=? AND sha256=?",
                        (collection, alias.source, alias.sha256),
                    )
                    out.append(alias)
        return out

    def forget(self, collection: str, records: Iterable[DocumentRecord]) -> None:
        with self._transaction() as con:
            con.executemany(
                "DELETE FROM documents WHERE collection=? AND source=? AND sha256=? AND state!='complete'",
                [(collection, r.source, r.sha256) for r in records],
            )

    def drop_collection(self, collection: str) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM documents WHERE collection=?", (collection,))
            con.execute("DELETE FROM knowledge_bases WHERE collection=?", (collection,))
            self._bump(con)

    def record_knowledge_bases(self, entries: Iterable[KnowledgeBaseEntry], *, every: bool = False) -> None:
        """Record knowledge bases as Chroma has them; ``every``: these are all of them (the record is then
        complete, and trusted by :func:`read_knowledge_bases`)."""
        with self._transaction() as con:
            if every:
                con.execute("DELETE FROM knowledge_bases")
                con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (CATALOG_KEY,))
            con.executemany(
                "INSERT OR REPLACE INTO knowledge_bases (collection, display_name, embedder, dimension, chunks) "
                "VALUES (?, ?, ?, ?, ?)",
                [(e.collection, e.display_name, e.embedder, e.dimension, e.chunks) for e in entries],
            )

    def bump(self) -> None:
        with self._transaction() as con:
            self._bump(con)

    @staticmethod
    def _bump(con: sqlite3.Connection) -> None:
        # A fresh random-ish value, not a counter: a deleted and re-created data directory never repeats one.
        value = f"{time.time_ns()}-{os.getpid()}"
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (value,))


# --- the writer lock ---------------------------------------------------------------------------------


@contextmanager
def write_lock(data_dir: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the data directory's inter-process write lock; tell ``on_wait`` who holds it while waiting.

    Chroma's persistent store is not safe for two writing processes (vectors get lost from its index), so
    every writer — ingestion, document and knowledge-base deletion — goes through here.
    """
    from filelock import FileLock, Timeout

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(data_dir / LOCK_FILE))
    holder_file = data_dir / (LOCK_FILE + ".holder")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        message = f"data directory {data_dir} is busy: {_holder(holder_file)} is writing to it; waiting for it to finish…"
        logger.warning(message)
        if on_wait:
            on_wait(message)
        lock.acquire()
    try:
        holder_file.write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S")}),
            encoding="utf-8",
        )
        yield
    finally:
        lock.release()


def _holder(holder_file: Path) -> str:
    try:
        info = json.loads(holder_file.read_text(encoding="utf-8"))
        return f"another ingestion (process {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another ingestion"
