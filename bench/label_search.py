"""Semantic label search at scale: the query's MiniLM embedding plus the HNSW lookup that
app.web.semantic does past EXACT_LIMIT labels, on a million stored label vectors.

    python -m bench.label_search [--labels 1000000] [--queries 200]

The stored vectors are MiniLM embeddings of generated labels (a few thousand distinct phrases,
each stored with small noise, so the index holds a million distinct rows shaped like real label
embeddings). Prints the index build time, p50/p95 of embed + search in milliseconds against the
50 ms target, and recall@10 of the index against exact search on a sample of queries; then the
time to save the index and to restore it memory-mapped (what a restarted server does instead of
building), and the restored index's p50/p95.
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.core.text_embedding import TextEmbedder
from app.web.semantic import VectorSearch

SUBJECTS = ["the Golden Gate Bridge", "cats", "numbered lists", "Python imports", "fog",
            "French articles", "pirate talk", "flattery", "sports teams", "colours",
            "weather", "plural nouns", "the first token", "newlines", "questions", "pets",
            "music"]  # fmt: skip
FRAMES = ["{s}", "mentions of {s}", "'{w}' in {s}", "text about {s}", "the token after {s}",
          "{s} in a chat reply", "{s}, then a comma"]  # fmt: skip
QUERIES = ["bridge in fog", "cat behaviour", "list numbering", "code imports",
           "pirate speech", "compliments", "football", "the colour red", "rain and wind",
           "a question mark"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(0)
    embedder = TextEmbedder.packaged()
    phrases = sorted(
        {f.format(s=s, w=w) for f in FRAMES for s in SUBJECTS for w in ("a", "the", "of", "Gate")}
    )
    base = embedder.encode(phrases)
    noise = np.random.default_rng(0)
    rows = base[noise.integers(0, len(base), args.labels)]
    rows = rows + 0.05 * noise.standard_normal(rows.shape).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = np.arange(args.labels, dtype=np.int64)
    start = time.perf_counter()
    index = VectorSearch(ids, rows)
    built = time.perf_counter() - start

    def timed_queries(search: VectorSearch) -> tuple[float, float, list[float]]:
        times, recall = [], []
        for i in range(args.queries):
            query = rng.choice(QUERIES) + rng.choice(["", " text", " tokens", " feature"])
            start = time.perf_counter()
            found = search.nearest(embedder.encode([query])[0], 80)
            times.append((time.perf_counter() - start) * 1000)
            if i < 20:
                vector = embedder.encode([query])[0]
                exact = set(np.argsort(-(rows @ vector))[:10].tolist())
                recall.append(len(exact & {k for k, _ in found[:10]}) / 10)
        return statistics.median(times), float(np.percentile(times, 95)), recall

    p50, p95, recall = timed_queries(index)
    kind = "HNSW (usearch)" if index._index is not None else "exact"
    print(f"{args.labels:,} label vectors, {kind} index built in {built:.1f} s")
    print(f"embed + search: p50 {p50:.1f} ms, p95 {p95:.1f} ms (target 50 ms: {p95 / 50:.2f}x)")
    print(f"recall@10 against exact search: {statistics.mean(recall):.3f}")
    if index._index is None:
        return
    path = Path(tempfile.mkdtemp(prefix="monoscope-bench-index-")) / "labels.usearch"
    start = time.perf_counter()
    index.save(path)
    saved = time.perf_counter() - start
    start = time.perf_counter()
    restored = VectorSearch.restore(ids, path)
    loaded = time.perf_counter() - start
    size = path.stat().st_size / 2**20
    print(f"saved in {saved:.1f} s ({size:,.0f} MiB); restored (memory-mapped) in {loaded:.2f} s:")
    print(f"  {built / loaded:,.0f}x faster than building")
    p50, p95, recall = timed_queries(restored)
    print(f"restored: p50 {p50:.1f} ms, p95 {p95:.1f} ms, recall@10 {statistics.mean(recall):.3f}")


if __name__ == "__main__":
    main()
