"""Feature maps at scale: the layout job, the map's API and the page's frames in Chromium.

    python -m bench.map [--features 100000] [--layout-sizes 1000,4000,16000]
                        [--chromium /usr/bin/chromium] [--keep data/bench]

1. Layout: UMAP (app.core.feature_map) of random decoders shaped like the demo SAE's
   (d_in 256, directions drawn around 64 centres) at each of --layout-sizes, each timed on its
   second run (the first pays numba's compilation); prints seconds and µs per feature, and each
   size's cost per feature relative to the smallest.
2. API: a synthetic SAE of --features labelled features placed in 400 islands (SQLite, the
   real schema), served by uvicorn; prints the map document's bytes (raw and gzip) and the
   request's p50 next to the in-process query's (app.db.maps.map_points): the ratio is what JSON
   and HTTP add.
3. Page: the map page in headless Chromium: time from navigation to the first drawn frame, then
   p50/p95 of the work a zoom step (wheel) or a pointer move costs (handlers and redraw), against
   a 60 fps frame (16.7 ms). Target: responsive at 100k features, i.e. within that frame.
"""

import argparse
import gzip
import random
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.core.feature_map import map_layout
from app.db import store as db
from app.db.engine import connect, migrate, session_scope
from app.db.labels import refresh_sae
from app.db.maps import map_points, store_map
from app.db.models import Explanation
from app.db.queries import find_sae
from bench.db_scale import WORDS
from bench.server import running_server

FRAME_BUDGET_MS = 1000 / 60


