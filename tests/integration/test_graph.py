"""Attribution graphs on the tiny ReLU GPT-2, whose MLPs its exact transcoders reproduce: edges
against an independent re-run of the frozen model, exactness, pruning and scores."""

import json
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import app.core.graph
from app.core.errors import MonoscopeError
from app.core.frozen_attention import frozen_patterns
from app.core.graph import (
    FeatureSetting,
    attribution_graph,
    attribution_steps,
    frozen_norms,
    graph_json,
    group_effects,
    intervene,
    normalize_rows,
    prune,
    read_graph_json,
    subgraph_scores,
    total_influence,
)
from app.core.model import load_model
from tests.helpers import FAMILIES, N_LAYERS, build_model, exact_transcoder, random_transcoder

TEXT = "The Golden Gate Bridge is red and the fog rolls over"


@pytest.fixture(scope="module")
def exact(relu_gpt2):
    transcoders = [exact_transcoder(relu_gpt2, layer) for layer in range(N_LAYERS)]
    return transcoders, attribution_graph(relu_gpt2, transcoders, TEXT, batch_size=48)


@pytest.fixture(scope="module")
def lossy(relu_gpt2):
    """Random transcoders (with skip connections): large errors, still a linear model."""
    transcoders = [
        relu_gpt2.attach(random_transcoder(layer=layer, d_sae=64, skip=True, seed=layer))
        for layer in range(N_LAYERS)
    ]
    return transcoders, attribution_graph(relu_gpt2, transcoders, TEXT, batch_size=48)


@contextmanager
def _recorded_layer_norms(model, scales: list, replay: bool):
    """A test-local frozen LayerNorm: the first pass records each norm's 1/std, the second
    divides by the recorded ones (so a perturbed pass stays in the clean pass's linear model)."""
    norms = [m for m in model.hf.modules() if isinstance(m, nn.LayerNorm)]
    at = iter(range(10**6))

    def forward_for(module):
        def forward(x):
            centred = x - x.mean(-1, keepdim=True)
            if replay:
                scale = scales[next(at)]
            else:
                scale = (centred.pow(2).mean(-1, keepdim=True) + module.eps).rsqrt()
                scales.append(scale)
            return centred * scale * module.weight + module.bias

        return forward

    for module in norms:
        module.forward = forward_for(module)
    try:
        yield
    finally:
        for module in norms:
            del module.forward


def _frozen_rerun(model, transcoders, ids, writes: dict, read):
    """The replacement model re-run forward: every MLP writes its clean output, plus `writes`
    {(layer, position): extra vector}, plus its skip term's change; attention and norms frozen
    at the clean pass. Returns read(captured MLP inputs, final norm output)."""
    clean_out, clean_in, seen, final, scales = {}, {}, {}, {}, []

    def recorder(store, layer):
        def record(x):
            store[layer] = x.clone()

        return record

    def replaced(layer):
        def write(y):
            out = clean_out[layer].clone()
            for (at_layer, position), vector in writes.items():
                if at_layer == layer:
                    out[:, position] += vector
            if transcoders[layer].has_skip:
                out += (seen[layer] - clean_in[layer]) @ transcoders[layer].W_skip.T
            return out

        return write

    recording = {}
    replaying = {}
    for layer in range(N_LAYERS):
        recording[f"blocks.{layer}.hook_mlp_in"] = recorder(clean_in, layer)
        recording[f"blocks.{layer}.hook_mlp_out"] = recorder(clean_out, layer)
        replaying[f"blocks.{layer}.hook_mlp_in"] = recorder(seen, layer)
        replaying[f"blocks.{layer}.hook_mlp_out"] = replaced(layer)
    handle = model.final_norm().register_forward_hook(
        lambda m, a, out: final.__setitem__("out", out)
    )
    try:
        with torch.inference_mode(), frozen_patterns(model) as freeze:
            with (
                _recorded_layer_norms(model, scales, replay=False),
                freeze.recording(),
                model.hooked(recording),
            ):
                model.hf(input_ids=ids)
            with (
                _recorded_layer_norms(model, scales, replay=True),
                freeze.replaying(),
                model.hooked(replaying),
            ):
                model.hf(input_ids=ids)
    finally:
        handle.remove()
    return read(seen, final["out"])


