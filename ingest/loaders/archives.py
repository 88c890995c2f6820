"""Zip archives of documents: each member is a document of its own, ``archive.zip!folder/member.pdf``.

Archives are hostile input until proven otherwise: a member whose name is absolute or climbs out with
'..' is refused; so are symbolic links, members larger than :data:`MAX_MEMBER_BYTES` once inflated, members
compressed more than :data:`MAX_RATIO` to one (zip bombs, judged from the directory before anything is
inflated), nested archives, encrypted members, and more than :data:`MAX_MEMBERS` members. A whole archive is
refused (:class:`ArchiveLimits`: ``ingest.max_archive_mb``, ``ingest.max_archive_ratio``) when its members
together inflate past a size, or past a multiple of the archive's own size (many small members of one
repeated byte: 169 KB that would write 150 MiB). Sizes are enforced while inflating, never trusted from the
archive's own directory. Nothing is extracted to disk under the member's own name here.

These rules are the only ones: ``rag ingest`` reads archives in place with them (a refused member is
reported, the others are read) and the app's uploads (:mod:`rag_app.uploads`) unpack with them through
:func:`trusted_members` (an archive with a member refused for its safety is refused whole).
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ingest.loaders.base import LoadedDocument, LoadOptions, Section, is_supported, load_document, register_loader
from rag_app.errors import DocumentLoadError

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip",)
MAX_MEMBER_BYTES = 200 * 1024 * 1024
MAX_RATIO = 200
#: Below this many inflated bytes an archive's overall ratio is not judged (a small, very repetitive text).
RATIO_FLOOR_BYTES = 1 << 20
MAX_MEMBERS = 10_000
#: Separates an archive's source from its member's name in reports and metadata.
MEMBER_SEPARATOR = "!"
#: Why a hidden member (``.DS_Store``, ``__MACOSX/._x.pdf``) is not read: a folder walk skips such files too.
HIDDEN_FILE = "hidden file"
_SYMLINK_MODE = 0o120000


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may inflate to in all: ``max_bytes``, and ``max_ratio`` times its own size on disk
    (judged once it inflates past :data:`RATIO_FLOOR_BYTES`). The defaults are ``IngestSettings``'."""

    max_bytes: int = 512 << 20
    max_ratio: float = 100.0

    @classmethod
    def of(cls, ingest: Any) -> ArchiveLimits:
        """The limits of ``settings.ingest`` (:class:`rag_app.settings.IngestSettings`)."""
        return cls(int(ingest.max_archive_mb * 2**20), float(ingest.max_archive_ratio))

    def budget(self, archive_bytes: int) -> int:
        """The most bytes an archive of ``archive_bytes`` may inflate to."""
        return min(self.max_bytes, max(RATIO_FLOOR_BYTES, int(self.max_ratio * archive_bytes)))

    def refusal(self, inflated: int, archive_bytes: int) -> str:
        """Why an archive of ``archive_bytes`` inflating to ``inflated`` is refused whole (empty when it is not)."""
        if inflated > self.max_bytes:
            return (f"the archive inflates to {inflated / 2**20:.0f} MB, more than ingest.max_archive_mb "
                    f"({self.max_bytes / 2**20:g} MB)")
        if inflated > self.budget(archive_bytes):
            return (f"the archive inflates to {inflated / 2**20:.0f} MB, {inflated / max(archive_bytes, 1):.0f} "
                    f"times its size (more than ingest.max_archive_ratio, {self.max_ratio:g}): a zip bomb")
        return ""


@dataclass(frozen=True)
class Member:
    """One entry of an archive: ``refused`` says why it is not read (empty when it is)."""

    name: str
    size: int
    refused: str = ""
    #: Refused only as no document to index (a hidden file, an unsupported type), as a folder walk would skip
    #: it; any other refusal (an escape, a bomb, a nested archive …) is about the archive's safety.
    harmless: bool = False


def is_archive(path: Path) -> bool:
    return path.suffix.lower() in ARCHIVE_SUFFIXES


def list_members(path: Path, limits: ArchiveLimits | None = None) -> list[Member]:
    """The archive's file members in order, each either readable or refused with a reason (from the archive's
    directory alone: nothing is inflated); a :class:`DocumentLoadError` naming the archive when it is refused
    whole (unreadable, or inflating past ``limits``)."""
    limits = limits or ArchiveLimits()
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentLoadError(str(path), f"not a readable zip archive ({exc})") from exc
    members: list[Member] = []
    total = 0
    for count, info in enumerate(infos):
        reason, harmless = refusal(info, count)
        # What may be inflated counts towards the total (unpacking an upload writes unsupported files too).
        if not reason or (harmless and reason != HIDDEN_FILE):
            total += info.file_size
        members.append(Member(info.filename, info.file_size, reason, harmless=harmless))
    too_much = limits.refusal(total, size)
    if too_much:
        raise DocumentLoadError(str(path), too_much)
    return members


