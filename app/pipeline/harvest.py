"""`monoscope harvest`: everything a feature page shows, from a model, an SAE and a token store.

    HarvestJob(HarvestConfig(model="app/demo/monoscope-demo", sae="app/demo/saes/res1",
                             corpus="data/stores/world", tokens=1_000_000), engine).run()

One pass over the contexts runs the model to the SAE's site (stopping there), encodes, and keeps
per-feature statistics plus two sparse spills on disk: every positive per-context maximum, and
every non-zero token activation. The pass runs in chunks of `checkpoint_every` batches, in this
process or on Ray workers (`ray`, app.pipeline.sharding); chunks merge in corpus order, so a
sharded harvest writes the database a single process writes, row for row. Examples are then
chosen from the maxima (core.harvest), and their per-token highlights gathered from the token
spill instead of a second model pass, so they are exactly the values that ranked them. Logit
effects and decoder neighbours come from the weights. The database is written at the end in one
transaction.

The pass checkpoints every few batches (statistics + spill shards); a killed harvest resumes from
the last checkpoint and ends with exactly the database content of an uninterrupted one.
"""

import json
import math
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import Engine
from tqdm import tqdm

from app.core.checkpoint import load_checkpoint, save_checkpoint
from app.core.errors import MonoscopeError
from app.core.harvest import (
    ExampleSelection,
    FeatureStatistics,
    Maxima,
    SparseActivations,
    context_maxima,
    decoder_neighbours,
    histogram_edges,
    logit_effects,
    select_examples_in_parts,
    sparsify,
)
from app.core.model import LoadedModel, load_model
from app.core.sae import Sae, load_sae
from app.core.sae.metrics import evaluate_sae
from app.core.workspace import sae_name
from app.db import store as db
from app.db.engine import session_scope
from app.db.labels import refresh_summary
from app.db.queries import find_sae
from app.pipeline.config import HarvestConfig, IngestConfig
from app.pipeline.ingest import IngestJob, TokenStore

KIND_NAMES = ("top", "quantile")
SHARD_NAME = re.compile(r"shard-(?P<start>\d{7})-(?P<end>\d{7})\.npz")


@dataclass
class HarvestResult:
    model: str
    sae: str
    tokens: int
    features: int
    alive: int
    examples: int
    metrics: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per phase


@dataclass(frozen=True)
class ChunkPlan:
    """What every chunk of the pass shares, wherever it runs."""

    batch_size: int
    n_contexts: int
    log10_edges: np.ndarray  # the histogram's bins, fixed by the first batch


@dataclass
class HarvestChunk:
    """One chunk's statistics (FeatureStatistics.state()) and spill arrays."""

    stats: dict[str, torch.Tensor]
    arrays: dict[str, np.ndarray]


def _sparse_batch(
    model: LoadedModel, sae: Sae, corpus: TokenStore, batch_size: int, n_contexts: int, batch: int
) -> tuple[int, SparseActivations]:
    """(first row, the SAE's activations where they count) of one batch of contexts."""
    first = batch * batch_size
    last = min(first + batch_size, n_contexts)
    ids = torch.from_numpy(np.asarray(corpus.ids[first:last], np.int64))
    x = model.capture(ids, [sae.hook_name])[model.site(sae.hook_name).name]
    return first, sparsify(sae.encode(x), torch.from_numpy(corpus.counted_mask(first, last)))


@torch.inference_mode()
def first_batch_edges(model: LoadedModel, sae: Sae, corpus: TokenStore, batch_size: int):
    """Histogram edges from the first batch's strongest activation: one axis for every feature,
    known before any chunk runs, so chunks can run anywhere."""
    _, sparse = _sparse_batch(model, sae, corpus, batch_size, len(corpus.ids), 0)
    return histogram_edges(float(sparse.value.max()) if len(sparse.value) else 1.0)


@torch.inference_mode()
def harvest_chunk(
    model: LoadedModel, sae: Sae, corpus: TokenStore, plan: ChunkPlan, batches: range
) -> HarvestChunk:
    """Run the model to the SAE's site and encode, batch by batch: statistics of these tokens
    alone, every positive per-context maximum and every non-zero token activation."""
    stats = FeatureStatistics(sae.d_sae, plan.log10_edges)
    parts = []
    for batch in batches:
        first, sparse = _sparse_batch(model, sae, corpus, plan.batch_size, plan.n_contexts, batch)
        stats.update(sparse)
        rows, features, values = context_maxima(sparse, sae.d_sae, first)
        parts.append(
            {
                "rows": rows,
                "features": features,
                "values": values,
                "token_rows": (sparse.context + first).numpy().astype(np.int64),
                "token_positions": sparse.position.numpy().astype(np.int16),
                "token_features": sparse.feature.numpy().astype(np.int32),
                "token_values": sparse.value.numpy().astype(np.float16),
            }
        )
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return HarvestChunk(stats.state(), arrays)


