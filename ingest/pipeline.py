"""The ingestion pipeline: files → sections → clean text → token-sized chunks → embeddings → Chroma.

Guarantees:

- a bad file is reported (name and reason) and the batch goes on;
- an unchanged file is not embedded again; a changed file replaces its old chunks, none stale survives;
- chunk IDs are stable (content hash + index); the same bytes under two names are stored once
  (see :mod:`ingest.documents` for the rule);
- readers see a document's chunks all or nothing, and a crash (``kill -9``) leaves nothing that the next
  ingestion does not clean up: the manifest (:mod:`ingest.manifest`) is the completion record;
- only one writer per data directory at a time (inter-process lock, with a "busy, waiting" message).

Throughput: a background thread reads, cleans and splits the next files while the main thread embeds;
small documents are embedded together in batches of ``ingest.embed_batch`` chunks (no per-file batches of
two chunks); batches never exceed what Chroma accepts.

Nothing to write, nothing loaded (issue 12): files are first settled against the manifest alone; Chroma, the
embedder and LangChain are opened only at the first file that needs writing, so a re-ingestion where nothing
changed costs about what ``rag kb list`` costs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ingest.loaders import LoadOptions, is_supported, load_document
from ingest.loaders.archives import (
    MEMBER_SEPARATOR,
    ArchiveLimits,
    is_archive,
    list_members,
    member_file,
    read_member,
)
from ingest.manifest import DocumentRecord, Manifest, write_lock
from ingest.store import KnowledgeBase, chunk_id, collection_name, open_client, recorded_knowledge_bases
from rag_app.errors import (
    DiskFullError,
    DocumentLoadError,
    RagError,
    UnreadableTextError,
    UnsupportedFileTypeError,
    as_disk_full,
)

if TYPE_CHECKING:
    # LangChain (runnables, LangSmith: most of a second) loads only when a file needs writing.
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from rag_app.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "FileResult",
    "IngestReport",
    "ProgressCallback",
    "ProgressEvent",
    "chunk_id",
    "collect_files",
    "file_sha256",
    "ingest_paths",
]

Status = Literal["added", "replaced", "unchanged", "duplicate", "skipped", "failed"]


@dataclass
class FileResult:
    path: str
    status: Status
    chunks: int = 0
    pages: int = 0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    """What an ingestion did, file by file."""

    knowledge_base: str
    files: list[FileResult] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    #: Documents removed because their files are gone (``--prune``).
    pruned: list[str] = field(default_factory=list)
    #: Documents an interrupted ingestion had left half written or half deleted, cleaned up first.
    recovered: list[str] = field(default_factory=list)

    def by_status(self, *statuses: Status) -> list[FileResult]:
        return [f for f in self.files if f.status in statuses]

    @property
    def ok(self) -> list[FileResult]:
        return self.by_status("added", "replaced", "unchanged", "duplicate")

    @property
    def failed(self) -> list[FileResult]:
        return self.by_status("failed")

    @property
    def skipped(self) -> list[FileResult]:
        return self.by_status("skipped")

    @property
    def chunks_unchanged(self) -> int:
        return sum(f.chunks for f in self.by_status("unchanged", "duplicate"))

    def summary(self) -> str:
        extra = f"; {len(self.pruned)} document(s) pruned" if self.pruned else ""
        if self.recovered:
            extra += f"; {len(self.recovered)} interrupted document(s) cleaned up"
        return (
            f"{len(self.ok)} file(s) ok, {len(self.skipped)} skipped, {len(self.failed)} failed; "
            f"chunks: {self.chunks_added} added, {self.chunks_unchanged} unchanged, "
            f"{self.chunks_removed} removed{extra}; {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the progress callback: start, after each file, after each embedded batch, done.

    ``waiting`` comes before ``start`` when another process holds the data directory (``message`` says
    which). ``eta_seconds`` is an estimate from the bytes processed so far (``None`` until there is one).
    """

    stage: Literal["start", "file", "chunks", "done", "waiting"]
    files_done: int
    files_total: int
    chunks_done: int = 0
    current: str = ""
    message: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    eta_seconds: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class _Input:
    path: Path
    source: str  # path relative to the root it was found under
    size: int = 0
    #: The member of the zip archive at ``path`` this input stands for (source ``archive.zip!member``).
    member: str | None = None
    #: Why this input is not read (a symlink out of the folders given, an unsafe archive member …).
    refused: str = ""

    @property
    def file_name(self) -> str:
        return Path(self.member).name if self.member else self.path.name


