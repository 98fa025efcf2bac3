"""Steered generation (4 features) against unsteered, and steered with every studio option on.

    python -m bench.steer [--model DIR --sae DIR] [--tokens 64] [--batch 1] [--device cuda]

Prints tokens/s for each and two ratios: steered / unsteered (target >= 0.9), and steered with
options (conditions on two features, a cap, generated positions only, a stop condition that
never fires, frequency and presence penalties, top-p) / plain steered (target >= 0.9).
"""

from app.core.feature_ref import FeatureCondition
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
    gate = FeatureCondition("sae", 7, 0.0)
    with_options = [
        FeatureEdit("sae", 11, "clamp", 5.0, when=gate),
        FeatureEdit("sae", 222, "clamp", 5.0, when=FeatureCondition("sae", 8, 0.0)),
        FeatureEdit("sae", 1333, "cap", 0.5),
        FeatureEdit("sae", 2444, "clamp", 5.0, positions="generated"),
    ]
    never = [FeatureCondition("sae", 9, 1e9)]  # read at every step, so every reply runs full length
    plain = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    options = SamplingParams(
        max_new_tokens=args.tokens,
        temperature=1.0,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=0.5,
    )
    counts: dict[str, int] = {}

    def run(name, row_edits, params, stop_when=()):
        def go():
            rows = [
                GenerationRow(prompt, row_edits, seed, params, stop_when=stop_when)
                for seed in range(args.batch)
            ]
            counts[name] = sum(
                sum(t is not None for t in step.token_ids)
                for step in generate(model, saes, rows, params)
            )

        return go

    medians = interleaved_medians(
        {
            "unsteered": run("unsteered", None, plain),
            "steered": run("steered", edits, plain),
            "options": run("options", with_options, options, never),
        },
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
    print(f"ratio steered with options/steered: {rate['options'] / rate['steered']:.2f}")


if __name__ == "__main__":
    main()
