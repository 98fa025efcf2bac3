"""Pages under load: concurrent clients against a real server on the million-feature database.

    python -m bench.web [--features 1000000] [--database sqlite:///data/bench/db-scale-1000000.db]
                        [--clients 1,4,8] [--seconds 10]

Starts `uvicorn` (one worker, a separate process) on a database that `bench.db_scale` builds (or
reuses with --database), then drives it with httpx from --clients concurrent connections, one page
kind at a time for --seconds each: the feature page at random indices, the SAE page's feature
table at a random keyset depth (density order, 50 rows, as htmx fetches it) and label search.
For each it prints requests/s and p50/p95 latency; next to it the same page's database queries
run in-process, and the ratio says what HTTP, templates and the event loop add. Target: feature
page p95 ≤ 100 ms. The clients share the machine with the server (--workers uvicorn processes).
"""

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db.engine import connect
from app.db.queries import FeatureFilters, feature_view, list_features
from app.db.search import search_explanations
from bench.db_scale import WORDS, ensure_built
from bench.server import running_server

FEATURE_TARGET_MS = 100


def _targets(url: str, n_features: int, seed: int = 0):
    """Random request paths per page kind, and the matching in-process query."""
    rng = random.Random(seed)
    engine = connect(url)
    with Session(engine) as session:
        boundaries = [
            (d, i)
            for i, d in session.execute(
                text(
                    'SELECT "index", density FROM features WHERE sae_id = 1 '
                    "ORDER BY random() LIMIT 500"
                )
            )
        ]
    engine.dispose()

    def feature():
        index = rng.randrange(n_features)
        return f"/bench/res/{index}", lambda s: feature_view(s, "bench", "res", index)

    def listing():
        after = rng.choice(boundaries)
        path = f"/bench/res?sort=density&after={after[0]!r}:{after[1]}"
        return path, lambda s: list_features(
            s, 1, "density", True, after=after, limit=50, filters=FeatureFilters()
        )

    def search():
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2)))
        return f"/search?q={q}", lambda s: search_explanations(s, q, limit=20)

    return {"feature page": feature, "feature table": listing, "label search": search}


async def _load(base: str, make, clients: int, seconds: float, headers: dict) -> list[float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            path, _ = make()
            start = time.perf_counter()
            response = await http.get(path, headers=headers)
            latencies.append((time.perf_counter() - start) * 1000)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    if errors:
        print(f"  {errors} responses were not 200")
    return latencies


def _direct(url: str, make, n: int = 200) -> float:
    engine = connect(url)
    times = []
    with Session(engine) as session:
        for _ in range(n):
            _, query = make()
            start = time.perf_counter()
            query(session)
            times.append((time.perf_counter() - start) * 1000)
    engine.dispose()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--database", help="default: the SQLite file bench.db_scale keeps")
    parser.add_argument("--clients", default="1,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    url = args.database or f"sqlite:///{Path('data/bench').resolve()}/db-scale-{args.features}.db"
    ensure_built(url, args.features)
    with running_server(
        {"MONOSCOPE_DATABASE_URL": url}, "--workers", str(args.workers), drop=("MONOSCOPE_MODEL",)
    ) as base:
        print(
            f"{args.seconds:g} s per page and concurrency, {args.workers} worker(s), "
            f"{url.split('///')[-1]}"
        )
        print(
            f"{'page':15s} {'clients':>7s} {'req/s':>7s} {'p50 ms':>8s} {'p95 ms':>8s} "
            f"{'query p50':>10s} {'HTTP/query':>10s}"
        )
        for name, make in _targets(url, args.features).items():
            # The table is fetched as htmx does after the first view: the block alone.
            headers = (
                {"HX-Request": "true", "HX-Target": "feature-table"} if "table" in name else {}
            )
            direct = _direct(url, make)
            for clients in (int(c) for c in args.clients.split(",")):
                asyncio.run(_load(base, make, clients, 2, headers))  # warm up
                latencies = sorted(asyncio.run(_load(base, make, clients, args.seconds, headers)))
                p50 = statistics.median(latencies)
                p95 = latencies[int(0.95 * (len(latencies) - 1))]
                verdict = ""
                if name == "feature page":
                    verdict = "  ok" if p95 <= FEATURE_TARGET_MS else "  over the 100 ms target"
                print(
                    f"{name:15s} {clients:7d} {len(latencies) / args.seconds:7.1f} {p50:8.1f} "
                    f"{p95:8.1f} {direct:10.2f} {p50 / direct:9.1f}×{verdict}"
                )


if __name__ == "__main__":
    main()
