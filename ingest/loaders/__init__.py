"""Loaders: one function per file type, chosen by extension from a registry.

A loader turns a file into :class:`Section` objects (a page of a PDF, a whole text file, …) or raises a
:class:`~rag_app.errors.DocumentLoadError` naming the file and the reason. Loaders only read; cleaning
and splitting happen later in the pipeline. One module per family: :mod:`.text`, :mod:`.html`,
:mod:`.office`, :mod:`.doc` (Word 97–2003), :mod:`.pdf`, :mod:`.tables`, :mod:`.images` (OCR), :mod:`.archives`; importing this
package registers them all.
"""

from __future__ import annotations

from ingest.loaders import archives, doc, html, images, office, pdf, tables, text  # noqa: F401  (registration)
from ingest.loaders.base import (
    LoadedDocument,
    Loader,
    LoadOptions,
    Section,
    is_supported,
    load_document,
    register_loader,
    sections_from_blocks,
    supported_extensions,
)
from ingest.loaders.doc import load_doc
from ingest.loaders.html import decode_html, html_sections, load_epub, load_html
from ingest.loaders.office import load_docx, load_odt, load_pptx
from ingest.loaders.pdf import load_pdf
from ingest.loaders.tables import load_csv, load_xlsx, markdown_table
from ingest.loaders.text import decode_bytes, detect_encoding, load_markdown, load_text

__all__ = [
    "LoadOptions",
    "LoadedDocument",
    "Loader",
    "Section",
    "decode_bytes",
    "decode_html",
    "detect_encoding",
    "html_sections",
    "is_supported",
    "load_csv",
    "load_doc",
    "load_document",
    "load_docx",
    "load_epub",
    "load_html",
    "load_markdown",
    "load_odt",
    "load_pdf",
    "load_pptx",
    "load_text",
    "load_xlsx",
    "markdown_table",
    "register_loader",
    "sections_from_blocks",
    "supported_extensions",
]
