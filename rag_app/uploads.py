"""Files uploaded through a face, kept in the data directory so their documents can be opened, shown page by
page and re-ingested later (a temporary copy would be gone by then).

Layout: ``<data_dir>/uploads/<knowledge base's collection name>/<source>``; a file's stored ``source`` is its
path under that folder, so the file of a source is found again without a lookup table. Names are sanitised
(no path escapes a folder) and a zip is unpacked into a folder named after it under the rules ``rag ingest``
applies to the zips it reads in place (:mod:`ingest.loaders.archives`: one piece of code for both): a zip with
a member refused for its safety (an escape, a link, a bomb, a nested archive …) is refused whole, with the
reason ``rag ingest`` would report for that member. A batch is staged next to its folder and moved into place
only once every file of it is written, so a refused or failing upload leaves nothing half written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ingest.loaders.archives import HIDDEN_FILE, is_archive, read_members, trusted_members
from rag_app.errors import DocumentLoadError, RagError

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
    out: list[str] = []
    taken: set[str] = set()
    for raw in names:
        name = safe_filename(raw)
        candidate, n = name, 1
        while candidate.lower() in taken:
            n += 1
            path = Path(name)
            candidate = f"{path.stem} ({n}){path.suffix}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def _member_path(name: str) -> PurePosixPath:
    """A zip member's path (the archive rules have refused absolute paths and ``..``) made of sanitised parts."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return PurePosixPath(*[safe_filename(p) for p in parts])


def unpack_zip(data_path: Path, folder: Path) -> None:
    """Unpack a zip into ``folder`` (which must not exist yet), or refuse it whole (:class:`UploadError`
    naming the zip's first unsafe member and the reason, as ``rag ingest`` reports it). Hidden members are
    left out, as a folder walk skips them; members of unsupported types are written, so that ingestion
    reports them as it does for any folder."""
    try:
        members = [m for m in trusted_members(data_path) if m.refused != HIDDEN_FILE]
        folder.mkdir(parents=True)
        # Inflated with ingestion's bounded reader: a member's declared size can lie (a zip bomb).
        for name, data in read_members(data_path, [m.name for m in members]):
            target = folder.joinpath(*_member_path(name).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except DocumentLoadError as exc:
        where = exc.path.replace(str(data_path), data_path.name, 1)  # the zip's name, not its staged path
        raise UploadError(f"{where}: {exc.reason}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, OSError) as exc:
        raise UploadError(f"{data_path.name}: cannot unpack the zip ({exc})") from exc


def store_uploads(folder: Path, files: Sequence[tuple[str, bytes]]) -> list[Path]:
    """Write uploads into ``folder`` under safe names (a zip becomes a folder of its files); returns the
    paths to ingest. A file uploaded again under the same name replaces the earlier one, as a changed file
    replaces its document. All or nothing: the batch is written into a hidden staging folder beside them
    (the same file system) and moved into place once all of it is there."""
    folder.mkdir(parents=True, exist_ok=True)
    names = unique_names([n for n, _ in files])
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=folder) as tmp:
        staged: list[tuple[Path, Path]] = []  # (staged path, final path)
        for index, ((_, data), name) in enumerate(zip(files, names, strict=True)):
            slot = Path(tmp) / str(index)
            slot.mkdir()
            path = slot / name
            path.write_bytes(data)
            if is_archive(path):
                unpack_zip(path, slot / "unpacked")
                staged.append((slot / "unpacked", folder / path.stem))
            else:
                staged.append((path, folder / name))
        for source, target in staged:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(source, target)
    return [target for _, target in staged]
