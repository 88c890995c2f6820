"""Library warnings raised while a file is read go into that file's report, not onto the terminal.

pypdf and pdfminer log through :mod:`logging`, BeautifulSoup and others through :mod:`warnings`. Loading
runs in a background thread while the main thread embeds, so the capture is per thread: a hook installed
once (a filter on every logging handler and on ``logging.lastResort``, and a ``warnings.showwarning``
wrapper) hands records from a thread that is capturing to that thread's list and lets every other record
through unchanged.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state = threading.local()
_install_lock = threading.Lock()
_original_showwarning: Any = None
#: Libraries whose warnings are shown every time they occur (not once per code location), so that every
#: file they concern gets its own note.
_LIBRARIES = ("ingest", "bs4", "pypdf", "pdfminer", "pdfplumber", "docx", "pptx", "openpyxl", "odf", "ebooklib", "PIL")


class _CaptureFilter(logging.Filter):
    """Drops (and keeps for the report) WARNING+ records logged by a thread that is capturing."""

    def filter(self, record: logging.LogRecord) -> bool:
        sink: list[str] | None = getattr(_state, "sink", None)
        if sink is None:
            return True
        if record.levelno >= logging.WARNING:
            message = _one_line(record.getMessage())
            if message not in sink:
                sink.append(message)
        return False


_FILTER = _CaptureFilter()


def _showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:
    sink: list[str] | None = getattr(_state, "sink", None)
    if sink is None:
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    text = _one_line(f"{category.__name__}: {message}")
    if text not in sink:
        sink.append(text)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _install() -> None:
    """Hook logging and warnings (idempotent; new root handlers get the filter on the next capture)."""
    global _original_showwarning
    with _install_lock:
        # Some libraries (RapidOCR) print through a handler of their own: those get the filter too.
        own = [h for lg in list(logging.root.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
               for h in lg.handlers]
        for handler in [*logging.getLogger().handlers, logging.lastResort, *own]:
            if handler is not None and _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
        if warnings.showwarning is not _showwarning:
            _original_showwarning = warnings.showwarning
            warnings.showwarning = _showwarning
            for module in _LIBRARIES:
                warnings.filterwarnings("always", module=module)


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect the warnings this thread's code logs or warns inside the block (each message once)."""
    _install()
    previous = getattr(_state, "sink", None)
    sink: list[str] = []
    _state.sink = sink
    try:
        yield sink
    finally:
        _state.sink = previous
