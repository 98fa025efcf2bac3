"""/graph and /api/v1/graph: a prompt's attribution graph through the loaded transcoders, as
the file circuit-tracer writes and Neuronpedia's graph viewer reads, with its scores.

The graph needs one loaded transcoder per layer (MLP input -> MLP output). It is computed by the
inference worker (the model's one owner), and kept by prompt and settings: asking again, or
sharing the URL, costs nothing until it falls out of the cache. The page draws the pruned graph
by layer and position, pins nodes into a subgraph (`?pinned=`) and intervenes on the pinned
features (zero or scale them, run the real model, show the new predictions).
"""

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from app.core.errors import MonoscopeError, NotLoadedError
from app.core.graph import FeatureSetting, attribution_graph, graph_json, intervene, prune
from app.core.model import decode_text
from app.core.sites import Site, parse_site
from app.db.queries import find_sae, labels_of
from app.web.deps import InferenceDep, SessionDep, TemplatesDep, WorkspaceDep
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
    return build_graph(workspace, inference, body)


def build_graph(workspace, inference, body: GraphIn) -> GraphOut:
    """The graph the API returns and the page draws, from the cache when it is there."""
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


# -- the page ------------------------------------------------------------------------------------
ROW, MARGIN, GUTTER = 96, 30, 70  # pixels per layer row, around the drawing, for row names
SLOT = 13  # pixels between the nodes that share a (layer, position) cell
NARROW, WIDE = 36, 240  # a position's column: wide enough for its fullest cell in a few lines
CAPTION = 190  # room right of the last position for the predictions' captions
MAX_PINNED = 32


@dataclass
class DrawnNode:
    node_id: str
    kind: str  # feature | error | embedding | logit
    x: float
    y: float
    r: float
    title: str
    layer: int | None = None
    position: int = 0
    index: int | None = None
    href: str | None = None
    pinned: bool = False
    text: str = ""
    activation: float | None = None
    influence: float = 1.0  # the share of all influence carried by nodes at least as strong
    label_x: float = 0.0  # where a logit's caption goes (captions stack beside the diamonds)
    label_y: float = 0.0


@dataclass
class DrawnLink:
    x1: float
    y1: float
    x2: float
    y2: float
    width: float
    positive: bool
    pinned: bool


@dataclass
class Drawing:
    width: int
    height: int
    nodes: list[DrawnNode]
    links: list[DrawnLink]
    rows: list[tuple[float, str]]  # y, label
    columns: list[tuple[float, str]]  # x, token
    pinned: list[DrawnNode] = field(default_factory=list)
    pinned_links: list[tuple[str, str, float]] = field(default_factory=list)


def _row_of(node: dict, n_layers: int) -> int:
    """Row from the bottom: 0 embeddings, 1..n_layers the layers, n_layers + 1 the logits."""
    kind = node["feature_type"]
    if kind == "embedding":
        return 0
    if kind == "logit":
        return n_layers + 1
    return int(node["layer"]) + 1


