"""Where the files of documents ingested from this machine's folders are (``rag ingest samples/guide``), so
the app can show their PDF pages as it shows those of uploaded files.

A document's source is relative to the folder or file it was found under (``guide/user-guide.zh.pdf``); the
manifest does not say where that folder was. So each ingestion records, per knowledge base, the absolute
path of each root it was given (``data_dir/origins/<collection>.json``: root name → path). A file is found
again only through such a record, and only when its bytes still hash to what the manifest recorded for that
source: a page is never rendered from a file the knowledge base did not ingest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

FOLDER = "origins"


def _file(data_dir: Path, collection: str) -> Path:
    return data_dir / FOLDER / f"{collection}.json"


def read_roots(data_dir: Path, collection: str) -> dict[str, str]:
    """Root name → absolute path, as recorded for a knowledge base's collection (empty when none)."""
    try:
        data = json.loads(_file(data_dir, collection).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_roots(data_dir: Path, collection: str, paths: Sequence[str | Path]) -> None:
    """Remember where the roots of one ingestion are (the newest wins for a name). Best effort: a data
    directory that cannot be written only costs the page previews of these documents."""
    roots = read_roots(data_dir, collection)
    for raw in paths:
        path = Path(os.path.abspath(Path(raw).expanduser()))
        if path.exists():
            roots[path.name] = str(path)
    target = _file(data_dir, collection)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".origins-", suffix=".json", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(roots, out, ensure_ascii=False, indent=1)
        os.replace(tmp, target)
    except OSError as exc:
        logger.warning("cannot record where the ingested files are (%s): %s", target, exc)


def forget(data_dir: Path, collection: str) -> None:
    _file(data_dir, collection).unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    """The file's SHA-256, computed again only when its size or modification time changed (a page view
    asks for it each time)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(roots: dict[str, str], source: str, sha256: str) -> Path | None:
    """The file of ``source`` under its recorded root, if it is still there with the same bytes."""
    parts = PurePosixPath(source).parts
    if not parts or ".." in parts or parts[0] not in roots:
        return None
    root = Path(roots[parts[0]])
    path = root.joinpath(*parts[1:]) if len(parts) > 1 else root
    try:
        if not path.is_file() or sha256_of(path) != sha256:
            return None
    except OSError:
        return None
    return path
