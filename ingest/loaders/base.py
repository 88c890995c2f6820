"""The loader registry and the types every loader returns.

A loader turns a file into :class:`Section` objects (a page of a PDF, a whole text file, …) or raises a
:class:`~rag_app.errors.DocumentLoadError` naming the file and the reason. Loaders only read; cleaning
and splitting happen later in the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.loaders.capture import captured_warnings
from rag_app.errors import (
    DocumentLoadError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedFileTypeError,
)

logger = logging.getLogger(__name__)


@dataclass
class Section:
    """A piece of a document with its own location (page number for PDFs)."""

    text: str
    page: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The text has hard line breaks that are layout, not structure (PDF): the cleaner re-joins them.
    layout_breaks: bool = False


@dataclass
class LoadedDocument:
    sections: list[Section]
    #: Non-fatal problems (e.g. pages without a text layer), reported to the user.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadOptions:
    password: str | None = None
    #: OCR for images and PDF pages without a text layer (:class:`ingest.loaders.images.OcrEngine`);
    #: ``None``: off (those pages are reported, images skipped).
    ocr: Any = None


Loader = Callable[[Path, LoadOptions], LoadedDocument]
_LOADERS: dict[str, Loader] = {}


def register_loader(*extensions: str) -> Callable[[Loader], Loader]:
    """Register a loader for extensions (with the dot, lower case)."""

    def deco(fn: Loader) -> Loader:
        for ext in extensions:
            _LOADERS[ext.lower()] = fn
        return fn

    return deco


def supported_extensions() -> list[str]:
    return sorted(_LOADERS)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in _LOADERS


def load_document(path: Path, options: LoadOptions | None = None) -> LoadedDocument:
    """Load ``path`` with the loader registered for its extension."""
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UnsupportedFileTypeError(
            str(path),
            f"unsupported file type '{path.suffix or '(none)'}'",
            hint=f"supported: {', '.join(supported_extensions())}",
        )
    try:
        if path.stat().st_size == 0:
            raise EmptyDocumentError(str(path), "the file is empty")
        with captured_warnings() as library_warnings:
            doc = loader(path, options or LoadOptions())
    except DocumentLoadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a parser's own error: report it, the batch goes on
        raise DocumentLoadError(str(path), f"cannot be read ({type(exc).__name__}: {exc})") from exc
    # What the parsers warned about belongs to this file's report, not to the terminal.
    doc.warnings.extend(w for w in library_warnings if w not in doc.warnings)
    if not any(s.text.strip() for s in doc.sections):
        raise EmptyDocumentError(str(path), "no text could be extracted", hint="; ".join(doc.warnings))
    return doc


def add_block(blocks: list[tuple[int, str, str]], level: int, text: str) -> None:
    """Append a paragraph to the last block (``level`` 0), or open a new block under a heading."""
    if not text:
        return
    if level:
        blocks.append((level, text, text))
    else:
        lvl, title, body = blocks[-1]
        blocks[-1] = (lvl, title, f"{body}\n\n{text}" if body else text)


def sections_from_blocks(blocks: Iterable[tuple[int, str, str]]) -> list[Section]:
    """Blocks (level, heading, text) → sections whose metadata carries the heading path."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    for level, title, body in blocks:
        if level:
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
        if not body.strip():
            continue
        meta = {"heading": " > ".join(t for _, t in path)} if path else {}
        sections.append(Section(text=body, metadata=meta))
    return sections
