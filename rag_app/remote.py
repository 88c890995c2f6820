"""``RemoteRagService``: the faces' API (:class:`rag_app.service.RagService`) served by a running ``rag serve``.

With ``server_url`` set, :func:`rag_app.service.open_service` gives the CLI and the app this class instead
of a local service: nothing loads a model here, many users share the server's one warm model. The methods
return objects with the same attributes as the local ones (knowledge bases, document records, ingestion
reports, progress events) and :meth:`RemoteRagService.chain` returns a LangChain Runnable whose ``stream``
yields the local chain's chunks (``sources`` first, then ``answer`` pieces, then ``grounding``), so a face does
not know which one it talks to. Errors come back as the same named errors (unknown knowledge base, busy …).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
from langchain_core.runnables import Runnable, RunnableConfig

from rag_app.errors import (
    DocumentNotFoundError,
    EmptyKnowledgeBaseError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
    RagError,
    RemoteServerError,
    ServerBusyError,
)
from rag_app.service import RagService
from rag_app.settings import Settings

logger = logging.getLogger(__name__)

#: Seconds between two looks at an ingestion job's progress.
POLL_SECONDS = 0.5


class Remote(SimpleNamespace):
    """One of the server's JSON objects with attribute access: a knowledge base, a document record, a removal,
    a progress event or a file's result, with whatever fields the server's (local) dataclass has."""


_OK = ("added", "replaced", "unchanged", "duplicate")


class RemoteIngestReport(Remote):
    """The server's per-file report, with what the CLI and the app read of a local one."""

    def by_status(self, *statuses: str) -> list[Remote]:
        return [f for f in self.files if f.status in statuses]

    ok = property(lambda self: self.by_status(*_OK))
    failed = property(lambda self: self.by_status("failed"))
    skipped = property(lambda self: self.by_status("skipped"))

    def summary(self) -> str:
        return str(self.text)


class RemoteUnsupportedError(RemoteServerError, AttributeError):
    """The local service has it, the server does not offer it."""


class _NoPageImage(RemoteServerError):
    """The server has no image of that page (no PDF, or its file not kept): the local service's ``None``."""


def _raise_for(response: httpx.Response) -> None:
    """The server's OpenAI-format error as the named error a local service would raise."""
    if response.is_success:
        return
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = str(error.get("message") or f"HTTP {response.status_code} from the server")
    code = error.get("code")
    status = response.status_code
    if status == 503 and code == "server_busy":
        raise ServerBusyError(message, hint="", retry_after=int(response.headers.get("retry-after", "1")))
    if status == 404 and code in ("knowledge_base_not_found", "model_not_found"):
        raise KnowledgeBaseNotFoundError(message, hint="")
    if status == 404 and code == "not_found" and "document" in message:
        raise DocumentNotFoundError(message, hint="")
    if status == 404 and code == "not_found":
        raise KnowledgeBaseNotFoundError(message, hint="")
    if status == 409 and code == "already_exists":
        raise KnowledgeBaseExistsError(message, hint="")
    if status == 400 and code == "knowledge_base_empty":
        raise EmptyKnowledgeBaseError(message, hint="")
    if status == 404 and code == "no_page_image":
        raise _NoPageImage(message, hint="")
    if status == 400 and code == "preview_failed":
        from rag_app.preview import PreviewError

        raise PreviewError(message, hint="")  # the message has it
    if status == 401:
        raise RemoteServerError(f"the server refused the request: {message}", hint="set server_api_key")
    raise RemoteServerError(f"the server answered {status}: {message}", hint="")


def _messages(inp: Any) -> tuple[str, list[dict[str, str]], list[str] | None]:
    """(question, OpenAI messages, documents) from the local chain's input forms."""
    from rag_app.chain import normalize_history

    if isinstance(inp, str):
        question, history, documents = inp, [], None
    elif isinstance(inp, dict) and isinstance(inp.get("question"), str):
        question, documents = inp["question"], inp.get("documents")
        history = normalize_history(inp.get("chat_history"))
    else:
        raise TypeError("input must be a question string or {'question': str, 'chat_history': [...]}")
    messages: list[dict[str, str]] = []
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": question})
    return question, messages, list(documents) if documents else None


class RemoteChain(Runnable[Any, dict[str, Any]]):
    """The question-answering chain of a knowledge base, answered by the server (same input and output as
    :func:`rag_app.chain.build_rag_chain`, without ``context``)."""

    def __init__(self, service: RemoteRagService, knowledge_base: str | None) -> None:
        self.service = service
        self.knowledge_base = knowledge_base or service.settings.knowledge_base

    def _body(self, inp: Any, stream: bool) -> tuple[str, dict[str, Any]]:
        question, messages, documents = _messages(inp)
        body: dict[str, Any] = {"model": f"kb/{self.knowledge_base}", "messages": messages, "stream": stream}
        if documents:
            body["documents"] = documents
        return question, body

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        question, body = self._body(input, stream=False)
        data = self.service._request("POST", "/v1/chat/completions", json=body).json()
        return {
            "question": question,
            "answer": data["choices"][0]["message"]["content"],
            "sources": data.get("sources") or [],
            "grounding": data.get("grounding"),
        }

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[dict[str, Any]]:
        question, body = self._body(input, stream=True)
        yield {"question": question}
        sent_sources = False
        with self.service._stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    _raise_for(httpx.Response(500, json=chunk))
                if "sources" in chunk and not sent_sources:
                    sent_sources = True
                    yield {"sources": chunk["sources"]}
                choice = (chunk.get("choices") or [{}])[0]
                if content := (choice.get("delta") or {}).get("content"):
                    yield {"answer": content}
                if choice.get("finish_reason") is not None:
                    yield {"grounding": chunk.get("grounding")}


