"""/graph and /api/v1/graph: a prompt's attribution graph through the loaded transcoders, as
the file circuit-tracer writes and Neuronpedia's graph viewer reads, with its scores.

The graph needs one loaded transcoder per layer (MLP input -> MLP output). It is computed by the
inference worker (the model's one owner) a backward pass at a time, chats decoding between its
steps, and kept by prompt and settings: asking again, or sharing the URL, costs nothing until it
falls out of the cache. The page draws the pruned graph
by layer and position, pins nodes into a subgraph (`?pinned=`), groups pinned nodes into named
supernodes (`?groups=name:node,node;...`) with the subgraph's scores and the supernodes' summed
effects on each other, and intervenes on the pinned features (zero or scale them, run the real
model, show the new predictions and the change in the target). Signed-in users save a graph's
view (`/graph/saved/{slug}` opens it again) and find their saved graphs on the page.
"""

import math
import threading
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlencode

import torch
from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from app.core.errors import MonoscopeError, NotFoundError, NotLoadedError
from app.core.graph import (
    AttributionGraph,
    FeatureSetting,
    attribution_steps,
    graph_json,
    group_effects,
    intervene,
    prune,
    subgraph_scores,
    token_id,
)
from app.core.harvest import logit_effects
from app.core.model import decode_text
from app.core.sae import Sae
from app.core.sites import Site, parse_site
from app.core.workspace import Workspace
from app.db import graphs as db_graphs
from app.db.queries import find_sae, labels_of, top_examples
from app.web.auth import WriterDep, signed_in_name
from app.web.deps import InferenceDep, SessionDep, SettingsDep, TemplatesDep, WorkspaceDep
from app.web.resident import (
    MAX_TEXT_TOKENS,
    check_text,
    run_on_model,
    run_on_model_in_steps,
)

router = APIRouter()
CACHED_GRAPHS = 32  # pruned graph files: tens to hundreds of kB each
# Whole graphs for the subgraph scores of the latest few, within a memory budget: the dense
# adjacency is 16 MB at 2,000 nodes, but a long prompt on a deep model has an error node per
# layer and position (26 layers x 512 tokens: 13k of them, 1.3 GB). The newest is always kept;
# an older one is traced again when its pins change.
CACHED_ADJACENCIES = 4
CACHED_ADJACENCY_BYTES = 512 * 2**20

_cache: OrderedDict[tuple, "GraphOut"] = OrderedDict()
_whole: OrderedDict[tuple, AttributionGraph] = OrderedDict()
_cache_lock = threading.Lock()


def _with_model(workspace: Workspace | None) -> Workspace:
    """Graphs need the model and transcoders (transcoder_set), not an SAE."""
    if workspace is None:
        raise NotLoadedError("This server has no model loaded to build attribution graphs.")
    return workspace


def transcoder_set(workspace) -> list[tuple[str, Sae]]:
    """The transcoders that replace each layer's MLP, layer 0 first, with their names: loaded
    ones (the first by name where a layer has several), else the workspace's transcoder set;
    NotLoadedError when a layer has none."""
    by_layer: dict[int, tuple[str, Sae]] = {}
    for name in sorted(workspace.saes):
        sae = workspace.saes[name]
        if not sae.is_transcoder:
            continue
        read, write = parse_site(sae.hook_name), parse_site(sae.hook_name_out)
        if (read.kind, write) == ("mlp_in", Site(read.layer, "mlp_out")):
            by_layer.setdefault(read.layer, (name, sae))
    n_layers = workspace.model.n_layers
    if len(by_layer) < n_layers and len(workspace.transcoders) == n_layers:
        return list(workspace.transcoders)
    missing = [n for n in range(n_layers) if n not in by_layer]
    if missing:
        raise NotLoadedError(
            "An attribution graph needs a transcoder for every layer's MLP; none is loaded for "
            f"layer{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}."
        )
    return [by_layer[n] for n in range(n_layers)]


