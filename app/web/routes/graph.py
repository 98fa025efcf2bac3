"""/api/v1/graph: a prompt's attribution graph through the loaded transcoders, as the file
circuit-tracer writes and Neuronpedia's graph viewer reads, with its scores.

The graph needs one loaded transcoder per layer (MLP input -> MLP output). It is computed by the
inference worker (the model's one owner), and kept by prompt and settings: asking again, or
sharing the request, costs nothing until it falls out of the cache.
"""

import threading
from collections import OrderedDict

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.core.errors import NotLoadedError
from app.core.graph import attribution_graph, graph_json, prune
from app.core.sites import Site, parse_site
from app.web.deps import InferenceDep, WorkspaceDep
from app.web.resident import MAX_TEXT_TOKENS, check_text, require_loaded, run_on_model

router = APIRouter()
CACHED_GRAPHS = 32  # a graph of a 64-token prompt on the demo model is about 5 MB of adjacency

_cache: OrderedDict[tuple, "GraphOut"] = OrderedDict()
_cache_lock = threading.Lock()


def transcoder_set(workspace) -> list[str]:
    """The loaded transcoders that replace each layer's MLP, layer 0 first (the first by name
    where a layer has several); NotLoadedError when a layer has none."""
    by_layer: dict[int, str] = {}
    for name in sorted(workspace.saes):
        sae = workspace.saes[name]
        if not sae.is_transcoder:
            continue
        read, write = parse_site(sae.hook_name), parse_site(sae.hook_name_out)
        if (read.kind, write) == ("mlp_in", Site(read.layer, "mlp_out")):
            by_layer.setdefault(read.layer, name)
    missing = [n for n in range(workspace.model.n_layers) if n not in by_layer]
    if missing:
        raise NotLoadedError(
            "An attribution graph needs a transcoder for every layer's MLP; none is loaded for "
            f"layer{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}."
        )
    return [by_layer[n] for n in range(workspace.model.n_layers)]


class GraphIn(BaseModel):
    text: str = Field(description="The prompt; its next-token prediction is traced.")
    node_threshold: float = Field(0.8, ge=0.0, le=1.0, description="Share of influence kept.")
    edge_threshold: float = Field(0.98, ge=0.0, le=1.0)
    max_logits: int = Field(10, ge=1, le=10, description="Most output tokens to trace from.")


class GraphOut(BaseModel):
    transcoders: list[str]
    replacement_score: float
    completeness_score: float
    features: int = Field(description="active features, before pruning")
    kept_features: int
    graph: dict = Field(description="circuit-tracer's graph file (schema version 1)")


@router.post("/api/v1/graph", response_model=GraphOut, tags=["api"])
def api_graph(body: GraphIn, workspace: WorkspaceDep, inference: InferenceDep) -> GraphOut:
    """The attribution graph of `text` through one loaded transcoder per layer, pruned."""
    workspace = require_loaded(workspace, "build attribution graphs")
    names = transcoder_set(workspace)
    check_text(body.text, "Type a prompt to trace.")
    key = (workspace.model.name, tuple(names), body.text, *body.model_dump().values())
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    model, transcoders = workspace.model, [workspace.saes[n] for n in names]

    def compute() -> GraphOut:  # on the inference worker, the model's one owner
        found = attribution_graph(
            model, transcoders, body.text, max_logits=body.max_logits, max_tokens=MAX_TEXT_TOKENS
        )
        kept = prune(found, body.node_threshold, body.edge_threshold)
        scores = found.scores()
        return GraphOut(
            transcoders=names,
            replacement_score=scores.replacement,
            completeness_score=scores.completeness,
            features=found.n_features,
            kept_features=int(kept.nodes[: found.n_features].sum()),
            graph=graph_json(found, kept, "graph", "+".join(names), body.node_threshold, body.text),
        )

    result = run_on_model(inference, compute)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > CACHED_GRAPHS:
            _cache.popitem(last=False)
    return result
