"""One inference worker owns the model; concurrent generations share its forward passes.

    worker = InferenceWorker(model, saes, max_pending=32)
    ticket = worker.submit(rows, params)          # raises QueueFull when too many are waiting
    async for part in ticket.stream():            # this request's rows, step by step
        ...
    ticket.cancel()                               # e.g. the client went away
    worker.call(lambda: inspect(model, ...))      # any other model work: a Future of its result
    worker.call_in_steps(lambda: graph_steps(...)) # long work, one step between decode steps

Forward hooks belong to the whole model, so the worker's thread is the only one that runs it:
any other model work (activations, attribution, ablation) is a call queued beside the
generations and run between two decode steps, with the generation's steering hooks muted
(`LoadedModel.isolated`). Calls and generations share one bound on waiting work. Work that takes
long (an attribution graph: one forward pass, then a backward pass per batch of targets) is a
generator called in steps: one step between two decode steps, so chats keep streaming while it
runs; a step must leave no hook or patched module behind.

Requests wait in a bounded queue. The worker decodes them as one running batch with `generate`
(continuous batching): before every step, waiting requests join as far as max_batch_rows allows,
and finished rows leave. Each row keeps its own seed, steering and sampling settings, so sharing
a batch never changes a reply. A cancelled request's rows stop at the next step; a request
cancelled while it waits is dropped unrun.
"""

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from app.core.errors import MonoscopeError
from app.core.generation import GenerationRow, SamplingParams, check_rows, generate
from app.core.model import LoadedModel
from app.core.sae import Sae


class QueueFull(MonoscopeError):
    """Too many generations are waiting; the caller should try again shortly."""

    status = 503


@dataclass
class Part:
    """What one decoding step produced for one request's rows."""

    texts: list[str]
    finished: list[bool]
    finish_reasons: list[str | None]


_DONE = object()
JOIN_EVERY = 4  # steps between joins while a batch is running


@dataclass
class Ticket:
    rows: list[GenerationRow]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    async def admitted(self) -> None:
        """Nothing to wait for: `submit` itself refused a request it could not queue."""

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


class ReplyStream(Protocol):
    """A queued request as a route sees it, here or on a replica (app.web.replicas)."""

    async def admitted(self) -> None: ...

    def stream(self) -> AsyncIterator[Part]: ...

    def cancel(self) -> None: ...


class ModelOwner(Protocol):
    """What routes ask of the model's owner: this process's InferenceWorker, or replicas."""

    def submit(
        self, rows: Sequence[GenerationRow], loop: asyncio.AbstractEventLoop
    ) -> ReplyStream: ...

    def run(self, fn: Callable[[], Any]) -> Any: ...

    def run_in_steps(self, steps: Callable[[], Generator[Any, None, Any]]) -> Any: ...

    def close(self) -> None: ...


@dataclass
class WorkerStats:
    batches: int = 0  # runs of generate: a run lasts while any row is decoding
    requests: int = 0
    rows: int = 0
    largest_batch: int = 0  # rows
    cancelled: int = 0  # requests that ended early because their client left
    steps: int = 0
    calls: int = 0  # other model work run between steps


