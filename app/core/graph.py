"""Attribution graphs: which transcoder features, at which positions, drive which others and the
output, for one prompt.

    graph = attribution_graph(model, transcoders, "Tom's sister was Mia. Tom's sister is")
    kept = prune(graph)                     # node and edge masks, as circuit-tracer prunes
    graph.scores()                          # replacement and completeness

The graph is that of the local replacement model (Ameisen et al. 2025, "Circuit Tracing"): each
MLP is replaced by its per-layer transcoder plus an error node (what the transcoder misses there,
a constant), and attention patterns and normalisation denominators are frozen at their values on
the prompt, so everything between one node's write and another's read is linear. Nodes, in
circuit-tracer's order (so that its pruning and scores apply as they are):

    [active features (layer, position, index)..., errors (layer-major, then position)...,
     embeddings (one per position)..., logits (most probable first)...]

Position 0 is left out as circuit-tracer leaves it out: no features there and an empty error
(the MLPs' output at the first token is a large constant). A position's embedding node is its
token's embedding as it enters block 0 (learned position embeddings, where the model has them,
are a constant like the biases). The logit nodes are the most probable next tokens that
together carry `logit_probability` of the distribution (at most `max_logits`), or chosen tokens,
or one logit difference (`logit_targets`).

The adjacency A has one row per target and one column per source; A[t, s] is s's direct effect on
t: a_s · (W_dec[s] · g) for a feature, e · g for an error and the embedding · g for a token, where
g is the gradient of t with respect to what s's layer's MLP writes at s's position (the residual
entering block 0 for a token) in the frozen model. A feature target t is its pre-activation,
W_enc[:, t] · (the MLP's input); a logit target is its logit minus the mean logit. One forward pass
holds the prompt in `batch_size` rows; each backward pass through it yields `batch_size` rows of A.
Transcoder decoder biases, attention output biases and the like are constants, not nodes.
"""

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, ParamSpec, TypeVar

import torch
from torch import nn

from app.core.errors import MonoscopeError
from app.core.frozen_attention import frozen_attention, frozen_patterns
from app.core.model import LoadedModel, SiteEdit, decode_text
from app.core.sae import Sae
from app.core.sites import Site, parse_site

P = ParamSpec("P")
T = TypeVar("T")
NODE_THRESHOLD = 0.8  # circuit-tracer's defaults: the share of influence the kept nodes carry
EDGE_THRESHOLD = 0.98  # and the kept edges


class GraphScores(NamedTuple):
    replacement: float  # share of the tokens' end-to-end influence that avoids error nodes
    completeness: float  # influence-weighted share of each node's inputs not from errors


@dataclass(frozen=True)
class AttributionGraph:
    token_ids: list[int]
    tokens: list[str]
    features: torch.Tensor  # (n_features, 3) long: layer, position, feature index
    activations: torch.Tensor  # (n_features,)
    logit_ids: list[int]
    logit_tokens: list[str]
    logit_probabilities: torch.Tensor  # (n_logits,)
    adjacency: torch.Tensor  # (n_nodes, n_nodes): rows targets, columns sources
    n_layers: int
    active_features: int  # all the prompt's active features; more than nodes under a cap

    @property
    def n_positions(self) -> int:
        return len(self.token_ids)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def errors(self) -> slice:
        start = self.n_features
        return slice(start, start + self.n_layers * self.n_positions)

    @property
    def embeddings(self) -> slice:
        start = self.errors.stop
        return slice(start, start + self.n_positions)

    @property
    def logits(self) -> slice:
        return slice(self.embeddings.stop, self.embeddings.stop + len(self.logit_ids))

    def error_node(self, layer: int, position: int) -> int:
        return self.errors.start + layer * self.n_positions + position

    def node(self, kind: str, layer: int = 0, position: int = 0, index: int = 0) -> int:
        """The row/column of a node: a feature (layer, position, index), an error (layer,
        position), an embedding (position) or a logit (index = its rank)."""
        if kind == "feature":
            wanted = torch.tensor([layer, position, index])
            found = torch.nonzero((self.features == wanted).all(dim=1)).flatten()
            if len(found):
                return int(found[0])
        elif kind == "error" and 0 <= layer < self.n_layers and 0 <= position < self.n_positions:
            return self.error_node(layer, position)
        elif kind == "embedding" and 0 <= position < self.n_positions:
            return self.embeddings.start + position
        elif kind == "logit" and 0 <= index < len(self.logit_ids):
            return self.logits.start + index
        raise MonoscopeError(f"the graph has no {kind} node at layer {layer}, position {position}")

    def logit_weights(self) -> torch.Tensor:
        """(n_nodes,) each logit node's probability, zero elsewhere: where influence starts."""
        weights = torch.zeros(self.adjacency.shape[0], dtype=self.adjacency.dtype)
        weights[self.logits] = self.logit_probabilities.to(weights.dtype)
        return weights

    def scores(self) -> GraphScores:
        """circuit-tracer's replacement and completeness scores of this graph."""
        normalized = normalize_rows(self.adjacency)
        weights = self.logit_weights()
        influence = total_influence(normalized, weights)
        from_tokens = float(influence[self.embeddings].sum())
        from_errors = float(influence[self.errors].sum())
        replacement = from_tokens / max(from_tokens + from_errors, 1e-30)
        not_error = 1 - normalized[:, self.errors].sum(dim=-1)
        output = influence + weights
        completeness = float((not_error * output).sum() / output.sum())
        return GraphScores(replacement, completeness)


