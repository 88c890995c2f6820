"""Files uploaded through a face, kept in the data directory so their documents can be opened, shown page by
page and re-ingested later (a temporary copy would be gone by then).

Layout: ``<data_dir>/uploads/<knowledge base's collection name>/<source>``; a file's stored ``source`` is its
path under that folder, so the file of a source is found again without a lookup table. Names are sanitised
(no path escapes a folder) and a zip is unpacked into a folder named after it, with the same care.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ingest.loaders.archives import read_member
from rag_app.errors import DocumentLoadError, RagError

UPLOAD_FALLBACK_NAME = "upload"
MAX_NAME_BYTES = 200  # below every common file system's 255-byte limit, with room for " (2)"
#: A zip may unpack to at most this much (a "zip bomb" stops here with a clear error).
MAX_UNZIPPED_BYTES = 2 * 1024**3
MAX_ZIP_MEMBERS = 10_000


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


def _safe_member(name: str) -> PurePosixPath | None:
    """A zip member's path made of sanitised parts (no absolute paths, no ``..``); ``None`` for folders and
    hidden or system entries (``__MACOSX``)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or name.endswith("/") or any(p == ".." for p in parts):
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return PurePosixPath(*[safe_filename(p) for p in parts])


def unpack_zip(data_path: Path, folder: Path) -> None:
    """Unpack a zip into ``folder`` (replacing what an earlier upload of the same zip left there)."""
    try:
        with zipfile.ZipFile(data_path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise UploadError(f"{data_path.name}: more than {MAX_ZIP_MEMBERS} files in the zip")
            if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
                raise UploadError(f"{data_path.name}: unpacks to more than {MAX_UNZIPPED_BYTES // 1024**3} GiB")
            if folder.exists():
                shutil.rmtree(folder)
            for member in members:
                rel = _safe_member(member.filename)
                if rel is None:
                    continue
                target = folder.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Inflated with ingestion's bounded reader: a member's declared size can lie (a zip bomb).
                target.write_bytes(read_member(data_path, member.filename))
    except DocumentLoadError as exc:
        raise UploadError(f"{data_path.name}: {exc.reason}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, OSError) as exc:
        raise UploadError(f"{data_path.name}: cannot unpack the zip ({exc})") from exc


def store_uploads(folder: Path, files: Sequence[tuple[str, bytes]]) -> list[Path]:
    """Write uploads into ``folder`` under safe names (a zip becomes a folder of its files); returns the
    paths to ingest. A file uploaded again under the same name replaces the earlier one, as a changed file
    replaces its document."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for (_, data), name in zip(files, unique_names([n for n, _ in files]), strict=True):
        path = folder / name
        path.write_bytes(data)
        if path.suffix.lower() == ".zip":
            unpacked = folder / path.stem
            try:
                unpack_zip(path, unpacked)
            finally:
                path.unlink()
            paths.append(unpacked)
        else:
            paths.append(path)
    return paths