class GraphIn(BaseModel):
    text: str = Field(description="The prompt; its next-token prediction is traced.")
    node_threshold: float = Field(0.8, ge=0.0, le=1.0, description="Share of influence kept.")
    edge_threshold: float = Field(0.98, ge=0.0, le=1.0)
    max_logits: int = Field(10, ge=1, le=10, description="Most output tokens to trace from.")
    target: str = Field(
        "",
        max_length=100,
        description="Trace this next token (one token, as written, leading space included) "
        "instead of the most probable ones.",
    )
    versus: str = Field(
        "", max_length=100, description="With a target: trace logit(target) - logit(versus)."
    )
    max_feature_nodes: int | None = Field(
        None,
        ge=0,
        description="Keep at most this many features as nodes, the most influential (at most "
        "the server's graph_max_features, which is also the default).",
    )


class GraphOut(BaseModel):
    transcoders: list[str]
    replacement_score: float
    completeness_score: float
    features: int = Field(description="active features")
    feature_nodes: int = Field(description="features that are nodes (all, unless capped)")
    kept_features: int = Field(description="feature nodes kept by pruning")
    graph: dict = Field(description="circuit-tracer's graph file (schema version 1)")


@router.post("/api/v1/graph", response_model=GraphOut, tags=["api"])
def api_graph(
    body: GraphIn, workspace: WorkspaceDep, inference: InferenceDep, settings: SettingsDep
) -> GraphOut:
    """The attribution graph of `text` through one loaded transcoder per layer, pruned."""
    return build_graph(workspace, inference, settings, body)


def build_graph(workspace, inference, settings, body: GraphIn) -> GraphOut:
    """The graph the API returns and the page draws, from the cache when it is there."""
    return _traced(workspace, inference, settings, body, whole=False)[0]


def whole_graph(workspace, inference, settings, body: GraphIn) -> tuple[GraphOut, AttributionGraph]:
    """The graph file and the whole graph behind it (every node and edge), for subgraph scores."""
    result, whole = _traced(workspace, inference, settings, body, whole=True)
    assert whole is not None
    return result, whole


