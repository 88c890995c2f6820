"""Files uploaded through a face, kept in the data directory so their documents can be opened, shown page by
page and re-ingested later (a temporary copy would be gone by then).

Layout: ``<data_dir>/uploads/<knowledge base's collection name>/<source>``; a file's stored ``source`` is its
path under that folder, so the file of a source is found again without a lookup table. Names are sanitised
(no path escapes a folder) and a zip is unpacked into a folder named after it under the rules ``rag ingest``
applies to the zips it reads in place (:mod:`ingest.loaders.archives`: one piece of code for both): a zip with
a member refused for its safety (an escape, a link, a bomb, a nested archive …) is refused whole, with the
reason ``rag ingest`` would report for that member, and the rest of its batch goes on. Names never meet
(issue 18): every file of a batch, and every member of a zip, is kept under a name of its own (``a (2).txt``,
said on its report line) or reported refused; only a file uploaded again replaces its own earlier file. A
batch is staged next to its folder and moved into place only once every file of it is written, so a failing
upload leaves nothing half written; a staging folder that a killed process left is removed the next time.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ingest.loaders.archives import HIDDEN_FILE, ArchiveLimits, is_archive, read_members, trusted_members
from rag_app.errors import DocumentLoadError, RagError

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport

logger = logging.getLogger(__name__)

UPLOAD_FALLBACK_NAME = "upload"
MAX_NAME_BYTES = 200  # below every common file system's 255-byte limit, with room for " (2)"


class UploadError(RagError):
    hint = "check the file (a zip must be a valid archive of documents)"


def safe_filename(name: str) -> str:
    """The last path component of an uploaded name, so a crafted name cannot escape the folder."""
    base = name.replace("\\", "/").split("/")[-1]
    base = "".join(ch for ch in base if ch >= " " and ch != "\x7f").strip()
    if base in ("", ".", ".."):
        return UPLOAD_FALLBACK_NAME
    if len(base.encode("utf-8")) > MAX_NAME_BYTES:
        suffix = Path(base).suffix
        suffix = suffix if len(suffix.encode("utf-8")) <= 16 else ""
        stem = base[: len(base) - len(suffix)] if suffix else base
        while len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
            stem = stem[:-1]
        base = stem + suffix
    return base


def unique_names(names: Sequence[str]) -> list[str]:
    """Sanitized names, with ``name (2).ext`` for repeats within one batch, so no upload overwrites another."""
    taken: dict[str, bool] = {}
    return [_claim(taken, safe_filename(raw), is_dir=False) for raw in names]


def _shown(name: str) -> str:
    """A name as uploaded, for a message: control characters escaped (``x\\x01.txt``), the rest as it is."""
    return "".join(ch if ch >= " " and ch != "\x7f" else f"\\x{ord(ch):02x}" for ch in name)


def numbered(name: str, n: int) -> str:
    """``name`` for ``n == 1``, else ``stem (n).ext``: the one way a name is made distinct."""
    if n == 1:
        return name
    path = PurePosixPath(name)
    return f"{path.stem} ({n}){path.suffix}"


def _claim(
    taken: dict[str, bool], name: str, *, is_dir: bool, parent: str = "", free: Callable[[str], bool] | None = None
) -> str:
    """The first of ``name``, ``name (2)`` … that no entry of ``taken`` (lower-cased path → is a folder)
    holds, case-insensitively, and that ``free`` allows (nothing of the other kind on disk). Folders of zip
    members (no ``free``) are shared by their members; files, and top-level names, never. Records it."""
    n = 0
    while True:
        n += 1
        candidate = numbered(name, n)
        key = f"{parent}/{candidate}".lower()
        held = taken.get(key)
        if (held is None or (held and is_dir and free is None)) and (free is None or free(candidate)):
            taken[key] = is_dir
            return candidate


def _member_path(name: str) -> PurePosixPath:
    """A zip member's path (the archive rules have refused absolute paths and ``..``) made of sanitised parts."""
    return PurePosixPath(*[safe_filename(p) for p in name.replace("\\", "/").split("/") if p not in ("", ".")])


