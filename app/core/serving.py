"""One inference worker owns the model; concurrent generations share its forward passes.

    worker = InferenceWorker(model, saes, max_pending=32)
    ticket = worker.submit(rows, params)          # raises QueueFull when too many are waiting
    async for part in ticket.stream():            # this request's rows, step by step
        ...
    ticket.cancel()                               # e.g. the client went away

Requests wait in a bounded queue. Whenever the worker is free it takes every waiting request (up
to max_batch_rows rows) and decodes them as one batch with `generate`: each row keeps its own
seed, steering and sampling settings, so sharing a batch never changes a reply. Requests that
arrive meanwhile form the next batch. A cancelled request's rows stop at the next step, and a
batch whose requests are all cancelled stops at once.
"""

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from app.core.errors import MonoscopeError
from app.core.generation import GenerationRow, SamplingParams, generate
from app.core.model import LoadedModel
from app.core.sae import Sae


class QueueFull(MonoscopeError):
    """Too many generations are waiting; the caller should try again shortly."""


@dataclass
class Part:
    """What one decoding step produced for one request's rows."""

    texts: list[str]
    finished: list[bool]
    finish_reasons: list[str | None]


_DONE = object()


@dataclass
class Ticket:
    rows: list[GenerationRow]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    async def stream(self) -> AsyncIterator[Part]:
        while (item := await self.queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass
class WorkerStats:
    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest_batch: int = 0  # rows
    cancelled: int = 0  # requests that ended early because their client left
    steps: int = 0


class InferenceWorker:
    def __init__(
        self,
        model: LoadedModel,
        saes: Mapping[str, Sae],
        max_pending: int = 32,
        max_batch_rows: int = 64,
    ):
        self.model, self.saes = model, saes
        self.max_pending, self.max_batch_rows = max_pending, max_batch_rows
        self.stats = WorkerStats()
        self._pending: deque[Ticket] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="monoscope-inference", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def submit(self, rows: Sequence[GenerationRow], loop: asyncio.AbstractEventLoop) -> Ticket:
        """Queue a request's rows (each with its own params); they are decoded together."""
        if len(rows) > self.max_batch_rows:
            raise MonoscopeError(f"a request may have at most {self.max_batch_rows} rows")
        if any(r.params is None for r in rows):
            raise MonoscopeError("every queued row needs its own sampling params")
        ticket = Ticket([], loop)
        ticket.rows = [
            GenerationRow(r.prompt_ids, r.edits, r.seed, r.params, ticket.cancelled) for r in rows
        ]
        with self._wake:
            if len(self._pending) >= self.max_pending:
                raise QueueFull(
                    f"the server is busy: {len(self._pending)} generations are waiting; "
                    "try again in a few seconds"
                )
            self._pending.append(ticket)
            self._wake.notify()
        return ticket

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            for ticket in self._pending:
                ticket.cancel()
            self._wake.notify()
        self._thread.join(timeout=30)

    def _next_batch(self) -> list[Ticket]:
        with self._wake:
            while not self._pending and not self._stopping:
                self._wake.wait()
            batch, rows = [], 0
            while self._pending and rows + len(self._pending[0].rows) <= self.max_batch_rows:
                ticket = self._pending.popleft()
                if ticket.cancelled.is_set():
                    self.stats.cancelled += 1
                    ticket._put(_DONE)
                    continue
                batch.append(ticket)
                rows += len(ticket.rows)
            return batch

    def _run(self) -> None:
        while not self._stopping:
            batch = self._next_batch()
            if not batch:
                continue
            rows = [row for ticket in batch for row in ticket.rows]
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.rows += len(rows)
            self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
            bounds, start = [], 0
            for ticket in batch:
                bounds.append((start, start + len(ticket.rows)))
                start += len(ticket.rows)
            # Every row carries its own params; this only sets the batch's longest run.
            fallback = SamplingParams(max_new_tokens=1)
            try:
                for step in generate(self.model, self.saes, rows, fallback):
                    self.stats.steps += 1
                    for ticket, (a, b) in zip(batch, bounds, strict=True):
                        if not ticket.cancelled.is_set():
                            ticket._put(
                                Part(step.texts[a:b], step.finished[a:b], step.finish_reasons[a:b])
                            )
            except Exception as exc:  # handed to every request of the batch
                for ticket in batch:
                    ticket._put(exc)
            finally:
                for ticket in batch:
                    self.stats.cancelled += ticket.cancelled.is_set()
                    ticket._put(_DONE)