# -- influence and pruning (circuit-tracer's definitions) ----------------------------------------
def normalize_rows(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with each target's incoming weights summing to 1."""
    absolute = adjacency.abs()
    return absolute / absolute.sum(dim=1, keepdim=True).clamp(min=1e-10)


def total_influence(
    normalized: torch.Tensor, weights: torch.Tensor, row_nodes: torch.Tensor | None = None
) -> torch.Tensor:
    """weights @ (A + A² + ...): each node's influence on the weighted targets through every path.
    A graph is acyclic, so the series ends after at most as many terms as its longest path.
    With `row_nodes`, `normalized` holds only those nodes' rows (each row's node), as while a
    capped graph is being built: circuit-tracer's partial influence."""
    current, influence = weights, torch.zeros_like(weights)
    for _ in range(normalized.shape[0] + 1):
        current = (current if row_nodes is None else current[row_nodes]) @ normalized
        if not bool(current.any()):
            return influence
        influence += current
    raise MonoscopeError("influence did not converge: the adjacency matrix has a cycle")


def _cut_off(scores: torch.Tensor, share: float) -> torch.Tensor:
    """The smallest score among the highest ones that together carry `share` of the total."""
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    at = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype)))
    nonzero = int((ordered > 0).sum())
    return ordered[min(at, max(nonzero - 1, 0))]


class SubgraphScores(NamedTuple):
    influence: float  # the members' summed influence on the targets, over all nodes' summed
    inputs_inside: float  # influence-weighted share of the members' inputs from members or tokens


def subgraph_scores(graph: AttributionGraph, members: Sequence[int]) -> SubgraphScores:
    """How much of the graph a chosen set of nodes (a pinned subgraph) accounts for: its share of
    the influence on the targets, and how far the members explain each other. A member's inputs
    are its row of |A|, normalised; the share from other members and token embeddings is what the
    subgraph explains about it, the rest comes from nodes left out and from errors. Averaged with
    each member's influence (plus its logit weight), as circuit-tracer averages completeness."""
    if not members:
        return SubgraphScores(0.0, 0.0)
    chosen = torch.tensor(sorted(set(members)))
    normalized = normalize_rows(graph.adjacency)
    weights = graph.logit_weights()
    influence = total_influence(normalized, weights)
    explained = torch.zeros(graph.adjacency.shape[0], dtype=torch.bool)
    explained[chosen] = True
    explained[graph.embeddings] = True
    inside = normalized[chosen][:, explained].sum(dim=1)
    fed = normalized[chosen].sum(dim=1) > 0  # embeddings have no inputs to explain
    weight = (influence + weights)[chosen] * fed
    share = float(influence[chosen].sum() / influence.sum().clamp(min=1e-30))
    return SubgraphScores(share, float((inside * weight).sum() / weight.sum().clamp(min=1e-30)))


