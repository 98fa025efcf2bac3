"""Model work sharded over Ray: one worker (actor) per GPU, or a few on CPUs, each holding its
own model replica; results come back in the order the work was given.

    for part in sharded_chunks(config, corpus.path, plan, chunks):   # harvest_chunk's, in order
        ...
    explainer = ShardedSelfExplainer(source, "local", workers=2)      # an Explainer
    embedder = ShardedEmbedder("local", workers=2)                    # a TextEmbedder's encode

Harvest chunks are the harvest's checkpoint units, so the driver merges, spills and checkpoints
exactly as a single process does, and the database ends up the same row for row (tests/
integration/test_harvest.py). A worker that dies mid-chunk is restarted by Ray and the chunk run
again (a chunk is a pure function of its batches). Workers read the token store from its path,
so on several machines it must sit on a shared filesystem; the model and SAE load from the
harvest's own sources (hub ids work anywhere).

Explain and score run a model only for the self-explainer and the embedding scorer: those split
each batch into one contiguous slice per worker, and the job stores the results in order as it
does in one process. LLM explainers and judges wait on the network, not a device, and stay
asynchronous in the driver.
"""

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from app.autointerp.base import Outcome
from app.autointerp.evidence import FeatureEvidence
from app.autointerp.self_explain import SelfExplainer
from app.core.errors import MonoscopeError
from app.core.model import load_model
from app.core.sae import load_sae
from app.core.text_embedding import TextEmbedder
from app.pipeline.config import HarvestConfig
from app.pipeline.harvest import ChunkPlan, HarvestChunk, harvest_chunk
from app.pipeline.ingest import TokenStore

IN_FLIGHT_PER_WORKER = 2  # one running, one queued: workers never wait, memory stays bounded
RESTARTS = 3  # a worker process lost this often is given up (the job fails, then resumes)
T = TypeVar("T")


class HarvestWorker:
    """Runs chunks of a harvest's pass (made a Ray actor by `sharded_chunks`)."""

    def __init__(self, model: str, sae: str, store: str, *, device: str, threads: int):
        torch.set_num_threads(threads)
        self.model = load_model(model, device=device)
        self.sae = self.model.attach(load_sae(sae), source=sae)
        self.corpus = TokenStore.open(Path(store))

    def run(self, plan: ChunkPlan, batches: range) -> HarvestChunk:
        return harvest_chunk(self.model, self.sae, self.corpus, plan, batches)


def join_cluster(address: str, workers: int) -> None:
    """Connect to Ray once per process: 'local' starts a cluster of this machine for the job."""
    try:
        import ray
    except ImportError:
        raise MonoscopeError(
            "--ray needs Ray, which is not installed: pip install 'monoscope[ray]'"
        ) from None
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # it would report to the internet
    # When a worker dies, Ray prints its message through its tqdm manager, which then replaces
    # builtins.print in this process with a Python function; numba can no longer compile code
    # that prints (UMAP's nearest-neighbour search, the feature map), so a map drawn after a
    # lost worker failed.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    try:
        if address == "local":
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise MonoscopeError(f"cannot join the Ray cluster at {address!r}: {exc}") from None


def start_workers(worker: type, address: str | None, count: int, *args: Any) -> list[Any]:
    """Ray actors of `worker` built with `args` (and device=, threads=): one per GPU of the
    cluster unless `count` says how many, else `count` or 2 on CPUs. Ray restarts a lost one and
    runs its calls again (RESTARTS times)."""
    join_cluster(address or "local", count or 2)
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    actor: Any = ray.remote(worker).options(
        num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=RESTARTS, max_task_retries=RESTARTS
    )
    device = "cuda" if gpus else "cpu"
    return [  # Ray's stubs do not follow an actor's methods
        actor.remote(*args, device=device, threads=1) for _ in range(count or gpus or 2)
    ]


