"""The ingestion pipeline: files → sections → clean text → token-sized chunks → embeddings → Chroma.

Guarantees: a bad file is reported (name and reason) and the batch goes on; an unchanged file is not
embedded again; a changed file replaces its old chunks; chunk IDs are stable (content hash + index);
only one ingestion writes to a data directory at a time (inter-process lock).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from ingest.clean import clean_text, looks_unreadable
from ingest.embed import token_counter
from ingest.loaders import LoadOptions, is_supported, load_document
from ingest.split import split_documents
from ingest.store import KnowledgeBase, open_client
from rag_app.errors import DocumentLoadError, UnreadableTextError

if TYPE_CHECKING:
    from rag_app.settings import Settings

logger = logging.getLogger(__name__)

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
        return (
            f"{len(self.ok)} file(s) ok, {len(self.skipped)} skipped, {len(self.failed)} failed; "
            f"chunks: {self.chunks_added} added, {self.chunks_unchanged} unchanged, "
            f"{self.chunks_removed} removed; {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the progress callback after each file and each embedded batch."""

    stage: Literal["start", "file", "chunks", "done", "waiting"]
    files_done: int
    files_total: int
    chunks_done: int = 0
    current: str = ""
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class _Input:
    path: Path
    source: str  # path relative to the root it was found under


def collect_files(paths: Iterable[str | Path]) -> list[_Input]:
    """Expand files and folders (recursively, hidden entries skipped), keeping a source path per file."""
    out: list[_Input] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in rel.parts):
                    if child.resolve() not in seen:
                        seen.add(child.resolve())
                        out.append(_Input(child, (Path(path.name) / rel).as_posix()))
        else:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(_Input(path, path.name))
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def chunk_id(sha256: str, index: int) -> str:
    return f"{sha256[:32]}-{index:05d}"


def ingest_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    *,
    embeddings: Embeddings,
    knowledge_base: str | None = None,
    progress: ProgressCallback | None = None,
    passwords: dict[str, str] | None = None,
) -> IngestReport:
    """Ingest files and folders into a knowledge base and report what happened to each file."""
    from filelock import FileLock, Timeout

    started = time.perf_counter()
    kb_name = knowledge_base or settings.knowledge_base
    report = IngestReport(knowledge_base=kb_name)
    inputs = collect_files(paths)
    notify = progress or (lambda event: None)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.data_dir / ".ingest.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notify(ProgressEvent("waiting", 0, len(inputs), message="another ingestion is running; waiting"))
        logger.warning("data directory %s is busy (another ingestion); waiting", settings.data_dir)
        lock.acquire()
    try:
        kb = KnowledgeBase(open_client(settings.data_dir), kb_name, embeddings)
        count_tokens = token_counter(embeddings)
        chunk_size = settings.ingest.chunk_size
        limit = getattr(embeddings, "max_tokens", None)
        if limit and chunk_size > limit - 2:
            logger.warning("chunk_size %d exceeds the embedder's %d tokens; using %d", chunk_size, limit, limit - 2)
            chunk_size = limit - 2
        all_passwords = {**settings.ingest.pdf_passwords, **(passwords or {})}
        notify(ProgressEvent("start", 0, len(inputs)))
        chunks_done = 0
        for number, item in enumerate(inputs, start=1):

            def on_batch(n: int, _item: _Input = item, _number: int = number) -> None:
                nonlocal chunks_done
                chunks_done += n
                notify(ProgressEvent("chunks", _number - 1, len(inputs), chunks_done, _item.source))

            result = _ingest_one(
                kb, item, settings, count_tokens, chunk_size, all_passwords, on_batch, report
            )
            report.files.append(result)
            if result.status == "failed":
                logger.warning("failed: %s", result.reason)
            notify(ProgressEvent("file", number, len(inputs), chunks_done, item.source, result.status))
    finally:
        lock.release()
    report.seconds = time.perf_counter() - started
    notify(ProgressEvent("done", len(inputs), len(inputs), report.chunks_added, message=report.summary()))
    return report


