"""The queries behind pages on a synthetic database of a million features, SQLite and PostgreSQL.

    python -m bench.db_scale [--features 1000000] [--examples 50] [--engines sqlite,postgresql]
                             [--postgres-url postgresql://postgres@127.0.0.1/test] [--keep DIR]

Builds the database through the real schema (alembic upgrade head), bulk-loads features (each
with JSON histogram, logit effects and neighbours), 50 examples per feature over a shared pool of
contexts with float16 per-token activations, and one label per feature; then times, on random
targets: the feature page (3 queries: feature with labels, examples with contexts, neighbours),
a keyset page of 50 features sorted by density at a random depth, and label full-text search.
Prints p50/p95 in milliseconds against the targets (20 / 30 / 50 ms). Building takes minutes at
full size; PostgreSQL is reset (schema public dropped) before loading.
"""

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.db.engine import connect, migrate
from app.db.labels import refresh_summary
from app.db.queries import feature_view, find_sae, list_features
from app.db.search import search_explanations

CONTEXT = 64
CONTEXT_POOL = 200_000
# A label vocabulary of 2,000 made-up words (labels draw 3-6 of them).
WORDS = [
    a + b + c
    for a in ("bri", "gol", "fo", "ca", "lo", "qu", "ne", "par", "sym", "ve")
    for b in ("da", "me", "xo", "ri", "po", "te", "su", "ke", "bo", "la")
    for c in (
        "dge",
        "n",
        "x",
        "on",
        "p",
        "st",
        "m",
        "nt",
        "ng",
        "r",
        "sh",
        "ck",
        "ft",
        "lk",
        "mp",
        "nd",
        "rt",
        "sk",
        "th",
        "zz",
    )
]
CHUNK = 10_000


def _features(first: int, n: int, rng: np.random.Generator, labels: list[str]) -> Iterator[tuple]:
    density = 10 ** rng.uniform(-6, -0.5, n)
    max_act = rng.gamma(2.0, 3.0, n)
    histogram = json.dumps({"counts": rng.integers(0, 1000, 40).tolist()})
    logits = json.dumps([[int(t), f"tok{t}", 0.5] for t in rng.integers(0, 50_000, 10)])
    neighbours = json.dumps([[int(i), 0.4] for i in rng.integers(0, 1_000_000, 10)])
    for i in range(n):
        yield (
            1,
            first + i,
            float(density[i]),
            float(max_act[i]),
            float(max_act[i]) / 3,
            histogram,
            logits,
            logits,
            neighbours,
            labels[i],
        )


def _label(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))


