"""Semantic label search: the query's MiniLM embedding against every embedded label, fused with
the full-text ranking, so "mist over a bridge" finds "Golden Gate Bridge in the fog".

    index = LabelIndex()                         # one per server process (app.state)
    nearest = index.nearest(session, "bridge in fog", 100)     # [(explanation id, cosine)]
    order = fuse([text_ids, [i for i, _ in nearest]])          # reciprocal-rank fusion

Labels get embeddings from `monoscope embed-labels` (the demo and add-sae run it); with none
stored, search is full-text only and the embedder is never loaded. Up to EXACT_LIMIT labels are
compared exactly; past it an HNSW index (usearch) is built in a background thread, and search is
full-text only until it is ready (bench/label_search.py: 746 s at a million labels on 2 cores).
A built index is saved in the index folder under a digest of the labels' ids and vectors, so a
restart, or another server process on the machine, memory-maps it in a second instead; one
process builds a given index at a time (an advisory file lock), the others wait for its file.
"""

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session
from usearch.index import Index

from app.core.text_embedding import TextEmbedder
from app.db.embeddings import embedding_fingerprint, label_vectors, store_label_embeddings
from app.db.search import SearchHit, hits_by_ids, search_explanations

MIN_SIMILARITY = 0.3
"""Cosine below which a label is not offered as a match: MiniLM puts unrelated short phrases
around 0-0.2, and a nonsense query should find nothing rather than the least unrelated label."""
FUSION_K = 60  # reciprocal-rank fusion's damping constant, as Cormack et al. use it
REFRESH_SECONDS = 30.0
"""How often a search looks for new embeddings: their count is a scan of the table, which at a
million labels costs tens of milliseconds, too much for every query."""
EXACT_LIMIT = 50_000
"""Labels compared exactly: 50k float32 rows are 77 MB and a query a few milliseconds; a
million would be 1.5 GB and tens of milliseconds, where the index answers in about one."""


KEPT_INDEX_FILES = 3  # the newest saved indexes; older ones are deleted when one is saved


