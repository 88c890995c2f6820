"""Chinese-aware splitting, sized in tokens of the embedding model.

Order of preference: paragraphs, lines, sentence ends (。！？!?… and '. '), clause ends (；;), commas,
spaces, characters. Punctuation stays at the end of its sentence (``keep_separator="end"``).
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

SEPARATORS = [
    r"\n\n+",
    r"\n",
    r"[。！？!?]+[”’」』）)]?",
    r"…+|\.{3,}",
    r"\.(?=\s)",
    r"[；;]",
    r"[，,、：:]",
    r"\s+",
    r"",
]


def make_splitter(
    count_tokens: Callable[[str], int], chunk_size: int, chunk_overlap: int
) -> RecursiveCharacterTextSplitter:
    if chunk_overlap >= chunk_size:
        chunk_overlap = chunk_size // 5
    return RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        is_separator_regex=True,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        length_function=count_tokens,
        add_start_index=True,
        strip_whitespace=True,
    )


def split_documents(
    docs: list[Document], count_tokens: Callable[[str], int], chunk_size: int, chunk_overlap: int
) -> list[Document]:
    """Split each document; chunk metadata keeps the document's metadata plus ``start_index``."""
    return make_splitter(count_tokens, chunk_size, chunk_overlap).split_documents(docs)
