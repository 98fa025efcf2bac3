"""SAE encode throughput against a bare matmul of the same shape (target: ratio >= 0.8).

python -m bench.encode [--tokens 4096] [--d-in 256] [--d-sae 16384] [--device cuda]
"""

import argparse

import torch

from app.core.device import resolve_device
from bench.common import interleaved_medians
from tests.helpers import random_sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    x = torch.randn(args.tokens, args.d_in, device=device, dtype=dtype)
    print(f"encode {args.tokens} tokens, {args.d_in} -> {args.d_sae}, {device}, {dtype}")
    print(f"{'architecture':<14}{'bare ms':>10}{'encode ms':>11}{'ratio':>8}")
    for architecture in ("standard", "jumprelu", "topk", "gated"):
        sae = random_sae(args.d_in, args.d_sae, architecture=architecture, k=64)
        sae = sae.to(device=device, dtype=dtype)
        W = sae.W_enc.detach()
        with torch.inference_mode():
            medians = interleaved_medians(
                {"bare": lambda W=W: x @ W, "encode": lambda sae=sae: sae.encode(x)},
                args.repeats,
                device,
            )
        ratio = medians["bare"] / medians["encode"]
        print(
            f"{architecture:<14}{medians['bare'] * 1e3:>10.2f}"
            f"{medians['encode'] * 1e3:>11.2f}{ratio:>8.2f}"
        )


if __name__ == "__main__":
    main()
