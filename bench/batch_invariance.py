"""Decoding on fixed row tiles (replies exactly as alone) against plain batched decoding.

    python -m bench.batch_invariance [--model DIR --sae DIR] [--tokens 48] [--device cuda]

For 1, 4 and 16 concurrent steered chats (two rows each, as the server decodes them), prints
tokens/s with and without `batch_invariant` and their ratio: the price of the guarantee that a
shared batch never changes a reply (app/core/batch_invariance.py).
"""

from app.core.generation import GenerationRow, SamplingParams, generate
from app.core.steering import FeatureEdit
from bench.common import arguments, interleaved_medians, model_and_sae

PROMPT = "User: Tell me about the food you like and your plans.\nAssistant:"


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    model, sae = model_and_sae(args)
    saes = {"sae": sae}
    prompt = model.tokenizer(PROMPT)["input_ids"]
    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    print(
        f"{model.name} on {model.device}, {sae.architecture} SAE at {sae.hook_name}, "
        f"{args.tokens} new tokens per row"
    )
    for chats in (1, 4, 16):
        rows = [
            row
            for seed in range(chats)
            for row in (
                GenerationRow(prompt, None, seed, params),
                GenerationRow(prompt, [FeatureEdit("sae", 11 + seed, "clamp", 5.0)], seed, params),
            )
        ]
        counts: dict[str, int] = {}

        def run(name: str, invariant: bool, rows=rows, counts=counts):
            def go():
                steps = generate(model, saes, rows, params, batch_invariant=invariant)
                counts[name] = sum(sum(t is not None for t in s.token_ids) for s in steps)

            return go

        medians = interleaved_medians(
            {"plain": run("plain", False), "invariant": run("invariant", True)},
            args.repeats,
            model.device,
        )
        rate = {name: counts[name] / medians[name] for name in medians}
        print(
            f"{chats:>2} chats: plain {rate['plain']:7.1f} tok/s, invariant "
            f"{rate['invariant']:7.1f} tok/s, ratio {rate['invariant'] / rate['plain']:.2f}"
        )


if __name__ == "__main__":
    main()
