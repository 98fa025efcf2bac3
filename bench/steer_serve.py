"""Streaming steering chats under load: does batching make concurrent chats cheap?

    python -m bench.steer_serve [--clients 1,4,16] [--seconds 20] [--max-new-tokens 48]
                                [--model DIR --sae DIR] [--replicas N]

Starts the real server (uvicorn, the demo model and SAE unless --model/--sae are given) and runs,
for each concurrency level, that many clients that each send steering chats to
/api/v1/steer/stream back to back (a clamped feature, the same question, a different seed per
request) for --seconds. It reports aggregate generated tokens/s (both columns count: a chat is a
default and a steered reply), time to the first token p50/p95, and throughput relative to one
client. Target: 16 clients ≥ 4× one client. The clients share the machine with the server.
With --replicas N it then serves the same load from N Ray replicas (MONOSCOPE_REPLICAS, a local
cluster: one GPU each where there are GPUs, else a share of the CPUs) and prints their
throughput over the single process's at each level.
Strengths are multiples of max activation, so the database must hold the SAE (`monoscope demo`
builds the demo's); "tokens" are the stream's token events, one per generated token.
"""

import argparse
import asyncio
import json
import statistics
import time

import httpx

from app.demo import DEMO_MODEL, DEMO_SAE
from bench.server import running_server

QUESTION = "What is your favourite food?"


async def _chat(http: httpx.AsyncClient, body: dict) -> tuple[float, int]:
    """(seconds to the first token, tokens received) for one streamed chat."""
    start = time.perf_counter()
    first, tokens = None, 0
    async with http.stream("POST", "/api/v1/steer/stream", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()}")
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                tokens += 1
                first = first if first is not None else time.perf_counter() - start
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(json.loads(line[5:])["detail"])
    return first or 0.0, tokens


async def _load(base: str, clients: int, seconds: float, body: dict) -> tuple[int, list[float]]:
    deadline = time.perf_counter() + seconds
    tokens, firsts, seed = 0, [], 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens, seed
        while time.perf_counter() < deadline:
            seed += 1
            first, n = await _chat(http, body | {"seed": seed})
            tokens += n
            firsts.append(first * 1000)

    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return round(tokens / elapsed), sorted(firsts)


def _feature(base: str) -> dict:
    """A feature to clamp: the best label match for 'golden gate' at 4× its max activation when
    the database has the SAE, else feature 0 of the first SAE at 4 raw units."""
    health = httpx.get(f"{base}/healthz").json()
    sae = health["saes"][0]["name"]
    hits = httpx.get(f"{base}/api/v1/search", params={"q": "golden gate"}).json()
    index = next((h["index"] for h in hits if h["sae"] == sae), None)
    units = {} if index is not None else {"units": "raw"}
    return {"sae": sae, "index": index or 0, "mode": "clamp", "strength": 4} | units


def _run_levels(settings: dict, args, label: str) -> dict[int, int]:
    """Every concurrency level against one server; prints a row per level, returns tokens/s."""
    rates: dict[int, int] = {}
    with running_server(settings, start_timeout=180) as base:
        feature = _feature(base)
        body = {
            "features": [feature],
            "messages": [{"role": "user", "content": QUESTION}],
            "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0,
        }
        asyncio.run(_load(base, 2, 3, body))  # warm up
        for clients in (int(c) for c in args.clients.split(",")):
            rate, firsts = asyncio.run(_load(base, clients, args.seconds, body))
            rates[clients] = rate
            one = rates[min(rates)]
            p95 = firsts[int(0.95 * (len(firsts) - 1))]
            print(
                f"{label:>12s} {clients:7d} {rate:9d} {rate / one:5.1f}× "
                f"{statistics.median(firsts):12.1f} {p95:12.1f} {len(firsts):6d}"
            )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--sae", default=str(DEMO_SAE))
    parser.add_argument("--database", help="default: the data directory's SQLite file")
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="also serve from this many Ray replicas (a local cluster) and print their ratio",
    )
    args = parser.parse_args()
    settings = {
        "MONOSCOPE_MODEL": args.model,
        "MONOSCOPE_SAES": args.sae,
        "MONOSCOPE_STEER_RATE_PER_MINUTE": "1000000",  # the load is the point, not the limit
        "MONOSCOPE_STEER_QUEUE": "256",
    }
    if args.database:
        settings["MONOSCOPE_DATABASE_URL"] = args.database
    print(
        f"{args.seconds:g} s per level, {args.max_new_tokens} new tokens per side, "
        "a feature clamped at 4 (× max activation, or raw without a harvest)"
    )
    print(
        f"{'server':>12s} {'clients':>7s} {'tokens/s':>9s} {'vs 1':>6s} {'TTFT p50 ms':>12s} "
        f"{'TTFT p95 ms':>12s} {'chats':>6s}"
    )
    alone = _run_levels(settings, args, "one process")
    if args.replicas:
        label = f"{args.replicas} replicas"
        replicated = _run_levels(settings | {"MONOSCOPE_REPLICAS": str(args.replicas)}, args, label)
        for clients, rate in replicated.items():
            print(f"{clients} clients: {label} / one process {rate / alone[clients]:.2f}")


if __name__ == "__main__":
    main()
