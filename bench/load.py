"""Fifty readers at once against the real server on PostgreSQL: the demo database and the
million-feature synthetic one.

    python -m bench.load [--clients 50] [--seconds 60] [--workers 2] [--databases demo,synthetic]
                         [--postgres postgresql://postgres@127.0.0.1:5432]

Each database lives in its own PostgreSQL database (bench_demo, bench_synthetic), built on first
use and reused after: the demo one as `monoscope demo` builds it (both SAEs harvested, labelled
and scored: minutes), the synthetic one by bench.db_scale (about 15 minutes). The server is
`uvicorn` in its own process (--workers), serving the database without a model, as a read-only
mirror would. Every reader loops for --seconds over what a researcher reads: feature pages (most),
the SAE page's feature table as htmx fetches it, label search, the feature API, SAE pages, the
home page and the dashboard. Prints requests/s, p50/p95/p99 latency and error counts overall and
per page kind; exits 1 if any answer was a 5xx or failed to arrive. The clients share the CPU with
the server and PostgreSQL.
"""

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db.engine import connect, migrate
from app.db.queries import list_saes
from bench.db_scale import ensure_built
from bench.server import running_server

# Page kinds and how often a reader opens each (weights).
MIX = {
    "feature page": 40,
    "feature table": 15,
    "label search": 15,
    "feature api": 15,
    "sae page": 5,
    "home": 5,
    "dashboard": 5,
}
TABLE_BLOCK = {"HX-Request": "true", "HX-Target": "feature-table"}


def _database(server: str, name: str) -> str:
    """The URL of database `name` on that server, created when missing."""
    admin = connect(f"{server}/postgres").execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


def _ensure_demo(url: str) -> None:
    from pathlib import Path

    from app.pipeline.demo_build import build_demo_database, demo_database_ready

    engine = connect(url)
    migrate(engine)
    if not demo_database_ready(engine):
        print(f"building the demo database into {url} (minutes) ...")
        build_demo_database(engine, Path("data/bench/demo-harvest"))
    engine.dispose()


@dataclass
class Targets:
    """What readers ask for, sampled from the database the server reads."""

    saes: list[tuple[str, str, int]]  # model, sae, features stored
    keyset: dict[tuple[str, str], list[tuple[float, int]]]  # (density, index) page boundaries
    words: list[str]

    @classmethod
    def sample(cls, url: str) -> "Targets":
        engine = connect(url)
        with Session(engine) as session:
            stored = list_saes(session)
            saes = [(s.model.name, s.name, s.summary.get("features") or s.d_sae) for s in stored]
            keyset = {}
            for s in stored:
                rows = session.execute(
                    text(
                        'SELECT density, "index" FROM features WHERE sae_id = :id '
                        "ORDER BY random() LIMIT 300"
                    ),
                    {"id": s.id},
                ).all()
                keyset[(s.model.name, s.name)] = [(float(d), int(i)) for d, i in rows]
            labels = session.scalars(
                text(
                    "SELECT text FROM explanations WHERE status = 'ok' ORDER BY random() LIMIT 300"
                )
            ).all()
        engine.dispose()
        words = sorted({w.strip(".,;:'\"()").lower() for t in labels for w in t.split()} - {""})
        return cls(saes, keyset, [w for w in words if len(w) > 3] or ["the"])

    def request(self, kind: str, rng: random.Random) -> tuple[str, dict]:
        model, sae, n = rng.choice(self.saes)
        if kind == "feature page":
            return f"/{model}/{sae}/{rng.randrange(n)}", {}
        if kind == "feature api":
            return f"/api/v1/features/{model}/{sae}/{rng.randrange(n)}", {}
        if kind == "feature table":
            density, index = rng.choice(self.keyset[(model, sae)])
            return f"/{model}/{sae}?sort=density&after={density!r}:{index}", TABLE_BLOCK
        if kind == "label search":
            return "/search?q=" + " ".join(rng.sample(self.words, rng.randint(1, 2))), {}
        if kind == "sae page":
            return f"/{model}/{sae}", {}
        return {"home": "/", "dashboard": "/dashboard"}[kind], {}


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    failures: int = 0  # no answer at all (timeout, reset)


async def _readers(base: str, targets: Targets, clients: int, seconds: float) -> Tally:
    tally = Tally()
    kinds, weights = list(MIX), list(MIX.values())
    deadline = time.perf_counter() + seconds

    async def reader(http: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            kind = rng.choices(kinds, weights)[0]
            path, headers = targets.request(kind, rng)
            start = time.perf_counter()
            try:
                response = await http.get(path, headers=headers)
            except httpx.HTTPError:
                tally.failures += 1
                continue
            tally.latencies[kind].append((time.perf_counter() - start) * 1000)
            tally.statuses[response.status_code] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(reader(http, seed) for seed in range(clients)))
    return tally


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(name: str, tally: Tally, seconds: float) -> int:
    """Print the run; returns the count of 5xx answers and failed requests."""
    everything = [x for values in tally.latencies.values() for x in values]
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    other = sum(n for status, n in tally.statuses.items() if 400 <= status < 500)
    print(
        f"\n{name}: {len(everything):,} requests in {seconds:g} s = "
        f"{len(everything) / seconds:.1f} req/s; p50 {statistics.median(everything):.0f} ms, "
        f"p95 {_quantile(everything, 0.95):.0f} ms, p99 {_quantile(everything, 0.99):.0f} ms; "
        f"5xx {server_errors}, 4xx {other}, no answer {tally.failures}"
    )
    print(f"  {'page':14s} {'requests':>8s} {'p50 ms':>7s} {'p95 ms':>7s}")
    for kind in MIX:
        values = tally.latencies.get(kind, [])
        if values:
            print(
                f"  {kind:14s} {len(values):8,d} {statistics.median(values):7.0f} "
                f"{_quantile(values, 0.95):7.0f}"
            )
    return server_errors + tally.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--databases", default="demo,synthetic")
    parser.add_argument("--features", type=int, default=1_000_000, help="synthetic database size")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server (no database name)",
    )
    args = parser.parse_args()
    bad = 0
    for name in args.databases.split(","):
        if name == "demo":
            url = _database(args.postgres, "bench_demo")
            _ensure_demo(url)
        elif name == "synthetic":
            url = _database(args.postgres, "bench_synthetic")
            ensure_built(url, args.features)
        else:
            sys.exit(f"unknown database {name!r}: use demo and/or synthetic")
        targets = Targets.sample(url)
        with running_server(
            {"MONOSCOPE_DATABASE_URL": url},
            "--workers",
            str(args.workers),
            drop=("MONOSCOPE_MODEL", "MONOSCOPE_SAES"),
        ) as base:
            asyncio.run(_readers(base, targets, args.clients, 3))  # warm up
            tally = asyncio.run(_readers(base, targets, args.clients, args.seconds))
        bad += _report(
            f"{name} ({url.rsplit('/', 1)[-1]}, {args.workers} workers, {args.clients} readers)",
            tally,
            args.seconds,
        )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
