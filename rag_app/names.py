"""The one rule for knowledge-base names: what the CLI, the app and the server all accept for a new one.

A name travels as one URL path segment (``/v1/knowledge_bases/{name}/documents``), as a CLI argument and in
listings, so a new name must be something all of them carry unchanged and show legibly:

- 1 to :data:`MAX_NAME_LENGTH` characters, after surrounding spaces are stripped;
- letters of any script (Chinese included), combining marks, digits, and ``-`` ``_`` ``.`` and the space
  inside; nothing else: no ``/`` or ``\\`` (a path separator never survives a URL or a folder), no control
  characters, no ``%`` ``?`` ``#`` (URL syntax), no other punctuation or symbols;
- not starting with ``.`` (so never ``.`` or ``..``, and never a hidden file's name).

The rule is checked where a knowledge base comes into being (:class:`rag_app.service.RagService`: ``create``,
and an ingestion or upload into a name that does not exist yet), never on opening one: a knowledge base made
before the rule, whatever its name, stays listable and deletable (``rag kb delete NAME``; through the API too
where its name fits in a URL path segment).
"""

from __future__ import annotations

import unicodedata

from rag_app.errors import KnowledgeBaseNameError

MAX_NAME_LENGTH = 64
_ALLOWED_PUNCTUATION = frozenset("-_. ")
_ALLOWED_CATEGORIES = ("L", "M", "N")  # letters, combining marks (Devanagari, Thai …), digits and numerals


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new knowledge base (one clause, for a message), or ``None`` when it can."""
    name = name.strip(" ")
    if not name:
        return "the knowledge base name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the knowledge base name is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if name.startswith("."):
        return f"the knowledge base name {name!r} starts with '.'"
    for ch in name:
        if ch in _ALLOWED_PUNCTUATION or unicodedata.category(ch).startswith(_ALLOWED_CATEGORIES):
            continue
        what = "a control character" if unicodedata.category(ch).startswith("C") else "the character"
        return f"the knowledge base name {name!r} contains {what} {ch!r}"
    return None


def check_knowledge_base_name(name: str) -> str:
    """The name as it will be stored (surrounding spaces stripped), or :class:`KnowledgeBaseNameError`."""
    problem = name_problem(name)
    if problem is not None:
        raise KnowledgeBaseNameError(problem)
    return name.strip(" ")