def test_frozen_norms_keep_the_values_and_freeze_the_denominator(relu_gpt2):
    ids = torch.tensor([relu_gpt2.tokenizer(TEXT)["input_ids"]])
    with torch.inference_mode():
        clean = relu_gpt2.hf(input_ids=ids).logits
        with frozen_norms(relu_gpt2):
            frozen = relu_gpt2.hf(input_ids=ids).logits
    torch.testing.assert_close(frozen, clean, atol=1e-5, rtol=1e-5)
    norm = relu_gpt2.final_norm()
    x = torch.randn(32)
    with frozen_norms(relu_gpt2):
        jacobian = torch.autograd.functional.jacobian(norm, x)
    centring = torch.eye(32) - 1 / 32
    scale = ((x - x.mean()).pow(2).mean() + norm.eps).rsqrt()
    expected = norm.weight.detach()[:, None] * scale * centring
    torch.testing.assert_close(jacobian, expected, atol=1e-5, rtol=1e-4)


def test_feature_edges_equal_a_rerun_of_the_frozen_model(relu_gpt2, lossy):
    """Removing a source feature's write changes a later feature's pre-activation by -A[t, s]."""
    transcoders, graph = lossy
    ids = torch.tensor([graph.token_ids])
    A = graph.adjacency[: graph.n_features, : graph.n_features]
    layers = graph.features[:, 0]
    strongest = A.abs() * (layers[:, None] > layers[None, :])
    pairs = strongest.flatten().topk(4).indices
    assert float(strongest.max()) > 0.05
    for flat in pairs.tolist():
        t, s = divmod(flat, graph.n_features)
        layer_s, position_s, index_s = graph.features[s].tolist()
        layer_t, position_t, index_t = graph.features[t].tolist()
        write = -graph.activations[s] * transcoders[layer_s].W_dec[index_s]
        encoder = transcoders[layer_t].W_enc[:, index_t]

        def read(inputs, final, layer_t=layer_t, position_t=position_t, encoder=encoder):
            return float(inputs[layer_t][0, position_t] @ encoder)

        before = _frozen_rerun(relu_gpt2, transcoders, ids, {}, read)
        after = _frozen_rerun(relu_gpt2, transcoders, ids, {(layer_s, position_s): write}, read)
        assert after - before == pytest.approx(-float(A[t, s]), abs=1e-4, rel=1e-3)