def random_decoder(n: int, d_in: int = 256, centres: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    middle = torch.randn(centres, d_in, generator=g)
    pick = torch.randint(0, centres, (n,), generator=g)
    return middle[pick] + 0.6 * torch.randn(n, d_in, generator=g)


def bench_layout(sizes: list[int]) -> None:
    """Each size twice, the second timed: numba compiles UMAP's code paths on first use (exact
    neighbours below 4,096 points, nearest-neighbour descent from there)."""
    rows = []
    for n in sizes:
        decoder = random_decoder(n)
        map_layout(decoder)
        started = time.perf_counter()
        map_layout(decoder)
        rows.append((n, time.perf_counter() - started))
    base = rows[0][1] / rows[0][0]
    print("layout (UMAP, d_in 256, one thread)")
    for n, seconds in rows:
        per = seconds / n
        print(
            f"  {n:>8,} features  {seconds:7.1f} s  {per * 1e6:7.0f} µs/feature  x{per / base:.2f}"
        )


def build_map_database(url: str, n: int) -> None:
    """An SAE of `n` alive, labelled features placed in 400 islands of random size."""
    engine = connect(url)
    migrate(engine)
    rng = np.random.default_rng(0)
    words = random.Random(0)
    labels = [" ".join(words.choices(WORDS, k=words.randint(3, 6))) for _ in range(n)]
    centres = rng.random((400, 2))
    spread = rng.random(400) * 0.02 + 0.003
    island = rng.integers(0, 400, n)
    xy = centres[island] + rng.normal(size=(n, 2)) * spread[island, None]
    with session_scope(engine) as session:
        model = db.upsert_model(session, db.ModelInfo("bench", "bench", "gpt2", 4, 256, 10), [])
        sae = db.create_sae(
            session,
            model,
            db.SaeInfo("map", "bench", "blocks.1.hook_resid_post", "topk", 256, n, {}, {}),
        )
        ids = db.insert_features(
            session,
            sae.id,
            {
                "index": list(range(n)),
                "density": (10 ** rng.uniform(-6, -1, n)).tolist(),
                "max_act": [4.0] * n,
                "mean_act": [1.0] * n,
            },
        )
        session.execute(
            insert(Explanation),
            [
                {"feature_id": int(f), "text": t, "method": "offline", "scores": {}}
                for f, t in zip(ids, labels, strict=True)
            ],
        )
        refresh_sae(session, sae.id)
        store_map(session, sae.id, np.arange(n), xy, {"method": "synthetic islands"})
    engine.dispose()


def bench_api(url: str, base: str, repeats: int = 7) -> None:
    engine = connect(url)
    query = []
    for _ in range(repeats):
        with Session(engine) as session:
            started = time.perf_counter()
            sae_id = find_sae(session, "bench", "map").id
            points = map_points(session, sae_id)
            query.append(time.perf_counter() - started)
    engine.dispose()
    served, body = [], b""
    with httpx.Client(timeout=120, headers={"Accept-Encoding": "gzip"}) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(f"{base}/api/v1/saes/bench/map/map")
            response.raise_for_status()
            served.append(time.perf_counter() - started)
            body = response.content
    q, s = statistics.median(query) * 1e3, statistics.median(served) * 1e3
    print(f"API (/api/v1/saes/bench/map/map, {len(points.index):,} features)")
    packed = len(gzip.compress(body, 4))
    print(f"  document {len(body) / 1e6:.1f} MB raw, {packed / 1e6:.1f} MB gzip")
    print(f"  query p50 {q:.0f} ms · request p50 {s:.0f} ms · request/query x{s / q:.1f}")


# The work a zoom step or a pointer move costs the page: the event's handlers (run inside
# dispatchEvent) plus what runs in the next animation frame before the probe's own callback
# (the map's redraw), measured from that frame's start.
FRAME_PROBE = """async ([kind, steps]) => {
  const canvas = document.getElementById("feature-map");
  const box = canvas.getBoundingClientRect();
  const times = [];
  for (let i = 0; i < steps; i++) {
    const x = box.left + box.width * (0.3 + 0.4 * Math.random());
    const y = box.top + box.height * (0.3 + 0.4 * Math.random());
    const started = performance.now();
    if (kind === "zoom") {
      const deltaY = i % 8 < 4 ? -120 : 120;
      canvas.dispatchEvent(new WheelEvent("wheel",
        { deltaY, clientX: x, clientY: y, bubbles: true, cancelable: true }));
    } else {
      canvas.dispatchEvent(new PointerEvent("pointermove",
        { clientX: x, clientY: y, bubbles: true }));
    }
    const handlers = performance.now() - started;
    const redraw = await new Promise((done) =>
      requestAnimationFrame((frameStart) => done(performance.now() - frameStart)));
    times.push(handlers + redraw);
    await new Promise((done) => setTimeout(done, 20));
  }
  return times;
}"""


def bench_page(base: str, chromium: str, n: int) -> None:
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        page.goto(f"{base}/bench/map/map")
        page.wait_for_selector(f"#feature-map[data-drawn='{n}']", timeout=120_000)
        first = time.perf_counter() - started
        print(f"page (headless Chromium, software rendering, {n:,} features)")
        print(f"  navigation to first drawn map {first * 1e3:.0f} ms")
        for kind in ("zoom", "hover"):
            times = page.evaluate(FRAME_PROBE, [kind, 60])
            p50, p95 = statistics.median(times), float(np.percentile(times, 95))
            print(
                f"  {kind:5} work p50 {p50:5.1f} ms  p95 {p95:5.1f} ms  "
                f"p95/frame x{p95 / FRAME_BUDGET_MS:.2f}"
            )
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=100_000)
    parser.add_argument("--layout-sizes", default="1000,4000,16000")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--keep", type=Path, default=Path("data/bench"))
    args = parser.parse_args()
    sizes = [int(n) for n in args.layout_sizes.split(",") if n]
    if sizes:
        bench_layout(sizes)
    args.keep.mkdir(parents=True, exist_ok=True)
    path = args.keep / f"map-{args.features}.db"
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    build_map_database(url, args.features)
    with running_server({"MONOSCOPE_DATABASE_URL": url, "MONOSCOPE_MODEL": ""}) as base:
        bench_api(url, base)
        if Path(args.chromium).exists():
            bench_page(base, args.chromium, args.features)
        else:
            print(f"page: no Chromium at {args.chromium}; skipped")


if __name__ == "__main__":
    main()
