"""The `monoscope` command: thin over the same functions the web server uses.

monoscope serve --model gpt2 --sae saes/res6
monoscope inspect --model gpt2 --sae saes/res6 "The Golden Gate Bridge"
monoscope steer --model gpt2 --sae saes/res6 -f res6/1234:clamp:5 "Tell me about yourself"
monoscope convert-sae params.npz out/ --hook-name blocks.12.hook_resid_post
monoscope ingest corpus.jsonl data/stores/web --model gpt2 --tokens 3000000
monoscope harvest --model gpt2 --sae saes/res6 --corpus data/stores/web --tokens 3000000
"""

import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.config_options import config_options
from app.core.errors import MonoscopeError
from app.core.feature_ref import CONDITION_SYNTAX, FEATURE_REF_SYNTAX
from app.pipeline.config import HarvestConfig, IngestConfig, MapConfig, TrainSaeConfig
from app.settings import Settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Explore SAE features.")
# emoji=False: rich would draw ':clamp:' in a feature reference as an emoji
out = Console(emoji=False)
FIELDS = Settings.model_fields

ModelOpt = Annotated[str | None, typer.Option(help=FIELDS["model"].description)]
RayOpt = Annotated[
    str | None,
    typer.Option(
        help="Shard the work that runs a model over Ray: local (a cluster of this machine), auto "
        "or a cluster's address (default: one process)."
    ),
]
RayWorkersOpt = Annotated[
    int, typer.Option(help="Ray workers, each with its own model (0: one per GPU, else 2).")
]
SaeOpt = Annotated[list[str] | None, typer.Option("--sae", help=FIELDS["saes"].description)]
DeviceOpt = Annotated[str | None, typer.Option(help=FIELDS["device"].description)]
DatabaseOpt = Annotated[str | None, typer.Option(help=FIELDS["database_url"].description)]
WorldVersionOpt = Annotated[
    int | None, typer.Option(help="Version of the demo world's text (default: the shipped one's).")
]


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v not in (None, [])})


@contextmanager
def _closing(workers: object) -> Iterator[None]:
    """Stop a job's Ray workers (a sharded explainer or embedder) when it ends, however."""
    try:
        yield
    finally:
        close = getattr(workers, "close", None)
        if close is not None:
            close()


def _database(settings: Settings):
    """The settings' database, migrated to the latest schema."""
    from app.db.engine import connect, migrate

    engine = connect(settings.database)
    migrate(engine)
    return engine


def _tokenizer(model: str | None):
    from transformers import AutoTokenizer

    from app.demo import DEMO_MODEL

    spec = model or str(DEMO_MODEL)
    try:
        return AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise MonoscopeError(f"cannot load the tokenizer of {spec!r}: {exc}") from exc


def _served(settings: Settings) -> Settings:
    """The settings with what they serve spelled out: with no model, the demo model, its SAEs
    and its transcoders (for attribution graphs), so replicas load the same."""
    if settings.model:
        return settings
    from app.demo import DEMO_MODEL, DEMO_SAES, DEMO_TRANSCODERS

    return settings.model_copy(
        update={
            "model": str(DEMO_MODEL),
            "saes": settings.saes or [str(p) for p in DEMO_SAES.values()],
            "transcoders": settings.transcoders or str(DEMO_TRANSCODERS),
        }
    )


def _workspace(settings: Settings):
    """The workspace the settings serve (`_served`), on this process's device."""
    from app.core.workspace import Workspace

    served = _served(settings)
    assert served.model is not None  # _served names the demo model otherwise
    return Workspace.load(served.model, served.saes, served.web_device, served.transcoders)


@cli.command()
def serve(
    model: ModelOpt = None,
    sae: SaeOpt = None,
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=FIELDS["host"].description)] = None,
    port: Annotated[int | None, typer.Option(help=FIELDS["port"].description)] = None,
    database_url: DatabaseOpt = None,
    transcoders: Annotated[str | None, typer.Option(help=FIELDS["transcoders"].description)] = None,
    replicas: Annotated[int | None, typer.Option(help=FIELDS["replicas"].description)] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray", help=FIELDS["ray_address"].description)
    ] = None,
) -> None:
    """Serve the web app with the model and SAEs resident (here, or on Ray replicas)."""
    import uvicorn

    from app.web.app import create_app
    from app.web.server import server_options

    settings = _settings(
        model=model,
        saes=sae,
        device=device,
        host=host,
        port=port,
        database_url=database_url,
        transcoders=transcoders,
        replicas=replicas,
        ray_address=ray_address,
    )
    settings = _served(settings)
    workspace = _workspace(settings)  # bad paths fail here, plainly
    _database(settings)  # so does an unreachable database
    uvicorn.run(
        create_app(settings, workspace),
        host=settings.host,
        port=settings.port,
        **server_options(settings),
    )