def collect_files(
    paths: Iterable[str | Path], *, follow_symlinks: bool = False, archive_limits: ArchiveLimits | None = None
) -> list[_Input]:
    """Expand files and folders (recursively, hidden entries skipped), keeping a source path per file.

    A folder's files get sources ``<folder name>/<path inside it>``, a single file its name; '.' and '..'
    are resolved first, so no source starts with '..'. Inside a folder, a symlink that leads out of the
    folders given is reported, not followed, unless ``follow_symlinks`` (a path named explicitly is always
    read); symlinked folders are entered only with ``follow_symlinks``, each real folder once (loops end).
    Zip archives expand into one input per member (:mod:`ingest.loaders.archives`).
    """
    roots = [Path(os.path.realpath(Path(raw).expanduser())) for raw in paths]
    out: list[_Input] = []
    seen: set[Path] = set()

    def inside_roots(target: Path) -> bool:
        return any(target == root or target.is_relative_to(root) for root in roots)

    def add(path: Path, source: str, refused: str = "") -> None:
        real = Path(os.path.realpath(path))
        if real in seen and not refused:
            return
        seen.add(real)
        if not refused and is_archive(path) and path.is_file():
            out.extend(_archive_inputs(path, source, archive_limits))
            return
        out.append(_Input(path, source, 0 if refused else _size(path), refused=refused))

    for raw in paths:
        path = Path(raw).expanduser()
        root = source_root_name(path)
        if not path.is_dir():
            add(path, root)
            continue
        visited: set[Path] = set()
        for folder, dirs, files in os.walk(path, followlinks=follow_symlinks):
            real_folder = Path(os.path.realpath(folder))
            if real_folder in visited:  # a symlink loop, or a folder reached twice
                dirs[:] = []
                continue
            visited.add(real_folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_folder = Path(folder).relative_to(path)
            for name in sorted(files):
                if name.startswith("."):
                    continue
                child = Path(folder) / name
                source = (Path(root) / rel_folder / name).as_posix()
                if child.is_symlink() and not follow_symlinks and not inside_roots(Path(os.path.realpath(child))):
                    add(child, source, "a symlink to outside the folders given, not followed (--follow-symlinks)")
                elif child.is_file():
                    add(child, source)
    return out


def source_root_name(path: Path) -> str:
    """The name a root folder or file gives its sources: its own name, after resolving '.' and '..'."""
    return Path(os.path.abspath(path)).name


def _archive_inputs(path: Path, source: str, limits: ArchiveLimits | None = None) -> list[_Input]:
    try:
        members = list_members(path, limits)
    except DocumentLoadError as exc:
        return [_Input(path, source, _size(path), refused=f"failed:{exc.reason}")]
    if not members:
        return [_Input(path, source, _size(path), refused="an empty archive")]
    return [
        _Input(path, f"{source}{MEMBER_SEPARATOR}{m.name}", m.size, member=m.name, refused=m.refused)
        for m in members
    ]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- preparing a file (background thread: reads only) ----------------------------------------------------


@dataclass
class _Prepared:
    item: _Input
    sha: str = ""
    #: Final when nothing needs writing (skipped, failed, unchanged, still a duplicate).
    result: FileResult | None = None
    chunks: list[Document] | None = None
    pages: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Splitting:
    kb_name: str
    count_tokens: Callable[[str], int]
    chunk_size: int
    chunk_overlap: int
    passwords: dict[str, str]
    #: OCR engine for scanned pages and images (``None``: off or not installed).
    ocr: Any = None


class _Records(Protocol):
    """Where :func:`_prepare` looks up what a knowledge base holds: a :class:`KnowledgeBase`, or its
    manifest alone (:class:`_Recorded`)."""

    collection_name: str
    manifest: Manifest | None


@dataclass(frozen=True)
class _Recorded:
    """A knowledge base seen through its manifest only: enough to settle the files that need no writing."""

    collection_name: str
    manifest: Manifest


def _prepare(item: _Input, kb: _Records, how: _Splitting | None, *, load: bool = True) -> _Prepared:
    """Hash a file, decide whether it needs (re)indexing, and if so (and ``load``) load, clean and split it."""
    assert kb.manifest is not None
    source = item.source
    if item.refused:
        status: Status = "failed" if item.refused.startswith("failed:") else "skipped"
        reason = item.refused.removeprefix("failed:")
        return _Prepared(item, result=FileResult(source, status, reason=f"{source}: {reason}"))
    if item.member is None and not is_supported(item.path):
        suffix = item.path.suffix or "(none)"
        return _Prepared(item, result=FileResult(source, "skipped", reason=f"{source}: unsupported file type '{suffix}'"))
    try:
        sha = _input_sha256(item)
    except OSError as exc:
        return _Prepared(item, result=FileResult(source, "failed", reason=f"{source}: cannot read ({exc.strerror or exc})"))
    except DocumentLoadError as exc:
        return _Prepared(item, result=FileResult(source, "failed", reason=_reason(exc, source)))
    stored = kb.manifest.record(kb.collection_name, source)
    if stored is not None and stored.sha256 == sha:
        if stored.is_alias:
            return _Prepared(item, sha, FileResult(source, "duplicate", reason=f"same content as {stored.alias_of}; stored once"))
        return _Prepared(item, sha, FileResult(source, "unchanged", chunks=stored.chunks, pages=stored.pages))
    if not load or kb.manifest.owner_of(kb.collection_name, sha) is not None:
        return _Prepared(item, sha)  # the writer decides: probably a duplicate
    assert how is not None
    try:
        chunks, pages, warnings = _load_and_split(item, sha, how)
        if item.member is None and _changed_since(item.path, sha):
            raise DocumentLoadError(source, "the file changed while it was being read; not indexed",
                                    hint="ingest it again once it is no longer being written")
    except UnsupportedFileTypeError as exc:
        return _Prepared(item, sha, FileResult(source, "skipped", reason=_reason(exc, source)))
    except DocumentLoadError as exc:
        return _Prepared(item, sha, FileResult(source, "failed", reason=_reason(exc, source)))
    except OSError as exc:  # e.g. deleted between hashing and reading
        return _Prepared(item, sha, FileResult(source, "failed", reason=f"{source}: cannot read ({exc.strerror or exc})"))
    return _Prepared(item, sha, chunks=chunks, pages=pages, warnings=warnings)


def _input_sha256(item: _Input) -> str:
    if item.member is None:
        return file_sha256(item.path)
    return hashlib.sha256(read_member(item.path, item.member)).hexdigest()


def _changed_since(path: Path, sha: str) -> bool:
    """Whether the file's content is no longer what was hashed before reading it (a writer was at work):
    its chunks would mix two versions, or be filed under the hash of the other one."""
    try:
        return file_sha256(path) != sha
    except OSError:
        return True


def _reason(exc: DocumentLoadError, source: str) -> str:
    reason = f"{source}: {exc.reason}"
    return f"{reason} — {exc.hint}" if exc.hint else reason


def _load_and_split(item: _Input, sha: str, how: _Splitting) -> tuple[list[Document], int, list[str]]:
    from langchain_core.documents import Document

    from ingest.clean import clean_text, looks_unreadable, looks_wordless
    from ingest.split import split_documents

    password = how.passwords.get(item.file_name) or how.passwords.get(item.source)
    options = LoadOptions(password=password, ocr=how.ocr)
    if item.member is None:
        loaded = load_document(item.path, options)
    else:
        data = read_member(item.path, item.member)
        if hashlib.sha256(data).hexdigest() != sha:
            raise DocumentLoadError(item.source, "the archive changed while it was being read; not indexed")
        with member_file(data, item.member) as file:
            loaded = load_document(file, options)
    warnings = list(loaded.warnings)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    docs: list[Document] = []
    unreadable: list[str] = []
    for section in loaded.sections:
        # Judge readability on the raw extraction: NFKC would turn mojibake such as "¼" into "1⁄4".
        if looks_unreadable(section.text) or looks_wordless(section.text):
            unreadable.append(f"page {section.page}" if section.page else "text")
            continue
        text = clean_text(section.text, rejoin_lines=section.layout_breaks)
        if not text:
            continue
        meta = {
            "source": item.source,
            "file_name": item.file_name,
            "sha256": sha,
            "page": section.page,
            "knowledge_base": how.kb_name,
            "ingested_at": now,
            **section.metadata,
        }
        docs.append(Document(page_content=text, metadata=meta))
    if unreadable and not docs:
        raise UnreadableTextError(
            str(item.source),
            "the extracted text is unreadable (mojibake, e.g. a PDF font without a Unicode map, or no words: "
            "one endless token, random letters)",
            hint="convert the file to text or a PDF with embedded Unicode fonts, or OCR it",
        )
    if unreadable:
        warnings.append(f"unreadable text skipped: {', '.join(unreadable)}")
    if not docs:
        raise DocumentLoadError(str(item.source), "no text left after cleaning")
    chunks = split_documents(docs, how.count_tokens, how.chunk_size, how.chunk_overlap)
    for index, chunk in enumerate(chunks):
        chunk.metadata["chunk_index"] = index
    pages = len({d.metadata["page"] for d in docs if d.metadata.get("page")})
    return chunks, pages, warnings


def _prefetched(
    inputs: Sequence[_Input], prepare: Callable[[_Input], _Prepared], lookahead: int
) -> Iterator[_Prepared]:
    """Prepare files in a background thread, ``lookahead`` files ahead of the consumer, in input order.

    Parsing and splitting (Python, tokenizers) overlap with embedding (torch, which releases the GIL).
    """
    if lookahead <= 0:
        yield from (prepare(item) for item in inputs)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-prepare") as pool:
        window: deque[Future[_Prepared]] = deque()
        pending = iter(inputs)
        try:
            for item in pending:
                window.append(pool.submit(prepare, item))
                if len(window) > lookahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()


# --- writing (main thread, under the write lock) ----------------------------------------------------------


class _Writer:
    """Commits prepared files: documents are grouped so the embedder gets full batches."""

    def __init__(self, kb: KnowledgeBase, how: _Splitting, settings: Settings, report: IngestReport,
                 progress: _Progress, results: dict[str, FileResult]) -> None:
        assert kb.manifest is not None
        self.kb = kb
        self.manifest = kb.manifest
        self.how = how
        self.report = report
        self.progress = progress
        self.embed_batch = max(1, settings.ingest.embed_batch)
        self.results = results
        self.group: list[_Prepared] = []
        self.group_aliases: list[tuple[_Prepared, DocumentRecord]] = []
        self.group_shas: dict[str, str] = {}
        self.group_chunks = 0
        self.requeue: list[str] = []

    def handle(self, p: _Prepared) -> None:
        source = p.item.source
        if p.result is not None:
            self._finish(p, p.result)
            return
        owner_source = self.group_shas.get(p.sha)
        if owner_source is None:
            owner = self.manifest.owner_of(self.kb.collection_name, p.sha)
            owner_source = owner.source if owner and owner.source != source else None
        if owner_source is not None:
            alias = DocumentRecord(source, p.sha, "complete", 0, 0, p.item.file_name, _now(), alias_of=owner_source)
            self.group_aliases.append((p, alias))
            if not self.group:
                self.flush()
            return
        if p.chunks is None:  # prepared as a probable duplicate, but the owner has gone since
            p = _prepare(p.item, self.kb, self.how)
            if p.result is not None:
                self._finish(p, p.result)
                return
        assert p.chunks is not None
        self.group.append(p)
        self.group_shas[p.sha] = source
        self.group_chunks += len(p.chunks)
        if self.group_chunks >= self.embed_batch:
            self.flush()

    def flush(self) -> None:
        """Write the group: pending records, chunks, one commit, then delete what it replaced."""
        from ingest.documents import delete_superseded

        group, aliases = self.group, self.group_aliases
        self.group, self.group_aliases, self.group_shas, self.group_chunks = [], [], {}, 0
        if not group and not aliases:
            return
        coll = self.kb.collection_name
        records = [
            DocumentRecord(p.item.source, p.sha, "pending", len(p.chunks or []), p.pages, p.item.file_name,
                           _now(), warnings=p.warnings)
            for p in group
        ]
        replacing = {r.source for r in records if self.manifest.record(coll, r.source) is not None}
        if records:
            self.manifest.begin(coll, records)  # one transaction: nothing to undo when it fails
        ids = [chunk_id(p.sha, i) for p in group for i in range(len(p.chunks or []))]
        try:
            if records:
                chunks = [c for p in group for c in (p.chunks or [])]
                self.kb.add_chunks(chunks, ids, batch_size=self.embed_batch, on_batch=self.progress.chunks_written)
            superseded, refused = self.manifest.commit(coll, [*records, *(a for _, a in aliases)])
        except Exception:
            self._roll_back(records, ids)
            raise
        removed, dropped = delete_superseded(self.kb, superseded)
        self.report.chunks_removed += removed
        for p, rec in zip(group, records, strict=True):
            self.report.chunks_added += rec.chunks
            status: Status = "replaced" if rec.source in replacing else "added"
            self._finish(p, FileResult(rec.source, status, rec.chunks, rec.pages, warnings=p.warnings))
        refused_sources = {a.source for a in refused}
        for p, alias in aliases:
            if alias.source not in refused_sources:
                reason = f"same content as {alias.alias_of}; stored once"
                self._finish(p, FileResult(alias.source, "duplicate", reason=reason))
        # Copies whose content just went away are indexed again under their own name (see ingest.documents).
        self.requeue += [s for s in [*refused_sources, *dropped] if s not in self.requeue]

    def _roll_back(self, records: list[DocumentRecord], ids: list[str]) -> None:
        """Undo a group whose write failed (a full disk, an embedder error) at once, still under the write lock:
        its chunks leave Chroma and the keyword index, its pending records the manifest, and the recorded
        counts follow (``delete_ids``), so that what readers count is what was there before, not until the
        next ingestion's recovery (issue 18). Best effort: if undoing fails too (the disk still full), the
        pending records stay hidden from readers and the next writer's :func:`ingest.documents.recover`
        finishes the job."""
        from ingest.documents import delete_superseded

        if not records:
            return
        try:  # first the keyword index: it may hold chunks that Chroma's failed batch never got
            self.kb.keywords.delete(ids)
        except Exception:
            logger.warning("write failed; its keyword-index entries stay until the next search re-syncs them")
        try:
            removed, _ = delete_superseded(self.kb, records)
            self.manifest.bump()  # readers in other processes re-open Chroma
            logger.warning("write failed: rolled back %d chunk(s) of %s", removed,
                           ", ".join(sorted(r.source for r in records)))
        except Exception:
            logger.exception("write failed and could not be rolled back; the next ingestion will clean up")

    def _finish(self, p: _Prepared, result: FileResult) -> None:
        _settle(self.results, self.progress, p.item, result)


def _settle(results: dict[str, FileResult], progress: _Progress, item: _Input, result: FileResult) -> None:
    """Record a file's final result (the first one counts for progress)."""
    if result.status == "failed":
        logger.info("failed: %s", result.reason)
    first = result.path not in results
    results[result.path] = result
    if first:
        progress.file_done(item, result)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Progress:
    """Turns pipeline steps into :class:`ProgressEvent` s with an ETA from the bytes done so far."""

    def __init__(self, notify: ProgressCallback, inputs: Sequence[_Input]) -> None:
        self.notify = notify
        self.files_total = len(inputs)
        self.bytes_total = sum(i.size for i in inputs)
        self.files_done = 0
        self.bytes_done = 0
        self.chunks_done = 0
        self.started = time.perf_counter()

    def _eta(self) -> float | None:
        if not self.bytes_done or not self.bytes_total:
            return None
        elapsed = time.perf_counter() - self.started
        return max(0.0, elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done)

    def _event(self, stage: Literal["start", "file", "chunks", "done", "waiting"], current: str = "",
               message: str = "") -> ProgressEvent:
        return ProgressEvent(stage, self.files_done, self.files_total, self.chunks_done, current, message,
                             self.bytes_done, self.bytes_total, self._eta())

    def start(self) -> None:
        self.started = time.perf_counter()
        self.notify(self._event("start"))

    def waiting(self, message: str) -> None:
        self.notify(self._event("waiting", message=message))

    def chunks_written(self, n: int) -> None:
        self.chunks_done += n
        self.notify(self._event("chunks"))

    def file_done(self, item: _Input, result: FileResult) -> None:
        self.files_done += 1
        self.bytes_done += item.size
        self.notify(self._event("file", item.source, result.status))

    def done(self, report: IngestReport) -> None:
        self.notify(self._event("done", message=report.summary()))


def ingest_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    *,
    embeddings: Embeddings | Callable[[], Embeddings],
    knowledge_base: str | None = None,
    progress: ProgressCallback | None = None,
    passwords: dict[str, str] | None = None,
    prune: bool = False,
    follow_symlinks: bool | None = None,
) -> IngestReport:
    """Ingest files and folders into a knowledge base and report what happened to each file.

    ``embeddings``: the embedder, or a function that makes the configured one (``settings.embedding``), called
    only when a file needs writing. ``prune``: also remove the documents that were ingested from under
    ``paths`` and whose files are gone. ``follow_symlinks``: follow symlinks out of the folders given
    (``None``: ``ingest.follow_symlinks``).
    """
    started = time.perf_counter()
    kb_name = knowledge_base or settings.knowledge_base
    report = IngestReport(knowledge_base=kb_name)
    follow = settings.ingest.follow_symlinks if follow_symlinks is None else follow_symlinks
    inputs = collect_files(paths, follow_symlinks=follow, archive_limits=ArchiveLimits.of(settings.ingest))
    tracker = _Progress(progress or (lambda event: None), inputs)
    results: dict[str, FileResult] = {}
    try:
        with write_lock(settings.data_dir, on_wait=tracker.waiting):
            settled = 0
            recorded = None if prune else _recorded(settings, kb_name, embeddings)
            if recorded is not None:  # settle what needs no writing from the manifest; stop at the first that does
                tracker.start()
                for item in inputs:
                    quiet = _prepare(item, recorded, None, load=False)
                    if quiet.result is None:
                        break
                    _settle(results, tracker, item, quiet.result)
                    settled += 1
            if recorded is None or settled < len(inputs):
                made = embeddings() if _deferred(embeddings) else embeddings  # type: ignore[operator]
                _write(settings, paths, inputs, made, kb_name, passwords, prune, report, tracker, results,
                       settled=settled, started=recorded is not None)
    except Exception as exc:  # a full disk says so, whichever store (Chroma, keyword index, manifest) hit it
        full = as_disk_full(exc) or _full_disk_behind(exc, settings.data_dir)
        if full is None or full is exc:
            raise
        raise full from exc
    order = {i.source: n for n, i in enumerate(inputs)}
    report.files = sorted(results.values(), key=lambda r: order.get(r.path, len(order)))
    report.seconds = time.perf_counter() - started
    tracker.done(report)
    return report