class InferenceWorker:
    def __init__(
        self,
        model: LoadedModel,
        saes: Mapping[str, Sae],
        max_pending: int = 32,
        max_batch_rows: int = 64,
        batch_invariant: bool = True,
    ):
        self.model, self.saes = model, saes
        self.max_pending, self.max_batch_rows = max_pending, max_batch_rows
        self.batch_invariant = batch_invariant  # replies exactly as alone (generate's docstring)
        self.stats = WorkerStats()
        self._pending: deque[Ticket] = deque()
        self._calls: deque[_Call] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="monoscope-inference", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._pending) + len(self._calls)

    def _refuse_when_full(self) -> None:
        if self.waiting >= self.max_pending:
            raise QueueFull(
                f"the server is busy: {self.waiting} requests are waiting for the model; "
                "try again in a few seconds"
            )

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` (which may use the model and its hooks) on the worker; raises QueueFull."""
        return self._queue_call(_Call(fn, Future()))

    def call_in_steps(self, steps: Callable[[], Generator[Any, None, Any]]) -> Future:
        """Run a generator function on the worker a step (one `next`) at a time, decode steps
        between; the Future holds what it returns."""
        return self._queue_call(_Call(steps, Future(), stepwise=True))

    def _queue_call(self, call: "_Call") -> Future:
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            self._refuse_when_full()
            self._calls.append(call)
            self._wake.notify()
        return call.future

    def run(self, fn: Callable[[], Any]) -> Any:
        """`call` and wait for its result (from a request thread, never the event loop)."""
        return self.call(fn).result()

    def run_in_steps(self, steps: Callable[[], Generator[Any, None, Any]]) -> Any:
        """`call_in_steps` and wait for its result (from a request thread)."""
        return self.call_in_steps(steps).result()

    def submit(self, rows: Sequence[GenerationRow], loop: asyncio.AbstractEventLoop) -> Ticket:
        """Queue a request's rows (each with its own params); they are decoded together."""
        if len(rows) > self.max_batch_rows:
            raise MonoscopeError(f"a request may have at most {self.max_batch_rows} rows")
        if any(r.params is None for r in rows):
            raise MonoscopeError("every queued row needs its own sampling params")
        # Checked here, not when the rows join a batch, where a refusal would fail every
        # request sharing it.
        check_rows(self.model, rows, SamplingParams())
        ticket = Ticket([], loop)
        ticket.rows = [replace(r, cancelled=ticket.cancelled) for r in rows]
        with self._wake:
            self._refuse_when_full()
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
        with self._wake:  # calls never started, and stepwise ones stopped between two steps
            for call in self._calls:
                if not call.future.cancel() and not call.future.done():
                    call.future.set_exception(QueueFull("the server is shutting down"))
            self._calls.clear()

    def _run_calls(self, most: int | None = None) -> None:
        """Calls waiting now (at most `most`), oldest first, each seeing only the hooks it
        installs. Between two decode steps only one runs: under a stream of inspections, chats
        that waited for every queued call before each token crawled (2 replies in 30 s against
        180 inspections); alternating, each side keeps a fair share of the model."""
        while most is None or most > 0:
            most = None if most is None else most - 1
            with self._wake:
                if not self._calls:
                    return
                call = self._calls.popleft()
            if call.steps is None:
                if not call.future.set_running_or_notify_cancel():
                    continue
                self.stats.calls += 1
            try:
                with self.model.isolated():
                    if not call.stepwise:
                        call.future.set_result(call.fn())
                        continue
                    if call.steps is None:
                        call.steps = call.fn()
                    next(call.steps)
            except StopIteration as done:
                call.future.set_result(done.value)
            except Exception as exc:
                call.future.set_exception(exc)
            else:
                if call.stepwise:  # resumed at the next call slot, ahead of newer calls
                    with self._wake:
                        if self._stopping:
                            call.future.set_exception(QueueFull("the server is shutting down"))
                            return
                        self._calls.appendleft(call)
                        if self._pending:  # a chat arrived: let it start decoding
                            return

    def _take(self, room: int, block: bool) -> list[Ticket]:
        """Waiting tickets whose rows fit in `room`, oldest first; cancelled ones are dropped.
        Blocking, it waits for any work: it returns nothing when only calls arrived."""
        with self._wake:
            while block and not self._pending and not self._calls and not self._stopping:
                self._wake.wait()
            taken: list[Ticket] = []
            while self._pending and len(self._pending[0].rows) <= room:
                ticket = self._pending.popleft()
                if ticket.cancelled.is_set():  # its client left while it waited
                    self.stats.cancelled += 1
                    ticket._put(_DONE)
                    continue
                taken.append(ticket)
                room -= len(ticket.rows)
            return taken

    def _run(self) -> None:
        # Every row carries its own params; this is only generate's fallback.
        fallback = SamplingParams()
        while not self._stopping:
            first = self._take(self.max_batch_rows, block=True)
            self._run_calls()
            if not first:
                continue
            batch = _RunningBatch(self)
            self.stats.batches += 1
            rows = batch.enlist(first, 0)
            active = batch.active
            try:
                for step in generate(
                    self.model,
                    self.saes,
                    rows,
                    fallback,
                    admit=batch.admit,
                    batch_invariant=self.batch_invariant,
                ):
                    self.stats.steps += 1
                    still = []
                    for ticket, a, b in active:
                        if not ticket.cancelled.is_set():
                            part = Part(
                                step.texts[a:b], step.finished[a:b], step.finish_reasons[a:b]
                            )
                            ticket._put(part)
                        if all(step.finished[a:b]):
                            self.stats.cancelled += "cancelled" in step.finish_reasons[a:b]
                            ticket._put(_DONE)
                        else:
                            still.append((ticket, a, b))
                    active[:] = still
                    self._run_calls(most=1)
            except Exception as exc:  # handed to every request still in the batch
                for ticket, _, _ in active:
                    ticket._put(exc)
            finally:
                for ticket, _, _ in active:
                    self.stats.cancelled += ticket.cancelled.is_set()
                    ticket._put(_DONE)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future
    stepwise: bool = False
    steps: Generator[Any, None, Any] | None = None  # a stepwise call once started


class _RunningBatch:
    """The requests in one run of generate and where each one's rows sit in its Steps."""

    def __init__(self, worker: InferenceWorker):
        self.worker = worker
        self.active: list[tuple[Ticket, int, int]] = []  # ticket, its rows' span in the Steps
        self.total = 0
        self.calls = 0

    def enlist(self, tickets: list[Ticket], running: int) -> list[GenerationRow]:
        rows = []
        for ticket in tickets:
            self.active.append((ticket, self.total, self.total + len(ticket.rows)))
            self.total += len(ticket.rows)
            rows += ticket.rows
        stats = self.worker.stats
        stats.requests += len(tickets)
        stats.rows += len(rows)
        stats.largest_batch = max(stats.largest_batch, running + len(rows))
        return rows

    def admit(self, running: int) -> list[GenerationRow]:
        """Requests that arrived meanwhile join the running batch. Each join costs a prefill
        forward of its own, so while rows are decoding joins happen every JOIN_EVERY steps:
        a few milliseconds more to the first token, several joiners per prefill."""
        self.calls += 1
        if running and self.calls % JOIN_EVERY:
            return []
        room = self.worker.max_batch_rows - running
        return self.enlist(self.worker._take(room, block=False), running)