def test_error_and_embedding_edges_to_a_logit_equal_a_rerun(relu_gpt2, lossy):
    transcoders, graph = lossy
    ids = torch.tensor([graph.token_ids])
    W_U = relu_gpt2.unembedding().float()
    direction = W_U[graph.logit_ids[0]] - W_U.mean(0)
    row = graph.logits.start

    def read(inputs, final):
        return float(final[0, -1] @ direction)

    before = _frozen_rerun(relu_gpt2, transcoders, ids, {}, read)
    # An error node: scale its vector by 2 (adds it once more) at one layer and position.
    position = graph.n_positions - 2
    error_edge = float(graph.adjacency[row, graph.error_node(1, position)])
    captured = relu_gpt2.capture(ids, ["blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"])
    x, y = captured["blocks.1.hook_mlp_in"][0], captured["blocks.1.hook_mlp_out"][0]
    f = transcoders[1].encode(x)
    f[0] = 0
    error = y[position] - transcoders[1].reconstruct(x, f)[position]
    after = _frozen_rerun(relu_gpt2, transcoders, ids, {(1, position): error}, read)
    assert abs(error_edge) > 1e-3
    assert after - before == pytest.approx(error_edge, abs=1e-4, rel=1e-3)
    # Logit rows are not all from one place: every kind of source feeds the top logit.
    assert graph.adjacency[row, : graph.n_features].abs().sum() > 0
    assert graph.adjacency[row, graph.embeddings].abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_skipping_the_mlps_and_query_key_gradients_changes_no_edge(family, tmp_path, monkeypatch):
    """The frozen pass's savings (MLPs not computed, fused query-key projections detached) are
    pure savings in every family: the same adjacency as the plain frozen pass."""
    model = load_model(build_model(tmp_path / family, family), device="cpu")
    transcoders = [
        model.attach(random_transcoder(layer=layer, d_sae=64, skip=True, seed=layer))
        for layer in range(N_LAYERS)
    ]
    saving = attribution_graph(model, transcoders, TEXT, batch_size=32)
    plain = contextmanager(lambda model: iter([None]))
    monkeypatch.setattr(app.core.graph, "skipped_mlps", plain)
    monkeypatch.setattr(app.core.graph, "gradients_through_values_only", plain)
    reference = attribution_graph(model, transcoders, TEXT, batch_size=32)
    assert saving.n_features == reference.n_features > 0
    assert float(reference.adjacency.abs().max()) > 0.01
    torch.testing.assert_close(saving.adjacency, reference.adjacency, atol=1e-5, rtol=1e-4)


def test_exact_transcoders_leave_nothing_to_the_errors(exact, lossy):
    """Exact transcoders leave every error node empty (position 0's is empty by convention), and
    the scores say so."""
    _, graph = exact
    features = float(graph.adjacency[:, : graph.n_features].abs().max())
    assert float(graph.adjacency[:, graph.errors].abs().max()) < 1e-4 * features
    exact_scores, lossy_scores = graph.scores(), lossy[1].scores()
    assert exact_scores.replacement == pytest.approx(1.0, abs=1e-4)
    assert exact_scores.completeness == pytest.approx(1.0, abs=1e-4)
    assert 0 < lossy_scores.replacement < 0.9 and 0 < lossy_scores.completeness < 0.9
    lossy_graph = lossy[1]
    first = [lossy_graph.error_node(layer, 0) for layer in range(N_LAYERS)]
    assert not lossy_graph.adjacency[:, first].any()


def test_the_graph_has_circuit_tracers_shape(exact):
    _, graph = exact
    n = graph.n_positions
    assert graph.adjacency.shape[0] == graph.n_features + N_LAYERS * n + n + len(graph.logit_ids)
    assert (graph.features[:, 1] > 0).all()  # position 0 joins its error
    assert (graph.activations > 0).all()
    assert float(graph.logit_probabilities.sum()) >= 0.95 or len(graph.logit_ids) == 10
    # Nothing feeds an embedding; no feature feeds one at an earlier layer or a later position.
    assert not graph.adjacency[graph.embeddings].any()
    layer, position = graph.features[:, 0], graph.features[:, 1]
    A = graph.adjacency[: graph.n_features, : graph.n_features]
    impossible = (layer[:, None] <= layer[None, :]) | (position[:, None] < position[None, :])
    assert not A[impossible].any()


def test_pruning_keeps_the_influential_nodes_and_the_edges_among_them(lossy):
    _, graph = lossy
    kept = prune(graph)
    assert kept.nodes[graph.embeddings].all() and kept.nodes[graph.logits].all()
    features = kept.nodes[: graph.n_features]
    assert 0 < int(features.sum()) < graph.n_features
    assert not kept.edges[~kept.nodes].any() and not kept.edges[:, ~kept.nodes].any()
    assert (kept.edges & (graph.adjacency == 0)).sum() == 0
    # A kept feature feeds a kept node and is fed by one.
    assert (kept.edges[:, : graph.n_features][:, features].any(0)).all()
    assert (kept.edges[: graph.n_features][features].any(1)).all()
    everything = prune(graph, node_threshold=1.0, edge_threshold=1.0)
    assert everything.nodes.sum() >= kept.nodes.sum()
    with pytest.raises(MonoscopeError, match="between 0 and 1"):
        prune(graph, node_threshold=1.5)


