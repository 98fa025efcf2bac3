"""The inference worker as Ray actors behind the web tier (MONOSCOPE_REPLICAS).

    pool = ReplicaPool.start(settings, workspace)  # one replica per GPU, else `replicas` on CPUs
    ticket = pool.submit(rows, loop)
    await ticket.admitted()                        # QueueFull when the replica's queue is full
    async for part in ticket.stream(): ...
    pool.run(lambda: inspect(workspace.model, ...))  # runs on a replica, on its own weights

Each replica is an async Ray actor holding a Workspace loaded from the server's settings and an
InferenceWorker over it, so what app.core.serving promises (one owner for the model, continuous
batching, a bounded queue, the same seed giving the same text) holds inside every replica. A web
worker sends each request to the replica with the fewest of its own requests in flight.

Model work reaches a replica as the same closures the in-process worker runs: the web process's
LoadedModel and Sae objects are pickled as references ("the model", "SAE res1") that the replica
resolves to its own copies. A closure written against the web workspace runs on the replica's
weights, and no weights cross the wire. The web process keeps its copy for tokenizing and checking
requests (on the CPU: the GPUs belong to the replicas).

A replica whose process dies fails the requests it held with a 503 (ReplicaLost); Ray restarts
it (its model loads again) and later requests reach it as before.
"""

import asyncio
import itertools
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.core.errors import MonoscopeError
from app.core.generation import GenerationRow
from app.core.model import LoadedModel
from app.core.sae import Sae
from app.core.serving import InferenceWorker, Part, WorkerStats
from app.core.workspace import Workspace
from app.settings import Settings

RESTARTS = -1  # Ray restarts a lost replica every time: serving must outlive a crash
_ADMITTED = "admitted"  # a stream's first item: the replica's queue took the request

_here: Workspace | None = None  # the workspace of the replica this process runs, if any


class ReplicaLost(MonoscopeError):
    """The replica serving a request stopped; Ray is restarting it."""

    status = 503


def _model_here(name: str) -> LoadedModel:
    """What a pickled LoadedModel becomes in a replica: the replica's own model."""
    if _here is None or _here.model.name != name:
        raise MonoscopeError(f"model {name!r} is not resident in this process")
    return _here.model


def _sae_here(name: str) -> Sae:
    """What a pickled Sae becomes in a replica: the replica's SAE or transcoder of that name."""
    found = dict(_here.transcoders) | _here.saes if _here is not None else {}
    if name not in found:
        raise MonoscopeError(f"SAE {name!r} is not resident in this process")
    return found[name]


@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica loads and how its worker runs: the server's own settings."""

    model: str
    saes: tuple[str, ...]
    transcoders: str | None
    device: str
    threads: int
    queue: int
    batch_rows: int
    batch_invariant: bool


class Replica:
    """One model replica and its inference worker (made a Ray actor by ReplicaPool.start)."""

    def __init__(self, spec: ReplicaSpec):
        global _here
        import torch

        torch.set_num_threads(spec.threads)
        _here = Workspace.load(spec.model, spec.saes, spec.device, spec.transcoders)
        self.worker = InferenceWorker(
            _here.model, _here.saes, spec.queue, spec.batch_rows, spec.batch_invariant
        )

    async def generate(self, rows: list[GenerationRow]) -> AsyncIterator[Any]:
        ticket = self.worker.submit(rows, asyncio.get_running_loop())  # or QueueFull
        try:
            yield _ADMITTED
            async for part in ticket.stream():
                yield part
        finally:  # done, or cancelled by the web worker because its client left
            ticket.cancel()

    async def call(self, fn: Callable[[], Any], stepwise: bool) -> Any:
        future = self.worker.call_in_steps(fn) if stepwise else self.worker.call(fn)
        return await asyncio.wrap_future(future)

    async def pid(self) -> int:
        return os.getpid()

    async def stats(self) -> tuple[int, WorkerStats]:
        return self.worker.waiting, self.worker.stats


class RemoteTicket:
    """A request's rows decoding on a replica: Ticket's interface across Ray."""

    def __init__(self, pool: "ReplicaPool", replica: int, stream: Any):
        self._pool, self._replica, self._stream = pool, replica, stream
        self._open = True

    async def _next(self) -> Any:
        import ray

        try:
            return await (await self._stream.__anext__())
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self._close()
            raise _unwrapped(exc, ray) from None

    async def admitted(self) -> None:
        """Wait until the replica's queue has taken the request (QueueFull when it refuses)."""
        if await self._next() != _ADMITTED:
            raise MonoscopeError("a replica answered out of turn")

    async def stream(self) -> AsyncIterator[Part]:
        try:
            while True:
                yield await self._next()
        except StopAsyncIteration:
            self._close()

    def cancel(self) -> None:
        if self._open:
            import ray

            ray.cancel(self._stream)
            self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._pool._release(self._replica)


def _unwrapped(exc: Exception, ray: Any) -> Exception:
    """A replica's own refusal (bad rows, a full queue) as it was raised there; a lost replica
    as a 503."""
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, Exception):
        return exc.cause
    if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.ActorUnavailableError):
        return ReplicaLost(
            "the model replica serving this request stopped; it is restarting, try again shortly"
        )
    return exc