def draw(
    graph: dict,
    n_layers: int,
    pinned: set[str],
    feature_href,
    labels: dict[tuple[int, int], str | None],
) -> Drawing:
    """Positions for every node (by position across, by layer up; nodes sharing a cell side by
    side, most influential first) and every link, as the page's SVG draws them."""
    tokens = graph["metadata"]["prompt_tokens"]
    cells: dict[tuple[int, int], list[dict]] = {}
    for node in graph["nodes"]:
        cells.setdefault((_row_of(node, n_layers), node["ctx_idx"]), []).append(node)
    fullest = [
        max((len(m) for (_, p), m in cells.items() if p == n), default=1)
        for n in range(len(tokens))
    ]
    widths = [min(WIDE, max(NARROW, SLOT * (math.ceil(math.sqrt(2 * k)) + 1))) for k in fullest]
    starts = [MARGIN + GUTTER + sum(widths[:n]) for n in range(len(tokens))]
    height = (n_layers + 2) * ROW + 2 * MARGIN
    width = MARGIN * 2 + GUTTER + sum(widths) + CAPTION
    placed: dict[str, DrawnNode] = {}
    for (row, position), members in cells.items():
        members.sort(key=lambda n: n.get("influence") or 0.0)
        per_line = max(1, (widths[position] - 8) // SLOT)  # lines of this many, upward
        for slot, node in enumerate(members):
            line, place = divmod(slot, per_line)
            in_line = min(per_line, len(members) - line * per_line)
            x = starts[position] + widths[position] / 2 + (place - (in_line - 1) / 2) * SLOT
            y = height - MARGIN - row * ROW - 20 - line * SLOT
            kind = {
                "embedding": "embedding",
                "logit": "logit",
                "mlp reconstruction error": "error",
            }.get(node["feature_type"], "feature")
            share = node.get("influence")
            radius = 4.0 + 7.0 * (1.0 - min(max(share, 0.0), 1.0)) if share is not None else 6.0
            drawn = DrawnNode(node["node_id"], kind, x, y, radius, "", position=node["ctx_idx"])
            drawn.influence = share if share is not None else 1.0
            token = tokens[node["ctx_idx"]] if node["ctx_idx"] < len(tokens) else ""
            if kind == "feature":
                layer = int(node["layer"])
                index = int(node["node_id"].split("_")[1])
                label = labels.get((layer, index))
                drawn.layer, drawn.index = layer, index
                drawn.activation = node.get("activation")
                drawn.href = feature_href(layer, index)
                drawn.title = (
                    f"layer {layer} feature {index} at {token!r} (position {node['ctx_idx']}), "
                    f"activation {node.get('activation') or 0:.2f}"
                    + (f": {label}" if label else "")
                )
            elif kind == "error":
                drawn.layer = int(node["layer"])
                drawn.title = f"layer {node['layer']} transcoder error at {token!r}"
            elif kind == "embedding":
                drawn.title, drawn.text = f"embedding of {token!r}", token
            else:
                drawn.title = node.get("clerp") or "logit"
                drawn.text = f"{node.get('token_prob', 0):.2f}"
            drawn.pinned = drawn.node_id in pinned
            placed[drawn.node_id] = drawn
    strongest = max((abs(link["weight"]) for link in graph["links"]), default=1.0) or 1.0
    links = []
    for link in graph["links"]:
        a, b = placed.get(link["source"]), placed.get(link["target"])
        if a is None or b is None:
            continue
        links.append(
            DrawnLink(
                a.x,
                a.y,
                b.x,
                b.y,
                0.4 + 3.6 * math.sqrt(abs(link["weight"]) / strongest),
                link["weight"] >= 0,
                a.pinned and b.pinned,
            )
        )
    links.sort(key=lambda link: link.width)
    logits = [n for n in placed.values() if n.kind == "logit"]
    for rank, logit in enumerate(sorted(logits, key=lambda n: n.x)):
        logit.label_x = max(n.x for n in logits) + 14
        logit.label_y = logit.y - 16 + 12 * rank
    rows: list[tuple[float, str]] = [(height - MARGIN - 20, "embeddings")]
    rows += [(height - MARGIN - (n + 1) * ROW - 20, f"layer {n}") for n in range(n_layers)]
    rows += [(height - MARGIN - (n_layers + 1) * ROW - 20, "output")]

    def fitted(token: str, room: int) -> str:  # about 6.5 px a character at 11 px
        most = max(2, int(room / 6.5))
        return token if len(token) <= most else token[: most - 1] + "…"

    columns = [(starts[p] + widths[p] / 2, fitted(t, widths[p])) for p, t in enumerate(tokens)]
    chosen = [placed[n] for n in sorted(pinned) if n in placed]
    chosen_ids = {n.node_id for n in chosen}
    among = [
        (link["source"], link["target"], link["weight"])
        for link in graph["links"]
        if link["source"] in chosen_ids and link["target"] in chosen_ids
    ]
    return Drawing(width, height, list(placed.values()), links, rows, columns, chosen, among)


@dataclass(frozen=True)
class Intervention:
    mode: str
    factor: float
    predictions: list[tuple[str, float]]  # after
    before: list[tuple[str, float]]
    target: str
    target_before: float
    target_after: float


@router.get("/graph/file", name="graph_file", tags=["api"])
def graph_file(
    workspace: WorkspaceDep,
    inference: InferenceDep,
    text: Annotated[str, Query(max_length=20_000)],
    node_threshold: Annotated[float, Query(ge=0.0, le=1.0)] = 0.8,
) -> JSONResponse:
    """The pruned graph as a file to download: circuit-tracer's JSON, which Neuronpedia's graph
    viewer opens."""
    result = build_graph(workspace, inference, GraphIn(text=text, node_threshold=node_threshold))
    return JSONResponse(
        result.graph, headers={"Content-Disposition": 'attachment; filename="graph.json"'}
    )


@router.get("/graph", response_class=HTMLResponse, name="graph_page")
def graph_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    text: Annotated[str, Query(max_length=20_000)] = "",
    node_threshold: Annotated[float, Query(ge=0.0, le=1.0)] = 0.8,
    pinned: Annotated[str, Query(max_length=4_000)] = "",
    act: Literal["", "zero", "scale"] = "",
    factor: Annotated[float, Query(ge=-100.0, le=100.0)] = 2.0,
):
    context: dict = {
        "text": text,
        "node_threshold": node_threshold,
        "pinned": pinned,
        "act": act,
        "factor": factor,
        "result": None,
        "drawing": None,
        "intervention": None,
        "problem": None,
        "model": workspace.model.name if workspace else None,
    }
    try:
        workspace = require_loaded(workspace, "build graphs")
        context["transcoders"] = transcoder_set(workspace)
    except NotLoadedError as exc:
        context["problem"] = str(exc)
        return templates.TemplateResponse(request, "graph/index.html", context)
    if not text:
        return templates.TemplateResponse(request, "graph/index.html", context)
    result = build_graph(workspace, inference, GraphIn(text=text, node_threshold=node_threshold))
    model, names = workspace.model.name, result.transcoders
    rows = {n: find_sae(session, model, n) for n in names}
    features = {
        (int(n["layer"]), int(n["node_id"].split("_")[1]))
        for n in result.graph["nodes"]
        if n["feature_type"] == "cross layer transcoder"
    }
    labels: dict[tuple[int, int], str | None] = {}
    for layer, name in enumerate(names):
        row = rows[name]
        wanted = [index for at, index in features if at == layer]
        if row is not None and wanted:
            for found in labels_of(session, row.id, wanted):
                labels[(layer, found.index)] = found.label

    def feature_href(layer: int, index: int) -> str | None:
        if rows[names[layer]] is None:
            return None  # not harvested: no page to open
        return str(request.url_for("feature_page", model=model, sae=names[layer], index=index))

    chosen = {p for p in pinned.split(",") if p}
    if len(chosen) > MAX_PINNED:
        raise MonoscopeError(f"Pin at most {MAX_PINNED} nodes.")
    n_layers = len(names)
    drawing = draw(result.graph, n_layers, chosen, feature_href, labels)
    context |= {"result": result, "drawing": drawing, "labels": labels}
    if act:
        context["intervention"] = _intervene(workspace, inference, result, drawing, act, factor)
    return templates.TemplateResponse(request, "graph/index.html", context)


