"""A harvest's pass sharded over Ray: one worker (actor) per GPU, or a few on CPUs, each holding
its own model replica, SAE and token store; chunks come back in corpus order.

    for part in sharded_chunks(config, corpus.path, plan, chunks):   # harvest_chunk's, in order
        ...

Chunks are the harvest's checkpoint units, so the driver merges, spills and checkpoints exactly
as a single process does, and the database ends up the same row for row (tests/integration/
test_harvest.py). A worker that dies mid-chunk is restarted by Ray and the chunk run
again (a chunk is a pure function of its batches). Workers read the token store from its path,
so on several machines it must sit on a shared filesystem; the model and SAE load from the
harvest's own sources (hub ids work anywhere).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from app.core.errors import MonoscopeError
from app.core.model import load_model
from app.core.sae import load_sae
from app.pipeline.config import HarvestConfig
from app.pipeline.harvest import ChunkPlan, HarvestChunk, harvest_chunk
from app.pipeline.ingest import TokenStore

IN_FLIGHT_PER_WORKER = 2  # one running, one queued: workers never wait, memory stays bounded
RESTARTS = 3  # a worker process lost this often is given up (the harvest fails, then resumes)


class HarvestWorker:
    """Runs chunks of a harvest's pass (made a Ray actor by `sharded_chunks`)."""

    def __init__(self, model: str, sae: str, device: str, store: str, threads: int):
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
    try:
        if address == "local":
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise MonoscopeError(f"cannot join the Ray cluster at {address!r}: {exc}") from None


def sharded_chunks(
    config: HarvestConfig, store: Path, plan: ChunkPlan, chunks: list[range]
) -> Iterator[HarvestChunk]:
    """Each chunk's result, in the order of `chunks`, computed on Ray workers."""
    join_cluster(config.ray or "local", config.ray_workers or 2)
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = config.ray_workers or gpus or 2
    worker_class = ray.remote(HarvestWorker).options(
        num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=RESTARTS, max_task_retries=RESTARTS
    )
    device = "cuda" if gpus else "cpu"
    workers: list[Any] = [  # Ray's stubs do not follow an actor's methods
        worker_class.remote(config.model, config.sae, device, str(store), 1) for _ in range(count)
    ]
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
        for worker in workers:
            ray.kill(worker)
