"""The language model's copy curriculum: random spans read twice, scored only where copying can
predict them."""

import numpy as np

from app.demo.language_model import repeated_spans


def test_repeated_spans_keep_the_loss_on_second_readings_only():
    pool = np.arange(100, 400)
    ids, labels = repeated_spans(np.random.default_rng(0), pool, 256)
    assert ids.shape == labels.shape == (256,)
    assert np.isin(ids.numpy(), pool).all()
    kept = np.flatnonzero(labels.numpy() != -100)
    assert 0.3 < len(kept) / 256 < 0.5  # the second readings, less each span's first token
    assert (labels[kept] == ids[kept]).all()
    # each kept token was read before, at one distance for a whole span
    distances = [min(d for d in range(1, 48) if ids[i - d] == ids[i]) for i in kept]
    assert all(d >= 4 for d in distances)


def test_repeated_spans_follow_the_seed():
    pool = np.arange(50)
    first = repeated_spans(np.random.default_rng((0, 7)), pool, 64)
    again = repeated_spans(np.random.default_rng((0, 7)), pool, 64)
    other = repeated_spans(np.random.default_rng((0, 8)), pool, 64)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not (first[0] == other[0]).all()
