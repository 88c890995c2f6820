"""Chinese-aware splitting, sized in tokens of the embedding model.

Order of preference: paragraphs, lines, sentence ends (。！？!?… and '. '), clause ends (；;), commas,
spaces, characters. Punctuation stays at the end of its sentence (``keep_separator="end"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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
        for offset, segment, is_table in _segments(text):
            if is_table:
                out.extend(_table_chunks(segment, offset, doc.metadata, count_tokens, chunk_size))
                continue
            search_from = 0
            for part in splitter.split_text(segment):
                # Our own start offsets: LangChain's add_start_index assumes the overlap is counted in
                # characters and, with a token length function, searches past the chunk's real start (-1).
                found = segment.find(part, search_from)
                if found >= 0:
                    search_from = found + 1
                start = offset + found if found >= 0 else -1
                chunk = Document(page_content=part, metadata={**doc.metadata, "start_index": start})
                out.extend(_fit(chunk, count_tokens, chunk_size))
    return out


_TABLE_LINE = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
_RULE_LINE = re.compile(r"^[ \t]*\|(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*$")


def _segments(text: str) -> list[tuple[int, str, bool]]:
    """The text cut into (offset, text, is_table): Markdown tables (a header row, a '|---|' rule, rows)
    apart from the prose around them. Text without a table is one segment (no extra work)."""
    if "|\n|" not in text and "|---" not in text:
        return [(0, text, False)]
    lines = text.split("\n")
    out: list[tuple[int, str, bool]] = []
    pos = 0
    prose_start = 0
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and _TABLE_LINE.match(lines[i]) and _RULE_LINE.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and _TABLE_LINE.match(lines[j]):
                j += 1
            if pos > prose_start:
                out.append((prose_start, text[prose_start:pos], False))
            end = pos + sum(len(line) + 1 for line in lines[i:j]) - 1
            out.append((pos, text[pos:end], True))
            pos = prose_start = min(end + 1, len(text))
            i = j
            continue
        pos += len(lines[i]) + 1
        i += 1
    if prose_start < len(text):
        out.append((prose_start, text[prose_start:], False))
    return [seg for seg in out if seg[1].strip()]


def _table_chunks(table: str, offset: int, meta: dict[str, Any], count_tokens: Callable[[str], int],
                  limit: int) -> list[Document]:
    """A Markdown table whole when it fits, else runs of whole rows, each under the header row and rule
    (a chunk of a table still says what its columns are). A single row too long for a chunk is split."""
    meta = {**meta, "table": True}
    if count_tokens(table) <= limit:
        return [Document(page_content=table, metadata={**meta, "start_index": offset})]
    lines = table.split("\n")
    header = "\n".join(lines[:2])
    budget = limit - count_tokens(header) - 1
    out: list[Document] = []
    rows: list[str] = []
    used = 0
    pos = offset + len(header) + 1

    def flush() -> None:
        if rows:
            text = header + "\n" + "\n".join(rows)
            # start_index -1: the repeated header makes the text differ from the document's at any offset.
            out.append(Document(page_content=text, metadata={**meta, "start_index": -1}))

    for row in lines[2:]:
        cost = count_tokens(row) + 1
        if cost > budget:  # one row larger than a chunk: on its own, split like prose
            flush()
            rows, used = [], 0
            chunk = Document(page_content=row, metadata={**meta, "start_index": pos})
            out.extend(_fit(chunk, count_tokens, limit))
        elif used + cost > budget:
            flush()
            rows, used = [row], cost
        else:
            rows.append(row)
            used += cost
        pos += len(row) + 1
    flush()
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
