"""Runs a blocking stream (the chain, the bare model) in a worker thread and hands its items to the event loop.

The worker owns the iterator from start to end, so closing it (which stops the generation) happens in the
thread that runs it. The async side can give up at any time (client gone, timeout): it cancels the ticket,
which wakes the worker out of the queue or stops it at the next token; the worker then closes the stream and
frees the request's admission slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from rag_app.server.queue import GenerationCancelled, Ticket

logger = logging.getLogger(__name__)

T = TypeVar("T")

_END = object()


async def threaded_stream(
    produce: Callable[[], Iterator[T]], ticket: Ticket, executor: Executor
) -> AsyncIterator[T]:
    """Items of ``produce()`` as they come, computed in ``executor``; errors re-raised here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

    def put(kind: Any, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server stopping): nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        ticket.waited += time.perf_counter() - submitted  # in line for a worker (server.workers): a wait too
        stream: Iterator[T] | None = None
        try:
            if ticket.cancelled.is_set():  # gone while it waited for a worker: no retrieval for nobody
                raise GenerationCancelled("the request was cancelled while waiting for a worker")
            stream = produce()
            for item in stream:
                if ticket.cancelled.is_set():
                    break
                put("item", item)
            put(_END, None)
        except BaseException as exc:  # handed to the async side, which decides what the client sees
            put("error", exc)
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
            ticket.leave()

    submitted = time.perf_counter()
    future = loop.run_in_executor(executor, work)
    try:
        while True:
            kind, value = await queue.get()
            if kind is _END:
                break
            if kind == "error":
                raise value
            yield value
    finally:
        ticket.cancel()
        if not future.done():  # let the worker wind down in the background
            future.add_done_callback(lambda f: f.exception())


class StopFilter:
    """Cuts streamed text at the first of a client's ``stop`` sequences, holding back a possible start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        text = self.held + piece
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped, self.held = True, ""
            return text[: min(cuts)]
        keep = 0
        for stop in self.stops:  # the longest tail of text that is a start of some stop sequence
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        text, self.held = self.held, ""
        return "" if self.stopped else text


__all__ = ["StopFilter", "threaded_stream"]
