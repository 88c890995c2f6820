"""Named exceptions. Faces (CLI, app) turn them into one friendly line; nothing else should leak."""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this application raises on purpose.

    ``hint`` says what the user can do about it; the CLI prints ``message`` and ``hint`` on one line.
    """

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def friendly(self) -> str:
        text = str(self)
        return f"{text} — {self.hint}" if self.hint else text


class SettingsError(RagError):
    hint = "check your settings file, RAG_ environment variables and --profile"


class ModelNotFoundError(RagError):
    hint = "set llm.model_path / embedding.model_path (or RAG_LLM__MODEL_PATH) to a file on this disk"


class ModelLoadError(RagError):
    """The model file is fine but the runtime could not set it up (context, device, memory)."""

    hint = "`rag doctor` shows what the settings ask for and what this machine has"


class ModelDoesNotFitError(ModelLoadError):
    """The planner's verdict, before loading: weights + KV cache + buffers exceed the memory available."""


class MissingDependencyError(RagError):
    """An optional extra is not installed; the message names the pip command that fixes it."""


class UnknownBackendError(RagError):
    pass


class EmptyKnowledgeBaseError(RagError):
    hint = "ingest documents into it first"


class KnowledgeBaseNotFoundError(RagError):
    hint = "check the name, or ingest documents to create it"


class IngestError(RagError):
    """Something went wrong for one document; the batch goes on."""


class DocumentLoadError(IngestError):
    """A file could not be read; carries the file and the reason."""

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}", hint)


class UnsupportedFileTypeError(DocumentLoadError):
    pass


class EncryptedDocumentError(DocumentLoadError):
    hint = "give its password (ingest.pdf_passwords setting; --password FILE=PASSWORD in the CLI)"


class EmptyDocumentError(DocumentLoadError):
    pass


class UnreadableTextError(DocumentLoadError):
    """The file decodes, but into garbage (e.g. a PDF font without a Unicode map)."""


class KnowledgeBaseExistsError(RagError):
    hint = "pick another name, or ingest into the existing one with --kb"


class InsecureServerError(SettingsError):
    """``rag serve``'s settings would let others in (a public address without API keys, an empty or short key):
    refused before it listens. A usage error (the CLI exits 2)."""


class KnowledgeBaseNameError(RagError):
    """A new knowledge base's name breaks the one rule (:mod:`rag_app.names`): it could not travel as a URL
    path segment, or would be unreadable in a listing. A usage error (the CLI exits 2, the server answers 400)."""

    hint = "use 1-64 letters (any script), digits, spaces, '-', '_' or '.', not starting with '.'"


class DiskFullError(RagError):
    """A write failed for want of disk space (ENOSPC, a quota, SQLite's "database or disk is full"); what the
    failed write had begun was undone, so the knowledge base is as it was before it (the server answers 507)."""

    hint = "free some disk space (or raise the quota) where the data directory is, then try again"


_DISK_FULL_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT (Linux; macOS's EDQUOT is 69)
_DISK_FULL_WORDS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def as_disk_full(exc: BaseException) -> DiskFullError | None:
    """``exc`` as a :class:`DiskFullError` when it, or an exception it was raised from, says the disk is full
    (an ``OSError`` with ENOSPC/EDQUOT, SQLite's SQLITE_FULL, Chroma's wrapped message); else ``None``.
    The message names no path: it may reach a client of the server."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return current
        code = current.errno if isinstance(current, OSError) else None
        if code in _DISK_FULL_ERRNOS or code == getattr(errno, "EDQUOT", None):
            return DiskFullError(f"disk full: {(current.strerror or 'no space left on device').lower()}")
        if getattr(current, "sqlite_errorcode", None) == 13 or any(
            word in str(current).lower() for word in _DISK_FULL_WORDS
        ):  # SQLITE_FULL, from sqlite3 itself or through Chroma's own errors
            return DiskFullError("disk full: a database of the data directory could not grow")
        current = current.__cause__ or current.__context__
    return None


class DocumentNotFoundError(RagError):
    hint = "see the stored documents with: rag docs list [--kb NAME]"


class StoreBusyError(RagError):
    hint = "another ingestion is writing to this data directory; try again when it has finished"


class EvalDatasetError(RagError):
    hint = "give a SQuAD-format JSON file: {\"data\": [{\"paragraphs\": [{\"context\", \"qas\": [...]}]}]}"


class RerankerError(RagError):
    hint = "set retrieval.reranker_path to a local sentence-transformers CrossEncoder folder, or unset it"


class EmbedderMismatchError(RagError):
    """A knowledge base opened with another embedding model than the one that built it: its vectors and
    the questions' would not be comparable (search results would be silently meaningless)."""


class ServerBusyError(RagError):
    """The server's generation queue is full (HTTP 503 with Retry-After)."""

    hint = "try again in a moment"

    def __init__(self, message: str, hint: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class GenerationServerError(RagError):
    """The OpenAI-compatible generation server (``llm.backend = "openai"``) could not be reached or refused."""

    hint = "check llm.api_base (and llm.api_key), and that the generation server is running"


class ChromaServerError(RagError):
    """The Chroma server (``store.chroma_url``) could not be reached."""

    hint = "check store.chroma_url, and that `chroma run` is running there"


class RemoteServerError(RagError):
    """A running `rag serve` (setting ``server_url``) could not be reached or refused the request."""

    hint = "check server_url (and server_api_key), and that `rag serve` is running"