def _traced(
    workspace, inference, settings, body: GraphIn, whole: bool
) -> tuple[GraphOut, AttributionGraph | None]:
    cap = settings.graph_max_features
    asked = body.max_feature_nodes
    body = body.model_copy(update={"max_feature_nodes": cap if asked is None else min(asked, cap)})
    workspace = _with_model(workspace)
    chosen = transcoder_set(workspace)
    names = [name for name, _ in chosen]
    check_text(body.text, "Type a prompt to trace.")
    key = (workspace.model.name, tuple(names), body.text, *body.model_dump().values())
    with _cache_lock:
        if key in _cache and (not whole or key in _whole):
            _cache.move_to_end(key)
            if key in _whole:
                _whole.move_to_end(key)
            return _cache[key], _whole.get(key)
    model, transcoders = workspace.model, [sae for _, sae in chosen]
    targets = [token_id(model, body.target)] if body.target else None
    if body.versus and not body.target:
        raise MonoscopeError("Name the target token that the other token is compared with.")
    versus = token_id(model, body.versus) if body.versus else None

    def compute() -> Generator[None, None, tuple[GraphOut, AttributionGraph]]:
        # On the inference worker, a backward pass at a time: chats decode in between.
        found = yield from attribution_steps(
            model,
            transcoders,
            body.text,
            max_logits=body.max_logits,
            max_tokens=MAX_TEXT_TOKENS,
            target_tokens=targets,
            versus=versus,
            max_feature_nodes=body.max_feature_nodes,
        )
        kept = prune(found, body.node_threshold, body.edge_threshold)
        scores = found.scores()
        return GraphOut(
            transcoders=names,
            replacement_score=scores.replacement,
            completeness_score=scores.completeness,
            features=found.active_features,
            feature_nodes=found.n_features,
            kept_features=int(kept.nodes[: found.n_features].sum()),
            graph=graph_json(found, kept, "graph", "+".join(names), body.node_threshold, body.text),
        ), found

    result, found = run_on_model_in_steps(inference, compute)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > CACHED_GRAPHS:
            _cache.popitem(last=False)
        _whole[key] = found
        while len(_whole) > 1 and (
            len(_whole) > CACHED_ADJACENCIES
            or sum(g.adjacency.nbytes for g in _whole.values()) > CACHED_ADJACENCY_BYTES
        ):
            _whole.popitem(last=False)
    return result, found


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
    examples: dict[tuple[int, int], str] | None = None,
    writes: dict[tuple[int, int], str] | None = None,
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
    logits = [n["node_id"] for n in graph["nodes"] if n["feature_type"] == "logit"]
    logit_ranks = {node_id: rank for rank, node_id in enumerate(logits)}
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
                label = labels.get((layer, index)) or (writes or {}).get((layer, index))
                drawn.layer, drawn.index = layer, index
                drawn.activation = node.get("activation")
                drawn.href = feature_href(layer, index)
                drawn.title = (
                    f"layer {layer} feature {index} at {token!r} (position {node['ctx_idx']}), "
                    f"activation {node.get('activation') or 0:.2f}"
                    + (f": {label}" if label else "")
                    + (
                        f"\ntop example: {examples[layer, index]}"
                        if examples and (layer, index) in examples
                        else ""
                    )
                )
            elif kind == "error":
                drawn.layer = int(node["layer"])
                drawn.title = f"layer {node['layer']} transcoder error at {token!r}"
            elif kind == "embedding":
                drawn.title, drawn.text = f"embedding of {token!r}", token
            else:
                drawn.title = node.get("clerp") or "logit"
                drawn.text = f"{node.get('token_prob', 0):.2f}"
                drawn.index = logit_ranks[node["node_id"]]
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
    outputs = [n for n in placed.values() if n.kind == "logit"]
    for rank, logit in enumerate(sorted(outputs, key=lambda n: n.x)):
        logit.label_x = max(n.x for n in outputs) + 14
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


# -- supernodes and the pinned subgraph ---------------------------------------------------------
MAX_GROUPS = 8
MAX_GROUP_NAME = 40


def parse_groups(text: str) -> list[tuple[str, list[str]]]:
    """`name:node,node;name:node` -> [(name, [node ids])], names cleaned and made unique, empty
    groups dropped."""
    groups: list[tuple[str, list[str]]] = []
    for part in text.split(";"):
        name, _, members = part.partition(":")
        nodes = [m for m in members.split(",") if m]
        if nodes:
            name = clean_group_name(name, len(groups))
            taken = {g[0] for g in groups}
            same = [f"{name} {n}" for n in range(2, MAX_GROUPS + 2) if f"{name} {n}" not in taken]
            groups.append((name if name not in taken else same[0], nodes))
    if len(groups) > MAX_GROUPS:
        raise MonoscopeError(f"Make at most {MAX_GROUPS} supernodes.")
    return groups


def clean_group_name(name: str, number: int) -> str:
    name = " ".join(name.replace(":", " ").replace(";", " ").replace(",", " ").split())
    return name[:MAX_GROUP_NAME] or f"group {number + 1}"


def format_groups(groups: list[tuple[str, list[str]]]) -> str:
    return ";".join(f"{name}:{','.join(nodes)}" for name, nodes in groups)


SUBGRAPH_COLUMN, SUBGRAPH_ROW = 130, 60  # pixels


@dataclass
class Unit:
    """One box of the subgraph: a supernode (its pinned members) or one pinned node alone."""

    name: str
    members: list[DrawnNode]
    grouped: bool
    x: float = 0.0
    y: float = 0.0


@dataclass
class SubgraphView:
    influence: float
    inputs_inside: float
    units: list[Unit]
    effects: list[tuple[Unit, Unit, float]]  # source, target, summed direct effect
    width: int
    height: int