class HarvestJob:
    def __init__(
        self,
        config: HarvestConfig,
        engine: Engine,
        model: LoadedModel | None = None,
        sae: Sae | None = None,
    ):
        self.config = config
        self.engine = engine
        self._model, self._sae = model, sae

    # -- the job -------------------------------------------------------------------------------
    def run(self) -> HarvestResult:
        c = self.config
        if c.tokens <= 0:
            raise MonoscopeError("--tokens must be positive")
        name = sae_name(c.sae, c.name)  # a bad name fails before minutes of model loading
        model = self._model or load_model(c.model, device=c.device)
        sae = self._sae or model.attach(load_sae(c.sae), source=c.sae)
        self._check_name_free(model, name)
        corpus = self._token_store(model)
        n_contexts = math.ceil(c.tokens / corpus.context_size)
        if n_contexts > len(corpus.ids):
            raise MonoscopeError(
                f"--tokens {c.tokens:,} is more than the corpus holds "
                f"({len(corpus.ids) * corpus.context_size:,} tokens in {corpus.path})"
            )
        work = c.work_dir / (
            "harvest-"
            + c.fingerprint(
                model.name, c.sae, corpus.fingerprint, n_contexts, c.batch_size, c.checkpoint_every
            )
        )
        clock = time.perf_counter()
        stats, shards = self._first_pass(model, sae, corpus, n_contexts, work)
        seconds = {"pass": time.perf_counter() - clock}
        clock = time.perf_counter()
        selection = select_examples_in_parts(
            lambda: self._maxima(shards),
            d_sae=sae.d_sae,
            n_top=c.n_top,
            n_intervals=c.n_intervals,
            per_interval=c.per_interval,
            seed=c.seed,
        )
        highlights = self._highlights(shards, selection, sae.d_sae, corpus.context_size)
        seconds["examples"] = time.perf_counter() - clock
        clock = time.perf_counter()
        metrics = self._metrics(model, sae, corpus, stats)
        result = self._write(model, sae, name, corpus, stats, selection, highlights, metrics)
        seconds["metrics_and_write"] = time.perf_counter() - clock
        result.seconds = {k: round(v, 3) for k, v in seconds.items()}
        shutil.rmtree(work, ignore_errors=True)
        return result

    def _check_name_free(self, model: LoadedModel, name: str) -> None:
        """Before any work: the name is free, or --replace may take it (never over human work;
        the write checks again)."""
        with session_scope(self.engine) as session:
            existing = find_sae(session, model.name, name)
            if existing is not None and not self.config.replace:
                raise db.name_taken(model.name, name)
            if existing is not None:
                db.refuse_to_drop_human_work(session, model.name, existing.id, name)

    def _token_store(self, model: LoadedModel) -> TokenStore:
        c = self.config
        if TokenStore.is_store(c.corpus):
            corpus = TokenStore.open(Path(c.corpus))
            if corpus.meta["vocab_size"] != len(model.tokenizer):
                raise MonoscopeError(
                    f"token store {c.corpus} was made with another tokenizer "
                    f"({corpus.meta['vocab_size']} tokens, {model.name} has "
                    f"{len(model.tokenizer)})"
                )
            return corpus
        path = c.work_dir / (
            "store-" + c.fingerprint(model.name, c.corpus, c.context_size, c.tokens)
        )
        if TokenStore.is_store(path):
            return TokenStore.open(path)
        return IngestJob(
            IngestConfig(
                c.corpus,
                path,
                context_size=c.context_size,
                max_tokens=c.tokens,
                progress=c.progress,
            ),
            model.tokenizer,
        ).run()

    # -- pass over the corpus ------------------------------------------------------------------
    def _first_pass(
        self, model: LoadedModel, sae: Sae, corpus: TokenStore, n_contexts: int, work: Path
    ) -> tuple[FeatureStatistics, list[Path]]:
        """Chunks of `checkpoint_every` batches, each spilled to a shard and merged into the
        statistics in corpus order, then checkpointed. With `ray` set the chunks run on Ray
        workers; the merge is the same, so the result is too."""
        c = self.config
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = work / "checkpoint.pt"
        n_batches = math.ceil(n_contexts / c.batch_size)
        if checkpoint.exists():
            edges = torch.load(checkpoint, weights_only=True)["log10_edges"]
            stats = FeatureStatistics(sae.d_sae, edges.numpy())
            done = load_checkpoint(checkpoint, None, log10_edges=edges, **stats.state())
        else:
            edges = torch.from_numpy(first_batch_edges(model, sae, corpus, c.batch_size))
            stats, done = FeatureStatistics(sae.d_sae, edges.numpy()), 0
        for partial in work.glob("*.partial"):
            partial.unlink()  # a write the kill cut short
        shards = []
        for path in sorted(work.glob("shard-*.npz")):
            found = SHARD_NAME.fullmatch(path.name)
            if found is None or int(found["end"]) > done:
                path.unlink()  # not ours, or written after the last checkpoint: redone
            else:
                shards.append(path)

        bar = tqdm(
            total=n_contexts * corpus.context_size,
            initial=min(done * c.batch_size, n_contexts) * corpus.context_size,
            unit="tok",
            unit_scale=True,
            desc="harvest" + (" (Ray)" if c.ray else ""),
            disable=not c.progress,
        )
        chunks = [
            range(start, min(start + c.checkpoint_every, n_batches))
            for start in range(done, n_batches, c.checkpoint_every)
        ]
        plan = ChunkPlan(c.batch_size, n_contexts, edges.numpy())
        if c.ray:
            from app.pipeline.sharding import sharded_chunks

            parts = sharded_chunks(c, corpus.path, plan, chunks)
        else:
            parts = (harvest_chunk(model, sae, corpus, plan, batches) for batches in chunks)
        for batches, part in zip(chunks, parts, strict=True):
            shards.append(self._write_shard(work, batches.start, batches.stop, part.arrays))
            stats.merge(FeatureStatistics.from_state(plan.log10_edges, part.stats))
            save_checkpoint(checkpoint, batches.stop, log10_edges=edges, **stats.state())
            contexts = min(batches.stop * c.batch_size, n_contexts) - batches.start * c.batch_size
            bar.update(contexts * corpus.context_size)
        bar.close()
        return stats, shards

    @staticmethod
    def _write_shard(work: Path, start: int, end: int, arrays: dict[str, np.ndarray]) -> Path:
        path = work / f"shard-{start:07d}-{end:07d}.npz"
        # Written beside, under a name the shard pattern never matches, then renamed: a kill at
        # any instant leaves either the whole shard or a partial file the resume deletes.
        partial = path.with_suffix(".partial")
        with partial.open("wb") as file:  # a file object: np.savez adds no .npz to its name
            np.savez(file, allow_pickle=False, **arrays)
        partial.replace(path)
        return path

    @staticmethod
    def _maxima(shards: list[Path]) -> Iterator[Maxima]:
        """Each shard's per-context maxima in turn: example selection holds one shard at a time,
        so its memory is bounded by `checkpoint_every`, not by the corpus."""
        for shard in shards:
            with np.load(shard) as data:
                yield data["rows"], data["features"], data["values"]

    @staticmethod
    def _highlights(
        shards: list[Path], selection: ExampleSelection, d_sae: int, context_size: int
    ) -> np.ndarray:
        """(examples, pos) float16 per-token activations of each chosen (feature, context)."""
        keys = selection.rows * d_sae + selection.features
        if len(keys) == 0:
            return np.zeros((0, context_size), dtype=np.float16)
        order = np.argsort(keys)
        sorted_keys = keys[order]
        out = np.zeros((len(keys), context_size), dtype=np.float16)
        for shard in shards:
            data = np.load(shard)
            entry = data["token_rows"] * d_sae + data["token_features"]
            at = np.searchsorted(sorted_keys, entry).clip(max=len(keys) - 1)
            match = sorted_keys[at] == entry
            out[order[at[match]], data["token_positions"][match]] = data["token_values"][match]
        return out

    # -- results -------------------------------------------------------------------------------
    def _metrics(
        self, model: LoadedModel, sae: Sae, corpus: TokenStore, stats: FeatureStatistics
    ) -> dict:
        """Reconstruction metrics on a few contexts; sparsity metrics over every harvested token."""
        c = self.config
        metrics: dict = {}
        if c.eval_contexts > 0:
            ids = torch.from_numpy(np.asarray(corpus.ids[: c.eval_contexts], np.int64))
            metrics = evaluate_sae(model, sae, ids).to_dict()
        tokens = max(int(stats.tokens), 1)
        density = stats.counts.double() / tokens
        metrics |= {
            "tokens": int(stats.tokens),
            "eval_tokens": metrics.get("tokens", 0),
            "l0": round(float(stats.counts.sum()) / tokens, 4),
            "dead_fraction": round(float((stats.counts == 0).double().mean()), 6),
            "dense_1pct_fraction": round(float((density > 0.01).double().mean()), 6),
            "dense_10pct_fraction": round(float((density > 0.10).double().mean()), 6),
        }
        return metrics

    def _feature_columns(
        self, model: LoadedModel, sae: Sae, stats: FeatureStatistics, vocabulary: list[str]
    ) -> dict[str, list]:
        c = self.config
        d_sae = sae.d_sae
        directions = sae.decoder_directions(torch.arange(d_sae, device=sae.device))
        logits = logit_effects(
            directions, model.unembedding(), model.final_norm_scale(), k=c.n_logits
        )
        neighbour_ids, cosines = decoder_neighbours(sae.W_dec, k=c.n_neighbours)
        tokens = max(int(stats.tokens), 1)
        counts = stats.counts.numpy()
        mean = np.where(counts > 0, stats.sums.numpy() / np.maximum(counts, 1), 0.0)

        shown = [db.printable(token) for token in vocabulary]

        def pairs(ids, values, label=lambda t: ()) -> list[list]:
            """Each feature's [id, (token text,) value rounded] rows, from lists converted once:
            reading tensors element by element took 0.6 s at 4,096 features."""
            return [
                [[t, *label(t), round(v, 4)] for t, v in zip(row_ids, row_values, strict=True)]
                for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)
            ]

        histogram = stats.histogram.numpy()
        logit_counts = logits.histogram.numpy()
        low, high = logits.low.numpy().astype(float), logits.high.numpy().astype(float)
        return {
            "index": list(range(d_sae)),
            "density": (counts / tokens).tolist(),
            "max_act": stats.maxima.numpy().astype(float).tolist(),
            "mean_act": mean.astype(float).tolist(),
            "histogram": [
                {
                    "counts": histogram[f].tolist(),
                    "logits": {
                        "counts": logit_counts[f].tolist(),
                        "low": round(low[f], 4),
                        "high": round(high[f], 4),
                    },
                }
                for f in range(d_sae)
            ],
            "top_logits": pairs(logits.top_ids, logits.top_values, lambda t: (shown[t],)),
            "bottom_logits": pairs(logits.bottom_ids, logits.bottom_values, lambda t: (shown[t],)),
            "neighbours": pairs(neighbour_ids, cosines),
        }

    def _write(
        self,
        model: LoadedModel,
        sae: Sae,
        name: str,
        corpus: TokenStore,
        stats: FeatureStatistics,
        selection: ExampleSelection,
        highlights: np.ndarray,
        metrics: dict,
    ) -> HarvestResult:
        c = self.config
        tokenizer = model.tokenizer
        vocabulary = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        columns = self._feature_columns(model, sae, stats, vocabulary)
        harvest = {
            "corpus": corpus.meta["source"],
            "store": corpus.fingerprint,
            "contexts": math.ceil(c.tokens / corpus.context_size),
            "context_size": corpus.context_size,
            "tokens": int(stats.tokens),
            "histogram_log10_edges": [round(e, 6) for e in stats.log10_edges.tolist()],
            "config": {
                k: v
                for k, v in asdict(c).items()
                if k not in ("work_dir", "progress", "replace", "device", "ray", "ray_workers")
            },
        }
        with session_scope(self.engine) as session:
            model_row = db.upsert_model(
                session,
                db.ModelInfo(
                    name=model.name,
                    source=c.model,
                    architecture=str(model.hf.config.model_type),
                    n_layers=model.n_layers,
                    d_model=model.d_model,
                    vocab_size=len(tokenizer),
                ),
                vocabulary,
            )
            sae_row = db.create_sae(
                session,
                model_row,
                db.SaeInfo(
                    name=name,
                    source=c.sae,
                    site=model.site(sae.hook_name).name,
                    site_out=model.site(sae.hook_name_out).name if sae.is_transcoder else None,
                    architecture=sae.architecture,
                    d_in=sae.d_in,
                    d_sae=sae.d_sae,
                    metrics=metrics,
                    harvest=json.loads(json.dumps(harvest, default=str)),
                ),
                replace=c.replace,
            )
            rows = np.unique(selection.rows)
            context_ids = db.insert_contexts(
                session, model_row.id, corpus.fingerprint, rows, np.asarray(corpus.ids[rows])
            )
            feature_ids = db.insert_features(session, sae_row.id, columns)
            db.insert_examples(
                session,
                feature_ids=feature_ids[selection.features],
                context_ids=np.array([context_ids[int(r)] for r in selection.rows]),
                kinds=[KIND_NAMES[k] for k in selection.kinds],
                ranks=selection.ranks,
                intervals=selection.intervals,
                max_acts=selection.values,
                activations=highlights,
            )
            db.delete_orphan_contexts(session, model_row.id)
            refresh_summary(session, sae_row.id)  # a fresh SAE has no labels to choose among
        alive = int((stats.counts > 0).sum())
        return HarvestResult(
            model.name, name, int(stats.tokens), sae.d_sae, alive, len(selection.rows), metrics
        )
