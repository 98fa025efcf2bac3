"""Steered generation (clamp, 4 features) against unsteered, same model and settings.

    python -m bench.steer [--model DIR --sae DIR] [--tokens 64] [--batch 1] [--device cuda]

Prints tokens/s for both and their ratio (target: steered / unsteered >= 0.9).
"""

from app.core.generation import GenerationRow, SamplingParams, generate
from app.core.steering import FeatureEdit
from bench.common import arguments, interleaved_medians, model_and_sae

PROMPT = "User: Tell me about the places you like to visit.\nAssistant:"


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    model, sae = model_and_sae(args)
    saes = {"sae": sae}
    prompt = model.tokenizer(PROMPT)["input_ids"]
    edits = [FeatureEdit("sae", i, "clamp", 5.0) for i in (11, 222, 1333, 2444)]
    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    counts: dict[str, int] = {}

    def run(name, row_edits):
        def go():
            rows = [GenerationRow(prompt, row_edits, seed) for seed in range(args.batch)]
            counts[name] = sum(
                sum(t is not None for t in step.token_ids)
                for step in generate(model, saes, rows, params)
            )

        return go

    medians = interleaved_medians(
        {"unsteered": run("unsteered", None), "steered": run("steered", edits)},
        args.repeats,
        model.device,
    )
    rate = {name: counts[name] / medians[name] for name in medians}
    print(
        f"{model.name} on {model.device}, {sae.architecture} SAE ({sae.d_sae} features) at "
        f"{sae.hook_name}, batch {args.batch}, {args.tokens} new tokens"
    )
    for name in medians:
        print(f"{name:<10} {rate[name]:8.1f} tokens/s  ({counts[name]} tokens)")
    print(f"ratio steered/unsteered: {rate['steered'] / rate['unsteered']:.2f}")


if __name__ == "__main__":
    main()