def _short_name(node: DrawnNode, tokens: list[str]) -> str:
    token = tokens[node.position] if node.position < len(tokens) else ""
    if node.kind == "feature":
        return f"L{node.layer} #{node.index} @{token!r}"
    if node.kind == "error":
        return f"error L{node.layer} @{token!r}"
    if node.kind == "embedding":
        return f"token {token!r}"
    return node.title


def subgraph(
    whole: AttributionGraph, drawing: Drawing, groups: list[tuple[str, list[str]]], tokens
) -> SubgraphView:
    """The pinned nodes as units (supernodes and lone nodes), their scores in the whole graph,
    and the summed direct effects between units, laid out where their members sit."""
    pinned = {n.node_id: n for n in drawing.pinned}
    units, grouped = [], set()
    for name, ids in groups:
        members = [pinned[i] for i in ids if i in pinned]
        if members:
            units.append(Unit(name, members, True))
            grouped |= {m.node_id for m in members}
    units += [
        Unit(_short_name(n, tokens), [n], False) for n in drawing.pinned if n.node_id not in grouped
    ]

    def index(node: DrawnNode) -> int:
        return whole.node(node.kind, node.layer or 0, node.position, node.index or 0)

    rows = [[index(m) for m in unit.members] for unit in units]
    scores = subgraph_scores(whole, [i for r in rows for i in r])
    effects = group_effects(whole, rows)
    pairs = [
        (units[s], units[t], float(effects[t, s]))
        for t in range(len(units))
        for s in range(len(units))
        if s != t and abs(float(effects[t, s])) > 1e-6
    ]
    # Layout: a row per layer the units sit at (their members' mean, tokens at the bottom), a
    # column per unit in the order of their positions, so no two units share a spot.
    heights = sorted({round(sum(m.y for m in u.members) / len(u.members)) for u in units})
    across = sorted(units, key=lambda u: (sum(m.x for m in u.members) / len(u.members), u.name))
    for column, unit in enumerate(across):
        row = heights.index(round(sum(m.y for m in unit.members) / len(unit.members)))
        unit.x, unit.y = 30 + column * SUBGRAPH_COLUMN, 30 + row * SUBGRAPH_ROW
    width = 60 + len(units) * SUBGRAPH_COLUMN
    height = 40 + len(heights) * SUBGRAPH_ROW
    return SubgraphView(scores.influence, scores.inputs_inside, units, pairs, width, height)


@dataclass(frozen=True)
class Intervention:
    mode: str
    factor: float
    predictions: list[tuple[str, float]]  # after
    before: list[tuple[str, float]]
    target: str
    measure: str  # "p" (the target token's probability) or "logit difference"
    target_before: float
    target_after: float


@router.get("/graph/file", name="graph_file", tags=["api"])
def graph_file(
    workspace: WorkspaceDep,
    inference: InferenceDep,
    settings: SettingsDep,
    text: Annotated[str, Query(max_length=20_000)],
    node_threshold: Annotated[float, Query(ge=0.0, le=1.0)] = 0.8,
    target: Annotated[str, Query(max_length=100)] = "",
    versus: Annotated[str, Query(max_length=100)] = "",
) -> JSONResponse:
    """The pruned graph as a file to download: circuit-tracer's JSON, which Neuronpedia's graph
    viewer opens."""
    body = GraphIn(text=text, node_threshold=node_threshold, target=target, versus=versus)
    result = build_graph(workspace, inference, settings, body)
    return JSONResponse(
        result.graph, headers={"Content-Disposition": 'attachment; filename="graph.json"'}
    )


def _view_query(text: str, node_threshold: float, target: str, versus: str, **more) -> str:
    """The query string of a graph view, without empty parts (what URLs and saved graphs keep)."""
    fields = {"text": text, "node_threshold": node_threshold, "target": target, "versus": versus}
    return urlencode({k: v for k, v in (fields | more).items() if v not in ("", None)})