def test_a_graph_needs_one_transcoder_per_layer_at_its_mlp(relu_gpt2):
    transcoders = [exact_transcoder(relu_gpt2, layer) for layer in range(N_LAYERS)]
    with pytest.raises(MonoscopeError, match="one transcoder per layer"):
        attribution_graph(relu_gpt2, transcoders[:2], TEXT)
    with pytest.raises(MonoscopeError, match=r"transcoder 1 must read blocks\.1\.hook_mlp_in"):
        attribution_graph(relu_gpt2, [transcoders[0], transcoders[0], transcoders[2]], TEXT)
    alone = attribution_graph(relu_gpt2, transcoders, "")  # BOS alone: no feature nodes
    assert alone.n_positions == 1 and alone.n_features == 0 and alone.adjacency.shape[0] > 0
    assert alone.adjacency[alone.logits, alone.embeddings].abs().sum() > 0


def test_the_graph_json_is_circuit_tracers_and_reads_back(lossy):
    _, graph = lossy
    kept = prune(graph)
    data = json.loads(json.dumps(graph_json(graph, kept, slug="fog", scan="tiny-relu")))
    assert data["metadata"]["schema_version"] == 1 and data["metadata"]["scan"] == "tiny-relu"
    assert data["metadata"]["prompt_tokens"] == graph.tokens
    read = read_graph_json(data)
    by_id = {n["node_id"]: n for n in read.nodes}
    kinds = {n["feature_type"] for n in read.nodes}
    assert kinds == {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}
    assert sum(n["feature_type"] == "embedding" for n in read.nodes) == graph.n_positions
    logits = [n for n in read.nodes if n["feature_type"] == "logit"]
    assert [n["feature"] for n in logits] == graph.logit_ids and logits[0]["is_target_logit"]
    assert all(n["ctx_idx"] == graph.n_positions - 1 for n in logits)
    # Every link is an edge the pruning kept, with A's weight.
    # circuit-tracer's ids can collide: error (layer L, pos p) is "0_L_p", as is layer-0
    # feature L at p. Such ids are left out of this check.
    index, ambiguous = {}, set()
    for layer in range(N_LAYERS):
        for position in range(graph.n_positions):
            index[f"0_{layer}_{position}"] = graph.error_node(layer, position)
    for n in range(graph.n_features):
        layer, position, feature = graph.features[n].tolist()
        node_id = f"{layer}_{feature}_{position}"
        if node_id in index:
            ambiguous.add(node_id)
        index[node_id] = n
    for position, token in enumerate(graph.token_ids):
        index[f"E_{token}_{position}"] = graph.embeddings.start + position
    for rank, token in enumerate(graph.logit_ids):
        index[f"{N_LAYERS + 1}_{token}_{graph.n_positions - 1}"] = graph.logits.start + rank
    assert set(by_id) <= set(index)
    assert len(read.links) == int(kept.edges[kept.nodes][:, kept.nodes].sum())
    checked = 0
    for source, target, weight in read.links:
        if {source, target} & ambiguous:
            continue
        checked += 1
        assert kept.edges[index[target], index[source]]
        assert weight == pytest.approx(float(graph.adjacency[index[target], index[source]]))
    assert checked > 0.9 * len(read.links)


@pytest.mark.parametrize(
    "bad,message",
    [
        ([], "JSON object"),
        ({"metadata": {}, "nodes": []}, "no 'links'"),
        ({"metadata": {}, "nodes": [{"node_id": 3}], "links": []}, "node 0 needs 'node_id'"),
        (
            {"metadata": {}, "nodes": [], "links": [{"source": "a", "target": "b", "weight": 1}]},
            "does not list",
        ),
    ],
)
def test_a_bad_graph_file_is_one_clear_error(bad, message):
    with pytest.raises(MonoscopeError, match=message):
        read_graph_json(bad)


