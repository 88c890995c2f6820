"""The HTTP face: an OpenAI-compatible API over :class:`rag_app.service.RagService`, plus knowledge-base and
document routes.

``create_app(service, settings)`` builds the FastAPI app; ``rag serve`` runs it with uvicorn. Chat completions
answer from a knowledge base (``model = "kb/<name>"`` or the extra ``knowledge_base`` field) and carry the
answer's numbered sources in an extra ``sources`` field (on the response, and on the first and last stream
chunks) with the chain's ``grounding`` verdict. Every error is OpenAI's ``{"error": {message, type, param,
code}}`` with its HTTP status; nothing a client sends can produce a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from rag_app.errors import (
    DocumentNotFoundError,
    EmbedderMismatchError,
    EmptyKnowledgeBaseError,
    InsecureServerError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNameError,
    KnowledgeBaseNotFoundError,
    RagError,
    ServerBusyError,
    StoreBusyError,
    as_disk_full,
)
from rag_app.server.queue import GenerationCancelled, GenerationQueue, ModelGate, Ticket
from rag_app.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    CreateKnowledgeBase,
    EmbeddingRequest,
    PageRequest,
    SearchRequest,
)
from rag_app.server.security import MIN_API_KEY_CHARS, BodyTooLarge, Gate, scrub_paths, weak_api_key
from rag_app.server.streaming import StopFilter, threaded_stream
from rag_app.server.jobs import Jobs, to_jsonable
from rag_app.names import check_knowledge_base_name
from rag_app.settings import Settings
from rag_app.uploads import UploadError

logger = logging.getLogger(__name__)

KB_PREFIX = "kb/"


class ApiError(Exception):
    """An error with its HTTP status, in OpenAI's format."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
        param: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The error as the client sees it; the one place every error body passes, so absolute paths (the data
        directory, home, tmp) are cut to base names here."""
        message = scrub_paths(self.message)
        return {"error": {"message": message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def api_error(exc: BaseException) -> ApiError:
    """The client's view of any error: a status and one clear message (the details stay in the log)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ServerBusyError):
        return ApiError(503, exc.friendly(), type="server_error", code="server_busy",
                        headers={"Retry-After": str(exc.retry_after)})
    if (full := as_disk_full(exc)) is not None:  # a DiskFullError, or a raw ENOSPC / SQLITE_FULL from a write
        return ApiError(507, full.friendly(), type="server_error", code="disk_full")
    if isinstance(exc, KnowledgeBaseNameError):
        return ApiError(400, exc.friendly(), code="invalid_name", param="name")
    if isinstance(exc, KnowledgeBaseNotFoundError | DocumentNotFoundError):
        return ApiError(404, exc.friendly(), code="not_found")
    if isinstance(exc, KnowledgeBaseExistsError):
        return ApiError(409, exc.friendly(), code="already_exists")
    if isinstance(exc, EmptyKnowledgeBaseError):
        return ApiError(400, exc.friendly(), code="knowledge_base_empty")
    if isinstance(exc, EmbedderMismatchError):
        return ApiError(409, exc.friendly(), code="embedder_mismatch")
    if isinstance(exc, StoreBusyError):
        return ApiError(503, exc.friendly(), type="server_error", code="store_busy", headers={"Retry-After": "5"})
    if isinstance(exc, UploadError):
        return ApiError(400, exc.friendly(), code="invalid_upload")
    if isinstance(exc, GenerationCancelled):
        return ApiError(499, str(exc), code="cancelled")
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request took longer than server.request_timeout", type="server_error",
                        code="timeout")
    if type(exc).__name__ == "ContextOverflowError":  # rag_app.chain's; not imported to keep the face thin
        return ApiError(400, exc.friendly(), code="context_length_exceeded")  # type: ignore[attr-defined]
    if type(exc).__name__ == "PreviewError":  # rag_app.preview's: no such page, a PDF that cannot be opened
        return ApiError(400, exc.friendly(), code="preview_failed")  # type: ignore[attr-defined]
    if isinstance(exc, RagError):
        return ApiError(500, exc.friendly(), type="server_error")
    logger.error("unexpected error", exc_info=exc)
    return ApiError(500, "internal server error (see the server log)", type="server_error")


