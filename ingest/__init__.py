"""Ingestion pipeline: load → clean → split → embed → store.

The public entry point is :func:`ingest.pipeline.ingest_paths`; progress is reported through a callback so
that the CLI (progress bar) and the Streamlit app (``st.progress``) share the same code.
"""

from __future__ import annotations

from ingest.pipeline import FileResult, IngestReport, ProgressEvent, ingest_paths

__all__ = ["FileResult", "IngestReport", "ProgressEvent", "ingest_paths"]