def group_effects(graph: AttributionGraph, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """(g, g) the summed direct effect of each group of nodes (a supernode) on each other:
    E[t, s] = sum of A over targets in group t and sources in group s."""
    effects = torch.zeros(len(groups), len(groups))
    for t, targets in enumerate(groups):
        rows = graph.adjacency[list(targets)]
        for s, sources in enumerate(groups):
            effects[t, s] = rows[:, list(sources)].sum()
    return effects


class Pruned(NamedTuple):
    nodes: torch.Tensor  # (n_nodes,) bool: kept
    edges: torch.Tensor  # (n_nodes, n_nodes) bool: kept
    cumulative: (
        torch.Tensor
    )  # (n_nodes,) share of all influence carried by nodes at least as strong


def prune(
    graph: AttributionGraph,
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
) -> Pruned:
    """Keep the nodes that carry `node_threshold` of the influence on the logits (embeddings and
    logits always), then the edges among them that carry `edge_threshold`, then drop features and
    errors left without an outgoing edge (features also without an incoming one), repeatedly."""
    for name, value in (("node", node_threshold), ("edge", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise MonoscopeError(f"the {name} threshold must be between 0 and 1, got {value}")
    A, weights = graph.adjacency, graph.logit_weights()
    influence = total_influence(normalize_rows(A), weights)
    nodes = influence >= _cut_off(influence, node_threshold)
    always = graph.embeddings.start  # embeddings and logits are always kept
    nodes[always:] = True
    kept = A.clone()
    kept[~nodes] = 0
    kept[:, ~nodes] = 0
    normalized = normalize_rows(kept)
    edge_scores = normalized * (total_influence(normalized, weights) + weights)[:, None]
    edges = edge_scores >= _cut_off(edge_scores.flatten(), edge_threshold)
    previous = None
    while previous is None or not torch.equal(previous, nodes):
        previous = nodes.clone()
        edges[~nodes] = False
        edges[:, ~nodes] = False
        nodes[:always] &= edges[:, :always].any(0)  # features and errors must feed something
        nodes[: graph.n_features] &= edges[: graph.n_features].any(1)  # features must be fed
    order = influence.sort(descending=True)
    cumulative = torch.zeros_like(influence)
    cumulative[order.indices] = order.values.cumsum(0) / order.values.sum().clamp(min=1e-30)
    return Pruned(nodes, edges, cumulative)


# -- the frozen model ----------------------------------------------------------------------------
class _FrozenLayerNorm(torch.autograd.Function):
    """LayerNorm with its 1/std a constant: centring times a fixed gain, and its backward in
    two steps (scale the gradient, centre it) where autograd's would take five. A graph's
    backward passes cross every norm once per chunk: measured 4% off the demo graph's time."""

    @staticmethod
    def forward(ctx, x, eps: float, weight, bias):  # type: ignore[override]
        centred = x - x.mean(-1, keepdim=True)
        gain = (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
        if weight is not None:
            gain = gain * weight
        ctx.save_for_backward(gain)
        out = centred * gain
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (gain,) = ctx.saved_tensors
        scaled = grad * gain
        return scaled - scaled.mean(-1, keepdim=True), None, None, None


def _frozen_norm_forward(module: nn.Module):
    """A forward for a LayerNorm or RMSNorm whose denominator is a constant for gradients."""
    if isinstance(module, nn.LayerNorm):
        eps, weight, bias = module.eps, module.weight, module.bias

        def layer_norm(x: torch.Tensor) -> torch.Tensor:
            return _FrozenLayerNorm.apply(x, eps, weight, bias)

        return layer_norm
    name = type(module).__name__
    if "RMSNorm" in name:
        found = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None)
        rms_eps = 1e-6 if found is None else float(found)
        gain: torch.Tensor = module.weight  # type: ignore[assignment]
        offset = 1.0 if name.startswith("Gemma") else 0.0  # Gemma stores its gain minus one

        def rms_norm(x: torch.Tensor) -> torch.Tensor:
            x32 = x.float()
            scale = (x32.pow(2).mean(-1, keepdim=True) + rms_eps).rsqrt().detach()
            return (x32 * scale * (gain.float() + offset)).to(x.dtype)

        return rms_norm
    return None


@contextmanager
def _forwards_replaced(replacements: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Each module runs the given forward inside, its class's own again on the way out."""
    patched = []
    for module, forward in replacements:
        module.forward = forward  # type: ignore[method-assign]
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def frozen_norms(model: LoadedModel) -> AbstractContextManager[None]:
    """Every LayerNorm and RMSNorm of the model divides by a constant inside (same values)."""
    found = ((module, _frozen_norm_forward(module)) for module in model.hf.modules())
    return _forwards_replaced((module, f) for module, f in found if f is not None)


def skipped_mlps(model: LoadedModel) -> AbstractContextManager[None]:
    """Every MLP returns zeros inside, without computing: in the replacement model what an MLP
    writes is a constant that the mlp_out edit puts in its place, so its own forward is wasted
    work (two d_model x 4 d_model matmuls per layer over every batch row): measured 0.67 s ->
    0.56 s a demo graph."""
    return _forwards_replaced(
        (model.adapter.mlp(block), lambda x, *args, **kwargs: torch.zeros_like(x))
        for block in model.adapter.blocks(model.hf)
    )


def _values_only_gpt2_attention(attention: Any):  # a GPT2Attention
    """GPT-2's attention for a pass whose patterns are constants (no cache, self-attention):
    queries and keys come from a detached input. GPT-2 fuses the three projections into one
    (c_attn) and splits its output; through the split, the value gradients alone would still
    become a full query-key-value gradient (zeros, concatenated) and a full-width matmul."""
    projection, width = attention.c_attn, attention.split_size
    weight, bias = projection.weight, projection.bias  # Conv1D: x @ weight + bias

    def heads(x: torch.Tensor) -> torch.Tensor:  # (batch, pos, d) -> (batch, heads, pos, hd)
        return x.view(*x.shape[:-1], -1, attention.head_dim).transpose(1, 2)

    def forward(hidden_states: torch.Tensor, *args, attention_mask=None, **kwargs):
        query_key = hidden_states.detach() @ weight[:, : 2 * width] + bias[: 2 * width]
        value = hidden_states @ weight[:, 2 * width :] + bias[2 * width :]
        query, key = query_key.split(width, dim=-1)
        out, pattern = frozen_attention(
            attention, heads(query), heads(key), heads(value), attention_mask, attention.scaling
        )
        return attention.c_proj(out.reshape(*out.shape[:-2], -1)), pattern

    return forward


def gradients_through_values_only(model: LoadedModel) -> AbstractContextManager[None]:
    """Where a family fuses the query, key and value projections (GPT-2), only the values carry
    gradients inside; use inside frozen_patterns(...).detaching(). Families with separate
    projections need nothing: autograd never reaches a query or key projection past a detached
    pattern. Measured on the demo model (32 tokens, TopK k = 16, 2 CPU threads): 0.97 s -> 0.56 s
    a graph, edges unchanged."""
    if model.adapter.family != "GPT-2":
        return _forwards_replaced([])
    attentions: list[Any] = [block.attn for block in model.adapter.blocks(model.hf)]
    return _forwards_replaced((a, _values_only_gpt2_attention(a)) for a in attentions)


def _check_transcoders(model: LoadedModel, transcoders: Sequence[Sae]) -> None:
    if len(transcoders) != model.n_layers:
        raise MonoscopeError(
            f"a graph needs one transcoder per layer: {model.name} has {model.n_layers} layers, "
            f"{len(transcoders)} transcoders were given"
        )
    for layer, transcoder in enumerate(transcoders):
        sites = (parse_site(transcoder.hook_name), parse_site(transcoder.hook_name_out))
        if not transcoder.is_transcoder or sites != (Site(layer, "mlp_in"), Site(layer, "mlp_out")):
            raise MonoscopeError(
                f"transcoder {layer} must read blocks.{layer}.hook_mlp_in and write "
                f"blocks.{layer}.hook_mlp_out; it reads {transcoder.hook_name} and writes "
                f"{transcoder.hook_name_out}"
            )


class LogitTargets(NamedTuple):
    """The output nodes: each one's vocabulary id (circuit-tracer's virtual id, vocab size +
    rank, for a direction that is no single token), its label, its weight in the influence
    (the token's probability) and the direction its value is read along."""

    ids: list[int]
    labels: list[str]
    probabilities: torch.Tensor  # (n,)
    directions: torch.Tensor  # (n, d_model): unembedding rows minus their mean, or a difference


def logit_targets(
    model: LoadedModel,
    logits: torch.Tensor,  # (vocab,) the next-token logits
    tokens: Sequence[int] | None = None,
    versus: int | None = None,
    probability: float = 0.95,
    most: int = 10,
) -> LogitTargets:
    """What a graph explains, as circuit-tracer chooses it: by default the most probable next
    tokens until they carry `probability` (at most `most`); else the chosen `tokens`; or, with
    `versus`, the one direction logit(tokens[0]) - logit(versus), which asks why the model
    prefers one answer to another rather than why it predicts it at all."""
    W_U = model.unembedding().float()
    probs = torch.softmax(logits.float(), dim=-1)
    vocab = len(probs)
    for token in [*(tokens or []), *([] if versus is None else [versus])]:
        if not 0 <= token < vocab:
            raise MonoscopeError(f"token id {token} is outside the vocabulary (0 to {vocab - 1})")
    if versus is not None:
        if not tokens or len(tokens) != 1:
            raise MonoscopeError("a logit difference compares one token with one other")
        (token,) = tokens
        if token == versus:
            raise MonoscopeError("a logit difference needs two different tokens")
        label = f"logit({_text(model, token)!r}) - logit({_text(model, versus)!r})"
        direction = (W_U[token] - W_U[versus])[None]
        return LogitTargets([vocab], [label], probs[[token]], direction)
    if tokens:
        if len(set(tokens)) != len(tokens):
            raise MonoscopeError("each target token once")
        chosen = torch.tensor(list(tokens), device=probs.device)
    else:
        top = probs.topk(min(most, vocab))
        enough = int(torch.searchsorted(top.values.cumsum(0), torch.tensor(probability))) + 1
        chosen = top.indices[: min(enough, len(top.values))]
    ids = [int(t) for t in chosen]
    directions = W_U[chosen] - W_U.mean(0)  # a logit minus the mean logit
    return LogitTargets(ids, [_text(model, t) for t in ids], probs[chosen], directions)


def token_id(model: LoadedModel, text: str) -> int:
    """The id of the one token `text` is (a target is named as it is written, leading space
    included), else a clear error."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = " + ".join(repr(_text(model, t)) for t in ids) or "nothing"
        raise MonoscopeError(f"{text!r} is not one token of {model.name}: it is {pieces}")
    return int(ids[0])


def _text(model: LoadedModel, token: int) -> str:
    return decode_text(model.tokenizer, [token])


@torch.no_grad()
def _clean_pass(model: LoadedModel, transcoders: Sequence[Sae], ids: torch.Tensor):
    """What the replacement needs from the prompt: each layer's active features, its error
    (position 0 left out) and what its MLP writes, the token embeddings and the next-token
    logits."""
    sites = ["blocks.0.hook_resid_pre"]
    for layer in range(model.n_layers):
        sites += [f"blocks.{layer}.hook_mlp_in", f"blocks.{layer}.hook_mlp_out"]
    acts = model.capture(ids, sites)
    logits = model.hf(input_ids=ids, logits_to_keep=1).logits[0, -1]
    features, activations, decoders, errors, mlp_outs = [], [], [], [], []
    for layer, transcoder in enumerate(transcoders):
        x = acts[f"blocks.{layer}.hook_mlp_in"][0].to(transcoder.dtype)
        f = transcoder.encode(x)
        mlp_outs.append(acts[f"blocks.{layer}.hook_mlp_out"][0])
        error = mlp_outs[-1].float() - transcoder.reconstruct(x, f).float()
        f[0], error[0] = 0.0, 0.0  # position 0 is left out
        position, index = f.nonzero(as_tuple=True)
        values = f[position, index]
        errors.append(error)
        features.append(torch.stack([torch.full_like(position, layer), position, index], dim=1))
        activations.append(values.float())
        decoders.append(values[:, None].float() * transcoder.W_dec[index].float())
    embeddings = acts["blocks.0.hook_resid_pre"][0].float()
    learned_positions = getattr(getattr(model.hf, "transformer", None), "wpe", None)
    if learned_positions is not None:  # GPT-2: the residual is token + position embedding
        positions = torch.arange(ids.shape[1], device=ids.device)
        embeddings = embeddings - learned_positions(positions).float()
    return features, activations, decoders, errors, mlp_outs, embeddings, logits


def attribution_steps(
    model: LoadedModel,
    transcoders: Sequence[Sae],
    text: str | Sequence[int],
    max_logits: int = 10,
    logit_probability: float = 0.95,
    batch_size: int = 64,
    max_tokens: int = 256,
    target_tokens: Sequence[int] | None = None,
    versus: int | None = None,
    max_feature_nodes: int | None = None,
    update_interval: int = 4,
) -> Generator[None, None, AttributionGraph]:
    """The attribution graph of `text`'s next-token prediction (or of these token ids) through
    one transcoder per layer (layer order), every edge computed: no node is dropped before
    `prune`. Its output nodes are the most probable tokens, or `target_tokens`, or the logit
    difference between one target token and `versus` (see logit_targets).

    With `max_feature_nodes`, only that many features become nodes, chosen as circuit-tracer
    chooses them: after the logits' rows, repeatedly the `update_interval` batches of features
    with the most influence on the targets through the rows computed so far. Memory and time
    then grow with the cap, not with the active features (the dense adjacency is square in the
    nodes); edges from features left out are dropped.

    A generator: it yields after the forward pass and after each backward pass, with no hook
    or patched module left in place, so the inference worker can decode chats between steps
    (`InferenceWorker.call_in_steps`); what it returns is the graph."""
    _check_transcoders(model, transcoders)
    token_ids = model.tokenizer(text)["input_ids"] if isinstance(text, str) else list(text)
    if not token_ids:
        raise MonoscopeError("the prompt is empty")
    model.check_length(len(token_ids), max_tokens, "prompt")
    ids = torch.tensor([token_ids], device=model.device)
    n_pos, n_layers = len(token_ids), model.n_layers
    features, activations, decoders, errors, mlp_outs, embeddings, logits = _clean_pass(
        model, transcoders, ids
    )
    targets = logit_targets(model, logits, target_tokens, versus, logit_probability, max_logits)

    counts = [len(a) for a in activations]
    starts = [sum(counts[:layer]) for layer in range(n_layers)]
    n_features = sum(counts)
    error_start = n_features
    embed_start = error_start + n_layers * n_pos
    logit_start = embed_start + n_pos
    n_nodes = logit_start + len(targets.ids)
    all_features = torch.cat(features) if n_features else torch.zeros(0, 3, dtype=torch.long)

    # Each layer's decoder rows (scaled by their activations), padded into one block per
    # position, so that one batched matmul per layer turns a chunk's gradients into that layer's
    # edges: 4,000 small matmuls a graph become 128 (32 tokens, 4 layers), 6% off its time.
    slotted = [_by_position(f[:, 1], d, n_pos) for f, d in zip(features, decoders, strict=True)]

    n_logits = len(targets.ids)
    cap = n_features if max_feature_nodes is None else min(max_feature_nodes, n_features)
    if cap < 0:
        raise MonoscopeError(f"max_feature_nodes must be at least 0, got {max_feature_nodes}")
    rows = max(1, min(batch_size, cap + n_logits))
    edge_rows = torch.zeros(cap + n_logits, n_nodes)  # one per target, in the order computed
    row_nodes = torch.zeros(cap + n_logits, dtype=torch.long)  # the node each row is for
    filled = 0
    device, d_model = model.device, model.d_model
    deltas = [
        torch.zeros(rows, n_pos, d_model, device=device, requires_grad=True)
        for _ in range(n_layers + 1)
    ]  # what each MLP writes, then the embeddings: where gradients are read
    mlp_inputs: dict[int, torch.Tensor] = {}
    normed: dict[str, torch.Tensor] = {}
    edits: dict[str, SiteEdit] = {
        "blocks.0.hook_resid_pre": lambda x: x.detach() + deltas[n_layers].to(x.dtype)
    }
    for layer, transcoder in enumerate(transcoders):
        edits[f"blocks.{layer}.hook_mlp_in"] = _keeper(mlp_inputs, layer)
        edits[f"blocks.{layer}.hook_mlp_out"] = _replacement(
            transcoder, mlp_inputs, layer, mlp_outs[layer], deltas[layer]
        )

    def compute_rows(nodes: torch.Tensor) -> Iterator[None]:
        """The edge rows of these target nodes (features or logits), a batch row each; a step
        per backward pass."""
        nonlocal filled
        for first in range(0, len(nodes), rows):
            chunk = nodes[first : first + rows]
            used = len(chunk)
            with torch.enable_grad():
                value = _target_values(
                    chunk,
                    all_features,
                    transcoders,
                    mlp_inputs,
                    normed["final"],
                    targets.directions,
                    logit_start,
                ).sum()
                grads = torch.autograd.grad(
                    value, deltas, retain_graph=True, allow_unused=True, materialize_grads=True
                )
            block = edge_rows[filled : filled + used]
            for layer in range(n_layers):
                g = grads[layer][:used].float()  # (used, pos, d)
                padded, position, slot = slotted[layer]
                edges = torch.bmm(g.transpose(0, 1), padded)[position, :, slot]  # (n, used)
                block[:, starts[layer] : starts[layer] + len(slot)] = edges.T.cpu()
                column = error_start + layer * n_pos
                block[:, column : column + n_pos] = torch.einsum(
                    "bpd,pd->bp", g, errors[layer]
                ).cpu()
            block[:, embed_start:logit_start] = torch.einsum(
                "bpd,pd->bp", grads[n_layers][:used].float(), embeddings
            ).cpu()
            row_nodes[filled : filled + used] = chunk
            filled += used
            yield

    keep_normed = model.final_norm().register_forward_hook(
        lambda module, args, output: normed.__setitem__("final", output)
    )
    try:
        with (
            torch.enable_grad(),
            frozen_patterns(model) as freeze,
            freeze.detaching(),
            frozen_norms(model),
            skipped_mlps(model),
            gradients_through_values_only(model),
            model.hooked(edits),
        ):
            model.hf(input_ids=ids.expand(rows, -1), use_cache=False, logits_to_keep=1)
    finally:
        keep_normed.remove()
    # Only the recorded autograd graph is needed from here: no hook or patch stays in place
    # across a step, so other work may use the model between two backward passes.
    yield
    yield from compute_rows(torch.arange(logit_start, n_nodes))  # logits first, as circuit-tracer
    visited = torch.zeros(n_features, dtype=torch.bool)
    if cap == n_features:
        yield from compute_rows(torch.arange(n_features))
        visited[:] = True
    logit_weights = torch.zeros(n_nodes)
    logit_weights[logit_start:] = targets.probabilities.cpu()
    while int(visited.sum()) < cap:  # the most influential features so far, a queue
        influence = total_influence(
            normalize_rows(edge_rows[:filled]), logit_weights, row_nodes[:filled]
        )
        rank = torch.argsort(influence[:n_features], descending=True)
        queue = rank[~visited[rank]][: min(update_interval * rows, cap - int(visited.sum()))]
        yield from compute_rows(queue)
        visited[queue] = True

    # The square adjacency over the features visited (in index order) and every other node.
    kept = torch.cat([torch.nonzero(visited).flatten(), torch.arange(n_features, n_nodes)])
    position_of = torch.full((n_nodes,), -1, dtype=torch.long)
    position_of[kept] = torch.arange(len(kept))
    adjacency = torch.zeros(len(kept), len(kept))
    adjacency[position_of[row_nodes]] = edge_rows[:, kept]
    selected = kept[: len(kept) - (n_nodes - n_features)]
    return AttributionGraph(
        token_ids=list(token_ids),
        tokens=[_text(model, t) for t in token_ids],
        features=all_features[selected].cpu(),
        activations=torch.cat(activations)[selected].cpu() if n_features else torch.zeros(0),
        logit_ids=targets.ids,
        logit_tokens=targets.labels,
        logit_probabilities=targets.probabilities.cpu(),
        adjacency=adjacency,
        n_layers=n_layers,
        active_features=n_features,
    )


def _run_to_the_end(steps: Callable[P, Generator[None, None, T]]) -> Callable[P, T]:
    """A stepwise function made one that runs all its steps and returns the result."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        stepping = steps(*args, **kwargs)
        while True:
            try:
                next(stepping)
            except StopIteration as done:
                return done.value

    run.__doc__ = steps.__doc__
    return run


attribution_graph = _run_to_the_end(attribution_steps)


def _by_position(
    positions: torch.Tensor,  # (n,) each feature's position
    decoders: torch.Tensor,  # (n, d) its activation times its decoder row
    n_pos: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n_pos, d, most) the decoders of the features at each position, zero-padded to the most
    features any position has, and where each feature sits in it (position, slot)."""
    counts = torch.bincount(positions, minlength=n_pos)
    most = int(counts.max()) if len(positions) else 0
    first_of_position = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(positions), device=positions.device) - first_of_position[positions]
    padded = decoders.new_zeros(n_pos, most, decoders.shape[1])
    padded[positions, slot] = decoders
    return padded.transpose(1, 2), positions, slot


def _target_values(
    chunk: torch.Tensor,  # (rows,) target node per batch row
    features: torch.Tensor,  # (n_features, 3)
    transcoders: Sequence[Sae],
    mlp_inputs: dict[int, torch.Tensor],
    final: torch.Tensor,  # (batch, pos, d) the final norm's output
    directions: torch.Tensor,  # (n_logits, d) what each logit target reads
    logit_start: int,
) -> torch.Tensor:
    """(rows,) each batch row's own target: a feature's pre-activation, or a logit minus the mean
    logit, read from that row of the frozen pass."""
    values = []
    is_logit = chunk >= logit_start
    feature_rows = torch.nonzero(~is_logit).flatten()
    for layer in features[chunk[feature_rows], 0].unique().tolist():
        rows = feature_rows[features[chunk[feature_rows], 0] == layer]
        position, index = features[chunk[rows], 1], features[chunk[rows], 2]
        encoder = transcoders[layer].W_enc[:, index.to(transcoders[layer].device)].T
        x = mlp_inputs[layer][rows, position].to(encoder.dtype)
        values.append((x * encoder).sum(-1).float())
    logit_rows = torch.nonzero(is_logit).flatten()
    if len(logit_rows):
        last = final[logit_rows, -1].float()
        values.append((last * directions[chunk[logit_rows] - logit_start]).sum(-1))
    return torch.cat(values)


def _keeper(store: dict[int, torch.Tensor], layer: int) -> SiteEdit:
    def keep(x: torch.Tensor) -> None:
        store[layer] = x

    return keep


def _replacement(
    transcoder: Sae,
    mlp_inputs: dict[int, torch.Tensor],
    layer: int,
    written: torch.Tensor,  # (pos, d) what the MLP writes on the prompt
    delta: torch.Tensor,
) -> SiteEdit:
    """What the MLP writes, as a constant (its value on the prompt: features + error + bias),
    plus the transcoder's skip term's gradient path and `delta`, where gradients are read."""

    def replace(y: torch.Tensor) -> torch.Tensor:
        out = written.to(y.dtype) + delta.to(y.dtype)
        if transcoder.has_skip:
            skip = mlp_inputs[layer].to(transcoder.dtype) @ transcoder.W_skip.T
            out = out + (skip - skip.detach()).to(y.dtype)
        return out

    return replace


# -- the graph JSON that circuit-tracer writes and Neuronpedia's graph viewer reads -------------
GRAPH_SCHEMA_VERSION = 1


def _cantor(layer: int, index: int) -> int:
    return (layer + index) * (layer + index + 1) // 2 + index


def graph_json(
    graph: AttributionGraph,
    pruned: Pruned,
    slug: str,
    scan: str,
    node_threshold: float = NODE_THRESHOLD,
    prompt: str | None = None,
) -> dict:
    """The pruned graph as circuit-tracer's `create_graph_files` writes it (schema version 1):
    kept nodes with an edge, embeddings and logits always; links source -> target with A's
    weight; node ids `{layer}_{feature}_{pos}`, `0_{layer}_{pos}` (errors), `E_{token}_{pos}`,
    `{n_layers + 1}_{token}_{last pos}` (logits)."""
    last = graph.n_positions - 1
    nodes: dict[int, dict] = {}
    influence = pruned.cumulative.tolist()

    def node(**fields) -> dict:
        return {
            "token_prob": 0.0,
            "is_target_logit": False,
            "run_idx": 0,
            "reverse_ctx_idx": 0,
            "clerp": "",
            "influence": None,
            "activation": None,
        } | fields

    for n in torch.nonzero(pruned.nodes).flatten().tolist():
        if n < graph.n_features:
            layer, position, index = graph.features[n].tolist()
            nodes[n] = node(
                node_id=f"{layer}_{index}_{position}",
                feature=_cantor(layer, index),
                layer=str(layer),
                ctx_idx=position,
                feature_type="cross layer transcoder",
                jsNodeId=f"{layer}_{index}-0",
                influence=influence[n],
                activation=float(graph.activations[n]),
            )
        elif n < graph.embeddings.start:
            layer, position = divmod(n - graph.errors.start, graph.n_positions)
            nodes[n] = node(
                node_id=f"0_{layer}_{position}",
                feature=-1,
                layer=str(layer),
                ctx_idx=position,
                feature_type="mlp reconstruction error",
                jsNodeId=f"{layer}_{position}-0",
                influence=influence[n],
            )
        elif n < graph.logits.start:
            position = n - graph.embeddings.start
            token = graph.token_ids[position]
            nodes[n] = node(
                node_id=f"E_{token}_{position}",
                feature=position,
                layer="E",
                ctx_idx=position,
                feature_type="embedding",
                jsNodeId=f"E_{token}-{position}",
                influence=influence[n],
            )
        else:
            rank = n - graph.logits.start
            token, probability = graph.logit_ids[rank], float(graph.logit_probabilities[rank])
            nodes[n] = node(
                node_id=f"{graph.n_layers + 1}_{token}_{last}",
                feature=token,
                layer=str(graph.n_layers + 1),
                ctx_idx=last,
                feature_type="logit",
                token_prob=probability,
                is_target_logit=rank == 0,
                jsNodeId=f"L_{token}-{last}",
                clerp=f'Output "{graph.logit_tokens[rank]}" (p={probability:.3f})',
            )
    targets, sources = torch.nonzero(pruned.edges, as_tuple=True)
    weights = graph.adjacency[targets, sources].tolist()
    links = [
        {"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": w}
        for t, s, w in zip(targets.tolist(), sources.tolist(), weights, strict=True)
        if s in nodes and t in nodes
    ]
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    kept = [
        n
        for n in nodes.values()
        if n["node_id"] in connected or n["feature_type"] in ("embedding", "logit")
    ]
    return {
        "metadata": {
            "slug": slug,
            "scan": scan,
            "transcoder_list": [],
            "prompt_tokens": graph.tokens,
            "prompt": prompt if prompt is not None else "".join(graph.tokens),
            "node_threshold": node_threshold,
            "schema_version": GRAPH_SCHEMA_VERSION,
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": kept,
        "links": links,
    }


@dataclass(frozen=True)
class GraphFile:
    """A graph JSON read back: what a viewer draws, whoever computed it."""

    metadata: dict
    nodes: list[dict]  # each with node_id, feature_type, layer, ctx_idx, feature, influence ...
    links: list[tuple[str, str, float]]  # source id, target id, weight
    pinned: list[str]
    supernodes: list[list[str]]  # [name, node id, node id, ...]


_NODE_FIELDS = {"node_id": str, "feature_type": str, "layer": str, "ctx_idx": int, "feature": int}


def read_graph_json(data: object) -> GraphFile:
    """Check a graph JSON (circuit-tracer's or ours) and read it; MonoscopeError names what is
    wrong. Links must join listed nodes."""
    if not isinstance(data, dict):
        raise MonoscopeError("a graph file is a JSON object with metadata, nodes and links")
    for key in ("metadata", "nodes", "links"):
        if key not in data:
            raise MonoscopeError(f"the graph file has no {key!r}")
    if not isinstance(data["nodes"], list) or not isinstance(data["links"], list):
        raise MonoscopeError("the graph file's nodes and links must be lists")
    nodes = []
    for position, found in enumerate(data["nodes"]):
        if not isinstance(found, dict):
            raise MonoscopeError(f"node {position} is not an object")
        for key, kind in _NODE_FIELDS.items():
            value = found.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise MonoscopeError(f"node {position} needs {key!r} as {kind.__name__}")
        nodes.append(found)
    ids = {n["node_id"] for n in nodes}
    links = []
    for position, link in enumerate(data["links"]):
        if not isinstance(link, dict):
            raise MonoscopeError(f"link {position} is not an object")
        source, target, weight = link.get("source"), link.get("target"), link.get("weight")
        if source not in ids or target not in ids:
            raise MonoscopeError(f"link {position} joins a node the file does not list")
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise MonoscopeError(f"link {position} needs a numeric weight")
        links.append((str(source), str(target), float(weight)))
    found_params = data.get("qParams")
    params: dict = found_params if isinstance(found_params, dict) else {}
    metadata = data["metadata"] if isinstance(data["metadata"], dict) else {}
    return GraphFile(
        metadata=metadata,
        nodes=nodes,
        links=links,
        pinned=[str(p) for p in params.get("pinnedIds") or []],
        supernodes=[[str(x) for x in group] for group in params.get("supernodes") or []],
    )


# -- interventions on graph nodes ---------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSetting:
    """A transcoder feature at one position set to a value (0 zeroes it), or scaled by a factor."""

    layer: int
    position: int
    index: int
    value: float
    scale: bool = False  # value multiplies the feature's own activation


@torch.no_grad()
def intervene(
    model: LoadedModel,
    transcoders: Sequence[Sae],
    token_ids: Sequence[int],
    settings: Sequence[FeatureSetting],
) -> torch.Tensor:
    """Next-token logits (vocab,) of the real model with these features set, each layer's MLP
    output changed by (new - old) activation × the feature's decoder row at its position (the
    transcoder's error and every other feature kept); downstream layers respond as the model
    does, attention included."""
    _check_transcoders(model, transcoders)
    places = [(s.layer, s.position, s.index) for s in settings]
    if len(set(places)) != len(places):
        raise MonoscopeError("each feature may be set once at each position")
    for setting in settings:
        if not 0 <= setting.layer < len(transcoders):
            raise MonoscopeError(f"layer {setting.layer} is outside the model")
        if not 0 <= setting.position < len(token_ids):
            raise MonoscopeError(f"position {setting.position} is outside the prompt")
        if not 0 <= setting.index < transcoders[setting.layer].d_sae:
            raise MonoscopeError(
                f"feature {setting.index} is outside transcoder {setting.layer} "
                f"(0..{transcoders[setting.layer].d_sae - 1})"
            )
    seen: dict[int, torch.Tensor] = {}
    edits: dict[str, SiteEdit] = {}
    for layer in sorted({s.layer for s in settings}):
        mine = [s for s in settings if s.layer == layer]
        transcoder = transcoders[layer]

        def read(x: torch.Tensor, layer=layer) -> None:
            seen[layer] = x

        def write(y: torch.Tensor, layer=layer, mine=mine, transcoder=transcoder) -> torch.Tensor:
            f = transcoder.encode(seen[layer][0].to(transcoder.dtype))
            out = y.clone()
            for s in mine:
                old = f[s.position, s.index]
                new = old * s.value if s.scale else torch.tensor(s.value, dtype=old.dtype)
                change = (new - old) * transcoder.decoder_directions(torch.tensor([s.index]))[0]
                out[0, s.position] += change.to(y.dtype)
            return out

        edits[transcoder.hook_name] = read
        edits[transcoder.hook_name_out] = write
    ids = torch.tensor([list(token_ids)], device=model.device)
    with model.hooked(edits):
        return model.hf(input_ids=ids, logits_to_keep=1).logits[0, -1].float().cpu()
