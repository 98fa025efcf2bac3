"""Harvest maths: what a feature page shows, computed from activations without a loop per feature.

    stats = FeatureStatistics(d_sae, histogram_edges(first_batch_max))
    for acts in batches:                                      # (batch, pos, d_sae)
        sparse = sparsify(acts, counted)    # counted: (batch, pos) bool, BOS and left context off
        stats.update(sparse)
        rows, features, values = context_maxima(sparse, d_sae, first_row)   # kept on disk
    picked = select_examples(rows, features, values, d_sae, n_top=32, n_intervals=5, per_interval=5)
    picked = select_examples_in_parts(read_shards, d_sae, ...)   # the same, one shard at a time
    effects = logit_effects(directions, W_U, norm_scale)    # top/bottom tokens, histogram
    neighbour_ids, cosines = decoder_neighbours(W_dec)

Examples are chosen from every (context, feature) pair with a positive context maximum, so the top
list is exact and the interval samples are stratified over the feature's final (0, max] range:
interval i holds contexts whose maximum lies in (i/n, (i+1)/n] x max, drawn by a seeded hash, and
never repeats a top example. An interval with no candidates is left out, never shown empty.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

HISTOGRAM_BINS = 64
HISTOGRAM_DECADES = 6.0


def histogram_edges(peak: float, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """log10 bin edges spanning HISTOGRAM_DECADES below a decade above the first batch's peak.

    Fixed once per harvest so that every feature's histogram shares the same axis."""
    top = float(np.ceil(np.log10(max(peak, 1e-6)))) + 1.0
    return np.linspace(top - HISTOGRAM_DECADES, top, bins + 1)


@dataclass(frozen=True)
class SparseActivations:
    """The non-zero entries of a batch of feature activations (batch, pos, d_sae)."""

    context: torch.Tensor  # (n,) int64: row within the batch
    position: torch.Tensor  # (n,) int64: token position in the context
    feature: torch.Tensor  # (n,) int64
    value: torch.Tensor  # (n,) float32
    batch: int
    tokens: int  # tokens that count (neither BOS nor left context)


def sparsify(acts: torch.Tensor, counted: torch.Tensor) -> SparseActivations:
    """One scan of the dense activations; everything else works on the non-zeros.

    `counted` (batch, pos) bool says which positions count: not the BOS token (whose residual
    is an outlier) nor left context that an earlier context counted already."""
    context, position, feature = acts.nonzero(as_tuple=True)
    keep = counted.to(acts.device)[context, position]  # filtered sparse: cheaper than masking
    context, position, feature = context[keep], position[keep], feature[keep]
    value = acts[context, position, feature].float()
    return SparseActivations(
        context.cpu(),
        position.cpu(),
        feature.cpu(),
        value.cpu(),
        batch=acts.shape[0],
        tokens=int(counted.sum()),
    )


class FeatureStatistics:
    """Running per-feature counts, sums, maxima and log-activation histograms over tokens."""

    def __init__(self, d_sae: int, log10_edges: np.ndarray):
        self.log10_edges = np.asarray(log10_edges, dtype=np.float64)
        bins = len(self.log10_edges) - 1
        self.tokens = torch.zeros((), dtype=torch.int64)
        self.counts = torch.zeros(d_sae, dtype=torch.int64)
        self.sums = torch.zeros(d_sae, dtype=torch.float64)
        self.maxima = torch.zeros(d_sae, dtype=torch.float32)
        self.histogram = torch.zeros(d_sae, bins, dtype=torch.int64)

    def update(self, sparse: SparseActivations) -> None:
        feature, value = sparse.feature, sparse.value
        self.tokens += sparse.tokens
        self.counts += torch.bincount(feature, minlength=self.counts.shape[0])
        self.sums.index_add_(0, feature, value.double())
        self.maxima.scatter_reduce_(0, feature, value, reduce="amax")
        bins = self.histogram.shape[1]
        lo, hi = self.log10_edges[0], self.log10_edges[-1]
        position = ((value.log10() - lo) * (bins / (hi - lo))).floor().long().clamp_(0, bins - 1)
        self.histogram.view(-1).index_add_(0, feature * bins + position, torch.ones_like(position))

    def merge(self, part: "FeatureStatistics") -> None:
        """Add the statistics of another stretch of tokens (with the same histogram edges).
        Counts, maxima and histograms merge exactly in any order, float sums only in a fixed
        one: a sharded harvest merges its parts in token order, as one process does."""
        self.tokens += part.tokens
        self.counts += part.counts
        self.sums += part.sums
        torch.maximum(self.maxima, part.maxima, out=self.maxima)
        self.histogram += part.histogram

    @classmethod
    def from_state(
        cls, log10_edges: np.ndarray, state: dict[str, torch.Tensor]
    ) -> "FeatureStatistics":
        stats = cls(len(state["counts"]), log10_edges)
        for name, tensor in stats.state().items():
            tensor.copy_(state[name])
        return stats

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "tokens": self.tokens,
            "counts": self.counts,
            "sums": self.sums,
            "maxima": self.maxima,
            "histogram": self.histogram,
        }


