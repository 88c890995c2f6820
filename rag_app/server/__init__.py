"""The HTTP face (``rag serve``): an OpenAI-compatible API with sources, over :class:`rag_app.service.RagService`.

Needs the ``server`` extra (``pip install 'rag-app[server]'``); :func:`create_app` builds the FastAPI app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rag_app.settings import Settings


def create_app(service: Any, settings: Settings, *, warm_up: bool = True, announce: bool = False) -> FastAPI:
    """The FastAPI app serving ``service`` (see :mod:`rag_app.server.app`)."""
    try:
        from rag_app.server.app import create_app as build
    except ImportError as exc:
        from rag_app.errors import MissingDependencyError

        raise MissingDependencyError(
            f"`rag serve` needs FastAPI and uvicorn ({exc.name} is missing): pip install 'rag-app[server]'"
        ) from exc
    return build(service, settings, warm_up=warm_up, announce=announce)


__all__ = ["create_app"]
