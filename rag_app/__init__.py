"""Private, local document question answering.

    from rag_app import Settings, build_rag_chain
    chain = build_rag_chain(Settings.load())
    result = chain.invoke("怎样导入文档？")
    print(result["answer"], result["sources"])

Importing this package is cheap: models load only when a chain or pipeline is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag_app.errors import (
    DocumentLoadError,
    EmptyKnowledgeBaseError,
    IngestError,
    MissingDependencyError,
    ModelNotFoundError,
    RagError,
    SettingsError,
)
from rag_app.settings import Settings

if TYPE_CHECKING:
    from rag_app.chain import build_rag_chain

__all__ = [
    "DocumentLoadError",
    "EmptyKnowledgeBaseError",
    "IngestError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "RagError",
    "Settings",
    "SettingsError",
    "build_rag_chain",
]


def __getattr__(name: str) -> Any:
    # Lazy: the chain module pulls in LangChain and Chroma, which a settings-only import does not need.
    if name == "build_rag_chain":
        from rag_app.chain import build_rag_chain

        return build_rag_chain
    raise AttributeError(f"module 'rag_app' has no attribute {name!r}")