#: Below this much free space, a write that failed without saying why is put down to the full disk.
_NEARLY_FULL_BYTES = 16 * 2**20


def _full_disk_behind(exc: Exception, data_dir: Path) -> DiskFullError | None:
    """Chroma's compactor reports a full disk as "Failed to apply logs to the metadata segment", without the
    cause: when a write fails so and the data directory's disk is (nearly) full, that is what it was."""
    import shutil

    if isinstance(exc, RagError):
        return None
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError:
        return None
    if free >= _NEARLY_FULL_BYTES:
        return None
    logger.warning("write failed with %s: %s; %d KiB left on the disk", type(exc).__name__, exc, free // 1024)
    return DiskFullError(f"disk full: {free // 1024} KiB left where the data directory is")


def _recorded(settings: Settings, kb_name: str, embeddings: Embeddings | Callable[[], Embeddings]) -> _Recorded | None:
    """The knowledge base as the manifest records it, when that settles files without Chroma: a persistent
    store whose record is trusted (:func:`ingest.store.recorded_knowledge_bases`: nothing left to recover or
    adopt), the knowledge base exists and was built by this embedder. ``None``: open Chroma, as always."""
    if settings.store.chroma_url:
        return None
    cname = collection_name(kb_name)
    entry = next((e for e in recorded_knowledge_bases(settings.data_dir) or [] if e.collection == cname), None)
    if entry is None:
        return None
    if _deferred(embeddings):  # what the embedder ``embeddings()`` makes will say, read off its folder
        from ingest.embed_folder import folder_identity

        identity = folder_identity(settings.embedding)
        if identity is None:
            return None
    else:
        from ingest.embed import embedder_identity

        identity = embedder_identity(embeddings)  # type: ignore[arg-type]
    if identity is not None and (entry.embedder, entry.dimension) != identity:
        return None  # a mismatch (or an embedder never recorded): the knowledge base checks it
    return _Recorded(cname, Manifest(settings.data_dir))


def _deferred(embeddings: object) -> bool:
    """``embeddings`` is a function that makes the embedder, not one (told apart without importing LangChain)."""
    return not hasattr(embeddings, "embed_documents")


def _write(settings: Settings, paths: Sequence[str | Path], inputs: Sequence[_Input], embeddings: Embeddings,
           kb_name: str, passwords: dict[str, str] | None, prune: bool, report: IngestReport, tracker: _Progress,
           results: dict[str, FileResult], *, settled: int, started: bool) -> None:
    """Open the knowledge base in Chroma and ingest ``inputs`` from the ``settled``-th on (under the write
    lock). ``started``: progress has begun (the ones before were settled from the manifest alone)."""
    from ingest.documents import prune_missing, recover

    kb = KnowledgeBase(open_client(settings.data_dir, settings.store.chroma_url), kb_name, embeddings)
    report.recovered = recover(kb)
    if prune:
        removal = prune_missing(kb, paths, {i.source for i in inputs})
        report.pruned = removal.sources
        report.chunks_removed += removal.chunks_removed
    how = _splitting(settings, embeddings, kb_name, passwords)
    writer = _Writer(kb, how, settings, report, tracker, results)
    if not started:
        tracker.start()
    for prepared in _prefetched(inputs[settled:], lambda item: _prepare(item, kb, how), settings.ingest.prefetch_files):
        writer.handle(prepared)
    writer.flush()
    by_source = {i.source: i for i in inputs}
    for _round in range(3):  # copies whose original went away in this run: index them now
        again = [by_source[s] for s in writer.requeue if s in by_source]
        writer.requeue = []
        if not again:
            break
        for item in again:
            writer.handle(_prepare(item, kb, how))
        writer.flush()


def _splitting(settings: Settings, embeddings: Embeddings, kb_name: str, passwords: dict[str, str] | None) -> _Splitting:
    """Chunk sizes in the embedder's tokens, never above what it reads (it would cut the rest silently)."""
    chunk_size = settings.ingest.chunk_size
    limit = getattr(embeddings, "max_tokens", None)
    if limit and chunk_size > limit - 2:
        logger.warning("chunk_size %d exceeds the embedder's %d tokens; using %d", chunk_size, limit, limit - 2)
        chunk_size = limit - 2
    from ingest.embed import token_counter

    return _Splitting(
        kb_name,
        token_counter(embeddings),
        chunk_size,
        settings.ingest.chunk_overlap,
        {**settings.ingest.pdf_passwords, **(passwords or {})},
        _ocr_engine(settings),
    )


def _ocr_engine(settings: Settings) -> Any:
    """An OCR engine (loaded on its first page) when ``ingest.ocr`` is ``auto`` and the extra is installed."""
    from ingest.loaders.images import OcrEngine, ocr_available

    if settings.ingest.ocr == "off" or not ocr_available():
        return None
    return OcrEngine()