@cli.command()
def demo(
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=FIELDS["host"].description)] = None,
    port: Annotated[int | None, typer.Option(help=FIELDS["port"].description)] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Serve the shipped demo model and its two SAEs: works offline, on a CPU.

    On first start it fills the database: harvests each demo SAE over 1M held-out tokens, labels
    its features with the offline explainer, embeds and scores the labels and draws the feature
    maps (545 s on two idle CPU cores, resumable); the site shows that progress meanwhile. It
    prints a one-time sign-in link for the local administrator ("admin"), so saving lists and
    shares works at once."""
    import uvicorn

    from app.pipeline.demo_build import build_demo_database, demo_database_ready
    from app.web.app import create_app
    from app.web.first_start import FirstStart
    from app.web.server import server_options

    settings = _served(_settings(device=device, host=host, port=port, database_url=database_url))
    engine = _database(settings)
    workspace = _workspace(settings)
    if not demo_database_ready(engine):
        out.print(
            f"building the demo database in {engine.url.render_as_string()}; the site "
            "shows its progress meanwhile"
        )

    def build(progress) -> None:  # labels and scores resume too, when a crash cut them short
        build_demo_database(engine, settings.data_dir / "demo-harvest", stage=progress.set_stage)

    app = FirstStart(settings, build, lambda: create_app(settings, workspace))
    # plain print: rich would wrap the long link at the terminal's width, breaking it
    print(f"sign in as admin (once, within a day): {_admin_link(engine, settings)}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, **server_options(settings))


def _admin_link(engine, settings: Settings) -> str:
    from datetime import timedelta

    from app.db.accounts import create_sign_in_link, ensure_user
    from app.db.engine import session_scope

    with session_scope(engine) as session:
        token = create_sign_in_link(session, ensure_user(session, "admin"), timedelta(days=1))
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}/login/link?token={token}"


@cli.command()
def migrate(database_url: DatabaseOpt = None) -> None:
    """Create or upgrade the database schema (alembic upgrade head)."""
    engine = _database(_settings(database_url=database_url))
    out.print(f"database {engine.url.render_as_string()} is at the latest schema")


@cli.command()
@config_options(
    IngestConfig,
    "context_size",
    "max_tokens",
    arguments=("source", "out"),
    flags={"max_tokens": "--tokens"},
)
def ingest(
    config_values: dict,
    model: Annotated[
        str | None, typer.Option(help="Model whose tokenizer to use (default: the demo model).")
    ] = None,
) -> None:
    """Tokenize a corpus into fixed-length contexts on disk (a token store for harvest)."""
    from app.pipeline.ingest import IngestJob

    config = IngestConfig(**config_values)
    meta = IngestJob(config, _tokenizer(model)).run().meta
    out.print(
        f"wrote {meta['contexts']:,} contexts × {meta['context_size']} tokens from "
        f"{meta['documents']:,} documents to {config.out} (fingerprint {meta['fingerprint']})"
    )


def _harvest_config(config_values: dict, settings: Settings):
    from app.demo import DEMO_MODEL

    values = config_values | {"model": config_values["model"] or str(DEMO_MODEL)}
    return HarvestConfig(**values, device=settings.device, work_dir=settings.data_dir / "harvest")


def _print_harvest(result) -> None:
    out.print(
        f"harvested {result.model}/{result.sae}: {result.tokens:,} tokens, "
        f"{result.alive:,} of {result.features:,} features alive, {result.examples:,} examples"
    )
    _print_metrics(f"{result.model}/{result.sae}", result.metrics)


HARVEST_OPTIONS = (
    "corpus",
    "tokens",
    "context_size",
    "name",
    "batch_size",
    "replace",
    "ray",
    "ray_workers",
)


@cli.command()
@config_options(HarvestConfig, "sae", *HARVEST_OPTIONS, defaults={"model": None})
def harvest(
    config_values: dict, device: DeviceOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Fill the database with an SAE's feature dashboards: examples, statistics, logit effects,
    neighbours. Resumable: run it again after a crash."""
    from app.pipeline.harvest import HarvestJob

    settings = _settings(device=device, database_url=database_url)
    result = HarvestJob(_harvest_config(config_values, settings), _database(settings)).run()
    _print_harvest(result)


