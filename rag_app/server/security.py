"""The gate in front of the HTTP app: who may talk to it (Host, Origin, API key) and how much they may send, decided
from the request's headers before a byte of its body is read or parsed.

:class:`Gate` is a pure ASGI middleware, the outermost layer of :func:`rag_app.server.app.create_app`, so nothing
behind it (FastAPI's body parsing, the routes) runs for a request it refuses:

- **Host** must name this server: ``localhost``, a loopback address, the bound address, or one of
  ``server.allowed_hosts`` (the port is not compared). A web page whose own name resolves to 127.0.0.1 (DNS
  rebinding) sends its own name, and is refused with 403. Bound to a wildcard address (``0.0.0.0``, ``::``), any
  IP address is accepted too: rebinding needs a name.
- **Origin**, on a request that changes something (any method but GET, HEAD, OPTIONS), must be the server's own,
  the app's (``server.allowed_origins``) or one of ``server.cors_origins`` when a browser sends it; ``null`` and
  any other origin get 403. That stops a cross-site form post. Clients that send no Origin (the CLI, Python
  clients, the Streamlit app's backend) are not browsers on another site and pass.
- **API key**, when ``server.api_keys`` is set, on every route but ``/healthz`` and ``/readyz`` (the OpenAPI
  schema included); compared in constant time. An empty configured key matches nothing.
- **Size**: a declared Content-Length over the limit is refused at once (413); a body without one (chunked) is
  counted as it arrives. A JSON (any non-multipart) body is limited by ``server.max_json_kb`` and read here in
  full before the app sees it, so that FastAPI's parsing of it never costs more than that; a multipart upload
  by ``server.max_upload_mb``, counted as the app streams it.

:func:`scrub_paths` takes absolute paths out of the messages the server sends.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from rag_app.settings import Settings

logger = logging.getLogger(__name__)

#: The shortest API key ``rag serve`` accepts: a key a person might type ("secret", "test") can be guessed.
MIN_API_KEY_CHARS = 16
#: Routes any client may call, key or not (a load balancer's probes); the Host check still applies.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
#: Methods a browser may send cross-site without asking; they change nothing here.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BodyTooLarge(HTTPException):
    """Raised while a body streams in past its limit (an HTTP exception, so that FastAPI's body reading passes it
    on instead of calling it a parse error)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def error_response(
    status: int, message: str, code: str, *, type: str = "invalid_request_error", headers: dict[str, str] | None = None
) -> JSONResponse:
    """OpenAI's error shape, as :class:`rag_app.server.app.ApiError` sends it (the gate runs outside the app)."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def weak_api_key(keys: Iterable[str]) -> str | None:
    """Why these configured keys must not serve (an empty or short one), or ``None`` when they are all fine."""
    for key in keys:
        if not key.strip():
            return "an API key is empty: anyone could send it"
        if len(key.strip()) < MIN_API_KEY_CHARS:
            return f"an API key is shorter than {MIN_API_KEY_CHARS} characters: it could be guessed"
    return None


def _host_of(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) as the lower-case host without a trailing dot, and the port;
    ``None`` when it is not a host at all."""
    value = value.strip().lower()
    port = ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host = value  # a bare name, or an IPv6 address without brackets
    if port and not port.isdigit():
        return None
    host = host.rstrip(".")
    if not host or any(c in host for c in "/@?#\\ "):
        return None
    return host, int(port) if port else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _origin_of(value: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` as (scheme, host, port with the scheme's default); ``None`` for ``null`` or
    anything that is not an origin."""
    scheme, sep, rest = value.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or "/" in rest.rstrip("/"):
        return None
    parsed = _host_of(rest.rstrip("/"))
    if parsed is None:
        return None
    host, port = parsed
    return scheme, host, port or _DEFAULT_PORTS[scheme]


class Gate:
    """Pure ASGI middleware: Host, Origin, API key and body size, checked before the app runs."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        conf = settings.server
        self.app = app
        bound = (_host_of(conf.host) or (conf.host.strip("[]").lower(), None))[0]
        self.any_ip = conf.host.strip("[]") in _WILDCARD_BINDS
        names = {"localhost", "127.0.0.1", "::1", bound}
        self.any_host = "*" in conf.allowed_hosts
        self.suffixes = tuple(h.lower().rstrip(".") for h in conf.allowed_hosts if h.startswith("."))
        for entry in conf.allowed_hosts:
            if entry != "*" and not entry.startswith(".") and (parsed := _host_of(entry)):
                names.add(parsed[0])
        self.hosts = frozenset(names)
        self.origins = frozenset(o for o in map(_origin_of, [*conf.cors_origins, *conf.allowed_origins]) if o)
        self.keyed = bool(conf.api_keys)
        self.keys = [k.strip().encode("utf-8") for k in conf.api_keys if k.strip()]
        self.max_json = int(conf.max_json_kb * 1024)
        self.max_upload = int(conf.max_upload_mb * 2**20)
        self.json_too_large = f"the request body is larger than server.max_json_kb ({conf.max_json_kb:g} KB)"
        self.upload_too_large = f"the request is larger than server.max_upload_mb ({conf.max_upload_mb:g} MB)"

    # --- the checks ------------------------------------------------------------------------------------------

    def host_allowed(self, host: str) -> bool:
        if self.any_host or host in self.hosts or any(host.endswith(s) or host == s[1:] for s in self.suffixes):
            return True
        ip = _ip(host)
        return ip is not None and (ip.is_loopback or self.any_ip)

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        parsed = _origin_of(origin)
        if parsed is None:  # "null" (a sandboxed page, a file: URL, a redirect), or garbage
            return False
        if parsed in self.origins:
            return True
        scheme, host, port = parsed
        own = _host_of(host_header)
        # The server's own origin: what the browser sent it as Host, scheme and port included.
        return own is not None and own[0] == host and (own[1] or _DEFAULT_PORTS[scheme]) == port

    def key_ok(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        given = token.strip().encode("utf-8")
        matched = False
        for key in self.keys:  # every key compared, each in constant time
            matched |= hmac.compare_digest(given, key)
        return scheme.lower() == "bearer" and bool(given) and matched

    def refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        """The response that refuses this request by its headers alone, or ``None`` to let it in."""
        host_header = headers.get("host", "")
        parsed = _host_of(host_header)
        if parsed is None or not self.host_allowed(parsed[0]):
            logger.warning("refused a request for Host %r (not this server's name)", host_header[:100])
            return error_response(403, "this server does not answer to that Host name: add it to "
                                  "server.allowed_hosts if it is this server's", "host_not_allowed")
        method = scope.get("method", "GET").upper()
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and not self.origin_allowed(origin, host_header):
                logger.warning("refused a %s from Origin %r", method, origin[:100])
                return error_response(403, "requests from that web page's origin are refused: add it to "
                                      "server.cors_origins if it is yours", "origin_not_allowed")
            if origin is None and headers.get("sec-fetch-site") == "cross-site":
                return error_response(403, "cross-site requests are refused", "origin_not_allowed")
        if self.keyed and method != "OPTIONS" and scope.get("path") not in PUBLIC_PATHS:
            if not self.key_ok(headers.get("authorization", "")):
                return error_response(401, "missing or invalid API key: send 'Authorization: Bearer KEY'",
                                      "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return None

    # --- ASGI ------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refused = self.refusal(scope, headers)
        if refused is not None:
            await refused(scope, receive, send)
            return
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        limit, message = (self.max_upload, self.upload_too_large) if multipart else (self.max_json, self.json_too_large)
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            status = 413 if length.strip().isdigit() else 400
            text = message if status == 413 else "the Content-Length header is not a number"
            await error_response(status, text, "request_too_large" if status == 413 else "invalid_request")(
                scope, receive, send)
            return
        if multipart:
            await self._streamed(scope, receive, send, limit, message)
        else:
            await self._buffered(scope, receive, send, limit, message)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int, message: str) -> None:
        """Read the whole (small) body here, refusing it once past ``limit``; then hand it to the app."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_response(413, message, "request_too_large")(scope, receive, send)
                return
            parts.append(chunk)
            if not event.get("more_body", False):
                break
        body: bytes | None = b"".join(parts)

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                event, body = {"type": "http.request", "body": body, "more_body": False}, None
                return event
            return await receive()  # after the body: the disconnect, which the routes watch for

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int, message: str) -> None:
        """Pass a large body through as the app reads it, counting; past ``limit`` the read raises
        :class:`BodyTooLarge` (the app's handler answers 413; here only if it had not answered yet)."""
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(message)
            return event

        async def tracked(event: Message) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await error_response(413, message, "request_too_large")(scope, receive, send)


# --- paths out of messages ---------------------------------------------------------------------------------------

# An absolute POSIX path of at least two parts (not an API route such as /v1/chat/completions, not part of a URL
# or of "text/plain"), or a Windows one.
_POSIX_PATH = re.compile(r"(?<![\w.:/~-])/(?!v1/)(?:[^/\s'\"`<>|]+/)+[^/\s'\"`<>|,;:)\]]*")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\\\s'\"`<>|]+\\)*[^\\\s'\"`<>|,;:)\]]*")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path cut to its base name (``/home/ann/data/default/files/a.pdf`` →
    ``a.pdf``): the home and temporary directories, the data directory and the server's layout stay on the
    server. API routes (``/v1/...``), URLs and media types are left alone."""
    if "/" not in text and "\\" not in text:
        return text

    def base(match: re.Match[str]) -> str:
        path = match.group(0).rstrip("/\\")
        return re.split(r"[/\\]", path)[-1] or path

    return _WINDOWS_PATH.sub(base, _POSIX_PATH.sub(base, text))
