"""Finding a running ``rag serve`` for a data dir, so that ``rag ask`` borrows its warm models instead of
loading its own (seconds of imports and model loading saved on every question).

``rag serve`` announces itself in ``data_dir/server.json`` (pid, address, start time, whether it needs a key —
never the key) while it runs; :func:`connect` reads that file, ignores it when the process is gone or the
server does not answer within a fraction of a second, and returns a
:class:`rag_app.remote.RemoteRagService` for it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag_app.settings import Settings

logger = logging.getLogger(__name__)

#: The announcement's file name, in ``data_dir``.
FILE_NAME = "server.json"
#: Longest a look at an announced server may take before the CLI works locally instead (seconds).
PROBE_TIMEOUT_S = 0.3
#: Addresses that mean "every interface": a client on this machine reaches them on loopback.
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True)
class ServerInfo:
    """What a running ``rag serve`` says about itself in its data dir."""

    pid: int
    host: str
    port: int
    started: float
    needs_key: bool
    profile: str | None = None

    @property
    def url(self) -> str:
        host = _ANY.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Connection:
    """A usable server (``service`` set), or why the CLI works locally (``note``, ``None`` when no server was
    announced at all)."""

    service: Any = None
    info: ServerInfo | None = None
    ready: bool = False
    note: str | None = None


def server_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / FILE_NAME


@contextmanager
def announced(settings: Settings) -> Iterator[None]:
    """While the block runs, ``data_dir/server.json`` says this process serves ``settings.server``; removed
    at the end if it is still ours (a second server on the same data dir may have taken it over)."""
    conf = settings.server
    if conf.port == 0:  # the port is chosen by the OS: nothing useful to announce
        yield
        return
    info = ServerInfo(
        pid=os.getpid(), host=conf.host, port=conf.port, started=time.time(), needs_key=bool(conf.api_keys),
        profile=settings.profile,
    )
    path = server_file(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
    except OSError as exc:  # a read-only data dir: serve anyway, just not discoverable
        logger.warning("cannot write %s: %s", path, exc)
    try:
        yield
    finally:
        current = read(settings)
        if current is not None and current.pid == os.getpid():
            path.unlink(missing_ok=True)


def read(settings: Settings) -> ServerInfo | None:
    """The announcement in ``settings.data_dir``, or ``None`` when there is none or it is unreadable."""
    try:
        data = json.loads(server_file(settings).read_text(encoding="utf-8"))
        return ServerInfo(**{k: data[k] for k in ServerInfo.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    return True


def connect(settings: Settings) -> Connection:
    """A :class:`rag_app.remote.RemoteRagService` for the server announced in the data dir when it answers
    (within :data:`PROBE_TIMEOUT_S`) and accepts this user's ``server_api_key``; else why not."""
    info = read(settings)
    if info is None:
        return Connection()
    if not _alive(info.pid):
        logger.info("ignoring %s: process %d is gone", server_file(settings), info.pid)
        return Connection()
    if info.profile != settings.profile:
        return Connection(note=f"the server at {info.url} runs profile {info.profile!r}, not {settings.profile!r}; "
                               "working locally")
    if info.needs_key and not settings.server_api_key:
        return Connection(note=f"the server at {info.url} needs an API key (set server_api_key); working locally")
    import httpx

    headers = {"Authorization": f"Bearer {settings.server_api_key}"} if settings.server_api_key else {}
    try:
        with httpx.Client(base_url=info.url, headers=headers, timeout=PROBE_TIMEOUT_S) as probe:
            ready = probe.get("/readyz").status_code == 200
            if info.needs_key and probe.get("/v1/knowledge_bases").status_code == 401:
                return Connection(note=f"the server at {info.url} refused server_api_key; working locally")
    except httpx.HTTPError as exc:
        logger.info("ignoring %s: %s does not answer (%s)", server_file(settings), info.url, exc)
        return Connection()
    from rag_app.remote import RemoteRagService

    remote = settings.model_copy(update={"server_url": info.url})
    return Connection(service=RemoteRagService(remote), info=info, ready=ready)
