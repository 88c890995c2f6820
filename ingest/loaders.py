"""Loaders: one function per file type, chosen by extension from a registry.

A loader turns a file into :class:`Section` objects (a page of a PDF, a whole text file, …) or raises a
:class:`~rag_app.errors.DocumentLoadError` naming the file and the reason. Loaders only read; cleaning
and splitting happen later in the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        doc = loader(path, options or LoadOptions())
    except DocumentLoadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a parser's own error: report it, the batch goes on
        raise DocumentLoadError(str(path), f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if not any(s.text.strip() for s in doc.sections):
        raise EmptyDocumentError(str(path), "no text could be extracted", hint="; ".join(doc.warnings))
    return doc


# --- text ------------------------------------------------------------------------------------------


def decode_bytes(data: bytes, path: Path) -> str:
    """Decode text of unknown encoding: BOMs first, then UTF-8, then charset-normalizer's best guess."""
    from charset_normalizer import from_bytes

    for bom, enc in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(enc)
    if b"\x00" in data[:4096]:
        utf16 = _utf16_without_bom(data)
        if utf16 is None:
            raise DocumentLoadError(str(path), "binary data, not text")
        return data.decode(utf16, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    best = from_bytes(data, cp_isolation=None).best()
    if best is None:
        raise DocumentLoadError(str(path), "unknown text encoding (not UTF-8, GB18030, Big5, UTF-16 …)")
    encoding = best.encoding
    # GBK/GB2312 are subsets of GB18030: decoding with the superset never loses characters.
    if encoding in ("gbk", "gb2312"):
        encoding = "gb18030"
    logger.debug("%s: detected encoding %s", path, encoding)
    return data.decode(encoding, errors="replace")


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the NUL bytes sit in every other byte, as in UTF-16 text."""
    head = data[:4096]
    half = max(len(head) // 2, 1)
    zeros_even, zeros_odd = head[0::2].count(0) / half, head[1::2].count(0) / half
    if zeros_odd > 0.3 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.3 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


@register_loader(".txt", ".text", ".md", ".markdown")
def load_text(path: Path, options: LoadOptions) -> LoadedDocument:
    return LoadedDocument([Section(text=decode_bytes(path.read_bytes(), path))])


# --- pdf -------------------------------------------------------------------------------------------


@register_loader(".pdf")
def load_pdf(path: Path, options: LoadOptions) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path)
    except PdfReadError as exc:
        raise DocumentLoadError(str(path), f"corrupt or not a PDF ({exc})") from exc
    if reader.is_encrypted:
        try:
            ok = reader.decrypt(options.password or "")
        except (FileNotDecryptedError, NotImplementedError) as exc:
            raise EncryptedDocumentError(str(path), f"encrypted PDF cannot be opened ({exc})") from exc
        if not ok:
            reason = "wrong password for encrypted PDF" if options.password else "encrypted PDF"
            raise EncryptedDocumentError(str(path), reason)
    sections: list[Section] = []
    no_text: list[int] = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # one broken page does not lose the others
            logger.warning("%s page %d: cannot extract text (%s)", path, number, exc)
            text = ""
        if text.strip():
            sections.append(Section(text=text, page=number, layout_breaks=True))
        else:
            no_text.append(number)
    warnings = []
    if no_text:
        warnings.append(
            f"{len(no_text)} page(s) without a text layer (scanned?), not indexed: "
            f"{_ranges(no_text)}; OCR is not supported yet"
        )
    return LoadedDocument(sections, warnings)


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