#: Raised while a body streams past its limit; the gate (rag_app.server.security) sets the limits.
_BodyTooLarge = BodyTooLarge


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve with settings that let others in: beyond this machine without API keys, or with an empty
    or short key (from --api-key, the TOML file or RAG_SERVER__API_KEYS alike)."""
    conf = settings.server
    if not _is_loopback(conf.host) and not conf.api_keys:
        raise InsecureServerError(
            f"refusing to listen on {conf.host} without API keys: anyone who can reach it could use it",
            hint="set server.api_keys (RAG_SERVER__API_KEYS='[\"KEY\"]' or --api-key KEY), or use --host 127.0.0.1",
        )
    if (why := weak_api_key(conf.api_keys)) is not None:
        raise InsecureServerError(
            f"refusing to serve: {why}",
            hint=f"use keys of {MIN_API_KEY_CHARS} characters or more, e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'",
        )


class _State:
    """What the routes share: the service, the model queue, the worker threads, the ingestion jobs."""

    def __init__(self, service: Any, settings: Settings) -> None:
        conf = settings.server
        self.service = service
        self.settings = settings
        self.queue = GenerationQueue(conf.queue_size)
        # A few threads for the admitted requests (server.workers): one generates, the next have their retrieval
        # done and wait for the model; the rest wait in line, admitted. One thread per request would starve the
        # event loop: each start waits for the GIL behind the others, on the loop's thread.
        self.workers = ThreadPoolExecutor(max_workers=conf.workers, thread_name_prefix="rag-request")
        #: Page renders at once (each may take a second and tens of MB); more wait briefly, then 503.
        self.renders = asyncio.Semaphore(conf.page_renders)
        self.jobs = Jobs(settings.data_dir)
        self.warm_error: str | None = None

    def warm_up(self) -> None:
        try:
            self.service.warm_up()
        except RagError as exc:
            self.warm_error = exc.friendly()
            logger.error("models could not be loaded: %s", self.warm_error)
        except Exception as exc:  # readyz says so; requests will report their own errors
            self.warm_error = f"models could not be loaded: {type(exc).__name__}"
            logger.exception("models could not be loaded")


def create_app(service: Any, settings: Settings, *, warm_up: bool = True, announce: bool = False) -> FastAPI:
    """The FastAPI app serving ``service``. ``warm_up``: load the models in the background at start
    (``/readyz`` says when they are loaded). ``announce``: say in ``data_dir/server.json`` while it runs that
    it serves ``settings.server``'s address (``rag serve``: ``rag ask`` on that data dir then asks it)."""
    from rag_app.discovery import announced

    state = _State(service, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            threading.Thread(target=state.warm_up, name="rag-warm-up", daemon=True).start()
        await asyncio.to_thread(state.jobs.recover, service)  # what a killed server left (issue 18)
        with announced(settings) if announce else contextlib.nullcontext():  # removed at shutdown
            yield
        state.workers.shutdown(wait=False, cancel_futures=True)
        state.jobs.shutdown()

    app = FastAPI(title="rag-app", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.rag = state
    if settings.server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    # Outermost (added last): Host, Origin, API key and size are settled before anything reads the body.
    app.add_middleware(Gate, settings=settings)
    _install_error_handlers(app)
    auth = _auth_dependency(settings)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        loaded = service.loaded()
        if all(loaded.values()):
            return JSONResponse({"status": "ready", "models": loaded, "queue": state.queue.stats()})
        message = state.warm_error or "the models are still loading"
        err = ApiError(503, message, type="server_error", code="not_ready", headers={"Retry-After": "5"})
        body = err.body() | {"models": loaded}
        return JSONResponse(body, status_code=503, headers=err.headers)

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def list_models() -> dict[str, Any]:
        kbs = await _call(service.knowledge_bases)
        created = int(time.time())
        data = [{"id": service.llm_id(), "object": "model", "created": created, "owned_by": "rag-app"}]
        data += [
            {"id": KB_PREFIX + kb.name, "object": "model", "created": created, "owned_by": "rag-app",
             "knowledge_base": kb.name, "chunks": kb.chunks}
            for kb in kbs
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await _chat(state, body, request)

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _completion(state, body, request)

    @app.post("/v1/embeddings", dependencies=[Depends(auth)])
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or any(not isinstance(t, str) for t in texts):
            raise ApiError(400, "'input' must be a non-empty string or list of strings", param="input")
        vectors, tokens = await _call(service.embed, texts)
        data = [
            {"object": "embedding", "index": i,
             "embedding": _b64(v) if body.encoding_format == "base64" else [float(x) for x in v]}
            for i, v in enumerate(vectors)
        ]
        return {"object": "list", "data": data, "model": service.embedder_id(),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.get("/v1/knowledge_bases", dependencies=[Depends(auth)])
    async def list_kbs() -> dict[str, Any]:
        kbs = await _call(service.knowledge_bases)
        return {"object": "list", "data": [_kb_json(kb) for kb in kbs]}

    @app.post("/v1/knowledge_bases", status_code=201, dependencies=[Depends(auth)])
    async def create_kb(body: CreateKnowledgeBase) -> dict[str, Any]:
        name = check_knowledge_base_name(body.name)  # the one rule (rag_app.names): 400 invalid_name
        await _call(service.create_knowledge_base, name)
        return {"object": "knowledge_base", "name": name, "created": True}

    @app.delete("/v1/knowledge_bases/{name}", dependencies=[Depends(auth)])
    async def delete_kb(name: str) -> dict[str, Any]:
        await _known_kb(service, name)
        chunks = await _call(service.delete_knowledge_base, name)
        return {"object": "knowledge_base", "name": name, "deleted": True, "chunks": chunks}

    @app.get("/v1/knowledge_bases/{name}/documents", dependencies=[Depends(auth)])
    async def list_documents(name: str) -> dict[str, Any]:
        await _known_kb(service, name)
        records = await _call(service.documents, name)
        return {"object": "list", "data": [to_jsonable(r) for r in records]}

    @app.delete("/v1/knowledge_bases/{name}/documents", dependencies=[Depends(auth)])
    async def delete_documents(name: str, request: Request) -> dict[str, Any]:
        files = request.query_params.getlist("file")
        if not files:
            raise ApiError(400, "name the documents to delete: ?file=NAME (repeatable)", param="file")
        await _known_kb(service, name)
        removal = await _call(service.delete_documents, files, name)
        return {"object": "removal", **to_jsonable(removal)}

    @app.post("/v1/knowledge_bases/{name}/documents", dependencies=[Depends(auth)])
    async def upload(name: str, request: Request) -> Response:
        return await _upload(state, name, request)

    # The app's views of a knowledge base (search, chunk browser, a cited passage, a PDF page), so that they work
    # through server_url too: retrieval and rendering run in the thread pool.

    @app.post("/v1/knowledge_bases/{name}/search", dependencies=[Depends(auth)])
    async def search(name: str, body: SearchRequest) -> dict[str, Any]:
        query = body.query.strip()
        if not query:
            raise ApiError(400, "the query is empty", param="query")
        await _known_kb(service, name)
        return {"object": "search", **await _call(service.search, query, name)}

    @app.get("/v1/knowledge_bases/{name}/chunks", dependencies=[Depends(auth)])
    async def chunks(name: str, file: str = Query(min_length=1)) -> dict[str, Any]:
        await _known_kb(service, name)
        return {"object": "list", "data": await _call(service.chunks, file, name)}

    @app.get("/v1/knowledge_bases/{name}/passage", dependencies=[Depends(auth)])
    async def passage(
        name: str, file: str = Query(min_length=1), start: int = Query(ge=0), end: int | None = Query(None, ge=0)
    ) -> dict[str, Any]:
        if end is not None and end < start:
            raise ApiError(400, f"end ({end}) is before start ({start})", param="end")
        await _known_kb(service, name)
        before, text, after = await _call(service.passage_context, file, start, end, name)
        return {"object": "passage", "before": before, "text": text, "after": after}

    @app.get("/v1/knowledge_bases/{name}/page", dependencies=[Depends(auth)])
    async def page_get(
        name: str, file: str = Query(min_length=1), page: int = Query(ge=1), passage: str | None = None
    ) -> Response:
        return await _page_png(state, name, file, page, passage)

    @app.post("/v1/knowledge_bases/{name}/page", dependencies=[Depends(auth)])
    async def page_post(name: str, body: PageRequest) -> Response:
        return await _page_png(state, name, body.file, body.page, body.passage)

    @app.get("/v1/file_types", dependencies=[Depends(auth)])
    async def file_types() -> dict[str, Any]:
        return {"object": "list", "data": service.supported_extensions()}

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    async def job(job_id: str) -> dict[str, Any]:
        found = state.jobs.get(job_id)
        if found is None:
            raise ApiError(404, f"no ingestion job '{job_id}'", code="not_found", param="job_id")
        public = found.public()
        if public.get("error"):  # a failed job's message is an error body too: no server paths
            public["error"] = scrub_paths(str(public["error"]))
        return public

    return app


# --- helpers -------------------------------------------------------------------------------------------------


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking service call in the thread pool, so the event loop keeps serving."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _kb_json(kb: Any) -> dict[str, Any]:
    return {"object": "knowledge_base", "name": kb.name, "chunks": kb.chunks, "embedder": kb.embedder,
            "model": KB_PREFIX + kb.name}


async def _known_kb(service: Any, name: str) -> Any:
    kbs = {kb.name: kb for kb in await _call(service.knowledge_bases)}
    if name not in kbs:
        existing = f" (existing: {', '.join(sorted(kbs))})" if kbs else ""
        raise ApiError(404, f"knowledge base '{name}' does not exist{existing}", code="knowledge_base_not_found")
    return kbs[name]


#: Seconds a page request waits for a render slot before it is refused with 503.
_RENDER_WAIT = 5.0


async def _page_png(state: _State, name: str, file: str, page: int, passage: str | None) -> Response:
    """The page as PNG, or 404 ``no_page_image`` where the service has none (no PDF, or its file not kept).
    Rendered in the thread pool, at most ``server.page_renders`` at once: a flood of page requests costs
    bounded CPU and memory and leaves the event loop (and the other routes) free."""
    service = state.service
    await _known_kb(service, name)
    try:
        await asyncio.wait_for(state.renders.acquire(), _RENDER_WAIT)
    except TimeoutError:
        raise ServerBusyError(
            f"{state.settings.server.page_renders} page images are being rendered", retry_after=2
        ) from None
    try:
        png = await _call(service.page_image, file, page, passage or None, name)
    finally:
        state.renders.release()
    if png is None:
        raise ApiError(
            404,
            f"no page image of '{file}': it is no PDF, or its file is neither kept nor where it was ingested from",
            code="no_page_image",
            param="file",
        )
    return Response(png, media_type="image/png")


def _auth_dependency(settings: Settings) -> Callable[[Request], Awaitable[None]]:
    """The key check again on each keyed route, behind the gate that already made it (before the body was
    read): the same rule (:meth:`Gate.key_ok`), so that a route stays closed should the middleware be left out."""

    async def no_app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never called
        raise RuntimeError("the key check has no app of its own")

    gate = Gate(no_app, settings)

    async def check(request: Request) -> None:
        if gate.keyed and not gate.key_ok(request.headers.get("authorization", "")):
            raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RagError)
    async def on_rag_error(request: Request, exc: RagError) -> JSONResponse:
        return api_error(exc).response()

    @app.exception_handler(_BodyTooLarge)
    async def on_too_large(request: Request, exc: _BodyTooLarge) -> JSONResponse:  # an upload past its limit
        return ApiError(413, str(exc.detail), code="request_too_large").response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return ApiError(400, f"malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}",
                            code="invalid_json").response()
        where = list(first.get("loc", ()))
        if where and where[0] in ("body", "query", "path"):  # the field's name, not where it was sent
            where = where[1:]
        loc = [str(p) for p in where]
        param = ".".join(loc) or None
        message = f"invalid request: {param + ': ' if param else ''}{first.get('msg', 'invalid value')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return ApiError(422, message, code="invalid_value", param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, str(exc.detail), code=code, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return api_error(exc).response()


# --- chat completions ----------------------------------------------------------------------------------------


def _knowledge_base(state: _State, body: ChatCompletionRequest) -> str:
    if body.knowledge_base:
        return body.knowledge_base
    if body.model.startswith(KB_PREFIX) and len(body.model) > len(KB_PREFIX):
        return body.model[len(KB_PREFIX):]
    if body.model in (state.service.llm_id(), "", "default"):
        return state.settings.knowledge_base
    raise ApiError(404, f"unknown model '{body.model}': use 'kb/<knowledge base>' (GET /v1/models lists them)",
                   code="model_not_found", param="model")


def _question_and_history(body: ChatCompletionRequest) -> tuple[str, list[dict[str, str]]]:
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not body.messages:
        raise ApiError(400, "'messages' is empty: send at least one user message", param="messages")
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question", param="messages")
    question = turns[-1].text().strip()
    if not question:
        raise ApiError(400, "the user's question is empty", param="messages")
    history = [{"role": m.role, "content": m.text()} for m in turns[:-1]]
    return question, history


def _generation(body: Any) -> dict[str, Any]:
    if body.n != 1:
        raise ApiError(400, "only n = 1 is supported", param="n")
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    return {"max_new_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p}


def _usage(llm: Any, gate: ModelGate, last: str | None = None) -> dict[str, int]:
    """Tokens of the request's model calls (prompts and completions). ``last``: the text the client got of
    the final call where it was cut at a stop sequence; the model ran on a token or two past it (held back
    by the stop filter) or is still stopping, so its own record is not the answer's."""
    completions = list(gate.completions)
    if last is not None:
        completions[-1:] = [last]
    prompt = sum(llm.count_tokens(p) for p in list(gate.prompts))
    completion = sum(llm.count_tokens(c) for c in completions if c)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Answer:
    """One chat answer as it streams: text pieces (cut at the client's stop sequences), then its sources,
    grounding, usage and finish reason."""

    def __init__(self, state: _State, body: ChatCompletionRequest, request: Request) -> None:
        self.state, self.body, self.request = state, body, request
        self.question, self.history = _question_and_history(body)
        self.kb = _knowledge_base(state, body)
        self.generation = _generation(body)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.sources: list[dict[str, Any]] = []
        self.grounding: dict[str, Any] | None = None
        self.usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.finish_reason = "stop"
        self.text = ""
        self._passages: list[str] = []
        self._stop = StopFilter(body.stops())
        self.ticket: Ticket | None = None
        self.gate: ModelGate | None = None
        self.have_sources = False

    async def start(self) -> AsyncIterator[dict[str, Any]]:
        """Checks and admission (errors here get their HTTP status), then the chain's stream, primed up to
        the end of retrieval so that retrieval errors also get theirs."""
        await _known_kb(self.state.service, self.kb)
        ticket = self.ticket = self.state.queue.admit()
        try:
            stream = threaded_stream(self._produce(ticket), ticket, self.state.workers)
            first = await asyncio.wait_for(anext(stream), self.state.settings.server.request_timeout)
        except BaseException:
            ticket.cancel()
            ticket.leave()
            raise
        return _chain_items(first, stream)

    def _produce(self, ticket: Ticket) -> Callable[[], Iterator[dict[str, Any]]]:
        service, kb, gen = self.state.service, self.kb, self.generation
        inp: dict[str, Any] = {"question": self.question, "chat_history": self.history}
        if self.body.documents:
            inp["documents"] = list(self.body.documents)

        def produce() -> Iterator[dict[str, Any]]:
            chain = service.chain(kb, generation=gen)
            gate = self.gate = ModelGate(ticket)
            for chunk in chain.stream(inp, config={"callbacks": [gate]}):
                yield chunk
            llm = service.llm_for(**gen)
            self.usage = _usage(llm, gate)
            if gate.completions and gate.completions[-1]:
                used = llm.count_tokens(gate.completions[-1])
                if used >= getattr(llm, "max_new_tokens", used + 1):
                    self.finish_reason = "length"

        return produce

    def feed(self, chunk: dict[str, Any]) -> str:
        """The answer text this chunk adds (after stop sequences); remembers sources and grounding."""
        if "sources" in chunk:
            self.sources = list(chunk["sources"])
            self.have_sources = True
        if "context" in chunk:
            self._passages = [getattr(d, "page_content", "") for d in chunk["context"]]
        if "grounding" in chunk:
            self.grounding = dict(chunk["grounding"])
        piece = self._stop.feed(str(chunk["answer"])) if "answer" in chunk else ""
        self.text += piece
        return piece

    def flush(self) -> str:
        piece = self._stop.flush()
        self.text += piece
        return piece

    @property
    def stopped(self) -> bool:
        return self._stop.stopped

    def finish(self) -> None:
        """Sources marked cited; the grounding and the usage of a text cut at a stop sequence are those of that
        text (the stream was closed before the chain could count). Blocking: run it in the thread pool."""
        if self.stopped:
            self.finish_reason = "stop"
            self.grounding = self.state.service.check_support(self.question, self.text, self._passages)
            if self.gate is not None:
                self.usage = _usage(self.state.service.llm, self.gate, self.text)
        cited = set((self.grounding or {}).get("cited") or [])
        self.sources = [{**s, "cited": s.get("index") in cited} for s in self.sources]

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def response(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                         "finish_reason": self.finish_reason}],
            "usage": self.usage, "sources": self.sources, "grounding": self.grounding,
            "knowledge_base": self.kb, "queue_wait": self.queue_wait,
        }

    @property
    def queue_wait(self) -> float:
        """Seconds this request waited for the model (extra field; the load test reports it)."""
        return round(self.ticket.waited, 4) if self.ticket else 0.0


async def _chain_items(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async with contextlib.aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _chat(state: _State, body: ChatCompletionRequest, request: Request) -> Any:
    answer = _Answer(state, body, request)
    items = await answer.start()
    timeout = state.settings.server.request_timeout
    if body.stream:
        return StreamingResponse(_sse(answer, items, timeout), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def collect() -> None:
        async with contextlib.aclosing(items):
            async for chunk in items:
                answer.feed(chunk)
                if answer.stopped:
                    break
        answer.flush()

    await _until_done_or_gone(collect(), request, timeout)
    await _call(answer.finish)
    return answer.response()


async def _sse(answer: _Answer, items: AsyncIterator[dict[str, Any]], timeout: float) -> AsyncIterator[str]:
    """OpenAI's chunk stream: a first chunk with the role (and the sources, as retrieved), the answer's
    pieces, a last chunk with the finish reason, the sources marked cited, grounding and usage; then [DONE].
    An error after the stream began comes as an ``error`` event (the status is already sent)."""
    sent_sources = False
    try:
        async with contextlib.aclosing(items), asyncio.timeout(timeout):
            async for chunk in items:
                piece = answer.feed(chunk)
                if not sent_sources and (answer.have_sources or piece):
                    sent_sources = True
                    yield answer.chunk({"role": "assistant", "content": ""}, sources=answer.sources)
                if piece:
                    yield answer.chunk({"content": piece})
                if answer.stopped:
                    break
        if tail := answer.flush():
            yield answer.chunk({"content": tail})
        if not sent_sources:
            yield answer.chunk({"role": "assistant", "content": ""}, sources=answer.sources)
        await _call(answer.finish)
        yield answer.chunk({}, answer.finish_reason, sources=answer.sources, grounding=answer.grounding,
                           usage=answer.usage, knowledge_base=answer.kb, queue_wait=answer.queue_wait)
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException as exc:
        err = api_error(exc)
        yield f"data: {json.dumps(err.body(), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


async def _until_done_or_gone(work: Awaitable[None], request: Request, timeout: float) -> None:
    """Await ``work``; cancel it when the client disconnects (its generation stops) or time runs out."""
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                task.result()
                return
            if await request.is_disconnected():
                raise GenerationCancelled("the client disconnected")
            if time.monotonic() > deadline:
                raise TimeoutError
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


# --- completions ---------------------------------------------------------------------------------------------


async def _completion(state: _State, body: CompletionRequest, request: Request) -> Any:
    service = state.service
    if body.model.startswith(KB_PREFIX):
        raise ApiError(400, "/v1/completions is the bare model: use /v1/chat/completions for a knowledge base",
                       param="model")
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if len(prompts) != 1:
        raise ApiError(400, "send one prompt per request", param="prompt")
    prompt = prompts[0]
    if not prompt:
        raise ApiError(400, "the prompt is empty", param="prompt")
    gen = _generation(body)
    stops = body.stops()
    ticket = state.queue.admit()
    gate = ModelGate(ticket)
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    result: dict[str, Any] = {"finish_reason": "stop"}

    def produce() -> Iterator[str]:
        llm = service.llm_for(**gen)
        if llm.count_tokens(prompt) + 1 > llm.context_window:
            raise ApiError(400, f"the prompt is longer than the model's context window ({llm.context_window} "
                           "tokens)", code="context_length_exceeded", param="prompt")
        yield from llm.stream(prompt, config={"callbacks": [gate]}, stop=stops or None)  # type: ignore[attr-defined]
        result["usage"] = _usage(llm, gate)
        if gate.completions and llm.count_tokens(gate.completions[-1]) >= llm.max_new_tokens:
            result["finish_reason"] = "length"

    stop_filter = StopFilter(stops)

    def payload(text: str, finish: str | None, **extra: Any) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], **extra}

    async def _completion_end(sent: list[str]) -> tuple[dict[str, int], str]:
        """Usage and finish reason: the worker's when the stream ran to its end, else (cut at a stop
        sequence) those of the text sent."""
        if stop_filter.stopped or "usage" not in result:
            return await _call(_usage, service.llm, gate, "".join(sent)), "stop"
        return result["usage"], result["finish_reason"]

    stream = threaded_stream(produce, ticket, state.workers)
    timeout = state.settings.server.request_timeout
    sent: list[str] = []
    if body.stream:
        async def sse() -> AsyncIterator[str]:
            try:
                async with contextlib.aclosing(stream), asyncio.timeout(timeout):
                    if body.echo:
                        yield f"data: {json.dumps(payload(prompt, None), ensure_ascii=False)}\n\n"
                    async for piece in stream:
                        if text := stop_filter.feed(piece):
                            sent.append(text)
                            yield f"data: {json.dumps(payload(text, None), ensure_ascii=False)}\n\n"
                        if stop_filter.stopped:
                            break
                if tail := stop_filter.flush():
                    sent.append(tail)
                    yield f"data: {json.dumps(payload(tail, None), ensure_ascii=False)}\n\n"
                usage, finish = await _completion_end(sent)
                yield f"data: {json.dumps(payload('', finish, usage=usage))}\n\n"
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException as exc:
                yield f"data: {json.dumps(api_error(exc).body(), ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    parts: list[str] = []

    async def collect() -> None:
        async with contextlib.aclosing(stream):
            async for piece in stream:
                parts.append(stop_filter.feed(piece))
                if stop_filter.stopped:
                    break
        parts.append(stop_filter.flush())

    await _until_done_or_gone(collect(), request, timeout)
    usage, finish = await _completion_end(parts)
    text = (prompt if body.echo else "") + "".join(parts)
    return payload(text, finish, usage=usage)


# --- uploads -------------------------------------------------------------------------------------------------


async def _upload(state: _State, name: str, request: Request) -> Response:
    """Multipart upload (``files``: several, a zip is unpacked; ``passwords``: a JSON object file name →
    password), streamed to a spool folder as it arrives (:mod:`rag_app.server.spool`), kept and ingested by
    the service: with ``?wait=false`` at once 202 and a job to poll, else the per-file report when it is done.
    A client that goes away mid-upload leaves one warning in the log and nothing on disk."""
    from starlette.requests import ClientDisconnect

    from rag_app.server.spool import FormError, receive_multipart

    if not name.strip():
        raise ApiError(400, "the knowledge base name is empty")
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise ApiError(400, "send the files as multipart/form-data (field 'files')", param="files")
    job_id, spool = state.jobs.open_spool()
    submitted = False
    try:
        try:
            received = await receive_multipart(request, spool, max_files=1000, max_fields=100)
        except ClientDisconnect:
            logger.warning("upload into %r abandoned: the client disconnected before the end of its body", name)
            return Response(status_code=400)  # nobody reads it
        except FormError as exc:
            raise ApiError(400, str(exc), param="files") from None
        if not received.files:
            raise ApiError(400, "no files: send them in the multipart field 'files'", param="files")
        passwords: Any = {}
        raw = received.fields.get("passwords")
        if raw:
            try:
                passwords = json.loads(raw)
            except json.JSONDecodeError:
                passwords = None
            if not isinstance(passwords, dict) or not all(isinstance(v, str) for v in passwords.values()):
                raise ApiError(400, "'passwords' must be a JSON object of file name → password", param="passwords")
        job = state.jobs.submit(state.service, name, job_id, received.files, passwords)
        submitted = True
    finally:
        if not submitted:
            state.jobs.discard_spool(job_id)
    if request.query_params.get("wait", "true").lower() in ("0", "false", "no"):
        return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
    assert job.future is not None
    try:
        await asyncio.wrap_future(job.future)
    except BaseException as exc:
        raise api_error(exc) from None
    return JSONResponse({"object": "ingest.report", "job": job.id, **(job.report or {})})