@cli.command()
def explain(
    sae: Annotated[str, typer.Option("--sae", help="The SAE's name in the database.")],
    model: Annotated[
        str | None, typer.Option(help="The model's name in the database (default: the demo).")
    ] = None,
    explainer: Annotated[
        str | None,
        typer.Option(
            help="offline (no LLM), openai (the MONOSCOPE_EXPLAINER_* endpoint) or self (the "
            "resident model); default: openai when an endpoint is set, else offline."
        ),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Comma-separated feature indices (default: all alive).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Label again features already labelled.")] = False,
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 0,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Label an SAE's features. Resumable and idempotent: run it again to continue or retry."""
    from app.demo import DEMO_MODEL
    from app.pipeline.config import ExplainConfig
    from app.pipeline.explain import ExplainJob, explainer_for

    settings = _settings(database_url=database_url, device=device)
    engine = _database(settings)
    model_name = model or DEMO_MODEL.name
    chosen = explainer_for(engine, settings, model_name, explainer, ray, ray_workers)
    wanted = _indices(features)
    with _closing(chosen):
        result = ExplainJob(
            ExplainConfig(model_name, sae, features=wanted, force=force), engine, chosen
        ).run()
    out.print(
        f"labelled {result.explained:,} features, {result.failed:,} failed, "
        f"{result.skipped:,} already labelled (run {result.run_id}; "
        f"{result.prompt_tokens + result.completion_tokens:,} tokens, ${result.cost_usd:.4f})"
    )


@cli.command()
def score(
    sae: Annotated[str, typer.Option("--sae", help="The SAE's name in the database.")],
    model: Annotated[
        str | None, typer.Option(help="The model's name in the database (default: the demo).")
    ] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option(help="keyword, embedding (offline), detection, fuzzing (LLM); repeatable."),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Comma-separated feature indices (default: all labelled).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Score again labels already scored.")] = False,
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 0,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Score stored labels on held-out examples and negatives. Resumable and idempotent."""
    from app.autointerp.factory import build_judge, default_scorers
    from app.demo import DEMO_MODEL
    from app.pipeline.config import ScoreConfig
    from app.pipeline.score import ScoreJob, load_harvested

    settings = _settings(database_url=database_url, device=device)
    engine = _database(settings)
    model_name = model or DEMO_MODEL.name
    scorers = scorer or default_scorers(settings)
    resident, resident_sae = load_harvested(engine, model_name, sae, settings.device)
    embedder = None
    if ray is not None:  # the embedding scorer is the one that runs a model per label
        from app.pipeline.sharding import ShardedEmbedder

        embedder = ShardedEmbedder(ray, ray_workers)
    with _closing(embedder):
        result = ScoreJob(
            ScoreConfig(
                model_name,
                sae,
                tuple(scorers),
                features=_indices(features),
                force=force,
                concurrency=settings.explainer_concurrency,
            ),
            engine,
            resident,
            resident_sae,
            judge=build_judge(settings, scorers),
            embedder=embedder,
        ).run()
    out.print(
        f"scored {result.scored:,}, failed {result.failed:,}, already scored {result.skipped:,} "
        f"({result.prompt_tokens + result.completion_tokens:,} LLM tokens)"
    )


@cli.command("embed-labels")
def embed_labels(
    sae: Annotated[str, typer.Option("--sae", help="The SAE's name in the database.")],
    model: Annotated[
        str | None, typer.Option(help="The model's name in the database (default: the demo).")
    ] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Embed the SAE's labels for semantic search (new and edited ones). Resumable."""
    from app.demo import DEMO_MODEL
    from app.pipeline.config import EmbedLabelsConfig
    from app.pipeline.embed_labels import EmbedLabelsJob

    engine = _database(_settings(database_url=database_url))
    result = EmbedLabelsJob(EmbedLabelsConfig(model or DEMO_MODEL.name, sae), engine).run()
    out.print(f"embedded {result.embedded:,} labels")


@cli.command("map")
@config_options(
    MapConfig,
    "sae",
    "source",
    "n_neighbors",
    "min_dist",
    "seed",
    defaults={"model": None},
)
def feature_map(config_values: dict, database_url: DatabaseOpt = None) -> None:
    """Draw the SAE's feature map (UMAP of decoder directions; dead features left off) for its
    map page. Replaces the last one."""
    from app.demo import DEMO_MODEL
    from app.pipeline.feature_map import MapJob

    engine = _database(_settings(database_url=database_url))
    config = MapConfig(**config_values | {"model": config_values["model"] or DEMO_MODEL.name})
    result = MapJob(config, engine).run()
    out.print(
        f"placed {result.placed:,} features on the map of {config.model}/{config.sae} "
        f"({result.left_off:,} dead left off) in {result.seconds:.1f} s"
    )


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise MonoscopeError(f"bad --features {text!r}: expected indices like 1,2,3") from exc


@cli.command("add-sae")
@config_options(HarvestConfig, *HARVEST_OPTIONS, arguments=("sae",), defaults={"model": None})
def add_sae(
    config_values: dict, device: DeviceOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Bring your own SAE in one command: import it, harvest it into the database, label its
    features (the LLM explainer when an endpoint is set, else offline), score the labels and
    draw the feature map."""
    from app.pipeline.add_sae import AddSaeJob

    settings = _settings(database_url=database_url, device=device)
    engine = _database(settings)
    result = AddSaeJob(_harvest_config(config_values, settings), engine, settings).run()
    _print_harvest(result.harvest)
    out.print(
        f"labelled {result.explain.explained:,} features ({result.explain.failed:,} failed); "
        f"embedded {result.embed.embedded:,} labels; "
        f"scored {result.score.scored:,} labels by keyword match; "
        f"placed {result.map.placed:,} features on the map"
    )


@cli.command()
def graph(
    text: Annotated[str, typer.Argument(help="The prompt whose next-token prediction to trace.")],
    transcoders: Annotated[
        Path | None,
        typer.Option(
            help="One transcoder per layer: a circuit-tracer set (config.yaml) or a folder of "
            "layer_0, layer_1, ... transcoders (default: MONOSCOPE_TRANSCODERS, or the demo "
            "model's own set)."
        ),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    node_threshold: Annotated[
        float, typer.Option(help="Keep the nodes carrying this share of influence.")
    ] = 0.8,
    edge_threshold: Annotated[
        float, typer.Option(help="Keep the edges carrying this share of influence.")
    ] = 0.98,
    top: Annotated[int, typer.Option(help="Features to list, by influence.")] = 15,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the pruned graph here (circuit-tracer's JSON)."),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Explain this next token (one token, leading space included; repeat for "
            "several) instead of the most probable ones."
        ),
    ] = None,
    versus: Annotated[
        str | None,
        typer.Option(help="With one --target: explain logit(target) - logit(versus)."),
    ] = None,
    max_feature_nodes: Annotated[
        int | None,
        typer.Option(min=0, help="Keep at most this many features as nodes, the most influential."),
    ] = None,
) -> None:
    """The attribution graph of a prompt through per-layer transcoders: scores, the most
    influential features, and optionally the graph file circuit-tracer and Neuronpedia read."""
    from app.core.graph import attribution_graph, graph_json, prune, token_id
    from app.core.model import load_model
    from app.core.sae.formats import load_transcoder_set
    from app.demo import DEMO_MODEL, DEMO_TRANSCODERS

    settings = _settings(model=model, device=device)
    if transcoders is None and settings.transcoders:
        transcoders = Path(settings.transcoders)
    if transcoders is None:
        if settings.model:
            raise MonoscopeError(f"name the transcoders of {settings.model}: --transcoders DIR")
        transcoders = DEMO_TRANSCODERS
    loaded = load_model(settings.model or str(DEMO_MODEL), device=settings.device)
    attached = [loaded.attach(t, source=str(transcoders)) for t in load_transcoder_set(transcoders)]
    found = attribution_graph(
        loaded,
        attached,
        text,
        target_tokens=[token_id(loaded, t) for t in target] if target else None,
        versus=None if versus is None else token_id(loaded, versus),
        max_feature_nodes=max_feature_nodes,
    )
    kept = prune(found, node_threshold, edge_threshold)
    scores = found.scores()
    out.print(
        f"{found.n_positions} tokens, {found.active_features:,} active features"
        + (f" ({found.n_features:,} as nodes)" if found.n_features < found.active_features else "")
        + ", "
        f"{int(kept.nodes[: found.n_features].sum()):,} kept; replacement "
        f"{scores.replacement:.3f}, completeness {scores.completeness:.3f}; explains "
        + ", ".join(
            f"{t!r} {float(p):.2f}"
            for t, p in zip(found.logit_tokens, found.logit_probabilities, strict=True)
        ),
        markup=False,
        highlight=False,
    )
    influence = kept.cumulative[: found.n_features]
    table = Table(title="most influential features (cumulative share of influence)")
    for column in ("layer", "feature", "token", "activation", "cumulative"):
        table.add_column(column)
    for n in influence.argsort()[:top].tolist():
        if not kept.nodes[n]:
            continue
        layer, position, index = found.features[n].tolist()
        table.add_row(
            str(layer),
            str(index),
            f"{found.tokens[position]!r} @ {position}",
            f"{float(found.activations[n]):.3f}",
            f"{float(influence[n]):.3f}",
        )
    out.print(table)
    if json_out is not None:
        data = graph_json(found, kept, json_out.stem, transcoders.name, node_threshold, text)
        json_out.write_text(json.dumps(data))
        out.print(
            f"wrote {len(data['nodes']):,} nodes and {len(data['links']):,} links to {json_out}"
        )


@cli.command()
def inspect(
    text: Annotated[str, typer.Argument(help="The text to run through the model.")],
    model: ModelOpt = None,
    sae: SaeOpt = None,
    device: DeviceOpt = None,
    top: Annotated[int, typer.Option(help="Features to list per SAE.")] = 10,
    reduce: Annotated[str, typer.Option(help="Rank over tokens by max or sum.")] = "max",
) -> None:
    """Which features fire on a text, per SAE (BOS excluded)."""
    from app.core.inspect import Reduce
    from app.core.inspect import inspect as inspect_text

    workspace = _workspace(_settings(model=model, saes=sae, device=device))
    result = inspect_text(  # inspect refuses a reduction other than max or sum
        workspace.model, workspace.saes, text, top_k=top, reduce=cast(Reduce, reduce)
    )
    for name, found in result.saes.items():
        table = Table(title=f"{name} ({workspace.saes[name].hook_name})")
        table.add_column("feature", justify="right")
        table.add_column(reduce, justify="right")
        table.add_column("strongest on")
        for hit in found.overall:
            where = int(found.activations[:, hit.index].argmax())
            table.add_row(str(hit.index), f"{hit.value:.3f}", repr(result.tokens[where]))
        out.print(table)


@cli.command()
def steer(
    message: Annotated[str, typer.Argument(help="What the user says to the model.")],
    feature: Annotated[
        list[str],
        typer.Option(
            "-f",
            "--feature",
            help=f"{FEATURE_REF_SYNTAX}, e.g. res1/946:clamp:5 (strength in multiples of the "
            "feature's max activation, read from the database; :raw for raw units; "
            f":when:{CONDITION_SYNTAX} to steer only where another feature fires).",
        ),
    ],
    stop_when: Annotated[
        list[str] | None,
        typer.Option(
            help=f"{CONDITION_SYNTAX}: end each reply at the first token where the feature "
            "exceeds LEVEL (raw units; repeatable)."
        ),
    ] = None,
    model: ModelOpt = None,
    sae: SaeOpt = None,
    device: DeviceOpt = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.7,
    seed: Annotated[int, typer.Option(help="Shared by the default and steered replies.")] = 0,
    database_url: DatabaseOpt = None,
) -> None:
    """Reply to a message with and without steering, side by side."""
    from app.core.feature_ref import parse_condition, parse_feature_ref
    from app.core.generation import SamplingParams, chat_prompt_ids, complete, pair_rows
    from app.core.steering import SteeringSpec, check_condition, resolve_steering
    from app.db.engine import session_scope
    from app.db.steering import max_acts_and_labels

    settings = _settings(model=model, saes=sae, device=device, database_url=database_url)
    refs = [parse_feature_ref(f) for f in feature]
    stop_conditions = [parse_condition(c) for c in stop_when or []]
    workspace = _workspace(settings)
    for condition in stop_conditions:
        check_condition(condition, workspace.saes)
    for named, _ in refs:
        if named is not None and named != workspace.model.name:
            raise MonoscopeError(f"feature of model {named!r}; loaded: {workspace.model.name}")
    spec = SteeringSpec(tuple(f for _, f in refs))
    with session_scope(_database(settings)) as session:
        known = max_acts_and_labels(
            session, workspace.model.name, ((f.sae, f.index) for f in spec.features)
        )
    edits = resolve_steering(spec, workspace.saes, lambda s, i: known.get((s, i), (None,))[0])
    ids, stops = chat_prompt_ids(workspace.model.tokenizer, [{"role": "user", "content": message}])
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, stop_strings=stops)
    rows = pair_rows(ids, edits, seed, stop_conditions)
    default, steered = complete(workspace.model, workspace.saes, rows, params)
    out.print("[bold]default[/bold]", default, sep="\n", markup=True, highlight=False)
    out.print("[bold]steered[/bold]", steered, sep="\n", markup=True, highlight=False)


TRAIN_SAE_OPTIONS = (
    "model",
    "hook_name",
    "transcoder",
    "corpus",
    "eval_corpus",
    "d_sae",
    "k",
    "l1_coefficient",
    "train_tokens",
    "epochs",
    "context_size",
    "batch_size",
    "lr",
    "whiten",
    "seed",
)


@cli.command("train-sae")
@config_options(
    TrainSaeConfig,
    *TRAIN_SAE_OPTIONS,
    arguments=("out",),
    flags={"hook_name": "--site", "l1_coefficient": "--l1", "train_tokens": "--tokens"},
)
def train_sae(config_values: dict, device: DeviceOpt = None) -> None:
    """Train a TopK (or ReLU + L1) SAE on one site of a model, or with --transcoder an MLP
    transcoder of the site's layer (checkpoints and the activation cache go to
    MONOSCOPE_DATA_DIR/train-sae; run it again to resume)."""
    from app.pipeline.train_sae import TrainSaeJob

    settings = _settings(device=device)
    k = config_values["k"] or None  # 0 on the command line: ReLU + L1
    if k is None and config_values["l1_coefficient"] <= 0:
        raise MonoscopeError("a ReLU SAE (--k 0) needs an L1 coefficient: pass --l1")
    config = TrainSaeConfig(
        **config_values | {"k": k},
        device=settings.device,
        work_dir=settings.data_dir / "train-sae",
    )
    sae = TrainSaeJob(config).run()
    what = f"transcoder ({sae.hook_name} -> {sae.hook_name_out})" if sae.is_transcoder else "SAE"
    _print_metrics(f"wrote {sae.architecture} {what} to {config.out}", sae.cfg.metadata["metrics"])


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


@cli.command("build-demo")
def build_demo(
    stage: Annotated[
        str,
        typer.Option(
            help="What to rebuild: all, model (tokenizer + LM), sae or transcoders (one per layer)."
        ),
    ] = "all",
) -> None:
    """Reproduce the shipped demo model, SAEs and transcoders from their seeds (checkpoints and
    caches go to MONOSCOPE_DATA_DIR/demo-build)."""
    from app.pipeline.demo_build import build_language_model, build_saes, build_transcoders

    work_dir = _settings().data_dir / "demo-build"

    if stage not in ("all", "model", "sae", "transcoders"):
        raise MonoscopeError(f"unknown stage {stage!r}; use all, model, sae or transcoders")
    if stage in ("all", "model"):
        report = build_language_model(work_dir)
        out.print(f"validation loss {report['val_loss']:.4f}")
        for sample in report["samples"]:
            out.print(sample, markup=False, highlight=False)
    if stage in ("all", "sae"):
        for sae in build_saes(work_dir):
            _print_metrics(f"demo SAE at {sae.hook_name}", sae.cfg.metadata["metrics"])
    if stage in ("all", "transcoders"):
        for transcoder in build_transcoders(work_dir):
            title = f"demo transcoder {transcoder.hook_name} -> {transcoder.hook_name_out}"
            _print_metrics(title, transcoder.cfg.metadata["metrics"])


user_cli = typer.Typer(no_args_is_help=True, help="Accounts that may save labels, lists, shares.")
cli.add_typer(user_cli, name="user")
key_cli = typer.Typer(no_args_is_help=True, help="API keys for writes (Authorization: Bearer).")
cli.add_typer(key_cli, name="key")


PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _read_password(from_stdin: bool) -> str:
    import sys

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@user_cli.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The name to sign in with.")],
    password_stdin: PasswordStdinOpt = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Create an account; asks for its password (at least 8 characters)."""
    from app.db.accounts import add_user
    from app.db.engine import session_scope

    password = _read_password(password_stdin)
    engine = _database(_settings(database_url=database_url))
    with session_scope(engine) as session:
        add_user(session, name, password)
    out.print(f"added user {escape(name)}")


@user_cli.command("password")
def user_password(
    name: Annotated[str, typer.Argument(help="The account.")],
    password_stdin: PasswordStdinOpt = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Set a new password; every browser signed in as the user is signed out."""
    from app.db.accounts import set_password
    from app.db.engine import session_scope

    password = _read_password(password_stdin)
    engine = _database(_settings(database_url=database_url))
    with session_scope(engine) as session:
        set_password(session, name, password)
    out.print(f"changed the password of {escape(name)}; its sign-ins are closed")


@key_cli.command("create")
def key_create(
    user: Annotated[str, typer.Option(help="The account the key acts as.")],
    name: Annotated[str, typer.Option(help="What the key is for, shown in listings.")] = "key",
    database_url: DatabaseOpt = None,
) -> None:
    """Make an API key. It is printed once, on the last line; only its hash is stored."""
    from app.db.accounts import create_key, find_user
    from app.db.engine import session_scope

    engine = _database(_settings(database_url=database_url))
    with session_scope(engine) as session:
        owner = find_user(session, user)
        if owner is None:
            raise MonoscopeError(f"no user {user!r}; add one with `monoscope user add`")
        key, secret = create_key(session, owner, name)
        prefix = key.prefix
    out.print(f"key {prefix} for {escape(user)}; keep it now, it is not shown again:")
    print(secret)


@key_cli.command("revoke")
def key_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's first 12 characters (key list).")],
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key at once: requests with it get 401 from then on."""
    from app.db.accounts import revoke_key
    from app.db.engine import session_scope

    engine = _database(_settings(database_url=database_url))
    with session_scope(engine) as session:
        revoke_key(session, prefix)
    out.print(f"revoked {escape(prefix)}")


@key_cli.command("list")
def key_list(database_url: DatabaseOpt = None) -> None:
    """Every key: its prefix, owner, purpose, and when it was made or revoked."""
    from app.db.accounts import list_keys
    from app.db.engine import session_scope

    engine = _database(_settings(database_url=database_url))
    table = Table()
    for column in ("prefix", "user", "name", "created", "revoked"):
        table.add_column(column)
    with session_scope(engine) as session:
        for key, owner in list_keys(session):
            revoked = f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
            created = f"{key.created_at:%Y-%m-%d %H:%M}"
            # names are anyone's text: escaped, or "[b" in one is read as markup and fails
            table.add_row(escape(key.prefix), escape(owner), escape(key.name), created, revoked)
    out.print(table)


eval_cli = typer.Typer(no_args_is_help=True, help="Evaluate SAEs.")
cli.add_typer(eval_cli, name="eval")


def _held_out_world(seed: int | None, version: int | None):
    """The demo world's held-out text for an eval: the shipped seed and version unless given
    (a version it does not have is an error before any model loads)."""
    from app.demo import EVAL_SEED, WORLD_VERSION
    from app.demo.world import World

    return World(EVAL_SEED if seed is None else seed, WORLD_VERSION if version is None else version)


@eval_cli.command("ground-truth")
def ground_truth(
    model: Annotated[str | None, typer.Option(help="A model trained on the demo world.")] = None,
    sae: Annotated[str | None, typer.Option("--sae", help="An SAE on that model.")] = None,
    documents: Annotated[int, typer.Option(help="Held-out world documents to read.")] = 10_000,
    seed: Annotated[int | None, typer.Option(help="World seed of the held-out text.")] = None,
    world_version: WorldVersionOpt = None,
    min_occurrences: Annotated[
        int, typer.Option(help="Concepts seen fewer times are left out.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """How well the SAE's features match the demo world's planted concepts (token and span F1 per
    concept), topics and personas (document F1), and, when the database holds labels for it, how
    often the best feature's label names the concept."""

    from app.core.model import load_model
    from app.core.sae import load_sae
    from app.demo import DEMO_MODEL, DEMO_SAE
    from app.demo.corpus import pack
    from app.demo.ground_truth import evaluate_ground_truth

    loaded = load_model(model or DEMO_MODEL, device=device or "auto")
    attached = loaded.attach(load_sae(sae or str(DEMO_SAE)))
    context = min(128, loaded.tokenizer.model_max_length)
    world = _held_out_world(seed, world_version)
    tokens = pack(world, documents, loaded.tokenizer, context, aligned=True)
    report = evaluate_ground_truth(loaded, attached, tokens, min_occurrences)
    from app.core.workspace import sae_name
    from app.demo.ground_truth import label_accuracy, score_agreement
    from app.pipeline.explain import label_scores, labels

    engine = _database(_settings(database_url=database_url))
    stored_name = sae_name(sae or str(DEMO_SAE))
    found = labels(engine, loaded.name, stored_name)
    accuracy = label_accuracy(report, found) if found else None
    agreements = {}
    for scorer in ("keyword", "embedding"):  # the offline scores, which the demo can compute
        if scores := label_scores(engine, loaded.name, stored_name, scorer):
            agreements[scorer] = score_agreement(report, found, scores)
    if as_json:
        extra = {"labels": accuracy.to_dict()} if accuracy else {}
        for scorer, agreement in agreements.items():
            extra[f"{scorer}_vs_label_correctness"] = agreement
        print(json.dumps(report.to_dict() | extra, indent=2))
        return
    for title, rows in (("concept", report.concepts), ("category", report.categories)):
        table = Table(title=f"best feature per {title}")
        for column in (title, "occurrences", "feature", "F1", "precision", "recall"):
            table.add_column(column, justify="left" if column == title else "right")
        for c in rows:
            table.add_row(
                c.key,
                str(c.occurrences),
                str(c.feature),
                f"{c.f1:.3f}",
                f"{c.precision:.3f}",
                f"{c.recall:.3f}",
            )
        out.print(table)
    table = Table(title="best feature and best union of up to three per concept, by span")
    for column in ("concept", "spans", "features", "F1 single", "F1 union", "precision", "recall"):
        table.add_column(column, justify="left" if column == "concept" else "right")
    for m in report.spans:
        table.add_row(
            m.key,
            str(m.spans),
            " ".join(map(str, m.features)),
            f"{m.f1_single:.3f}",
            f"{m.f1_union:.3f}",
            f"{m.precision:.3f}",
            f"{m.recall:.3f}",
        )
    out.print(table)
    if report.documents:
        table = Table(title="best feature per topic and persona, by document")
        for column in ("label", "documents", "feature", "F1", "precision", "recall"):
            table.add_column(column, justify="left" if column == "label" else "right")
        for d in report.documents:
            table.add_row(
                d.label,
                str(d.documents),
                str(d.feature),
                f"{d.f1:.3f}",
                f"{d.precision:.3f}",
                f"{d.recall:.3f}",
            )
        out.print(table)
    if accuracy is not None:
        table = Table(title="labels of the best features (F1 ≥ 0.5)")
        for column in ("concept", "feature", "F1", "label", "names it"):
            table.add_column(column)
        for row in accuracy.rows:
            named = "yes" if row["named"] else "no"
            table.add_row(
                row["concept"], str(row["feature"]), f"{row['f1']:.3f}", escape(row["label"]), named
            )
        out.print(table)
    summary = report.summary()
    if accuracy is not None:
        summary["label_accuracy"] = round(accuracy.accuracy, 4)
    for scorer, agreement in agreements.items():
        summary |= {f"{scorer}_{k}": v for k, v in agreement.items()}
    _print_metrics("ground truth", summary)


@eval_cli.command("steering")
def steering(
    target: Annotated[
        str, typer.Option(help="topic/<subject>, persona/<name> or a concept key.")
    ] = "topic/golden gate bridge",
    model: Annotated[str | None, typer.Option(help="A model trained on the demo world.")] = None,
    sae: Annotated[str | None, typer.Option("--sae", help="An SAE on that model.")] = None,
    strength: Annotated[
        list[float] | None, typer.Option(help="Multiples of max activation to try (repeatable).")
    ] = None,
    mode: Annotated[str, typer.Option(help="clamp or add.")] = "clamp",
    seeds: Annotated[int, typer.Option(help="Samples per prompt.")] = 10,
    documents: Annotated[int, typer.Option(help="Held-out documents to find it in.")] = 3000,
    seed: Annotated[int | None, typer.Option(help="World seed of the held-out text.")] = None,
    world_version: WorldVersionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
) -> None:
    """The Golden Gate check: find the target's feature through ground truth, steer the
    assistant with it at each strength, and judge the replies (on aim, fluent by the world's
    grammar, loss under the unsteered model within 1.5x of the default replies')."""

    from app.core.feature_ref import Mode
    from app.core.model import load_model
    from app.core.sae import load_sae
    from app.core.steering import SteeringFeature, SteeringSpec, resolve_steering
    from app.demo import DEMO_MODEL, DEMO_SAE
    from app.demo.catalogue import CATALOGUE
    from app.demo.corpus import pack
    from app.demo.facts import PERSONAS, TOPICS
    from app.demo.ground_truth import GOLDEN_GATE, evaluate_ground_truth
    from app.demo.steering_check import mentions_bridge, speaks_as, steering_check

    if mode not in ("clamp", "add"):
        raise MonoscopeError(f"unknown steering mode {mode!r}; use clamp or add")
    kind, _, name = target.partition("/")
    if kind == "persona" and name not in PERSONAS:
        raise MonoscopeError(f"unknown persona {name!r}; use {', '.join(sorted(PERSONAS))}")
    if kind == "topic" and name not in TOPICS:
        raise MonoscopeError(f"unknown topic {name!r}; use {', '.join(sorted(TOPICS))}")
    if kind not in ("topic", "persona") and target not in CATALOGUE.by_key:
        raise MonoscopeError(f"unknown concept {target!r}; use a key such as {GOLDEN_GATE!r}")
    aim = speaks_as(name) if kind == "persona" else mentions_bridge
    world = _held_out_world(seed, world_version)
    version = world.version
    loaded = load_model(model or DEMO_MODEL, device=device or "auto")
    attached = loaded.attach(load_sae(sae or str(DEMO_SAE)))
    context = min(128, loaded.tokenizer.model_max_length)
    report = evaluate_ground_truth(
        loaded, attached, pack(world, documents, loaded.tokenizer, context, aligned=True)
    )
    feature = report.feature_for(target)
    max_act = float(report.feature_max[feature])
    checks = []
    for multiple in strength or [2.0, 4.0, 6.0, 8.0, 10.0]:
        steer = SteeringFeature("sae", feature, cast(Mode, mode), multiple, units="max_act")
        spec = SteeringSpec((steer,))
        edits = resolve_steering(spec, {"sae": attached}, max_act=lambda _s, _i: max_act)
        checks.append(
            steering_check(
                loaded, {"sae": attached}, edits, aim, multiple, seeds=seeds, world_version=version
            )
        )
    if as_json:
        result = {"target": target, "feature": feature, "max_activation": max_act}
        result["strengths"] = [
            c.summary() | {"steered": [r.text for r in c.steered[:5]]} for c in checks
        ]
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{target}: feature {feature} ({mode}, max activation {max_act:.2f})")
    columns = ("× max", "accepted", "on aim", "fluent", "default on aim", "loss", "default loss")
    for column in columns:
        table.add_column(column, justify="right")
    for c in checks:
        row = c.summary()
        table.add_row(
            f"{c.strength:g}",
            f"{row['steered_share']:.2f}",
            f"{row['steered_on_aim']:.2f}",
            f"{row['steered_fluent']:.2f}",
            f"{row['default_share']:.2f}",
            f"{row['steered_loss']:.3f}",
            f"{row['default_loss']:.3f}",
        )
    out.print(table)
    best = max(checks, key=lambda c: c.steered_share)
    out.print(f"replies at {best.strength:g}× max activation:")
    for reply in best.steered[:: max(1, len(best.steered) // 6)]:
        verdict = "accepted" if best.passes(reply) else "rejected"
        out.print(f"  [{verdict}] {reply.text}", markup=False, highlight=False)


@eval_cli.command("classifier")
def classifier(
    target: Annotated[
        str, typer.Option(help="topic/<subject>, persona/<name> or a concept key.")
    ] = "places/golden_gate_bridge",
    model: Annotated[str | None, typer.Option(help="A model trained on the demo world.")] = None,
    sae: Annotated[
        list[str] | None, typer.Option("--sae", help="SAEs on that model (repeatable).")
    ] = None,
    train_seed: Annotated[int, typer.Option(help="World seed of the training documents.")] = 1,
    seed: Annotated[int | None, typer.Option(help="World seed of the held-out text.")] = None,
    per_class: Annotated[int, typer.Option(help="Documents with and without the target.")] = 64,
    world_version: WorldVersionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Feature classifiers for a target, trained on one world seed's documents and measured on
    held-out ones: a learned logistic regression, the single best feature, and the model
    prompted with a yes/no question (its threshold fit on the same training documents)."""

    from app.core.model import load_model
    from app.core.sae import load_sae
    from app.core.workspace import sae_name
    from app.demo import DEMO_MODEL, DEMO_SAES
    from app.demo.classifier_check import classifier_check
    from app.demo.world import World

    held_out = _held_out_world(seed, world_version)
    loaded = load_model(model or DEMO_MODEL, device=device or "auto")
    paths = sae or [str(p) for p in DEMO_SAES.values()]
    saes = {sae_name(path): loaded.attach(load_sae(path)) for path in paths}
    report = classifier_check(
        loaded, saes, target, World(train_seed, held_out.version), held_out, per_class
    )
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{target}: trained on seed {train_seed}, held out seed {held_out.seed}")
    for column in ("classifier", "precision", "recall", "F1", "train F1"):
        table.add_column(column, justify="left" if column == "classifier" else "right")
    for key, title in (
        ("learned", f"logistic, {report['learned']['features']} features"),
        ("single_feature", f"feature {report['single_feature']['feature']}"),
        ("baseline", f"model asked about {report['asked_about']}"),
    ):
        held, train = report[key]["held_out"], report[key]["train"]
        table.add_row(
            escape(title),
            f"{held['precision']:.3f}",
            f"{held['recall']:.3f}",
            f"{held['f1']:.3f}",
            f"{train['f1']:.3f}",
        )
    out.print(table)


@eval_cli.command("replacement")
def replacement(
    transcoders: Annotated[
        Path,
        typer.Option(help="One transcoder per layer (a circuit-tracer set or layer_N folders)."),
    ],
    model: ModelOpt = None,
    corpus: Annotated[
        str | None,
        typer.Option(help="Held-out text (default: the demo world's held-out seed)."),
    ] = None,
    contexts: Annotated[int, typer.Option(help="Contexts of 128 tokens to read.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
) -> None:
    """The replacement model's CE loss recovered (every MLP replaced by its transcoder at once,
    against zeroing every MLP), its KL to the model, and each layer's variance explained."""
    import torch

    from app.core.model import load_model
    from app.core.sae.formats import load_transcoder_set
    from app.core.sae.metrics import evaluate_replacement
    from app.demo import DEMO_MODEL, EVAL_SEED, WORLD_VERSION
    from app.pipeline.corpus import load_contexts

    loaded = load_model(model or DEMO_MODEL, device=device or "auto")
    attached = [loaded.attach(t, source=str(transcoders)) for t in load_transcoder_set(transcoders)]
    text = corpus or f"demo-world:{EVAL_SEED}:{WORLD_VERSION}"
    ids = torch.from_numpy(load_contexts(text, loaded.tokenizer, 128, contexts))
    report = evaluate_replacement(loaded, attached, ids).to_dict()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    by_layer = report.pop("variance_explained")
    _print_metrics(
        f"replacement model on {text}",
        report | {f"variance explained, layer {n}": v for n, v in enumerate(by_layer)},
    )


@eval_cli.command("world-structure")
def world_structure(
    model: Annotated[str | None, typer.Option(help="A model trained on the demo world.")] = None,
    site: Annotated[
        list[str] | None, typer.Option(help="Residual sites to measure (repeatable).")
    ] = None,
    world_version: WorldVersionOpt = None,
    seed: Annotated[int | None, typer.Option(help="World seed of the held-out text.")] = None,
    documents: Annotated[int, typer.Option(help="Documents for identity and probes.")] = 3000,
    two_hop_documents: Annotated[int, typer.Option(help="Documents to ask two-hop from.")] = 1500,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Whether the model carries the world's structure, before any SAE is trained on it: how much
    of a category's variance tells its concepts apart, how many concepts a linear probe separates,
    how often it answers two-hop questions past a distractor, and how much it gains from copying
    what it has read."""

    from app.core.model import load_model
    from app.demo import DEMO_MODEL, DEMO_SITE
    from app.demo.structure import world_structure as measure

    world = _held_out_world(seed, world_version)
    loaded = load_model(model or DEMO_MODEL, device=device or "auto")
    context = min(128, loaded.tokenizer.model_max_length)
    reports = [
        report.to_dict()
        for report in measure(
            loaded, world, site or [DEMO_SITE], documents, two_hop_documents, context
        )
    ]
    if as_json:
        print(json.dumps(reports, indent=2))
        return
    for report in reports:
        by_category = report.pop("identity_by_category")
        _print_metrics(f"world structure at {report.pop('site')}", report | by_category)


@cli.command("convert-sae")
def convert_sae(
    source: Annotated[
        str,
        typer.Argument(
            help="SAELens dir, Gemma Scope params.npz, sparsify dir, circuit-tracer layer file, "
            "or hf://..."
        ),
    ],
    destination: Annotated[Path, typer.Argument(help="Folder to write the SAELens directory to.")],
    hook_name: Annotated[
        str | None, typer.Option(help="The site, where the source does not say.")
    ] = None,
) -> None:
    """Rewrite any supported SAE or transcoder as a SAELens directory."""
    from app.core.sae import load_sae, save_saelens

    sae = load_sae(source, hook_name=hook_name)
    save_saelens(sae, destination)
    sites = f"{sae.hook_name} → {sae.hook_name_out}" if sae.is_transcoder else sae.hook_name
    what = "transcoder" if sae.is_transcoder else "SAE"
    out.print(f"wrote {sae.architecture} {what} ({sae.d_in}→{sae.d_sae}, {sites}) to {destination}")


def _fail(message: str) -> None:
    Console(stderr=True, emoji=False).print(
        f"error: {message}", markup=False, highlight=False, soft_wrap=True
    )
    raise SystemExit(2)


def main() -> None:
    """Entry point: MonoscopeError becomes one 'error:' line and exit status 2."""
    try:
        cli(standalone_mode=False)
    except MonoscopeError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except Exception as exc:
        import click

        from app.db.engine import storage_refusal

        refusal = storage_refusal(exc)
        if refusal is not None:
            _fail(refusal)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            _fail(f"out of disk space: {exc.filename or exc}")

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