def context_maxima(
    sparse: SparseActivations, d_sae: int, first_row: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, feature, value) of every positive per-context maximum; rows count from first_row."""
    peak = torch.zeros(sparse.batch * d_sae, dtype=torch.float32)
    peak.scatter_reduce_(0, sparse.context * d_sae + sparse.feature, sparse.value, reduce="amax")
    (flat,) = peak.nonzero(as_tuple=True)
    return (
        (flat // d_sae + first_row).numpy().astype(np.int64),
        (flat % d_sae).numpy().astype(np.int32),
        peak[flat].numpy(),
    )


@dataclass(frozen=True)
class ExampleSelection:
    """Chosen (feature, context row) pairs; kind 0 = top, 1 = interval sample."""

    features: np.ndarray  # (n,) int32
    rows: np.ndarray  # (n,) int64
    values: np.ndarray  # (n,) float32: the context's maximum activation of the feature
    kinds: np.ndarray  # (n,) int8
    ranks: np.ndarray  # (n,) int32: top: 0 = strongest; interval: position in its interval
    intervals: np.ndarray  # (n,) int32: interval index (0 = lowest), -1 for top examples


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random permutation of uint64: the sampling priority of a pair."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _rank_within_groups(group: np.ndarray) -> np.ndarray:
    """For a sorted array of group keys, each element's position inside its group."""
    starts = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(group)])
    return np.arange(len(group)) - np.repeat(starts, lengths)


Maxima = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows int64, features int32, values float32)


