"""Harvest bookkeeping against brute-force references on random sparse activations."""

import numpy as np
import pytest
import torch

from app.core.harvest import (
    FeatureStatistics,
    context_maxima,
    decoder_neighbours,
    histogram_edges,
    logit_effects,
    select_examples,
    select_examples_in_parts,
    sparsify,
)


def _sparse_acts(batch=6, pos=9, d_sae=40, density=0.15, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(batch, pos, d_sae, generator=g) * 5
    return values * (torch.rand(batch, pos, d_sae, generator=g) < density)


def _counted(acts: torch.Tensor, left: tuple[int, ...] = ()) -> torch.Tensor:
    """BOS off everywhere; in context i, also the first left[i] positions after it."""
    counted = torch.ones(acts.shape[:2], dtype=torch.bool)
    counted[:, 0] = False
    for i, n in enumerate(left):
        counted[i, 1 : 1 + n] = False
    return counted


def test_statistics_match_a_dense_reference_and_skip_bos_and_left_context():
    acts = _sparse_acts()
    acts[:, 0] = 100.0  # BOS: must not count anywhere
    acts[1, 1:4] = 50.0  # left context of context 1: shown to the model, counted before
    counted = _counted(acts, left=(0, 3))
    stats = FeatureStatistics(acts.shape[-1], histogram_edges(5.0))
    for half in (slice(0, 3), slice(3, 6)):
        stats.update(sparsify(acts[half], counted[half]))
    body = acts[counted]
    assert int(stats.tokens) == body.shape[0]
    assert torch.equal(stats.counts, (body > 0).sum(0))
    torch.testing.assert_close(stats.sums, body.double().sum(0))
    assert torch.equal(stats.maxima, body.amax(0))
    assert torch.equal(stats.histogram.sum(1), stats.counts)
    reference = np.stack(
        [np.histogram(np.log10(col[col > 0].numpy()), bins=stats.log10_edges)[0] for col in body.T]
    )
    assert np.array_equal(stats.histogram.numpy(), reference)


def test_context_maxima_are_the_positive_per_context_maxima():
    acts = _sparse_acts(seed=1)
    sparse = sparsify(acts, _counted(acts))
    rows, features, values = context_maxima(sparse, acts.shape[-1], 100)
    dense = acts[:, 1:].amax(dim=1)
    expected = dense.nonzero()
    assert np.array_equal(rows, expected[:, 0].numpy() + 100)
    assert np.array_equal(features, expected[:, 1].numpy())
    assert np.array_equal(values, dense[dense > 0].numpy())


def _reference_selection(rows, features, values, d_sae, n_top, n_intervals):
    """Per feature, by brute force: the top rows and the interval of every other row."""
    top, interval_of = {}, {}
    for f in range(d_sae):
        mine = [(v, r) for r, ff, v in zip(rows, features, values, strict=True) if ff == f]
        mine.sort(key=lambda p: (-p[0], p[1]))
        top[f] = [r for _, r in mine[:n_top]]
        if mine:
            peak = mine[0][0]
            for v, r in mine[n_top:]:
                interval_of[(f, r)] = min(max(int(np.ceil(v / peak * n_intervals)) - 1, 0), 4)
    return top, interval_of


def test_select_examples_matches_brute_force():
    rng = np.random.default_rng(0)
    n, d_sae = 3000, 12
    rows = rng.choice(10_000, size=n, replace=False).astype(np.int64)
    features = rng.integers(0, d_sae, size=n).astype(np.int32)
    values = rng.random(n).astype(np.float32) * 10
    picked = select_examples(rows, features, values, d_sae, n_top=7, n_intervals=5, per_interval=3)
    top, interval_of = _reference_selection(rows, features, values, d_sae, 7, 5)
    for f in range(d_sae):
        is_top = (picked.features == f) & (picked.kinds == 0)
        ranked = picked.rows[is_top][np.argsort(picked.ranks[is_top])]
        assert ranked.tolist() == top[f]
        sampled = (picked.features == f) & (picked.kinds == 1)
        assert not set(picked.rows[sampled]) & set(top[f])  # samples never repeat a top example
        for interval in range(5):
            in_bin = sampled & (picked.intervals == interval)
            available = sum(1 for (ff, _), i in interval_of.items() if ff == f and i == interval)
            assert in_bin.sum() == min(3, available)  # full where it can be, never padded
            assert sorted(picked.ranks[in_bin].tolist()) == list(range(in_bin.sum()))
            for r in picked.rows[in_bin]:
                assert interval_of[(f, int(r))] == interval
    again = select_examples(rows, features, values, d_sae, n_top=7, n_intervals=5, per_interval=3)
    assert np.array_equal(again.rows, picked.rows)  # seeded: the same every run


@pytest.mark.parametrize("n_parts", [1, 2, 7, 40])
def test_examples_chosen_part_by_part_are_the_ones_chosen_at_once(n_parts):
    """A harvest reads its maxima shard by shard (bounded memory); the choice must not change."""
    rng = np.random.default_rng(n_parts)
    n, d_sae = 4000, 16
    rows = rng.choice(20_000, size=n, replace=False).astype(np.int64)
    features = rng.integers(0, d_sae - 1, size=n).astype(np.int32)  # the last feature is dead
    values = (rng.integers(1, 40, size=n) / 4).astype(np.float32)  # ties in value
    at_once = select_examples(rows, features, values, d_sae, n_top=6, n_intervals=4, per_interval=3)
    order = np.argsort(rows)  # parts hold runs of context rows, as shards do
    cuts = np.array_split(order, n_parts)
    cuts.insert(1, order[:0])  # and one empty part

    def parts():
        return [(rows[c], features[c], values[c]) for c in cuts]

    in_parts = select_examples_in_parts(parts, d_sae, n_top=6, n_intervals=4, per_interval=3)
    for field in ("features", "rows", "values", "kinds", "ranks", "intervals"):
        np.testing.assert_array_equal(getattr(in_parts, field), getattr(at_once, field), field)


def test_select_examples_with_a_dead_feature_and_no_rows():
    empty = select_examples(
        np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), d_sae=4
    )
    assert len(empty.rows) == 0


