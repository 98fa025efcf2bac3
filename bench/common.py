"""Shared set-up for benchmarks: a demo-shaped model and SAE, or real ones from the command line."""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from app.core.model import LoadedModel, load_model
from app.core.sae import Sae, load_sae
from tests.helpers import build_tokenizer, random_sae

DEMO_SHAPE = dict(n_layer=4, n_embd=256, n_head=8, n_positions=512, vocab_size=8192)
SITE = "blocks.2.hook_resid_post"


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--model", help="HF model dir or hub id (default: random demo-shaped GPT-2)"
    )
    parser.add_argument("--sae", help="SAE path (default: random 4096-feature SAE at layer 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--architecture",
        default="topk",
        choices=["standard", "topk", "jumprelu", "gated"],
        help="architecture of the random SAE (ignored with --sae)",
    )
    return parser


def model_and_sae(args) -> tuple[LoadedModel, Sae]:
    if args.model:
        model = load_model(args.model, device=args.device)
    else:
        folder = Path(tempfile.mkdtemp(prefix="monoscope-bench-"))
        tokenizer = build_tokenizer(folder)
        torch.manual_seed(0)
        GPT2LMHeadModel(
            GPT2Config(**DEMO_SHAPE, eos_token_id=tokenizer.eos_token_id)
        ).save_pretrained(folder)
        model = load_model(folder, device=args.device)
    sae = (
        load_sae(args.sae)
        if args.sae
        else random_sae(
            d_in=model.d_model, d_sae=4096, hook_name=SITE, architecture=args.architecture, k=32
        )
    )
    return model, model.attach(sae)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per variant, alternating variants so drift hits all of them alike."""
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