def _intervene(workspace, inference, result: GraphOut, drawing: Drawing, act: str, factor: float):
    features = [n for n in drawing.pinned if n.kind == "feature"]
    if not features:
        raise MonoscopeError("Pin some features first: interventions act on pinned features.")
    settings = [
        FeatureSetting(
            n.layer or 0, n.position, n.index or 0, 0.0 if act == "zero" else factor, act == "scale"
        )
        for n in features
    ]
    model = workspace.model
    transcoders = [workspace.saes[name] for name in result.transcoders]
    token_ids = model.tokenizer(result.graph["metadata"]["prompt"])["input_ids"]
    logits = run_on_model(inference, lambda: intervene(model, transcoders, token_ids, settings))
    after = torch.softmax(logits, -1)
    logit_nodes = [n for n in result.graph["nodes"] if n["feature_type"] == "logit"]
    target = logit_nodes[0]
    top = after.topk(6)

    def text_of(token: int) -> str:
        return decode_text(model.tokenizer, [token])

    return Intervention(
        mode=act,
        factor=factor,
        predictions=[(text_of(int(t)), float(p)) for p, t in zip(*top, strict=True)],
        before=[(text_of(int(n["feature"])), float(n["token_prob"])) for n in logit_nodes[:6]],
        target=text_of(int(target["feature"])),
        target_before=float(target["token_prob"]),
        target_after=float(after[int(target["feature"])]),
    )
