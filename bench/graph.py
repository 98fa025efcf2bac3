"""Attribution-graph time on a 32-token prompt, by rows per backward pass.

    python -m bench.graph [--model DIR] [--transcoders DIR] [--tokens 32] [--device cpu]

Default: the shipped demo model (4 layers, d_model 256) with one TopK transcoder per layer of the
demo SAEs' shape (4,096 latents, k = 16), random unless --transcoders names a circuit-tracer set
(config.yaml + one file per layer) or a folder of per-layer transcoder directories
(`layer_{L}`). The time depends on how many features are active, which TopK fixes at
k per layer and position, not on what the transcoders learned.

Prints the graph's size and the time to build it with 1 row per backward pass (one target at a
time, as a per-node loop would) and with the batched rows, side by side in one run, their ratio,
and the time to prune.

With --reference it also times circuit-tracer 0.5.0 (in its own environment, tests/reference;
built on first use) on the same prompt and transcoders: ReLU transcoders of the same shape whose
encoder bias lets about k features fire per token (circuit-tracer's per-layer loader reads ReLU
transcoders only), its attribute() call against ours, and the largest difference between the two
adjacency matrices, so the ratio is at equal results.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from app.core.graph import attribution_graph, prune
from app.core.model import load_model
from app.core.sae import Sae, SaeConfig, load_sae
from app.core.sae.formats import circuit_tracer_layers
from app.demo import DEMO_MODEL

STORY = (
    "Tom's sister was Mia. Mia loved chess and the sea. Ann's brother was Sam. Sam loved bread. "
    "What did Tom's sister love? Tom's sister loved"
)


def random_topk_transcoders(n_layers: int, d_model: int, d_sae: int, k: int) -> list[Sae]:
    g = torch.Generator().manual_seed(0)
    transcoders = []
    for layer in range(n_layers):
        weights = {
            "W_enc": torch.randn(d_model, d_sae, generator=g) / d_model**0.5,
            "b_enc": torch.zeros(d_sae),
            "W_dec": torch.randn(d_sae, d_model, generator=g) / d_sae**0.5,
            "b_dec": torch.zeros(d_model),
        }
        config = SaeConfig(
            architecture="topk",
            d_in=d_model,
            d_sae=d_sae,
            hook_name=f"blocks.{layer}.hook_mlp_in",
            k=k,
            apply_b_dec_to_input=False,
            hook_name_out=f"blocks.{layer}.hook_mlp_out",
            d_out=d_model,
        )
        transcoders.append(Sae(config, weights))
    return transcoders


def sparse_relu_transcoders(model, ids: list[int], d_sae: int, k: int) -> list[Sae]:
    """Random ReLU transcoders whose shared encoder bias lets about k of d_sae features fire per
    token of this prompt (measured on the prompt itself)."""
    g = torch.Generator().manual_seed(0)
    sites = [f"blocks.{layer}.hook_mlp_in" for layer in range(model.n_layers)]
    inputs = model.capture(torch.tensor([ids]), sites)
    transcoders = []
    for layer, site in enumerate(sites):
        W_enc = torch.randn(model.d_model, d_sae, generator=g) / model.d_model**0.5
        z = inputs[site][0, 1:].float() @ W_enc
        cut = float(z.flatten().quantile(1 - k / d_sae))
        weights = {
            "W_enc": W_enc,
            "b_enc": torch.full((d_sae,), -cut),
            "W_dec": torch.randn(d_sae, model.d_model, generator=g) / d_sae**0.5,
            "b_dec": torch.zeros(model.d_model),
        }
        config = SaeConfig(
            architecture="standard",
            d_in=model.d_model,
            d_sae=d_sae,
            hook_name=site,
            apply_b_dec_to_input=False,
            hook_name_out=f"blocks.{layer}.hook_mlp_out",
            d_out=model.d_model,
        )
        transcoders.append(model.attach(Sae(config, weights)))
    return transcoders


def compare_with_circuit_tracer(model_dir: str, model, ids: list[int], repeats: int) -> None:
    import json
    import subprocess
    import tempfile

    from app.core.sae.formats import save_circuit_tracer_set
    from tests.reference.environment import SCRIPT, aligned, reference_python

    transcoders = sparse_relu_transcoders(model, ids, 4096, 16)
    work = Path(tempfile.mkdtemp(prefix="monoscope-bench-graph-"))
    folder = save_circuit_tracer_set(
        [t.to("cpu") for t in transcoders], work / "set", model_name=model.name
    )
    python = reference_python()
    out = work / "reference.pt"
    command = [str(python), str(SCRIPT), model_dir, str(folder), json.dumps(ids), str(out)]
    reference_times = []
    for _ in range(repeats):
        subprocess.run(command, check=True, capture_output=True, env={"HF_HUB_OFFLINE": "1"})
        reference_times.append(torch.load(out)["seconds"])
    ours_time, graph = timed(lambda: attribution_graph(model, transcoders, ids), repeats)
    assert graph is not None
    ours_edges, their_edges, _, _, only = aligned(graph, torch.load(out))
    difference = float((ours_edges - their_edges).abs().max())
    reference = statistics.median(reference_times)
    print(f"ReLU transcoders (4,096 latents, ~16 firing per token): {graph.n_features:,} features")
    print(f"{'':>18} {'attribute s':>12}")
    print(f"{'circuit-tracer':>18} {reference:>12.2f}")
    print(f"{'Monoscope':>18} {ours_time:>12.2f}")
    print(f"circuit-tracer / Monoscope: {reference / ours_time:.2f}x (target >= 2x)")
    print(
        f"largest edge difference: {difference:.2e} (largest edge "
        f"{float(their_edges.abs().max()):.2f}); features found by one side only: {len(only)}"
    )


def load_transcoders(folder: Path) -> list[Sae]:
    if (folder / "config.yaml").exists():
        return [load_sae(path) for path in circuit_tracer_layers(folder)]
    return [load_sae(path) for path in sorted(folder.glob("layer_*"))]


def timed(run, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--transcoders", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also time circuit-tracer")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    if args.transcoders is not None:
        transcoders = load_transcoders(args.transcoders)
        source = str(args.transcoders)
    else:
        transcoders = random_topk_transcoders(model.n_layers, model.d_model, 4096, 16)
        source = "random TopK, 4,096 latents, k = 16"
    transcoders = [model.attach(t) for t in transcoders]
    ids = model.tokenizer(STORY)["input_ids"][: args.tokens]
    print(f"model {model.name} ({model.n_layers} layers, d_model {model.d_model}), {args.device}")
    print(f"transcoders: {source}")
    print(f"threads: {torch.get_num_threads()}")

    def build(rows: int):
        return attribution_graph(model, transcoders, ids, batch_size=rows)

    batched, graph = timed(lambda: build(args.batch_size), args.repeats)
    assert graph is not None
    targets = graph.n_features + len(graph.logit_ids)
    print(
        f"prompt {graph.n_positions} tokens: {graph.n_features:,} feature nodes, "
        f"{len(graph.logit_ids)} logits, {graph.adjacency.shape[0]:,} nodes, "
        f"{targets:,} target rows"
    )
    one, _ = timed(lambda: build(1), 1)
    prune_time, kept = timed(lambda: prune(graph), args.repeats)
    scores = graph.scores()
    print(f"{'rows per backward':>18} {'graph s':>9}")
    print(f"{1:>18} {one:>9.2f}")
    print(f"{args.batch_size:>18} {batched:>9.2f}")
    print(f"batched / one row at a time: {batched / one:.3f} (speed-up {one / batched:.1f}x)")
    nodes = int(kept.nodes[: graph.n_features].sum())
    print(f"prune: {prune_time:.2f} s, {nodes:,} of {graph.n_features:,} features kept")
    print(f"replacement {scores.replacement:.3f}, completeness {scores.completeness:.3f}")
    if args.reference:
        compare_with_circuit_tracer(args.model, model, ids, args.repeats)


if __name__ == "__main__":
    main()