def _pair_key(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One uint64 per (feature, context row) pair (rows below 2**40)."""
    return (features.astype(np.uint64) << np.uint64(40)) ^ rows.astype(np.uint64)


def _joined(kept: tuple, part: tuple) -> tuple:
    return tuple(np.concatenate([a, b]) for a, b in zip(kept, part, strict=True))


def select_examples(
    rows: np.ndarray,
    features: np.ndarray,
    values: np.ndarray,
    d_sae: int,
    n_top: int = 32,
    n_intervals: int = 5,
    per_interval: int = 5,
    seed: int = 0,
) -> ExampleSelection:
    """Top contexts and interval samples per feature from sparse per-context maxima."""
    return select_examples_in_parts(
        lambda: [(rows, features, values)], d_sae, n_top, n_intervals, per_interval, seed
    )


def select_examples_in_parts(
    parts: Callable[[], Iterable[Maxima]],
    d_sae: int,
    n_top: int = 32,
    n_intervals: int = 5,
    per_interval: int = 5,
    seed: int = 0,
) -> ExampleSelection:
    """select_examples over maxima that come in parts (a harvest's shards), read twice: the top
    first, then the interval samples, whose interval needs the feature's final max. Memory is
    one part plus what is kept (at most n_top + n_intervals x per_interval per feature), whatever
    the corpus; the result is the one all parts at once would give (a context row lies in one
    part, so each pair is seen once)."""
    empty: Maxima = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    peak = np.zeros(d_sae, dtype=np.float32)
    top = empty
    for part in parts():
        np.maximum.at(peak, part[1], part[2])
        rows, features, values = _joined(top, part)
        order = np.lexsort((rows, -values, features))  # feature, strongest first, then row
        kept = order[_rank_within_groups(features[order]) < n_top]
        top = (rows[kept], features[kept], values[kept])
    top_keys = np.sort(_pair_key(top[1], top[0]))

    no_samples = (*empty, np.zeros(0, np.int32), np.zeros(0, np.uint64))
    samples, sample_ranks = no_samples, np.zeros(0, np.int64)
    for rows, features, values in parts():
        key = _pair_key(features, rows)
        at = np.searchsorted(top_keys, key).clip(max=max(len(top_keys) - 1, 0))
        rest = ~(top_keys[at] == key) if len(top_keys) else np.ones(len(key), bool)
        fraction = values[rest] / peak[features[rest]]
        interval = np.clip(np.ceil(fraction * n_intervals).astype(np.int32) - 1, 0, n_intervals - 1)
        priority = _splitmix64(key[rest] ^ np.uint64(seed))
        candidates = (rows[rest], features[rest], values[rest], interval, priority)
        s_rows, s_features, s_values, s_interval, s_priority = _joined(samples, candidates)
        order = np.lexsort((s_rows, s_priority, s_interval, s_features))
        group = s_features[order].astype(np.int64) * n_intervals + s_interval[order]
        within = _rank_within_groups(group)
        kept = order[within < per_interval]
        samples = (
            s_rows[kept],
            s_features[kept],
            s_values[kept],
            s_interval[kept],
            s_priority[kept],
        )
        sample_ranks = within[within < per_interval]

    top_ranks = _rank_within_groups(top[1])
    n_kept = len(samples[0])
    return ExampleSelection(
        features=np.r_[top[1], samples[1]].astype(np.int32),
        rows=np.r_[top[0], samples[0]].astype(np.int64),
        values=np.r_[top[2], samples[2]].astype(np.float32),
        kinds=np.r_[np.zeros(len(top[0]), np.int8), np.ones(n_kept, np.int8)],
        ranks=np.r_[top_ranks, sample_ranks].astype(np.int32),
        intervals=np.r_[np.full(len(top[0]), -1, np.int32), samples[3]].astype(np.int32),
    )


@dataclass(frozen=True)
class LogitEffects:
    """What each feature's direction does to the logits: its top and bottom k tokens (ids and
    values, each (d_sae, k)), and a histogram over the whole vocabulary, `bins` equal bins from
    each feature's lowest effect to its highest (counts (d_sae, bins), low and high (d_sae,))."""

    top_ids: torch.Tensor
    top_values: torch.Tensor
    bottom_ids: torch.Tensor
    bottom_values: torch.Tensor
    histogram: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


@torch.inference_mode()
def logit_effects(
    directions: torch.Tensor,  # (d_sae, d_model): what each feature adds to the residual stream
    unembedding: torch.Tensor,  # (vocab, d_model)
    norm_scale: torch.Tensor | None = None,  # (d_model,) final norm gain
    k: int = 10,
    chunk: int = 512,
    bins: int = 32,
) -> LogitEffects:
    """The effects W_dec (diag(norm gain)) W_U^T, summarised per feature in one pass."""
    W_U = unembedding.float()
    if norm_scale is not None:
        W_U = W_U * norm_scale.float().to(W_U.device)
    k = min(k, W_U.shape[0])
    parts: list[list[torch.Tensor]] = [[], [], [], [], [], [], []]
    for start in range(0, directions.shape[0], chunk):
        effects = directions[start : start + chunk].float().to(W_U.device) @ W_U.T
        top = effects.topk(k, dim=-1)
        bottom = effects.topk(k, dim=-1, largest=False)
        low, high = effects.min(-1).values, effects.max(-1).values
        width = (high - low).clamp(min=1e-12) / bins
        which = ((effects - low[:, None]) / width[:, None]).long().clamp(0, bins - 1)
        counts = torch.zeros(len(effects), bins, dtype=torch.long, device=effects.device)
        counts.scatter_add_(1, which, torch.ones_like(which))
        results = (top.indices, top.values, bottom.indices, bottom.values, counts, low, high)
        for part, tensor in zip(parts, results, strict=True):
            part.append(tensor.cpu())
    return LogitEffects(*(torch.cat(p) for p in parts))


@torch.inference_mode()
def decoder_neighbours(
    W_dec: torch.Tensor,  # (d_sae, d_in)
    k: int = 10,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k features whose decoder rows are most cosine-similar to each one's (itself excluded).

    Computed chunk by chunk so memory stays (chunk, d_sae)."""
    unit = torch.nn.functional.normalize(W_dec.float(), dim=-1)
    d_sae = unit.shape[0]
    k = min(k, d_sae - 1)
    ids, cosines = [], []
    for start in range(0, d_sae, chunk):
        sims = unit[start : start + chunk] @ unit.T  # (chunk, d_sae)
        own = torch.arange(start, start + sims.shape[0], device=sims.device)
        sims[torch.arange(sims.shape[0], device=sims.device), own] = -float("inf")
        best = sims.topk(k, dim=-1)
        ids.append(best.indices.cpu())
        cosines.append(best.values.cpu())
    return torch.cat(ids), torch.cat(cosines)


@torch.inference_mode()
def closest_decoders(
    direction: torch.Tensor, W_dec: torch.Tensor, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k rows of another SAE's decoder most cosine-similar to one feature's direction: where
    a feature went in a larger or smaller dictionary at the same site (feature splitting)."""
    unit = torch.nn.functional.normalize(W_dec.float(), dim=-1)
    sims = unit @ torch.nn.functional.normalize(direction.float().to(unit.device), dim=-1)
    best = sims.topk(min(k, len(sims)))
    return best.indices.cpu(), best.values.cpu()