def stop_workers(workers: list[Any]) -> None:
    import ray

    for worker in workers:
        ray.kill(worker)


def sharded_chunks(
    config: HarvestConfig, store: Path, plan: ChunkPlan, chunks: list[range]
) -> Iterator[HarvestChunk]:
    """Each chunk's result, in the order of `chunks`, computed on Ray workers."""
    workers = start_workers(
        HarvestWorker, config.ray, config.ray_workers, config.model, config.sae, str(store)
    )
    import ray

    try:
        queue = list(enumerate(chunks))
        running: dict = {}  # object ref -> (chunk number, worker)
        finished: dict[int, HarvestChunk] = {}
        idle = [w for w in workers for _ in range(IN_FLIGHT_PER_WORKER)]
        window = len(idle)  # chunks ahead of the next one to merge: bounds what waits in memory
        following = 0
        while following < len(chunks):
            while queue and idle and queue[0][0] < following + window:
                number, batches = queue.pop(0)
                worker = idle.pop(0)
                running[worker.run.remote(plan, batches)] = (number, worker)
            (ready,), _ = ray.wait(list(running), num_returns=1)
            number, worker = running.pop(ready)
            finished[number] = ray.get(ready)
            idle.append(worker)
            while following in finished:
                yield finished.pop(following)
                following += 1
    finally:
        stop_workers(workers)


def _slices(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """`items` cut into at most `parts` contiguous, non-empty slices of near-equal length."""
    size = -(-len(items) // max(parts, 1))
    return [items[i : i + size] for i in range(0, len(items), size)] if items else []


class SelfExplainWorker:
    """The self-explainer on its own model replica (a Ray actor of ShardedSelfExplainer)."""

    def __init__(self, source: str, *, device: str, threads: int):
        torch.set_num_threads(threads)
        self.explainer = SelfExplainer(load_model(source, device=device))

    def name(self) -> str:
        return self.explainer.model

    def explain(self, evidence: list[FeatureEvidence]) -> list[Outcome]:
        return asyncio.run(self.explainer.explain_batch(evidence))


class ShardedSelfExplainer:
    """An Explainer: each batch's features split over Ray workers that run the self-explainer,
    outcomes returned in the batch's order (greedy replies: the same as in one process)."""

    method = SelfExplainer.method

    def __init__(self, source: str, address: str, workers: int = 0):
        self.workers = start_workers(SelfExplainWorker, address, workers, source)
        import ray

        self.model: str = ray.get(self.workers[0].name.remote())

    async def explain_batch(self, evidence: list[FeatureEvidence]) -> list[Outcome]:
        parts = _slices(evidence, len(self.workers))
        done = await asyncio.gather(
            *(w.explain.remote(list(p)) for w, p in zip(self.workers, parts, strict=False))
        )
        return [outcome for part in done for outcome in part]

    def close(self) -> None:
        stop_workers(self.workers)


class EmbedWorker:
    """The packaged MiniLM on one device (a Ray actor of ShardedEmbedder)."""

    def __init__(self, *, device: str, threads: int):
        torch.set_num_threads(threads)
        self.embedder = TextEmbedder.packaged(device)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)


class ShardedEmbedder:
    """TextEmbedder's `encode`, each call's texts split over Ray workers and joined in order.
    Vectors match one process's to float rounding (a text's batch neighbours differ)."""

    name, dimensions = TextEmbedder.name, TextEmbedder.dimensions

    def __init__(self, address: str, workers: int = 0):
        self.workers = start_workers(EmbedWorker, address, workers)

    def encode(self, texts: list[str]) -> np.ndarray:
        import ray

        parts = _slices(texts, len(self.workers))
        if not parts:
            return np.zeros((0, self.dimensions), np.float32)
        refs = [w.encode.remote(list(p)) for w, p in zip(self.workers, parts, strict=False)]
        return np.concatenate(ray.get(refs))

    def close(self) -> None:
        stop_workers(self.workers)
