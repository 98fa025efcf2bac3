"""The map layout on synthetic decoders: directions that agree land together, the layout fills
the unit square, and a seed reproduces it."""

import numpy as np
import pytest
import torch

from app.core.feature_map import map_layout, unit_square


def _clustered(seed: int = 0, clusters: int = 4, per: int = 40, d_in: int = 32) -> tuple:
    """Decoder rows near `clusters` random directions, each row at its own random norm."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, d_in, generator=g), dim=1)
    rows = centres.repeat_interleave(per, 0) + 0.15 * torch.randn(clusters * per, d_in, generator=g)
    norms = torch.rand(clusters * per, 1, generator=g) * 5 + 0.1  # cosine ignores them
    return rows * norms, np.repeat(np.arange(clusters), per)


@pytest.mark.slow  # UMAP's numba compilation: ~15 s in a fresh process
def test_features_that_write_the_same_direction_land_together():
    rows, cluster = _clustered()
    xy = map_layout(rows, seed=0)
    assert xy.shape == (len(rows), 2) and xy.dtype == np.float32
    assert xy.min() == 0.0 and xy.max() == pytest.approx(1.0)
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.argmin(axis=1)
    assert (cluster[nearest] == cluster).mean() >= 0.98
    np.testing.assert_array_equal(map_layout(rows, seed=0), xy)  # a seed reproduces the map
    assert not np.array_equal(map_layout(rows, seed=1), xy)


def test_too_few_features_for_a_neighbourhood_lie_on_a_line():
    assert map_layout(torch.ones(0, 8)).shape == (0, 2)
    np.testing.assert_array_equal(map_layout(torch.randn(2, 8)), [[0.0, 0.5], [0.5, 0.5]])


def test_the_unit_square_keeps_the_aspect_ratio():
    square = unit_square(np.array([[2.0, 10.0], [6.0, 12.0], [4.0, 11.0]]))
    np.testing.assert_allclose(square, [[0.0, 0.0], [1.0, 0.5], [0.5, 0.25]])
    np.testing.assert_array_equal(unit_square(np.array([[3.0, 3.0], [3.0, 3.0]])), 0.0)
