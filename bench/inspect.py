"""Exact ablations, batched: what one click on the inspect page costs.

    python -m bench.inspect [--tokens 64] [--features 32] [--repeats 5]
                            [--model DIR --sae DIR --earlier-sae DIR]

On a prompt of --tokens tokens (demo-world text, cut to length) it runs `attribute` with
gradient × activation for every feature and exact ablation of the top --features by attribution
as batched forwards (one forward per batch of 32 ablations), then the same ablations one forward
each. It prints the best-of-repeats seconds of each and their ratio. Target: the batched
attribution ≤ 2 s on a CPU for the demo model. Then the chain view as the page runs it: the top 5
load-bearing features traced back to the earlier SAE, 12 sources each with exact zeroing.
"""

import argparse
import time

from app.core.attribution import ablate, attribute, trace_chain
from app.core.workspace import Workspace
from app.demo import DEMO_LATE_SAE, DEMO_MODEL, DEMO_SAE
from app.demo.world import World


def _best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--sae", default=str(DEMO_LATE_SAE))
    parser.add_argument("--earlier-sae", default=str(DEMO_SAE), help="where the chain leads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    workspace = Workspace.load(args.model, [args.earlier_sae, args.sae], device=args.device)
    model, (earlier, sae) = workspace.model, workspace.saes.values()
    tokenizer = model.tokenizer
    text = ""
    for document in World(seed=5).documents(100):  # until the prompt is long enough
        text += document.text + " "
        if len(tokenizer(text)["input_ids"]) > args.tokens:
            break
    ids = tokenizer(text)["input_ids"][: args.tokens]
    prompt = tokenizer.decode(ids[1:] if ids[0] == tokenizer.bos_token_id else ids)
    n = len(tokenizer(prompt)["input_ids"])
    found = attribute(model, sae, prompt, top_k=args.features, exact=args.features)
    features = [[e.index] for e in found.by_attribution[: args.features]]
    prompt_ids = tokenizer(prompt)["input_ids"]

    batched = _best(
        lambda: attribute(model, sae, prompt, top_k=args.features, exact=args.features),
        args.repeats,
    )
    ablations_batched = _best(lambda: ablate(model, sae, prompt_ids, features, 32), args.repeats)
    ablations_one = _best(lambda: ablate(model, sae, prompt_ids, features, 1), args.repeats)
    traced = [e.index for e in found.by_attribution[:5]]
    chain = _best(
        lambda: trace_chain(model, earlier, sae, prompt_ids, found.target, traced), args.repeats
    )
    print(
        f"{n}-token prompt, exact ablation of the top {len(features)} features "
        f"({model.name}, {sae.hook_name}, {args.device})"
    )
    verdict = "ok" if batched <= 2.0 else "over target"
    print(
        f"  attribute (gradient × activation + batched exact ablations): {batched:.3f} s "
        f"(target ≤ 2 s: {verdict})"
    )
    print(f"  ablations batched:    {ablations_batched:.3f} s")
    print(f"  ablations one by one: {ablations_one:.3f} s")
    print(f"  sequential / batched: {ablations_one / ablations_batched:.1f}×")
    print(f"  chain of the top {len(traced)} back to {earlier.hook_name}: {chain:.3f} s")


if __name__ == "__main__":
    main()