def _ingest_one(
    kb: KnowledgeBase,
    item: _Input,
    settings: Settings,
    count_tokens: Callable[[str], int],
    chunk_size: int,
    passwords: dict[str, str],
    on_batch: Callable[[int], None],
    report: IngestReport,
) -> FileResult:
    source = item.source
    if not is_supported(item.path):
        suffix = item.path.suffix or "(none)"
        return FileResult(source, "skipped", reason=f"{source}: unsupported file type '{suffix}'")
    try:
        sha = file_sha256(item.path)
    except OSError as exc:
        return FileResult(source, "failed", reason=f"{source}: cannot read ({exc.strerror or exc})")
    stored_sources = kb.find_sources(sha)
    if source in stored_sources:
        return FileResult(source, "unchanged", chunks=len(kb.chunk_ids_where({"sha256": sha})))
    if stored_sources:
        # Same bytes under another name: stored once, the first name wins.
        return FileResult(
            source, "duplicate", reason=f"same content as {sorted(stored_sources)[0]}; stored once"
        )
    try:
        chunks, pages, warnings = _load_and_split(
            item, sha, kb.name, settings, count_tokens, chunk_size, passwords
        )
    except DocumentLoadError as exc:
        return FileResult(source, "failed", reason=_reason(exc, source))
    old_ids = kb.chunk_ids_where({"source": source})
    ids = [chunk_id(sha, i) for i in range(len(chunks))]
    # New chunks first, old ones after: a reader sees the old or the new version, never nothing.
    kb.add_chunks(chunks, ids, batch_size=settings.embedding.batch_size * 4, on_batch=on_batch)
    removed = kb.delete_ids(i for i in old_ids if i not in set(ids))
    report.chunks_added += len(chunks)
    report.chunks_removed += removed
    status: Status = "replaced" if old_ids else "added"
    return FileResult(source, status, chunks=len(chunks), pages=pages, warnings=warnings)


def _reason(exc: DocumentLoadError, source: str) -> str:
    reason = f"{source}: {exc.reason}"
    return f"{reason} — {exc.hint}" if exc.hint else reason


def _load_and_split(
    item: _Input,
    sha: str,
    kb_name: str,
    settings: Settings,
    count_tokens: Callable[[str], int],
    chunk_size: int,
    passwords: dict[str, str],
) -> tuple[list[Document], int, list[str]]:
    password = passwords.get(item.path.name) or passwords.get(item.source)
    loaded = load_document(item.path, LoadOptions(password=password))
    warnings = list(loaded.warnings)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    docs: list[Document] = []
    unreadable: list[str] = []
    for section in loaded.sections:
        text = clean_text(section.text, rejoin_lines=section.layout_breaks)
        if not text:
            continue
        if looks_unreadable(text):
            unreadable.append(f"page {section.page}" if section.page else "text")
            continue
        meta = {
            "source": item.source,
            "file_name": item.path.name,
            "sha256": sha,
            "page": section.page,
            "knowledge_base": kb_name,
            "ingested_at": now,
            **section.metadata,
        }
        docs.append(Document(page_content=text, metadata=meta))
    if unreadable and not docs:
        raise UnreadableTextError(
            str(item.source),
            "the extracted text is unreadable (mojibake; e.g. a PDF font without a Unicode map)",
            hint="convert the file to text or a PDF with embedded Unicode fonts, or OCR it",
        )
    if unreadable:
        warnings.append(f"unreadable text skipped: {', '.join(unreadable)}")
    if not docs:
        raise DocumentLoadError(str(item.source), "no text left after cleaning")
    chunks = split_documents(docs, count_tokens, chunk_size, settings.ingest.chunk_overlap)
    for index, chunk in enumerate(chunks):
        chunk.metadata["chunk_index"] = index
    pages = len({d.metadata["page"] for d in docs if d.metadata.get("page")})
    return chunks, pages, warnings
