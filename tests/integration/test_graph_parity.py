"""Monoscope's attribution graphs against circuit-tracer 0.5.0's, run in its own environment
(tests/reference): the same nodes, the same edges to float rounding."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from app.core.graph import attribution_graph
from app.core.model import load_model
from app.core.sae.formats import load_transcoder_set, save_circuit_tracer_set
from app.demo import DEMO_MODEL
from tests.helpers import build_relu_gpt2, random_transcoder
from tests.reference.environment import SCRIPT, aligned, reference_python

pytestmark = pytest.mark.slow  # builds (once) and runs circuit-tracer's environment
TEXT = "Tom's sister was Mia. Mia loved chess. What did Tom's sister love? Tom's sister loved"
# Edges are sums of products over d_model; the two implementations add them in other orders.
ATOL, RTOL = 1e-4, 1e-4


def _reference(
    model_dir: Path, transcoders: Path, token_ids: list[int], out: Path, options: dict | None = None
) -> dict:
    subprocess.run(
        [
            str(reference_python()),
            str(SCRIPT),
            str(model_dir),
            str(transcoders),
            json.dumps(token_ids),
            str(out),
            *([json.dumps(options)] if options else []),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    return torch.load(out)


@pytest.mark.parametrize("where, skip", [("tiny", False), ("demo", True)])
def test_graphs_match_circuit_tracer(tmp_path, where, skip):
    """The tiny ReLU GPT-2, and the demo model with skip transcoders (ReLU both: the kind
    circuit-tracer's per-layer loader reads)."""
    model_dir = build_relu_gpt2(tmp_path / "model") if where == "tiny" else DEMO_MODEL
    model = load_model(model_dir, device="cpu")
    layers = [
        random_transcoder(layer=n, d_in=model.d_model, d_sae=64, skip=skip, seed=n)
        for n in range(model.n_layers)
    ]
    folder = save_circuit_tracer_set(layers, tmp_path / "set", model_name=where)
    ours = attribution_graph(model, [model.attach(t) for t in load_transcoder_set(folder)], TEXT)
    theirs = _reference(model_dir, folder, ours.token_ids, tmp_path / "graph.pt")

    ours_edges, their_edges, our_acts, their_acts, only = aligned(ours, theirs)
    assert all(activation < 1e-4 for activation in only.values()), only
    assert len(only) < 0.01 * ours.n_features
    torch.testing.assert_close(our_acts, their_acts)
    assert ours.logit_ids == theirs["logit_ids"].tolist()
    torch.testing.assert_close(ours.logit_probabilities, theirs["logit_probabilities"])
    assert float(their_edges.abs().max()) > 0.1  # parity on an empty graph would prove nothing
    torch.testing.assert_close(ours_edges, their_edges, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["tokens", "difference"])
def test_chosen_targets_match_circuit_tracer(tmp_path, kind):
    """Chosen output tokens (circuit-tracer's attribution_targets as ids) and a logit difference
    (its CustomTarget along W_U[a] - W_U[b], under the virtual id vocab + 0)."""
    model_dir = build_relu_gpt2(tmp_path / "model")
    model = load_model(model_dir, device="cpu")
    layers = [random_transcoder(layer=n, d_sae=64, seed=n) for n in range(model.n_layers)]
    folder = save_circuit_tracer_set(layers, tmp_path / "set", model_name="tiny")
    transcoders = [model.attach(t) for t in load_transcoder_set(folder)]
    salient = attribution_graph(model, transcoders, TEXT)
    a, b = salient.logit_ids[0], salient.logit_ids[0] + 5
    if kind == "tokens":
        ours = attribution_graph(model, transcoders, TEXT, target_tokens=[b, a])
        targets: dict = {"tokens": [b, a]}
    else:
        ours = attribution_graph(model, transcoders, TEXT, target_tokens=[a], versus=b)
        targets = {"difference": [a, b]}
    theirs = _reference(model_dir, folder, ours.token_ids, tmp_path / "graph.pt", targets)
    ours_edges, their_edges, _, _, only = aligned(ours, theirs)
    assert len(only) < 0.01 * ours.n_features
    assert ours.logit_ids == theirs["logit_ids"].tolist()
    if kind == "tokens":
        torch.testing.assert_close(ours.logit_probabilities, theirs["logit_probabilities"])
    assert float(their_edges[-1].abs().max()) > 0.01  # the last target's row is not empty
    torch.testing.assert_close(ours_edges, their_edges, atol=ATOL, rtol=RTOL)


def test_a_feature_cap_chooses_the_nodes_circuit_tracer_chooses(tmp_path):
    """max_feature_nodes: the same features visited (by partial influence, a queue of four
    batches at a time) and the same edges among them."""
    model = load_model(DEMO_MODEL, device="cpu")
    layers = [
        random_transcoder(layer=n, d_in=model.d_model, d_sae=64, skip=True, seed=n)
        for n in range(model.n_layers)
    ]
    folder = save_circuit_tracer_set(layers, tmp_path / "set", model_name="demo")
    transcoders = [model.attach(t) for t in load_transcoder_set(folder)]
    full = attribution_graph(model, transcoders, TEXT)
    cap = full.n_features // 3
    ours = attribution_graph(model, transcoders, TEXT, max_feature_nodes=cap)
    options = {"max_feature_nodes": cap}
    theirs = _reference(DEMO_MODEL, folder, ours.token_ids, tmp_path / "graph.pt", options)
    assert ours.n_features == cap == len(theirs["selected_features"])
    assert ours.active_features == full.n_features
    ours_edges, their_edges, _, _, only = aligned(ours, theirs)
    assert len(only) <= 0.02 * cap, only  # near-ties in influence may swap a feature or two
    assert float(their_edges.abs().max()) > 0.1
    torch.testing.assert_close(ours_edges, their_edges, atol=ATOL, rtol=RTOL)