@router.get("/graph", response_class=HTMLResponse, name="graph_page")
def graph_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    settings: SettingsDep,
    text: Annotated[str, Query(max_length=20_000)] = "",
    node_threshold: Annotated[float, Query(ge=0.0, le=1.0)] = 0.8,
    target: Annotated[str, Query(max_length=100)] = "",
    versus: Annotated[str, Query(max_length=100)] = "",
    pinned: Annotated[str, Query(max_length=4_000)] = "",
    groups: Annotated[str, Query(max_length=4_000)] = "",
    new_group: Annotated[str | None, Query(max_length=200)] = None,
    member: Annotated[list[str] | None, Query(max_length=100)] = None,
    act: Literal["", "zero", "scale"] = "",
    factor: Annotated[float, Query(ge=-100.0, le=100.0)] = 2.0,
):
    grouping = parse_groups(groups)
    if new_group is not None:  # the "group the checked nodes" form: back to the canonical URL
        ticked = [m for m in member or [] if m in pinned.split(",")]
        if not ticked:
            raise MonoscopeError("Tick the pinned nodes to group.")
        kept = [(name, [n for n in nodes if n not in ticked]) for name, nodes in grouping]
        grouping = [(name, nodes) for name, nodes in kept if nodes]
        grouping.append((clean_group_name(new_group, len(grouping)), ticked))
        parse_groups(format_groups(grouping))  # still within the limits
        query = _view_query(
            text, node_threshold, target, versus, pinned=pinned, groups=format_groups(grouping)
        )
        return RedirectResponse(f"{request.url.path}?{query}", status_code=303)
    viewer = signed_in_name(request)
    context: dict = {
        "text": text,
        "node_threshold": node_threshold,
        "target": target,
        "versus": versus,
        "pinned": pinned,
        "groups": groups,
        "grouping": [  # name, members, the query string of this view without the group
            (
                name,
                nodes,
                _view_query(
                    text,
                    node_threshold,
                    target,
                    versus,
                    pinned=pinned,
                    groups=format_groups([g for g in grouping if g[0] != name]),
                ),
            )
            for name, nodes in grouping
        ],
        "group_of": {node: n for n, (_, nodes) in enumerate(grouping) for node in nodes},
        "act": act,
        "factor": factor,
        "result": None,
        "drawing": None,
        "subgraph": None,
        "intervention": None,
        "problem": None,
        "model": workspace.model.name if workspace else None,
        "viewer": viewer,
        "saved": db_graphs.graphs_by(session, viewer) if viewer else [],
        "view_query": _view_query(text, node_threshold, target, versus),
    }
    try:
        workspace = _with_model(workspace)
        context["transcoders"] = [name for name, _ in transcoder_set(workspace)]
    except NotLoadedError as exc:
        context["problem"] = str(exc)
        return templates.TemplateResponse(request, "graph/index.html", context)
    if not text:
        return templates.TemplateResponse(request, "graph/index.html", context)
    chosen = {p for p in pinned.split(",") if p}
    if len(chosen) > MAX_PINNED:
        raise MonoscopeError(f"Pin at most {MAX_PINNED} nodes.")
    body = GraphIn(text=text, node_threshold=node_threshold, target=target, versus=versus)
    if chosen:
        result, whole = whole_graph(workspace, inference, settings, body)
    else:
        result, whole = build_graph(workspace, inference, settings, body), None
    model, names = workspace.model.name, result.transcoders
    rows = {n: find_sae(session, model, n) for n in names}
    features = {
        (int(n["layer"]), int(n["node_id"].split("_")[1]))
        for n in result.graph["nodes"]
        if n["feature_type"] == "cross layer transcoder"
    }
    labels: dict[tuple[int, int], str | None] = {}
    feature_ids: dict[int, tuple[int, int]] = {}
    for layer, name in enumerate(names):
        row = rows[name]
        wanted = [index for at, index in features if at == layer]
        if row is not None and wanted:
            for found in labels_of(session, row.id, wanted):
                labels[(layer, found.index)] = found.label
                feature_ids[found.id] = (layer, found.index)
    examples = {
        feature_ids[feature_id]: _snippet(workspace.model, example)
        for feature_id, example in top_examples(session, list(feature_ids)).items()
    }
    writes = _writes(workspace, [f for f in features if f not in labels])

    def feature_href(layer: int, index: int) -> str | None:
        if rows[names[layer]] is None:
            return None  # not harvested: no page to open
        return str(request.url_for("feature_page", model=model, sae=names[layer], index=index))

    n_layers = len(names)
    drawing = draw(result.graph, n_layers, chosen, feature_href, labels, examples, writes)
    context |= {"result": result, "drawing": drawing, "labels": labels, "writes": writes}
    if whole is not None:
        tokens = result.graph["metadata"]["prompt_tokens"]
        context["subgraph"] = subgraph(whole, drawing, grouping, tokens)
    if act:
        context["intervention"] = _intervene(
            workspace, inference, result, drawing, act, factor, body
        )
    return templates.TemplateResponse(request, "graph/index.html", context)