class RemoteRagService:
    """What :class:`rag_app.service.RagService` offers the faces, over HTTP to ``settings.server_url``."""

    def __init__(self, settings: Settings, *, client: httpx.Client | None = None) -> None:
        if not settings.server_url:
            raise RemoteServerError("server_url is not set", hint="set server_url to a running `rag serve`")
        self.settings = settings
        self.base_url = settings.server_url.rstrip("/")
        headers = {"Authorization": f"Bearer {settings.server_api_key}"} if settings.server_api_key else {}
        timeout = httpx.Timeout(settings.server.request_timeout, connect=10.0)
        self._client = client or httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # --- HTTP --------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteServerError(f"cannot reach the server at {self.base_url}: {exc}") from exc
        _raise_for(response)
        return response

    def _stream(self, method: str, path: str, **kwargs: Any) -> Any:
        service = self

        class _Opened:
            def __enter__(self) -> httpx.Response:
                self._cm = service._client.stream(method, path, **kwargs)
                try:
                    response = self._cm.__enter__()
                except httpx.HTTPError as exc:
                    raise RemoteServerError(f"cannot reach the server at {service.base_url}: {exc}") from exc
                if not response.is_success:
                    response.read()
                    self._cm.__exit__(None, None, None)
                    _raise_for(response)
                return response

            def __exit__(self, *exc: Any) -> None:
                self._cm.__exit__(*exc)

        return _Opened()

    def close(self) -> None:
        self._client.close()

    # --- knowledge bases and documents ---------------------------------------------------------------------

    def knowledge_bases(self) -> list[Remote]:
        data = self._request("GET", "/v1/knowledge_bases").json()["data"]
        return [Remote(**kb) for kb in data]

    #: The local check, on the server's list of knowledge bases (the same errors, the same messages).
    check_answerable = RagService.check_answerable

    def create_knowledge_base(self, name: str) -> None:
        self._request("POST", "/v1/knowledge_bases", json={"name": name})

    def delete_knowledge_base(self, name: str) -> int:
        return int(self._request("DELETE", f"/v1/knowledge_bases/{quote(name, safe='')}").json()["chunks"])

    def documents(self, knowledge_base: str | None = None) -> list[Remote]:
        name = quote(knowledge_base or self.settings.knowledge_base, safe="")
        data = self._request("GET", f"/v1/knowledge_bases/{name}/documents").json()["data"]
        return [Remote(**d) for d in data]

    def delete_documents(self, names: Sequence[str], knowledge_base: str | None = None) -> Remote:
        name = quote(knowledge_base or self.settings.knowledge_base, safe="")
        data = self._request("DELETE", f"/v1/knowledge_bases/{name}/documents", params={"file": list(names)}).json()
        return Remote(**data)

    def _kb_path(self, knowledge_base: str | None, route: str) -> str:
        return f"/v1/knowledge_bases/{quote(knowledge_base or self.settings.knowledge_base, safe='')}/{route}"

    def chunks(self, source: str, knowledge_base: str | None = None) -> list[dict[str, Any]]:
        """A document's chunks in order: ``index``, ``page``, ``text`` (the app's chunk browser)."""
        response = self._request("GET", self._kb_path(knowledge_base, "chunks"), params={"file": source})
        return list(response.json()["data"])

    def passage_context(
        self, source: str, first: int, last: int | None = None, knowledge_base: str | None = None
    ) -> tuple[str, str, str]:
        """(text before, the passage, text after) for chunks ``first``..``last`` of a document."""
        params: dict[str, Any] = {"file": source, "start": first}
        if last is not None:
            params["end"] = last
        data = self._request("GET", self._kb_path(knowledge_base, "passage"), params=params).json()
        return data["before"], data["text"], data["after"]

    def page_image(
        self, source: str, page: int, highlight: str | None = None, knowledge_base: str | None = None
    ) -> bytes | None:
        """PNG of a PDF page rendered by the server, ``highlight`` marked; ``None`` when the server has no image
        of it (no PDF, or its file not kept there), as the local service says."""
        body = {"file": source, "page": page, "passage": highlight}
        try:
            return self._request("POST", self._kb_path(knowledge_base, "page"), json=body).content
        except _NoPageImage:
            return None

    def search(self, query: str, knowledge_base: str | None = None) -> dict[str, Any]:
        """Retrieval alone, scored part by part, as the local service's hit test (the server's embedder)."""
        data = self._request("POST", self._kb_path(knowledge_base, "search"), json={"query": query}).json()
        data.pop("object", None)
        return dict(data)

    def supported_extensions(self) -> list[str]:
        """File extensions the server's loaders read."""
        return list(self._request("GET", "/v1/file_types").json()["data"])

    def ingest(
        self,
        paths: Sequence[str | Path],
        *,
        knowledge_base: str | None = None,
        progress: Any = None,
        passwords: dict[str, str] | None = None,
        prune: bool = False,
        follow_symlinks: bool | None = None,
    ) -> RemoteIngestReport:
        """Upload the files (folders: their files, recursively, hidden ones skipped) and ingest them on the
        server; ``progress`` gets the server's progress events while it works. The server keeps each under
        its file name (a folder's structure is not kept)."""
        if prune:
            raise RemoteServerError("--prune is not available through server_url", hint="delete documents instead")
        files = _files(paths, follow_symlinks=bool(follow_symlinks))
        if not files:
            raise RemoteServerError("no files to upload", hint="")
        with ExitStack() as stack:
            parts = [(f.name, stack.enter_context(f.open("rb"))) for f in files]
            return self._upload(parts, knowledge_base, progress, passwords)

    def ingest_uploads(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        knowledge_base: str | None = None,
        progress: Any = None,
        passwords: dict[str, str] | None = None,
    ) -> RemoteIngestReport:
        """Uploaded ``(name, bytes)`` files (a zip is unpacked), kept and ingested by the server."""
        return self._upload(list(files), knowledge_base, progress, passwords)

    def _upload(
        self, parts: list[tuple[str, Any]], knowledge_base: str | None, progress: Any, passwords: dict[str, str] | None
    ) -> RemoteIngestReport:
        name = quote(knowledge_base or self.settings.knowledge_base, safe="")
        job = self._request(
            "POST", f"/v1/knowledge_bases/{name}/documents", params={"wait": "false"},
            files=[("files", part) for part in parts], data={"passwords": json.dumps(passwords or {})},
        ).json()
        last: dict[str, Any] | None = None
        while job["status"] not in ("done", "failed"):
            time.sleep(POLL_SECONDS)
            job = self._request("GET", f"/v1/jobs/{job['id']}").json()
            if progress is not None and job.get("progress") and job["progress"] != last:
                last = job["progress"]
                progress(Remote(**last))
        if job["status"] == "failed":
            raise RemoteServerError(f"ingestion failed on the server: {job.get('error')}", hint="")
        report = dict(job["report"])
        files = [Remote(**f) for f in report.pop("files")]
        text = report.pop("summary", "")
        return RemoteIngestReport(**{**report, "files": files, "text": text})

    # --- answers --------------------------------------------------------------------------------------------

    def chain(self, knowledge_base: str | None = None) -> Runnable[Any, dict[str, Any]]:
        return RemoteChain(self, knowledge_base)

    def loaded(self) -> dict[str, bool]:
        """Whether the server has its models loaded (its /readyz)."""
        try:
            response = self._client.get("/readyz")
        except httpx.HTTPError as exc:
            raise RemoteServerError(f"cannot reach the server at {self.base_url}: {exc}") from exc
        return dict(response.json().get("models") or {"llm": False, "embeddings": False})

    model_catalog = staticmethod(RagService.model_catalog)
    # What belongs to this user, not to the server: the saved conversations (in this data dir) and the settings
    # file. The same code as the local service: neither touches a model or the store.
    conversations = RagService.conversations
    save_settings = RagService.save_settings

    def source_file(self, source: str, knowledge_base: str | None = None) -> Path | None:
        """None: the uploaded files live with the server (the app then offers no re-ingest or summary of them;
        their pages come through :meth:`page_image`)."""
        return None

    def __getattr__(self, name: str) -> Any:
        # A local service's method this client does not offer: a named error (an AttributeError too, so that
        # ``hasattr`` says no) instead of a bare AttributeError's stack trace in a face.
        if name.startswith("_"):
            raise AttributeError(name)
        raise RemoteUnsupportedError(f"'{name}' is not available through server_url", hint="unset server_url for it")

    def _local_only(self, what: str) -> RagError:
        return RemoteServerError(f"{what} runs locally, not through server_url", hint="unset server_url for it")

    def retriever(self, knowledge_base: str | None = None) -> Any:
        raise self._local_only("a retriever object (search() goes through the server)")

    def summarize(self, *args: Any, **kwargs: Any) -> Any:
        raise self._local_only("summarize")

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        raise self._local_only("eval")

    def doctor(self) -> Any:
        raise self._local_only("doctor")


def _files(paths: Sequence[str | Path], *, follow_symlinks: bool = False) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            out += [
                p for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (follow_symlinks or not p.is_symlink())
            ]
        elif path.is_file():
            out.append(path)
        else:
            raise RemoteServerError(f"no such file or folder: {path}", hint="")
    return out
