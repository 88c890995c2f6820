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
        strip_whitespace=True,
    )


def split_documents(
    docs: list[Document], count_tokens: Callable[[str], int], chunk_size: int, chunk_overlap: int
) -> list[Document]:
    """Split each document; chunk metadata keeps the document's metadata plus ``start_index``.

    No chunk exceeds ``chunk_size`` tokens as the tokenizer counts the *whole* chunk: the splitter adds up
    the token counts of the pieces it merges, and a sub-word tokenizer can count more for the joined text
    (pieces glued without a space form other word pieces), so oversized chunks are split again.
    """
    splitter = make_splitter(count_tokens, chunk_size, chunk_overlap)
    out: list[Document] = []
    for doc in docs:
        text = doc.page_content
        search_from = 0
        for part in splitter.split_text(text):
            # Our own start offsets: LangChain's add_start_index assumes the overlap is counted in characters
            # and, with a token length function, searches past the chunk's real start (giving -1).
            found = text.find(part, search_from)
            if found >= 0:
                search_from = found + 1
            chunk = Document(page_content=part, metadata={**doc.metadata, "start_index": found})
            out.extend(_fit(chunk, count_tokens, chunk_size))
    return out


def _fit(chunk: Document, count_tokens: Callable[[str], int], limit: int) -> list[Document]:
    text = chunk.page_content
    if count_tokens(text) <= limit:
        return [chunk]
    size = limit
    parts = [text]
    while size > 4 and any(count_tokens(p) > limit for p in parts):
        size = max(4, size * 3 // 4)
        parts = make_splitter(count_tokens, size, 0).split_text(text)
    out: list[Document] = []
    pos = 0
    base = int(chunk.metadata.get("start_index", 0))
    for part in parts:
        found = text.find(part, pos)
        offset = found if found >= 0 else pos
        pos = offset + len(part)
        start = base + offset if base >= 0 else -1
        out.append(Document(page_content=part, metadata={**chunk.metadata, "start_index": start}))
    return out
