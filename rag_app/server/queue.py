"""The fair, bounded queue in front of the one model instance the server shares.

One loaded model answers one request at a time (llama.cpp holds one context). Requests are *admitted* up to
``server.queue_size`` (beyond that the server says 503 with Retry-After rather than letting waits grow
without bound); an admitted request does its retrieval as soon as one of ``server.workers`` threads takes it,
and waits for the model in first-come-first-served order only when it is about to generate. The wait happens inside a
LangChain callback (:class:`ModelGate`) on ``on_llm_start``, so the chain needs no change: every model call it
makes (condensing the question, the answer) takes its turn, and the same callback records the prompts and the
completion for the usage counts. A cancelled request (client gone) leaves the queue at once and stops its
generation at the next token.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from rag_app.errors import RagError, ServerBusyError

#: How often a waiting request looks at its cancel flag (seconds).
_POLL = 0.2


class GenerationCancelled(RagError):
    """The client went away (or the request timed out): the generation stops and its turn is given up."""


@dataclass
class Ticket:
    """One admitted request: its place in the queue, its cancel flag and what it measured."""

    queue: GenerationQueue
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Seconds spent waiting: for a worker thread, then for the model over all its model calls.
    waited: float = 0.0
    holding: int = 0
    left: bool = False

    def acquire(self) -> None:
        self.queue._acquire(self)

    def release(self) -> None:
        self.queue._release(self)

    def leave(self) -> None:
        """Done (finished, failed or cancelled): free the model if still held and the admission slot."""
        self.queue._leave(self)

    def cancel(self) -> None:
        self.cancelled.set()
        with self.queue._cond:
            self.queue._cond.notify_all()


class GenerationQueue:
    """FIFO access to ``concurrency`` model slots for at most ``capacity`` admitted requests."""

    def __init__(self, capacity: int, concurrency: int = 1) -> None:
        self.capacity = capacity
        self.concurrency = concurrency
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._active = 0
        self._admitted = 0
        #: Moving average of how long one model call holds the model (for Retry-After).
        self._hold_avg = 1.0
        self._held_since: dict[int, float] = {}

    def admit(self) -> Ticket:
        """A ticket for a new request, or :class:`ServerBusyError` when ``capacity`` requests are in."""
        with self._cond:
            if self._admitted >= self.capacity:
                raise ServerBusyError(
                    f"the server is busy ({self._admitted} requests in progress or waiting)",
                    retry_after=self.retry_after(),
                )
            self._admitted += 1
        return Ticket(self)

    def retry_after(self) -> int:
        """Seconds after which a refused request may find room: the queue ahead times the average hold."""
        ahead = len(self._waiting) + self._active
        return max(1, math.ceil(self._hold_avg * max(1, ahead) / self.concurrency))

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"admitted": self._admitted, "waiting": len(self._waiting), "generating": self._active,
                    "capacity": self.capacity}

    def _acquire(self, ticket: Ticket) -> None:
        start = time.perf_counter()
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._waiting[0] is ticket and self._active < self.concurrency):
                    if ticket.cancelled.is_set():
                        raise GenerationCancelled("the request was cancelled while waiting for the model")
                    self._cond.wait(_POLL)
            except BaseException:
                self._waiting.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiting.popleft()
            self._active += 1
            ticket.holding += 1
            self._held_since[id(ticket)] = time.perf_counter()
            self._cond.notify_all()
        ticket.waited += time.perf_counter() - start

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.holding <= 0:
                return
            ticket.holding -= 1
            self._active -= 1
            since = self._held_since.pop(id(ticket), None)
            if since is not None:
                self._hold_avg = 0.8 * self._hold_avg + 0.2 * (time.perf_counter() - since)
            self._cond.notify_all()

    def _leave(self, ticket: Ticket) -> None:
        while ticket.holding > 0:
            self._release(ticket)
        with self._cond:
            if not ticket.left:
                ticket.left = True
                self._admitted -= 1
                self._cond.notify_all()


class ModelGate(BaseCallbackHandler):
    """LangChain callback: waits for the ticket's turn before each model call, gives the turn back after it,
    stops the generation when the ticket is cancelled, and keeps the prompts and completions (usage)."""

    raise_error = True  # a cancelled wait must stop the chain, not be logged and ignored
    run_inline = True

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self.prompts: list[str] = []
        self.completions: list[str] = []
        self._runs: dict[UUID, int] = {}

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        self.ticket.acquire()
        self.prompts.extend(prompts)
        self._runs[run_id] = len(self.completions)
        self.completions.append("")

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if self.ticket.cancelled.is_set():
            raise GenerationCancelled("the request was cancelled during generation")
        slot = self._runs.get(run_id)
        if slot is not None and isinstance(token, str):
            self.completions[slot] += token

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        slot = self._runs.pop(run_id, None)
        if slot is not None and response.generations and response.generations[0]:
            text = response.generations[0][0].text
            if text:  # the whole text when the backend reports it; else the tokens collected
                self.completions[slot] = text
        self.ticket.release()

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._runs.pop(run_id, None)
        self.ticket.release()
