"""Semantic label search: the query's MiniLM embedding against every embedded label, fused with
the full-text ranking, so "mist over a bridge" finds "Golden Gate Bridge in the fog".

    index = LabelIndex()                         # one per server process (app.state)
    nearest = index.nearest(session, "bridge in fog", 100)     # [(explanation id, cosine)]
    order = fuse([text_ids, [i for i, _ in nearest]])          # reciprocal-rank fusion

Labels get embeddings from `monoscope embed-labels` (the demo and add-sae run it); with none
stored, search is full-text only and the embedder is never loaded.
"""

import threading
from collections.abc import Callable

import numpy as np
from sqlalchemy.orm import Session

from app.core.text_embedding import TextEmbedder
from app.db.embeddings import embedding_fingerprint, label_vectors

MIN_SIMILARITY = 0.3
"""Cosine below which a label is not offered as a match: MiniLM puts unrelated short phrases
around 0-0.2, and a nonsense query should find nothing rather than the least unrelated label."""
FUSION_K = 60  # reciprocal-rank fusion's damping constant, as Cormack et al. use it


class LabelIndex:
    """The embedded labels of the database, held in memory and reloaded when the stored
    embeddings change (their count or newest id), and the embedder for queries, loaded on the
    first query that has labels to compare with."""

    def __init__(self, embedder: Callable[[], TextEmbedder] = TextEmbedder.packaged):
        self._load_embedder = embedder
        self._embedder: TextEmbedder | None = None
        self._lock = threading.Lock()
        self._fingerprint: tuple[int, int] | None = None
        self._ids = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, 0), np.float32)

    def _refresh(self, session: Session) -> None:
        fingerprint = embedding_fingerprint(session, TextEmbedder.name)
        if fingerprint != self._fingerprint:
            self._ids, self._vectors = label_vectors(session, TextEmbedder.name)
            self._fingerprint = fingerprint

    def nearest(self, session: Session, query: str, limit: int) -> list[tuple[int, float]]:
        """Up to `limit` (explanation id, cosine) pairs, most similar first, above
        MIN_SIMILARITY."""
        with self._lock:
            self._refresh(session)
            if not len(self._ids):
                return []
            if self._embedder is None:
                self._embedder = self._load_embedder()
            ids, vectors, embedder = self._ids, self._vectors, self._embedder
        similarity = vectors @ embedder.encode([query])[0]
        best = np.argsort(-similarity)[:limit]
        return [
            (int(ids[i]), float(similarity[i])) for i in best if similarity[i] >= MIN_SIMILARITY
        ]


def fuse(rankings: list[list[int]], k: int = FUSION_K) -> list[int]:
    """Reciprocal-rank fusion: each id scores the sum of 1 / (k + rank) over the rankings it is
    in, so an id high in both beats one high in either, and neither ranking's scale matters."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda key: (-scores[key], key))
