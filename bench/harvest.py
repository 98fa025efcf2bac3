"""Harvest throughput against a bare forward + SAE encode over the same tokens.

    python -m bench.harvest [--model DIR --sae DIR] [--tokens 262144] [--device cuda] [--ray 2]
                            [--sae-dashboard [--dashboard-features N]]

Default: the shipped demo model and SAE on held-out demo-world text. Prints tokens/s of the bare
loop, of the harvest pass (forward + encode + statistics + spills + checkpoints) and of the whole
harvest (plus example selection, logit effects, neighbours, metrics and the SQLite write), and
their ratios to the bare loop (target: harvest pass / bare >= 0.8).

With --ray N it then runs the pass sharded on a local Ray cluster (app.pipeline.sharding), with
one worker and with N, each worker a single-threaded model replica, and prints each pass's time
next to the single process's: the N-vs-1 ratio is the scaling, and the 1-worker run against the
single process says what Ray's start, the replicas' loading and the object store cost. The
database each writes is the single process's, row for row (tests/integration/test_harvest.py).

With --sae-dashboard it also times SAEDashboard (sae-dashboard 0.8.0, which fills the same
feature dashboards: top examples, quantile samples, activation and logit histograms, logit
tables, neighbours) on the same model, SAE and tokens, and prints its time over Monoscope's whole
harvest. SAEDashboard runs in its own environment (tests/reference/sae-dashboard.txt, built under
~/.cache/monoscope on first use: a GPT-2 model directory and a SAELens SAE directory, as the
demo's are), never in the project's. --dashboard-features N times it on the first N features only
(the ratio then says so).
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.core.model import load_model
from app.core.sae import load_sae
from app.db.engine import connect, migrate
from app.demo import DEMO_MODEL, DEMO_SAE
from app.pipeline.config import IngestConfig
from app.pipeline.harvest import HarvestConfig, HarvestJob
from app.pipeline.ingest import IngestJob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--sae", default=str(DEMO_SAE))
    parser.add_argument("--corpus", default="demo-world:3")
    parser.add_argument("--tokens", type=int, default=262_144)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray", type=int, default=0, help="also shard over N Ray workers")
    parser.add_argument("--sae-dashboard", action="store_true", help="also time SAEDashboard")
    parser.add_argument("--dashboard-features", type=int, help="SAEDashboard on N features only")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="monoscope-bench-harvest-"))
    model = load_model(args.model, device=args.device)
    sae = model.attach(load_sae(args.sae), source=args.sae)
    store = IngestJob(
        IngestConfig(
            args.corpus, work / "store", context_size=128, max_tokens=args.tokens, progress=False
        ),
        model.tokenizer,
    ).run()
    engine = connect(f"sqlite:///{work / 'bench.db'}")
    migrate(engine)

    @torch.inference_mode()
    def bare() -> None:
        for start in range(0, len(store.ids), args.batch_size):
            ids = torch.from_numpy(np.asarray(store.ids[start : start + args.batch_size], np.int64))
            sae.encode(model.capture(ids, [sae.hook_name])[sae.hook_name])
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    def harvest(**sharding) -> dict[str, float]:
        config = HarvestConfig(
            model=args.model,
            sae=args.sae,
            corpus=str(store.path),
            tokens=store.ids.size,
            batch_size=args.batch_size,
            replace=True,
            work_dir=work / "harvest",
            progress=False,
            **sharding,
        )
        return HarvestJob(config, engine, model=model, sae=sae).run().seconds

    bare()  # warm-up
    bare_times, pass_times, total_times = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        start = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        phases = harvest()
        total_times.append(time.perf_counter() - start)
        pass_times.append(phases["pass"])
    tokens = store.ids.size
    bare_s, pass_s, total_s = (statistics.median(t) for t in (bare_times, pass_times, total_times))
    print(f"{tokens:,} tokens, {sae.d_sae} features ({sae.architecture}), {model.device}")
    print(f"bare forward + encode : {tokens / bare_s:10,.0f} tok/s")
    print(f"harvest pass          : {tokens / pass_s:10,.0f} tok/s   ratio {bare_s / pass_s:.2f}")
    print(f"whole harvest         : {tokens / total_s:10,.0f} tok/s   ratio {bare_s / total_s:.2f}")
    print(f"last run's phases (s) : {phases}")
    if args.ray:
        from app.pipeline.sharding import join_cluster

        join_cluster("local", args.ray)
        one = harvest(ray="local", ray_workers=1)["pass"]
        many = harvest(ray="local", ray_workers=args.ray)["pass"]
        print(f"pass, one process     : {pass_s:8.1f} s")
        print(f"pass, Ray 1 worker    : {one:8.1f} s   x{pass_s / one:.2f} of one process")
        print(
            f"pass, Ray {args.ray} workers   : {many:8.1f} s   x{one / many:.2f} of 1 worker, "
            f"x{pass_s / many:.2f} of one process"
        )
    if args.sae_dashboard:
        dashboard = _sae_dashboard_seconds(args, store, work)
        shown = args.dashboard_features or sae.d_sae
        print(f"SAEDashboard          : {tokens / dashboard:10,.0f} tok/s   ({shown:,} features)")
        print(
            f"SAEDashboard / whole harvest: {dashboard / total_s:.1f}x the time"
            + ("" if shown == sae.d_sae else f" (SAEDashboard on {shown:,} of {sae.d_sae:,})")
        )
    shutil.rmtree(work, ignore_errors=True)


def _sae_dashboard_seconds(args, store, work: Path) -> float:
    """SaeVisRunner.run's seconds over the store's contexts, in sae-dashboard's environment."""
    import json
    import subprocess

    from tests.reference.environment import SAE_DASHBOARD, SAE_DASHBOARD_SCRIPT, reference_python

    tokens = work / "tokens.npy"
    np.save(tokens, np.asarray(store.ids, np.int32))
    out = work / "sae-dashboard.json"
    features = [str(args.dashboard_features)] if args.dashboard_features else []
    command = [str(reference_python(SAE_DASHBOARD)), str(SAE_DASHBOARD_SCRIPT)]
    subprocess.run([*command, args.model, args.sae, str(tokens), str(out), *features], check=True)
    return json.loads(out.read_text())["seconds"]


if __name__ == "__main__":
    main()