def _writes(workspace: Workspace, features: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """For features without a stored label (an unharvested transcoder): the tokens each one's
    output most promotes, W_dec (final norm gain) W_U^T, read from the weights alone."""
    model, transcoders = workspace.model, transcoder_set(workspace)
    found: dict[tuple[int, int], str] = {}
    for layer, (_, transcoder) in enumerate(transcoders):
        indices = sorted(index for at, index in features if at == layer)
        if not indices:
            continue
        directions = transcoder.decoder_directions(torch.tensor(indices, device=transcoder.device))
        effects = logit_effects(directions, model.unembedding(), model.final_norm_scale(), k=3)
        for index, tokens in zip(indices, effects.top_ids.tolist(), strict=True):
            texts = ", ".join(repr(decode_text(model.tokenizer, [t])) for t in tokens)
            found[(layer, index)] = f"promotes {texts}"
    return found


def _snippet(model, example) -> str:
    """A top example as one line of text, its strongest token in [brackets]."""
    ids, acts = example.token_ids, example.activations
    peak = max(range(len(acts)), key=lambda n: acts[n]) if len(acts) else 0
    start = max(0, peak - 10)
    before = decode_text(model.tokenizer, ids[start:peak])
    after = decode_text(model.tokenizer, ids[peak + 1 : peak + 5])
    return f"{before}[{decode_text(model.tokenizer, ids[peak : peak + 1])}]{after}"


def _intervene(
    workspace,
    inference,
    result: GraphOut,
    drawing: Drawing,
    act: str,
    factor: float,
    body: GraphIn,
) -> Intervention:
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
    transcoders = [sae for _, sae in transcoder_set(workspace)]
    token_ids = model.tokenizer(result.graph["metadata"]["prompt"])["input_ids"]
    clean, changed = run_on_model(
        inference,
        lambda: (
            intervene(model, transcoders, token_ids, []),
            intervene(model, transcoders, token_ids, settings),
        ),
    )
    before, after = torch.softmax(clean, -1), torch.softmax(changed, -1)
    top = after.topk(6)

    def text_of(token: int) -> str:
        return decode_text(model.tokenizer, [token])

    logit_nodes = [n for n in result.graph["nodes"] if n["feature_type"] == "logit"]
    if body.versus:
        a, b = token_id(model, body.target), token_id(model, body.versus)
        target, measure = f"{text_of(a)!r} over {text_of(b)!r}", "logit difference"
        target_before, target_after = float(clean[a] - clean[b]), float(changed[a] - changed[b])
    else:
        token = int(logit_nodes[0]["feature"])
        target, measure = text_of(token), "p"
        target_before, target_after = float(before[token]), float(after[token])
    return Intervention(
        mode=act,
        factor=factor,
        predictions=[(text_of(int(t)), float(p)) for p, t in zip(*top, strict=True)],
        before=[(text_of(int(t)), float(p)) for p, t in zip(*before.topk(6), strict=True)],
        target=target,
        measure=measure,
        target_before=target_before,
        target_after=target_after,
    )


# -- saved graphs --------------------------------------------------------------------------------
class SavedGraphOut(BaseModel):
    slug: str
    title: str
    author: str
    model: str
    transcoders: list[str]
    prompt: str
    view: dict
    replacement_score: float
    completeness_score: float
    url: str = Field(description="The page that draws it")


def _saved_out(saved) -> SavedGraphOut:
    return SavedGraphOut(
        slug=saved.slug,
        title=saved.title,
        author=saved.author,
        model=saved.model,
        transcoders=saved.transcoders,
        prompt=saved.prompt,
        view=saved.view,
        replacement_score=saved.replacement_score,
        completeness_score=saved.completeness_score,
        url=f"/graph/saved/{saved.slug}",
    )


@router.post("/graph/save", name="graph_save")
def graph_save(
    session: SessionDep,
    viewer: WriterDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    settings: SettingsDep,
    text: Annotated[str, Form(max_length=20_000)],
    title: Annotated[str, Form(max_length=db_graphs.MAX_TITLE)] = "",
    node_threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.8,
    target: Annotated[str, Form(max_length=100)] = "",
    versus: Annotated[str, Form(max_length=100)] = "",
    pinned: Annotated[str, Form(max_length=4_000)] = "",
    groups: Annotated[str, Form(max_length=4_000)] = "",
):
    """Keep this graph's view under the viewer's name; the page lists it from then on."""
    parse_groups(groups)
    body = GraphIn(text=text, node_threshold=node_threshold, target=target, versus=versus)
    result = build_graph(workspace, inference, settings, body)
    assert workspace is not None  # build_graph refused otherwise
    view = {"node_threshold": node_threshold, "target": target, "versus": versus}
    view |= {"pinned": pinned, "groups": groups}
    saved = db_graphs.save_graph(
        session,
        viewer.name,
        title,
        workspace.model.name,
        result.transcoders,
        text,
        view,
        (result.replacement_score, result.completeness_score),
    )
    session.commit()
    return RedirectResponse(f"/graph/saved/{saved.slug}", status_code=303)


@router.get("/graph/saved/{slug}", name="graph_saved")
def graph_saved(session: SessionDep, slug: Annotated[str, PathParam(max_length=32)]):
    """A saved graph's short link: the graph page with its view."""
    saved = db_graphs.find_graph(session, slug)
    if saved is None:
        raise NotFoundError(f"No saved graph {slug!r}.")
    view = saved.view
    query = _view_query(
        saved.prompt,
        view.get("node_threshold", 0.8),
        view.get("target", ""),
        view.get("versus", ""),
        pinned=view.get("pinned", ""),
        groups=view.get("groups", ""),
    )
    return RedirectResponse(f"/graph?{query}", status_code=303)


@router.post("/graph/saved/{slug}/delete", name="graph_delete")
def graph_delete(
    session: SessionDep, viewer: WriterDep, slug: Annotated[str, PathParam(max_length=32)]
):
    saved = db_graphs.find_graph(session, slug)
    if saved is None:
        raise NotFoundError(f"No saved graph {slug!r}.")
    db_graphs.delete_graph(session, saved, by=viewer.name)
    session.commit()
    return RedirectResponse("/graph", status_code=303)


@router.get("/api/v1/graphs", response_model=list[SavedGraphOut], tags=["api"])
def api_saved_graphs(
    session: SessionDep, author: Annotated[str, Query(min_length=1, max_length=100)]
) -> list[SavedGraphOut]:
    """One user's saved graphs, newest first."""
    return [_saved_out(saved) for saved in db_graphs.graphs_by(session, author)]
