"""Ingestion pipeline: load → clean → split → embed → store.

The public entry point is :func:`ingest.pipeline.ingest_paths`; progress is reported through a callback so
that the CLI (progress bar) and the Streamlit app (``st.progress``) share the same code.

Importing a submodule (``ingest.store``, ``ingest.manifest``) does not import the pipeline: listing knowledge
bases needs neither the loaders nor LangChain (issue 12). The names below load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.pipeline import FileResult, IngestReport, ProgressEvent, ingest_paths

__all__ = ["FileResult", "IngestReport", "ProgressEvent", "ingest_paths"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ingest import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ingest' has no attribute {name!r}")