class VectorSearch:
    """Nearest unit vectors by cosine: exact below EXACT_LIMIT rows, HNSW above."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, index: Index | None = None):
        self.size = len(ids)
        self._ids, self._exact, self._index = ids, None, index
        if index is not None:
            return
        if self.size <= EXACT_LIMIT:
            self._exact = vectors.astype(np.float32)
        else:
            self._index = Index(ndim=vectors.shape[1], metric="cos", dtype="f16")
            self._index.add(ids, vectors)

    @classmethod
    def restore(cls, ids: np.ndarray, path: Path) -> "VectorSearch":
        """A saved HNSW index, memory-mapped (pages load as searches touch them)."""
        index = Index.restore(str(path), view=True)
        if index is None or len(index) != len(ids):
            raise ValueError(f"{path} does not hold an index of {len(ids)} vectors")
        return cls(ids, np.empty((0, 0)), index)

    def save(self, path: Path) -> None:
        """Write the HNSW index atomically (a reader never sees half a file)."""
        assert self._index is not None
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self._index.save(str(partial))
        os.replace(partial, path)
        saved = sorted(path.parent.glob("*.usearch"), key=lambda f: f.stat().st_mtime)
        for old in saved[:-KEPT_INDEX_FILES]:
            old.unlink(missing_ok=True)

    def nearest(self, query: np.ndarray, limit: int) -> list[tuple[int, float]]:
        if self._exact is not None:
            similarity = self._exact @ query
            best = np.argsort(-similarity)[:limit]
            return [(int(self._ids[i]), float(similarity[i])) for i in best]
        assert self._index is not None
        found = self._index.search(query, min(limit, self.size))
        return [(int(k), 1.0 - float(d)) for k, d in zip(found.keys, found.distances, strict=True)]


def _digest(ids: np.ndarray, vectors: np.ndarray) -> str:
    """What a saved index holds: every id and vector (an edited label keeps its id and count)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(np.ascontiguousarray(ids).tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest()


class LabelIndex:
    """The embedded labels of the database, held in memory and reloaded when the stored
    embeddings change (their count or newest id), and the embedder for queries, loaded on the
    first query that has labels to compare with."""

    def __init__(
        self,
        embedder: Callable[[], TextEmbedder] = TextEmbedder.packaged,
        folder: Path | None = None,  # where built indexes are saved; None: kept in memory only
    ):
        self._load_embedder = embedder
        self._folder = folder
        self._embedder: TextEmbedder | None = None
        self._lock = threading.Lock()
        self._fingerprint: tuple[int, int] | None = None
        self._checked_at = -REFRESH_SECONDS
        self._search: VectorSearch | None = None
        self._building: threading.Thread | None = None

    def _refresh(self, session: Session) -> None:
        """Load the stored vectors when they changed (looked at every REFRESH_SECONDS); a large
        set is indexed in the background (the previous index, if any, answers meanwhile)."""
        now = time.monotonic()
        if now - self._checked_at < REFRESH_SECONDS:
            return
        self._checked_at = now
        fingerprint = embedding_fingerprint(session, TextEmbedder.name)
        if fingerprint == self._fingerprint or self._building is not None:
            return
        self._fingerprint = fingerprint
        ids, vectors = label_vectors(session, TextEmbedder.name)
        if len(ids) <= EXACT_LIMIT:
            self._search = VectorSearch(ids, vectors)
            return
        path = None
        if self._folder is not None:
            path = self._folder / f"{TextEmbedder.name}-{_digest(ids, vectors)}.usearch"
            if path.exists():
                try:
                    self._search = VectorSearch.restore(ids, path)
                    return
                except (ValueError, RuntimeError):  # a damaged file: built again below
                    path.unlink(missing_ok=True)

        def build() -> None:
            built, waiting = None, False
            try:
                with _building_alone(path) as alone:
                    waiting = not alone
                    if alone:
                        built = VectorSearch(ids, vectors)
                        if path is not None:
                            built.save(path)
            finally:  # a failed build, or another process's, is looked at again later
                with self._lock:
                    if built is None:
                        self._fingerprint = None
                        self._checked_at = time.monotonic() if waiting else -REFRESH_SECONDS
                    self._search, self._building = built or self._search, None

        self._building = threading.Thread(target=build, name="label-index", daemon=True)
        self._building.start()

    def embed(self, texts: list[str]) -> np.ndarray:
        """(texts, dimensions) unit vectors from the query embedder (loaded on first use)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._load_embedder()
            embedder = self._embedder
        return embedder.encode(texts)

    def remember(self, session: Session, label_id: int, text: str) -> None:
        """Embed a label a person just wrote or edited, so search finds it by meaning at once
        rather than after the next `embed-labels` run; only where labels are embedded at all
        (a server without semantic search never loads the embedder for it)."""
        if embedding_fingerprint(session, TextEmbedder.name)[0] == 0:
            return
        store_label_embeddings(session, TextEmbedder.name, [label_id], [text], self.embed([text]))
        with self._lock:  # the next search reloads the vectors (an edit keeps the fingerprint)
            self._fingerprint, self._checked_at = None, -REFRESH_SECONDS

    def nearest(self, session: Session, query: str, limit: int) -> list[tuple[int, float]]:
        """Up to `limit` (explanation id, cosine) pairs, most similar first, above
        MIN_SIMILARITY."""
        with self._lock:
            self._refresh(session)
            search = self._search
            if search is None or not search.size:
                return []
            if self._embedder is None:
                self._embedder = self._load_embedder()
            embedder = self._embedder
        found = search.nearest(embedder.encode([query])[0], limit)
        return [(key, similarity) for key, similarity in found if similarity >= MIN_SIMILARITY]


@contextmanager
def _building_alone(path: Path | None) -> Iterator[bool]:
    """Holds an exclusive advisory lock beside the index file while building it, so that the
    server processes of one machine build it once: yields False when another process holds it
    (or has saved the file meanwhile). The lock dies with its process."""
    if path is None:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield not path.exists()  # closing the file releases the lock


def fuse(rankings: list[list[int]], k: int = FUSION_K) -> list[int]:
    """Reciprocal-rank fusion: each id scores the sum of 1 / (k + rank) over the rankings it is
    in, so an id high in both beats one high in either, and neither ranking's scale matters."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda key: (-scores[key], key))


@dataclass(frozen=True)
class RankedHit:
    hit: SearchHit
    words: bool  # the label holds every word of the query
    similarity: float | None  # cosine of the label's and the query's embeddings, when close


def ranked_labels(
    session: Session,
    index: LabelIndex,
    q: str,
    model: str | None,
    sae: str | None,
    window: int,
) -> list[RankedHit]:
    """The best `window` labels for the query, by full-text rank and by meaning, fused."""
    worded = search_explanations(session, q, model=model, sae=sae, limit=window)
    # Filters apply after the nearest labels are found: ask for more, so a page stays full.
    similar = dict(index.nearest(session, q, 4 * window))
    hits = {h.explanation_id: h for h in worded}
    hits |= hits_by_ids(session, [i for i in similar if i not in hits], model, sae)
    words = {h.explanation_id for h in worded}
    order = fuse([[h.explanation_id for h in worded], [i for i in similar if i in hits]])
    return [RankedHit(hits[i], i in words, similar.get(i)) for i in order[:window]]