class ReplicaPool:
    """N replicas behind one web worker, with InferenceWorker's interface (submit, run,
    run_in_steps, close) so the routes cannot tell them apart."""

    def __init__(self, actors: list[Any], owns_cluster: bool = False):
        self.actors = actors
        self.owns_cluster = owns_cluster  # started here (local): stopped with the server
        self._in_flight = [0] * len(actors)  # this web worker's requests on each replica
        self._turn = itertools.count()
        self._counting = threading.Lock()

    @classmethod
    def start(cls, settings: Settings, workspace: Workspace) -> "ReplicaPool":
        """Join the cluster (settings.ray_address), name the web workspace's model and SAEs for
        pickling, and start the replicas; each loads its model before this returns. A local
        cluster started here lives as long as the calling thread (uvicorn's main thread)."""
        if not settings.model:
            raise MonoscopeError("replicas load the model named by MONOSCOPE_MODEL; set it")
        import ray

        from app.pipeline.sharding import join_cluster

        on_main_thread = threading.current_thread() is threading.main_thread()
        server_handler = signal.getsignal(signal.SIGTERM)
        owns_cluster = not ray.is_initialized()
        join_cluster(settings.ray_address, settings.replicas)
        if on_main_thread:  # Ray's handler exits at once: uvicorn's shuts down in order
            signal.signal(signal.SIGTERM, server_handler)

        names = {id(sae): name for name, sae in [*workspace.transcoders, *workspace.saes.items()]}

        def sae_name(sae: Sae) -> str:
            if id(sae) not in names:
                raise MonoscopeError("only the server's own SAEs can be sent to a replica")
            return names[id(sae)]

        ray.util.register_serializer(
            LoadedModel, serializer=lambda model: model.name, deserializer=_model_here
        )
        ray.util.register_serializer(Sae, serializer=sae_name, deserializer=_sae_here)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = settings.replicas
        if gpus and count > gpus:
            raise MonoscopeError(f"{count} replicas need a GPU each; the Ray cluster has {gpus}")
        spec = ReplicaSpec(
            settings.model,
            tuple(settings.saes),
            settings.transcoders,
            "cuda" if gpus else "cpu",
            1 if gpus else max(1, cpus // count),
            settings.steer_queue,
            settings.steer_batch_rows,
            settings.steer_batch_invariant,
        )
        actor = ray.remote(Replica).options(
            num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=RESTARTS
        )
        actors: list[Any] = [actor.remote(spec) for _ in range(count)]  # stubs miss methods
        try:
            ray.get([a.pid.remote() for a in actors])  # loaded and answering
        except ray.exceptions.RayError as exc:
            for a in actors:
                ray.kill(a)
            raise MonoscopeError(f"a model replica failed to start: {exc}") from None
        return cls(actors, owns_cluster)

    def _take_replica(self) -> int:
        """The replica with the fewest of this worker's requests (taking turns among equals),
        counted as holding one more. Chats choose on the event loop, model calls on request
        threads: hence the lock."""
        with self._counting:
            turn, n = next(self._turn), len(self.actors)
            chosen = min(range(n), key=lambda i: (self._in_flight[i], (i - turn) % n))
            self._in_flight[chosen] += 1
            return chosen

    def _release(self, replica: int) -> None:
        with self._counting:
            self._in_flight[replica] -= 1

    def submit(self, rows: Sequence[GenerationRow], loop: asyncio.AbstractEventLoop) -> Any:
        """A request's rows sent to a replica; await the ticket's `admitted()` before streaming.
        Each row's cancellation flag stays here: the replica gives the rows its own."""
        chosen = self._take_replica()
        stream = self.actors[chosen].generate.remote([replace(r, cancelled=None) for r in rows])
        return RemoteTicket(self, chosen, stream)

    def _call(self, fn: Callable[[], Any], stepwise: bool) -> Any:
        import ray

        chosen = self._take_replica()
        try:
            return ray.get(self.actors[chosen].call.remote(fn, stepwise))
        except ray.exceptions.RayError as exc:
            raise _unwrapped(exc, ray) from None
        finally:
            self._release(chosen)

    def run(self, fn: Callable[[], Any]) -> Any:
        """`fn` run by a replica's worker, with the replica's model and SAEs in place of the
        web workspace's (from a request thread, never the event loop)."""
        return self._call(fn, stepwise=False)

    def run_in_steps(self, steps: Callable[[], Generator[Any, None, Any]]) -> Any:
        """A generator function run by a replica a step at a time, chats decoding between."""
        return self._call(steps, stepwise=True)

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def stats(self) -> list[tuple[int, WorkerStats]]:
        """Each replica's waiting requests and its worker's counters."""
        import ray

        return ray.get([a.stats.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        ray.util.deregister_serializer(LoadedModel)
        ray.util.deregister_serializer(Sae)
        if self.owns_cluster:  # else its agents outlive the server
            ray.shutdown()