@pytest.mark.parametrize("value,scale", [(0.0, False), (2.0, True), (1.5, False)])
def test_intervening_on_a_feature_is_setting_its_neuron(relu_gpt2, exact, value, scale):
    transcoders, graph = exact
    layer, position, index = graph.features[graph.n_features // 2].tolist()
    ids = torch.tensor([graph.token_ids])

    def set_neuron(module, args, output):
        output = output.clone()
        output[0, position, index] = output[0, position, index] * value if scale else value
        return output

    handle = relu_gpt2.adapter.blocks(relu_gpt2.hf)[layer].mlp.act.register_forward_hook(set_neuron)
    try:
        with torch.inference_mode():
            expected = relu_gpt2.hf(input_ids=ids).logits[0, -1]
    finally:
        handle.remove()
    setting = FeatureSetting(layer, position, index, value, scale)
    changed = intervene(relu_gpt2, transcoders, graph.token_ids, [setting])
    torch.testing.assert_close(changed, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(MonoscopeError, match="once at each position"):
        intervene(relu_gpt2, transcoders, graph.token_ids, [setting, setting])
    with pytest.raises(MonoscopeError, match="outside the prompt"):
        intervene(relu_gpt2, transcoders, graph.token_ids, [FeatureSetting(0, 99, 0, 0.0)])


def test_chosen_tokens_and_a_logit_difference_are_targets(relu_gpt2, lossy):
    """Chosen tokens get their own rows (their probabilities from the model); a logit difference
    is one row, the difference of the two tokens' rows, under circuit-tracer's virtual id."""
    transcoders, salient = lossy
    vocab = relu_gpt2.unembedding().shape[0]
    a, b = salient.logit_ids[0], (salient.logit_ids[0] + 7) % vocab
    chosen = attribution_graph(relu_gpt2, transcoders, TEXT, target_tokens=[b, a])
    assert chosen.logit_ids == [b, a]
    assert float(chosen.logit_probabilities[1]) == pytest.approx(
        float(salient.logit_probabilities[0]), abs=1e-6
    )
    difference = attribution_graph(relu_gpt2, transcoders, TEXT, target_tokens=[a], versus=b)
    assert difference.logit_ids == [vocab] and difference.logit_tokens[0].startswith("logit(")
    n = salient.logits.start  # every node but the outputs, the same in all three graphs
    rows = chosen.adjacency[chosen.logits, :n]
    torch.testing.assert_close(difference.adjacency[n, :n], rows[1] - rows[0], atol=1e-5, rtol=1e-4)
    assert float(rows[1].abs().max()) > 0.01
    # The rest of the graph is the same: only what it is read against changed.
    torch.testing.assert_close(difference.adjacency[:n, :n], salient.adjacency[:n, :n])
    data = graph_json(difference, prune(difference), slug="difference", scan="tiny-relu")
    logit = next(node for node in data["nodes"] if node["feature_type"] == "logit")
    assert logit["feature"] == vocab and "logit(" in logit["clerp"]


@pytest.mark.parametrize(
    "tokens,versus,message",
    [
        ([10**6], None, "outside the vocabulary"),
        ([3, 3], None, "each target token once"),
        ([3, 4], 5, "compares one token with one other"),
        ([3], 3, "two different tokens"),
    ],
)
def test_bad_targets_are_one_clear_error(relu_gpt2, exact, tokens, versus, message):
    transcoders, _ = exact
    with pytest.raises(MonoscopeError, match=message):
        attribution_graph(relu_gpt2, transcoders, TEXT, target_tokens=tokens, versus=versus)


def test_subgraph_scores_and_supernode_effects(exact, lossy):
    """With exact transcoders every input is a feature or a token: the whole feature set explains
    all of its members' inputs. A lone logit explains only what tokens feed it directly. Groups
    sum their members' edges."""
    _, graph = exact
    everything = [*range(graph.n_features), *range(graph.logits.start, graph.logits.stop)]
    whole = subgraph_scores(graph, everything)
    assert whole.inputs_inside == pytest.approx(1.0, abs=1e-4)
    assert 0.5 < whole.influence <= 1.0
    _, lossy_graph = lossy
    logit = lossy_graph.node("logit", index=0)
    alone = subgraph_scores(lossy_graph, [logit])
    direct = normalize_rows(lossy_graph.adjacency)[logit, lossy_graph.embeddings].sum()
    assert alone.inputs_inside == pytest.approx(float(direct), abs=1e-6)
    assert alone.influence == 0.0  # influence flows into the targets, never out of them
    assert subgraph_scores(lossy_graph, []) == (0.0, 0.0)
    a, b = lossy_graph.node("feature", *lossy_graph.features[0].tolist()), 1
    A = lossy_graph.adjacency
    effects = group_effects(lossy_graph, [[logit], [a, b]])
    assert float(effects[0, 1]) == pytest.approx(float(A[logit, a] + A[logit, b]))
    assert float(effects[1, 0]) == pytest.approx(float(A[a, logit] + A[b, logit]))
    with pytest.raises(MonoscopeError, match="no feature node"):
        lossy_graph.node("feature", 0, 0, 0)  # position 0 has no features
    assert lossy_graph.node("error", 1, 2) == lossy_graph.error_node(1, 2)
    assert lossy_graph.node("embedding", position=3) == lossy_graph.embeddings.start + 3


def test_a_feature_cap_keeps_the_influential_features_with_the_same_edges(relu_gpt2, lossy):
    """max_feature_nodes: the visited features' edges are the full graph's (nothing about an
    edge depends on which nodes are kept), and the visited ones carry more influence."""
    transcoders, full = lossy
    cap = full.n_features // 3
    capped = attribution_graph(relu_gpt2, transcoders, TEXT, max_feature_nodes=cap)
    assert capped.n_features == cap and capped.active_features == full.n_features
    rows = {tuple(f): n for n, f in enumerate(full.features.tolist())}
    chosen = torch.tensor([rows[tuple(f)] for f in capped.features.tolist()])
    keep = torch.cat([chosen, torch.arange(full.n_features, full.adjacency.shape[0])])
    torch.testing.assert_close(capped.adjacency, full.adjacency[keep][:, keep])
    influence = total_influence(normalize_rows(full.adjacency), full.logit_weights())
    left_out = torch.ones(full.n_features, dtype=torch.bool)
    left_out[chosen] = False
    assert influence[chosen].mean() > 3 * influence[: full.n_features][left_out].mean()
    uncapped = attribution_graph(relu_gpt2, transcoders, TEXT, max_feature_nodes=10**6)
    torch.testing.assert_close(uncapped.adjacency, full.adjacency)
    none = attribution_graph(relu_gpt2, transcoders, TEXT, max_feature_nodes=0)
    assert none.n_features == 0 and none.adjacency[none.logits, none.embeddings].abs().sum() > 0


def test_between_two_steps_the_model_is_itself_again(relu_gpt2, lossy):
    """attribution_steps leaves no hook, patched module or attention setting in place across a
    step (the inference worker decodes chats between steps), and interleaved forward passes
    change nothing in the graph."""
    transcoders, full = lossy
    ids = torch.tensor([full.token_ids])
    with torch.inference_mode():
        clean = relu_gpt2.hf(input_ids=ids).logits
    steps = attribution_steps(relu_gpt2, transcoders, TEXT, batch_size=16)
    taken = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            graph = done.value
            break
        taken += 1
        with torch.inference_mode():
            torch.testing.assert_close(relu_gpt2.hf(input_ids=ids).logits, clean)
    assert taken > 3
    torch.testing.assert_close(graph.adjacency, full.adjacency, atol=1e-5, rtol=1e-4)
