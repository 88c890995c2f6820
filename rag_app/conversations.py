"""Conversations that survive a restart: a small SQLite file in the data directory.

A face (the app) keeps each chat here, tied to the knowledge base it was asked of, so a user can list,
rename, delete and continue them later. Assistant turns keep their sources and the support check's notice,
so a conversation re-opened tomorrow shows what it showed today.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag_app.errors import RagError

FILE_NAME = "conversations.sqlite3"
#: A title longer than this is cut (the first question becomes the title).
TITLE_CHARS = 80

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    knowledge_base TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (conversation_id, position)
);
"""


class ConversationNotFoundError(RagError):
    hint = "it may have been deleted in another window; pick one from the Conversations page"


@dataclass
class Conversation:
    """One conversation's header (its messages come from :meth:`ConversationStore.messages`)."""

    id: str
    title: str
    knowledge_base: str
    created_at: str
    updated_at: str
    messages: int = 0


@dataclass
class Turn:
    """One message: ``extra`` holds what an assistant turn shows besides its text (sources, notice …)."""

    role: str
    content: str
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def title_from(question: str) -> str:
    """A title from the first question: one line, at most ``TITLE_CHARS`` characters."""
    line = " ".join(question.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class ConversationStore:
    """CRUD over the conversations file; every call opens its own connection (safe across threads)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            con.executescript(_SCHEMA)
            with con:
                yield con
        finally:
            con.close()

    def create(self, knowledge_base: str, title: str) -> Conversation:
        now = _now()
        conv = Conversation(uuid.uuid4().hex, title_from(title) or "…", knowledge_base, now, now)
        with self._connect() as con:
            con.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?, ?)",
                (conv.id, conv.title, conv.knowledge_base, conv.created_at, conv.updated_at),
            )
        return conv

    def list(self, knowledge_base: str | None = None) -> list[Conversation]:
        """Newest first; only those of ``knowledge_base`` when given."""
        query = (
            "SELECT c.id, c.title, c.knowledge_base, c.created_at, c.updated_at, COUNT(m.position) "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
        )
        args: tuple[Any, ...] = ()
        if knowledge_base is not None:
            query += "WHERE c.knowledge_base = ? "
            args = (knowledge_base,)
        query += "GROUP BY c.id ORDER BY c.updated_at DESC, c.rowid DESC"
        with self._connect() as con:
            return [Conversation(*row) for row in con.execute(query, args)]

    def get(self, conversation_id: str) -> Conversation:
        for conv in self.list():
            if conv.id == conversation_id:
                return conv
        raise ConversationNotFoundError(f"conversation {conversation_id} does not exist")

    def messages(self, conversation_id: str) -> list[Turn]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT role, content, extra FROM messages WHERE conversation_id = ? ORDER BY position",
                (conversation_id,),
            ).fetchall()
        return [Turn(role, content, json.loads(extra)) for role, content, extra in rows]

    def append(self, conversation_id: str, turns: list[Turn]) -> None:
        with self._connect() as con:
            if not con.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone():
                raise ConversationNotFoundError(f"conversation {conversation_id} does not exist")
            (start,) = con.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            con.executemany(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                [
                    (conversation_id, start + i, t.role, t.content, json.dumps(t.extra, ensure_ascii=False))
                    for i, t in enumerate(turns)
                ],
            )
            con.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (_now(), conversation_id))

    def truncate(self, conversation_id: str, keep: int) -> None:
        """Keep the first ``keep`` messages (regenerate drops the last answer)."""
        with self._connect() as con:
            con.execute("DELETE FROM messages WHERE conversation_id = ? AND position >= ?", (conversation_id, keep))

    def rename(self, conversation_id: str, title: str) -> None:
        with self._connect() as con:
            cur = con.execute("UPDATE conversations SET title = ? WHERE id = ?", (title_from(title), conversation_id))
            if not cur.rowcount:
                raise ConversationNotFoundError(f"conversation {conversation_id} does not exist")

    def delete(self, conversation_id: str) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def delete_knowledge_base(self, knowledge_base: str) -> int:
        """Drop the conversations of a deleted knowledge base; returns how many there were."""
        with self._connect() as con:
            return con.execute("DELETE FROM conversations WHERE knowledge_base = ?", (knowledge_base,)).rowcount