def test_logit_effects_go_through_the_final_norm_gain():
    g = torch.Generator().manual_seed(0)
    directions, W_U, gain = torch.randn(30, 8, generator=g), torch.randn(50, 8, generator=g), None
    gain = torch.rand(8, generator=g) + 0.5
    effects = logit_effects(directions, W_U, gain, k=5, chunk=7, bins=10)
    full = (directions * gain) @ W_U.T
    expected_top = full.topk(5, dim=-1)
    assert torch.equal(effects.top_ids, expected_top.indices)
    torch.testing.assert_close(effects.top_values, expected_top.values)
    assert torch.equal(effects.bottom_ids, full.topk(5, dim=-1, largest=False).indices)
    torch.testing.assert_close(effects.bottom_values, full.topk(5, dim=-1, largest=False).values)
    # The histogram covers every token once, from the lowest effect to the highest.
    assert (effects.histogram.sum(1) == 50).all() and effects.histogram.shape == (30, 10)
    torch.testing.assert_close(effects.low, full.min(1).values)
    torch.testing.assert_close(effects.high, full.max(1).values)
    for f in (0, 17):
        edges = torch.linspace(float(effects.low[f]), float(effects.high[f]), 11)
        expected = torch.histogram(full[f], bins=edges).hist.long()
        assert torch.equal(effects.histogram[f], expected)


@pytest.mark.parametrize("chunk", [3, 64])
def test_decoder_neighbours_exclude_self_and_match_brute_force(chunk):
    W_dec = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    ids, cosines = decoder_neighbours(W_dec, k=4, chunk=chunk)
    unit = torch.nn.functional.normalize(W_dec, dim=-1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-2)
    expected = sims.topk(4, dim=-1)
    assert torch.equal(ids, expected.indices)
    torch.testing.assert_close(cosines, expected.values)
    assert not (ids == torch.arange(40)[:, None]).any()
