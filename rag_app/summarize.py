"""Summaries of documents of any length: split into pieces that fit the model's context window (counted with
the model's own tokenizer), then ``map_reduce`` (summarise each piece, merge the summaries, again if needed)
or ``refine`` (extend a running summary piece by piece). Every prompt sent fits ``n_ctx``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser

from rag_app.chain import ContextOverflowError, PromptBuilder
from rag_app.llm.base import TokenAwareLLM
from rag_app.prompting import ChatFormat, question_language, summarize_instruction

logger = logging.getLogger(__name__)

Method = Literal["map_reduce", "refine"]
#: ``(done, total)`` model calls; ``total`` may grow when summaries need another merge round.
SummaryProgress = Callable[[int, int], None]
#: The text of the model call under way so far, as it streams (each call starts again from ""); the last call's
#: text is the summary.
SummaryStream = Callable[[str], None]


@dataclass(frozen=True)
class Summary:
    text: str
    pieces: int
    calls: int
    method: Method


def summarize_text(
    text: str,
    llm: TokenAwareLLM,
    chat_format: ChatFormat,
    *,
    method: Method = "map_reduce",
    language: str | None = None,
    progress: SummaryProgress | None = None,
    on_text: SummaryStream | None = None,
) -> Summary:
    """Summarise ``text`` however long it is; ``language`` (zh/en) defaults to the text's own. ``on_text``
    streams each model call's text as it is generated (a face shows the summary being written)."""
    from ingest.split import split_documents

    lang = language or question_language(text[:2000])
    builder = PromptBuilder(llm, chat_format)
    generate = llm.bind(stop=chat_format.stop or None) | StrOutputParser()  # type: ignore[attr-defined]
    overhead = max(
        llm.count_tokens(chat_format.render(summarize_instruction(step, "", "", lang)))
        for step in ("map", "reduce", "refine")
    )
    # refine prompts also hold the running summary (at most answer_tokens long)
    room = builder.budget - overhead - 1 - (builder.answer_tokens if method == "refine" else 0)
    if room < 16:
        raise ContextOverflowError(
            f"the context window is too small to summarise (n_ctx {llm.context_window}, "
            f"{builder.answer_tokens} tokens kept for the answer)"
        )
    pieces = [d.page_content for d in split_documents([Document(page_content=text)], llm.count_tokens, room, 0)]
    calls = 0
    expected = len(pieces) + (1 if method == "map_reduce" and len(pieces) > 1 else 0)
    notify = progress or (lambda done, total: None)

    def call(instruction: str) -> str:
        nonlocal calls, expected
        prompt = chat_format.render(instruction)
        if not builder.fits(prompt):  # a summary came out longer than expected: never send an overflow
            raise ContextOverflowError("a summary step does not fit the context window")
        if on_text is None:
            out = str(generate.invoke(prompt)).strip()
        else:
            out = ""
            on_text(out)
            for piece in generate.stream(prompt):
                out += piece
                on_text(out)
            out = out.strip()
        calls += 1
        expected = max(expected, calls)
        notify(calls, expected)
        return out

    notify(0, expected)
    if method == "refine":
        summary = ""
        for i, piece in enumerate(pieces):
            step = "map" if i == 0 else "refine"
            summary = call(summarize_instruction(step, piece, summary, lang)) or summary
        return Summary(summary, len(pieces), calls, method)
    summaries = [call(summarize_instruction("map", piece, "", lang)) for piece in pieces]
    while len(summaries) > 1:
        groups = _pack(summaries, lambda t: llm.count_tokens(t), room)
        expected = calls + len(groups)
        if len(groups) == len(summaries):  # no two summaries fit together: keep the first ones that fit
            groups = [summaries[:1]]
        summaries = [call(summarize_instruction("reduce", "\n\n".join(g), "", lang)) for g in groups]
    return Summary(summaries[0] if summaries else "", len(pieces), calls, method)


def _pack(texts: list[str], count: Callable[[str], int], room: int) -> list[list[str]]:
    """Consecutive groups whose joined text fits ``room`` tokens."""
    groups: list[list[str]] = []
    current: list[str] = []
    for text in texts:
        if current and count("\n\n".join([*current, text])) > room:
            groups.append(current)
            current = []
        current.append(text)
    if current:
        groups.append(current)
    return groups


def read_document_text(path: str | Path) -> str:
    """The cleaned text of a file, through the same loaders as ingestion (PDF, Word, HTML, text …)."""
    from ingest.clean import clean_text
    from ingest.loaders import LoadOptions, load_document

    loaded = load_document(Path(path), LoadOptions())
    parts = [clean_text(s.text, rejoin_lines=s.layout_breaks) for s in loaded.sections]
    return "\n\n".join(p for p in parts if p)