def member_paths(names: Sequence[str]) -> list[PurePosixPath]:
    """Each zip member's path (the archive rules have refused absolute paths and ``..``) made of sanitised
    parts, distinct: members that clean to the same path (``x.txt`` and ``x\x01.txt``, ``d/y.txt`` and
    ``d\\y.txt``) or a file where a folder is become ``x (2).txt``, in the archive's order."""
    taken: dict[str, bool] = {}
    out: list[PurePosixPath] = []
    for name in names:
        parts = _member_path(name).parts or (UPLOAD_FALLBACK_NAME,)
        chosen: list[str] = []
        for i, part in enumerate(parts):
            chosen.append(_claim(taken, part, is_dir=i < len(parts) - 1, parent="/".join(chosen[:i])))
        out.append(PurePosixPath(*chosen))
    return out


class ArchiveRefused(UploadError):
    """A zip refused whole for its safety or its size: reported, and the rest of its batch goes on."""


def unpack_zip(data_path: Path, folder: Path, limits: ArchiveLimits | None = None) -> dict[str, str]:
    """Unpack a zip into ``folder`` (which must not exist yet), or refuse it whole (:class:`ArchiveRefused`
    naming the zip's first unsafe member and the reason, as ``rag ingest`` reports it; or the zip and why it
    inflates too much, before anything is inflated). Hidden members are left out, as a folder walk skips
    them; members of unsupported types are written, so that ingestion reports them as it does for any
    folder. Returns the members kept under another name than their own (path under ``folder`` → note)."""
    try:
        members = [m for m in trusted_members(data_path, limits) if m.refused != HIDDEN_FILE]
        names = [m.name for m in members]
        paths = member_paths(names)
        renamed = {
            path.as_posix(): f"'{_shown(name)}' in {data_path.name} kept as '{path}' (another member has that name)"
            for name, path in zip(names, paths, strict=True)
            if path != _member_path(name)
        }
        folder.mkdir(parents=True)
        # Inflated with ingestion's bounded reader: a member's declared size can lie (a zip bomb).
        for (_, data), path in zip(read_members(data_path, names, limits=limits), paths, strict=True):
            target = folder.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except DocumentLoadError as exc:
        where = exc.path.replace(str(data_path), data_path.name, 1)  # the zip's name, not its staged path
        raise ArchiveRefused(f"{where}: {exc.reason}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError) as exc:
        raise ArchiveRefused(f"{data_path.name}: cannot unpack the zip ({exc})") from exc
    except OSError as exc:  # the disk, not the zip: the whole batch fails
        raise UploadError(f"{data_path.name}: cannot unpack the zip ({exc.strerror or type(exc).__name__})") from exc
    return renamed


@dataclass
class StoredUploads:
    """What :func:`store_uploads` did with a batch: where every file went, or why it was refused."""

    #: The kept files and unpacked zips' folders, to ingest.
    paths: list[Path] = field(default_factory=list)
    #: (name as uploaded, why): a zip refused whole; nothing of it is kept.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: A source (path under the folder) or an unpacked zip's folder → why it is kept under another name.
    renamed: dict[str, str] = field(default_factory=dict)
    #: Sources whose files went with an earlier upload of a zip that this one replaced (their documents go too).
    gone: list[str] = field(default_factory=list)

    def annotate(self, report: IngestReport) -> None:
        """The renames as warnings on the files' report lines, the refused zips as failed lines: the response
        says where every uploaded file went."""
        from ingest.pipeline import FileResult

        for result in report.files:
            for where, note in self.renamed.items():
                if result.path == where or result.path.startswith(where + "/"):
                    result.warnings.append(note)
        report.files.extend(FileResult(name, "failed", reason=reason) for name, reason in self.refused)


def _free(target: Path, is_dir: bool) -> bool:
    """Whether an upload may take ``target``: nothing is there, or the same kind (a file uploaded again
    replaces its file, a zip uploaded again its folder), never a file where a folder is or the reverse."""
    if target.is_symlink():
        return False
    return not target.exists() or target.is_dir() == is_dir


def _place(data: bytes | Path, path: Path) -> None:
    """Write an upload's bytes, or link its spooled file (same file system: no copy) into the staging folder."""
    if isinstance(data, bytes):
        path.write_bytes(data)
        return
    try:
        os.link(data, path)
    except OSError:
        shutil.copyfile(data, path)


def store_uploads(
    folder: Path, files: Sequence[tuple[str, bytes | Path]], limits: ArchiveLimits | None = None
) -> StoredUploads:
    """Write uploads (bytes, or a spooled file) into ``folder`` under safe names (a zip becomes a folder of
    its files); returns where each went. A file uploaded again under the same name replaces the earlier
    one, as a changed file replaces its document; no file ever takes the place of another of this batch or of
    a folder (nor a zip's folder that of a file): it is kept as ``name (2).ext`` instead, said on its report
    line. A zip refused whole is reported and the rest goes on (:class:`UploadError` when nothing is left).
    All or nothing otherwise: the batch is written into a hidden staging folder beside them (the same file
    system) and moved into place once all of it is there."""
    folder.mkdir(parents=True, exist_ok=True)
    clean_staging(folder)  # what a killed process left
    stored = StoredUploads()
    taken: dict[str, bool] = {}
    with staging(folder) as tmp:
        staged: list[tuple[Path, Path]] = []  # (staged path, final path)
        for index, (raw, data) in enumerate(files):
            name = safe_filename(raw)
            slot = tmp / str(index)
            slot.mkdir()
            path = slot / name
            _place(data, path)
            is_dir = is_archive(path)
            if is_dir:
                try:
                    members = unpack_zip(path, slot / "unpacked", limits)
                except ArchiveRefused as exc:
                    stored.refused.append((name, str(exc)))
                    shutil.rmtree(slot, ignore_errors=True)
                    continue
                path.unlink()
                source, wanted = slot / "unpacked", path.stem
            else:
                members, source, wanted = {}, path, name
            in_batch = wanted.lower() in {key.lstrip("/") for key in taken}
            kept = _claim(taken, wanted, is_dir=is_dir, free=lambda c, d=is_dir: _free(folder / c, d))
            if kept != wanted:
                why = "another file of this upload has that name" if in_batch else (
                    f"a {'file' if is_dir else 'folder'} of that name is kept already")
                stored.renamed[kept] = f"uploaded as '{_shown(raw)}', kept as '{kept}' ({why})"
            stored.renamed.update({f"{kept}/{where}": note for where, note in members.items()})
            staged.append((source, folder / kept))
        if not staged and stored.refused:
            raise UploadError("; ".join(reason for _, reason in stored.refused))
        for source, target in staged:
            if target.is_dir() and not target.is_symlink():
                old = (p.relative_to(target) for p in target.rglob("*") if p.is_file())
                stored.gone += [(target / rel).relative_to(folder).as_posix() for rel in old
                                if not (source / rel).is_file()]
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(source, target)
    stored.paths = [target for _, target in staged]
    return stored


# --- staging folders, and what a killed process left of them ----------------------------------------------

STAGING_PREFIX = ".staging-"
#: A staging folder of the old form (no process id in its name) this old is left over.
STALE_SECONDS = 600
_active: set[Path] = set()
_active_lock = threading.Lock()


@contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """A hidden staging folder in ``folder`` named with this process's id, so that the next start can tell
    one a killed process left (:func:`clean_staging`) from one in use; removed at the end."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder))
    with _active_lock:
        _active.add(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with _active_lock:
            _active.discard(tmp)


def process_alive(pid: int) -> bool:
    """Whether a process of that id runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path) -> bool:
    pid = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
    if not pid.isdigit():
        try:
            return time.time() - path.stat().st_mtime > STALE_SECONDS
        except OSError:
            return False
    if int(pid) == os.getpid():  # ours (or a killed one's whose id we were given again): in use?
        with _active_lock:
            return path not in _active
    return not process_alive(int(pid))


def clean_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in ``folder`` that a killed process left (its process is gone); returns them."""
    removed: list[Path] = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for path in entries:
        if _stale(path):
            shutil.rmtree(path, ignore_errors=True)
            logger.warning("removed %s/%s, left by an upload that was interrupted", folder.name, path.name)
            removed.append(path)
    return removed


def clean_all_staging(uploads_root: Path) -> list[Path]:
    """:func:`clean_staging` in every knowledge base's upload folder under ``uploads_root`` (a server's start)."""
    if not uploads_root.is_dir():
        return []
    return [p for folder in sorted(uploads_root.iterdir()) if folder.is_dir() for p in clean_staging(folder)]
