"""Nearest labels by cosine: the HNSW index past EXACT_LIMIT agrees with exact search."""

import numpy as np

from app.web import semantic
from app.web.semantic import VectorSearch, fuse


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_index_finds_what_exact_search_finds(monkeypatch):
    vectors, ids = _unit(3000, 0), np.arange(10_000, 13_000)
    queries = vectors[:50] + 0.3 * _unit(50, 1)  # near a stored row, not on it
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = VectorSearch(ids, vectors)
    monkeypatch.setattr(semantic, "EXACT_LIMIT", 100)
    approximate = VectorSearch(ids, vectors)
    assert exact._index is None and approximate._index is not None
    agree = 0
    for query in queries:
        want, got = exact.nearest(query, 10), approximate.nearest(query, 10)
        assert want[0][0] == 10_000 + int(np.argmax(vectors @ query))
        agree += len({k for k, _ in want} & {k for k, _ in got})
        assert abs(got[0][1] - want[0][1]) < 0.01  # cosines, to float16 precision
    assert agree / (10 * len(queries)) > 0.95  # recall@10


def test_fusion_rewards_ids_in_both_rankings():
    assert fuse([[1, 2, 3], [3, 4]]) == [3, 1, 2, 4]
    assert fuse([[], [7]]) == [7]