def trusted_members(path: Path, limits: ArchiveLimits | None = None) -> list[Member]:
    """The members of an archive to unpack, once no member is refused for the archive's safety; otherwise a
    :class:`DocumentLoadError` for the first such member, worded as ``rag ingest`` reports it
    (``archive.zip!member: reason``). Members refused as harmless are returned with their reason."""
    members = list_members(path, limits)
    for member in members:
        if member.refused and not member.harmless:
            raise DocumentLoadError(f"{path.name}{MEMBER_SEPARATOR}{member.name}", member.refused)
    return members


def refusal(info: zipfile.ZipInfo, count: int) -> tuple[str, bool]:
    """Why the ``count``-th member is not read (empty when it is), judged from the directory before anything
    is inflated, and whether that refusal is harmless (no document to index: hidden, an unsupported type)
    rather than about the archive's safety (an escape, a link, a bomb, nesting, encryption, size)."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        return "unsafe member path (absolute or with '..')", False
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return HIDDEN_FILE, True  # never inflated, as a folder walk skips such files
    if (info.external_attr >> 16) & 0o170000 == _SYMLINK_MODE:
        return "a symbolic link (not followed)", False
    if count >= MAX_MEMBERS:
        return f"more than {MAX_MEMBERS} members", False
    if is_archive(Path(name)):
        return "archive inside an archive (not opened)", False
    if info.flag_bits & 0x1:
        return "encrypted member", False
    if info.file_size > MAX_MEMBER_BYTES:
        return f"member larger than {MAX_MEMBER_BYTES >> 20} MB", False
    if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return "compression ratio of a zip bomb", False
    if not is_supported(Path(name)):
        return f"unsupported file type '{Path(name).suffix or '(none)'}'", True
    return "", False


def read_member(path: Path, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """A member's bytes, inflating at most ``limit`` bytes whatever the archive claims."""
    with zipfile.ZipFile(path) as archive:
        return _read_bounded(archive, path, name, limit)


def read_members(
    path: Path, names: Iterable[str], limit: int = MAX_MEMBER_BYTES, limits: ArchiveLimits | None = None
) -> Iterator[tuple[str, bytes]]:
    """Several members' bytes, each bounded as by :func:`read_member` and all together by ``limits`` (what the
    archive's directory declared is not trusted), with the archive opened once."""
    limits = limits or ArchiveLimits()
    size = path.stat().st_size
    left = limits.budget(size)
    with zipfile.ZipFile(path) as archive:
        for name in names:
            with archive.open(name) as fh:
                data = fh.read(min(limit, left) + 1)
            if len(data) > limit:
                raise DocumentLoadError(f"{path}{MEMBER_SEPARATOR}{name}", f"member larger than {limit >> 20} MB")
            if len(data) > left:
                raise DocumentLoadError(str(path), "the archive inflates past what its directory declares (a zip bomb)")
            left -= len(data)
            yield name, data


def _read_bounded(archive: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    with archive.open(name) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise DocumentLoadError(f"{path}{MEMBER_SEPARATOR}{name}", f"member larger than {limit >> 20} MB")
    return data


@contextmanager
def member_file(data: bytes, name: str) -> Iterator[Path]:
    """The member's bytes in a private temporary file named only by its suffix (loaders pick by suffix)."""
    with tempfile.TemporaryDirectory(prefix="rag-zip-") as tmp:
        target = Path(tmp) / f"member{Path(name).suffix.lower()}"
        target.write_bytes(data)
        yield target


@register_loader(*ARCHIVE_SUFFIXES)
def load_zip(path: Path, options: LoadOptions) -> LoadedDocument:
    """All readable members as one document (for a summary); ingestion treats each member separately."""
    sections: list[Section] = []
    warnings: list[str] = []
    for member in list_members(path):
        if member.refused:
            warnings.append(f"{member.name}: {member.refused}")
            continue
        try:
            with member_file(read_member(path, member.name), member.name) as file:
                loaded = load_document(file, options)
        except DocumentLoadError as exc:
            warnings.append(f"{member.name}: {exc.reason}")
            continue
        for section in loaded.sections:
            section.metadata["member"] = member.name
            sections.append(section)
    return LoadedDocument(sections, warnings)