def build(engine: Engine, n_features: int, n_examples: int) -> None:
    migrate(engine)
    rng = np.random.default_rng(0)
    words = random.Random(0)
    activations = rng.random((1024, CONTEXT)).astype(np.float16)
    blobs = [a.tobytes() for a in activations]
    ids = rng.integers(0, 50_000, (1024, CONTEXT)).astype("<i4")
    token_blobs = [r.tobytes() for r in ids]
    raw = engine.raw_connection()
    cursor = raw.cursor()
    postgres = engine.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"

    def rows(sql: str, values) -> None:
        if postgres:
            columns = sql
            with cursor.copy(f"COPY {columns} FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)
        else:
            table, _, names = sql.partition(" ")
            n = names.count(",") + 1
            cursor.executemany(
                f"INSERT INTO {table} {names} VALUES ({','.join([mark] * n)})", values
            )

    cursor.execute(
        "INSERT INTO models (id, name, source, architecture, n_layers, d_model, vocab_size, "
        f"created_at) VALUES (1, 'bench', 'bench', 'gpt2', 12, 768, 50000, {mark})",
        ("2026-01-01",),
    )
    cursor.execute(
        "INSERT INTO saes (id, model_id, name, source, site, architecture, d_in, d_sae, metrics, "
        f"harvest, created_at) VALUES (1, 1, 'res', 'bench', 'blocks.6.hook_resid_post', 'topk', "
        f"768, {n_features}, '{{}}', '{{}}', {mark})",
        ("2026-01-01",),
    )
    rows("tokens (model_id, token_id, text)", ((1, t, f"tok{t}") for t in range(50_000)))
    rows(
        "contexts (id, model_id, corpus, row, token_ids)",
        ((i + 1, 1, "bench", i, token_blobs[i % 1024]) for i in range(CONTEXT_POOL)),
    )
    start = time.perf_counter()
    for first in range(0, n_features, CHUNK):
        n = min(CHUNK, n_features - first)
        labels = [_label(words) for _ in range(n)]
        rows(
            "features (sae_id, index, density, max_act, mean_act, histogram, top_logits, "
            "bottom_logits, neighbours, label)".replace("index", '"index"'),
            _features(first, n, rng, labels),
        )
        feature_ids = np.arange(first + 1, first + n + 1)
        contexts = rng.integers(1, CONTEXT_POOL + 1, (n, n_examples))
        rows(
            "examples (feature_id, kind, rank, interval, context_id, max_act, activations)",
            (
                (
                    int(f),
                    "top" if r < 32 else "quantile",
                    r,
                    None if r < 32 else (r - 32) // 4,
                    int(c),
                    1.0,
                    blobs[(f + r) % 1024],
                )
                for f, row in zip(feature_ids, contexts, strict=True)
                for r, c in enumerate(row)
            ),
        )
        rows(
            "explanations (feature_id, text, method, scores, created_at)",
            (
                (int(f), label, "offline", "{}", "2026-01-01")
                for f, label in zip(feature_ids, labels, strict=True)
            ),
        )
        raw.commit()
        done = first + n
        rate = done / (time.perf_counter() - start)
        print(f"\r  loaded {done:,} / {n_features:,} features ({rate:,.0f}/s)", end="", flush=True)
    print()
    if postgres:
        cursor.execute("SELECT setval('features_id_seq', (SELECT max(id) FROM features))")
        cursor.execute("ANALYZE")
    else:
        cursor.execute("ANALYZE")
    raw.commit()
    raw.close()
    with Session(engine) as session:  # the SAE page's histograms, as jobs leave them
        refresh_summary(session, 1)
        session.commit()


def _percentiles(run: Callable[[], object], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def measure(engine: Engine, n_features: int, n: int) -> dict[str, tuple[float, float]]:
    rng = random.Random(1)
    with Session(engine) as session:
        sae = find_sae(session, "bench", "res")
        boundaries = [
            (d, i)
            for i, d in session.execute(
                text(
                    'SELECT "index", density FROM features WHERE sae_id = 1 '
                    "ORDER BY random() LIMIT 500"
                )
            )
        ]

        def page() -> None:
            view = feature_view(session, "bench", "res", rng.randrange(n_features))
            assert view is not None and len(view.detail.examples) > 0

        def listing() -> None:
            list_features(
                session, sae.id, "density", descending=True, after=rng.choice(boundaries), limit=50
            )

        def search() -> None:
            query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2)))
            search_explanations(session, query, limit=20)

        for run in (page, listing, search):  # warm caches
            _percentiles(run, 20)
        return {
            "feature page": _percentiles(page, n),
            "keyset listing": _percentiles(listing, n),
            "label search": _percentiles(search, n),
        }


TARGETS = {"feature page": 20, "keyset listing": 30, "label search": 50}


def fresh_database(url: str) -> Engine:
    """An engine on an empty database at `url`: the SQLite file deleted, or the PostgreSQL
    schema dropped."""
    engine = connect(url)
    if engine.dialect.name == "sqlite":
        engine.dispose()
        Path(engine.url.database).unlink(missing_ok=True)
        return connect(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    return engine


def ensure_built(url: str, n_features: int) -> None:
    """For the benches that serve it: build the database at `url` unless all `n_features` are
    there; a half-built one starts again from empty."""
    engine = connect(url)
    with Session(engine) as session:
        complete = (
            engine.dialect.has_table(session.connection(), "features")
            and session.scalar(text("SELECT count(*) FROM features")) == n_features
        )
    engine.dispose()
    if not complete:
        print(f"building {n_features:,} synthetic features into {url} (minutes) ...")
        engine = fresh_database(url)
        build(engine, n_features, 50)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--keep", type=Path, default=Path("data/bench"), help="SQLite folder")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--reuse", action="store_true", help="measure an already built database")
    args = parser.parse_args()
    for name in args.engines.split(","):
        url = (
            f"sqlite:///{args.keep / f'db-scale-{args.features}.db'}"
            if name == "sqlite"
            else args.postgres_url
        )
        engine = connect(url) if args.reuse else fresh_database(url)
        if not args.reuse:
            start = time.perf_counter()
            print(f"{name}: building {args.features:,} features × {args.examples} examples")
            build(engine, args.features, args.examples)
            print(f"  built in {time.perf_counter() - start:,.0f} s")
        for query, (p50, p95) in measure(engine, args.features, args.queries).items():
            verdict = "ok" if p95 <= TARGETS[query] else "over target"
            print(
                f"  {name:10s} {query:15s} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  "
                f"(target p95 ≤ {TARGETS[query]} ms: {verdict})"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
