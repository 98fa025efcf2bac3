"""The `monoscope` command: thin over the same functions the web server uses.

monoscope serve --model gpt2 --sae saes/res6
monoscope inspect --model gpt2 --sae saes/res6 "The Golden Gate Bridge"
monoscope steer --model gpt2 --sae saes/res6 -f res6:1234:clamp:10 "Tell me about yourself"
monoscope convert-sae params.npz out/ --hook-name blocks.12.hook_resid_post
monoscope ingest corpus.jsonl data/stores/web --model gpt2 --tokens 3000000
monoscope harvest --model gpt2 --sae saes/res6 --corpus data/stores/web --tokens 3000000
"""

import errno
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.core.errors import MonoscopeError
from app.settings import Settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Explore SAE features.")
out = Console()
FIELDS = Settings.model_fields

ModelOpt = Annotated[str | None, typer.Option(help=FIELDS["model"].description)]
SaeOpt = Annotated[list[str] | None, typer.Option("--sae", help=FIELDS["saes"].description)]
DeviceOpt = Annotated[str | None, typer.Option(help=FIELDS["device"].description)]
DatabaseOpt = Annotated[str | None, typer.Option(help=FIELDS["database_url"].description)]
CORPUS_HELP = (
    "a .txt/.jsonl/.parquet/.arrow file, a local HF dataset directory, or demo-world[:SEED]."
)


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v not in (None, [])})


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


def _workspace(settings: Settings):
    """The workspace the settings name; with no model, the demo model and its SAEs."""
    from app.core.workspace import Workspace

    model, saes = settings.model, settings.saes
    if not model:
        from app.demo import DEMO_MODEL, DEMO_SAES

        model, saes = str(DEMO_MODEL), saes or [str(p) for p in DEMO_SAES.values()]
    return Workspace.load(model, saes, device=settings.device)


@cli.command()
def serve(
    model: ModelOpt = None,
    sae: SaeOpt = None,
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=FIELDS["host"].description)] = None,
    port: Annotated[int | None, typer.Option(help=FIELDS["port"].description)] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Serve the web app with the model and SAEs resident."""
    import uvicorn

    from app.web.app import create_app
    from app.web.server import server_options

    settings = _settings(
        model=model, saes=sae, device=device, host=host, port=port, database_url=database_url
    )
    workspace = _workspace(settings)  # bad paths fail here, plainly
    _database(settings)  # so does an unreachable database
    uvicorn.run(create_app(settings, workspace), host=settings.host, port=settings.port,
                **server_options(settings))  # fmt: skip


@cli.command()
def demo(
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=FIELDS["host"].description)] = None,
    port: Annotated[int | None, typer.Option(help=FIELDS["port"].description)] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Serve the shipped demo model and its two SAEs: works offline, on a CPU.

    On first start it fills the database: harvests each demo SAE over 1M held-out tokens and labels
    its features with the offline explainer (260 s on two idle CPU cores, resumable); the site
    shows that progress meanwhile. It prints a one-time sign-in link for
    the local administrator ("admin"), so saving lists and shares works at once."""
    import uvicorn

    from app.pipeline.demo_build import build_demo_database, demo_database_ready
    from app.web.app import create_app
    from app.web.first_start import FirstStart
    from app.web.server import server_options

    settings = _settings(device=device, host=host, port=port, database_url=database_url)
    engine = _database(settings)
    workspace = _workspace(settings)
    if not demo_database_ready(engine):
        out.print(f"building the demo database in {engine.url.render_as_string()}; the site "
                  "shows its progress meanwhile")  # fmt: skip

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
def ingest(
    source: Annotated[str, typer.Argument(help=CORPUS_HELP)],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the token store to.")],
    model: Annotated[
        str | None, typer.Option(help="Model whose tokenizer to use (default: the demo model).")
    ] = None,
    context_size: Annotated[int, typer.Option(help="Tokens per context, BOS included.")] = 128,
    tokens: Annotated[
        int | None, typer.Option(help="Stop after this many tokens (default: the whole corpus).")
    ] = None,
) -> None:
    """Tokenize a corpus into fixed-length contexts on disk (a token store for harvest)."""
    from app.pipeline.ingest import ingest as run_ingest

    store = run_ingest(source, _tokenizer(model), out_dir, context_size, max_tokens=tokens)
    meta = store.meta
    out.print(
        f"wrote {meta['contexts']:,} contexts × {meta['context_size']} tokens from "
        f"{meta['documents']:,} documents to {out_dir} (fingerprint {meta['fingerprint']})"
    )


def _harvest(
    model: str | None,
    sae: str,
    corpus: str,
    tokens: int,
    name: str | None,
    batch_size: int,
    replace: bool,
    device: str | None,
    database_url: str | None,
):
    from app.demo import DEMO_MODEL
    from app.pipeline.harvest import HarvestConfig, HarvestJob

    settings = _settings(device=device, database_url=database_url)
    engine = _database(settings)
    config = HarvestConfig(
        model=model or str(DEMO_MODEL),
        sae=sae,
        corpus=corpus,
        tokens=tokens,
        name=name,
        batch_size=batch_size,
        replace=replace,
        device=settings.device,
        work_dir=settings.data_dir / "harvest",
    )
    result = HarvestJob(config, engine).run()
    out.print(
        f"harvested {result.model}/{result.sae}: {result.tokens:,} tokens, "
        f"{result.alive:,} of {result.features:,} features alive, {result.examples:,} examples"
    )
    _print_metrics(f"{result.model}/{result.sae}", result.metrics)
    return result


HarvestModelOpt = Annotated[
    str | None, typer.Option(help="Hub id or local directory (default: the demo model).")
]
TokensOpt = Annotated[int, typer.Option(help="Tokens to harvest.")]
NameOpt = Annotated[str | None, typer.Option(help="Name in the database and URLs.")]
BatchOpt = Annotated[int, typer.Option(help="Contexts per forward pass.")]
ReplaceOpt = Annotated[bool, typer.Option(help="Replace an SAE of that name.")]


@cli.command()
def harvest(
    sae: Annotated[str, typer.Option("--sae", help="The SAE to harvest (any supported format).")],
    corpus: Annotated[str, typer.Option(help="A token store from ingest, or " + CORPUS_HELP)],
    model: HarvestModelOpt = None,
    tokens: TokensOpt = 1_000_000,
    name: NameOpt = None,
    batch_size: BatchOpt = 16,
    replace: ReplaceOpt = False,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Fill the database with an SAE's feature dashboards: examples, statistics, logit effects,
    neighbours. Resumable: run it again after a crash."""
    _harvest(model, sae, corpus, tokens, name, batch_size, replace, device, database_url)


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
    database_url: DatabaseOpt = None,
) -> None:
    """Label an SAE's features. Resumable and idempotent: run it again to continue or retry."""
    from app.demo import DEMO_MODEL
    from app.pipeline.explain import run_explain

    settings = _settings(database_url=database_url)
    engine = _database(settings)
    model_name = model or DEMO_MODEL.name
    chosen = _explainer(explainer, settings, engine, model_name)
    wanted = _indices(features)
    result = run_explain(engine, model_name, sae, chosen, features=wanted, force=force)
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
        typer.Option(help="simulation (offline), detection or fuzzing (LLM); repeatable."),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Comma-separated feature indices (default: all labelled).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Score again labels already scored.")] = False,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Score stored labels on held-out examples and negatives. Resumable and idempotent."""
    from app.demo import DEMO_MODEL
    from app.pipeline.score import run_score

    settings = _settings(database_url=database_url, device=device)
    engine = _database(settings)
    model_name = model or DEMO_MODEL.name
    scorers = scorer or (
        ["simulation", "detection"] if settings.explainer_base_url else ["simulation"]
    )
    resident, resident_sae = _resident(engine, model_name, sae, settings.device)
    judge = None
    if any(s in ("detection", "fuzzing") for s in scorers) and settings.explainer_base_url:
        from app.autointerp.scoring import LLMJudge

        judge = LLMJudge(_chat_client(settings))
    result = run_score(
        engine, model_name, sae, scorers, resident, resident_sae, judge=judge,
        features=_indices(features), force=force, concurrency=settings.explainer_concurrency,
    )  # fmt: skip
    out.print(
        f"scored {result.scored:,}, failed {result.failed:,}, already scored {result.skipped:,} "
        f"({result.prompt_tokens + result.completion_tokens:,} LLM tokens)"
    )


def _resident(engine, model_name: str, sae: str, device: str):
    """The model and SAE a stored SAE was harvested from, loaded from their recorded sources."""
    from app.core.model import load_model
    from app.core.sae import load_sae
    from app.db.engine import session_scope
    from app.db.queries import find_sae

    with session_scope(engine) as session:
        row = find_sae(session, model_name, sae)
        if row is None:
            raise MonoscopeError(f"no SAE {model_name}/{sae} in the database; harvest it first")
        sources = row.model.source, row.source
    loaded = load_model(sources[0], device=device)
    return loaded, loaded.attach(load_sae(sources[1]), source=sources[1])


def _chat_client(settings: Settings):
    from app.autointerp.llm import ChatClient

    if not settings.explainer_base_url:
        raise MonoscopeError("an LLM explainer or judge needs MONOSCOPE_EXPLAINER_BASE_URL")
    key = settings.explainer_api_key
    return ChatClient(
        settings.explainer_base_url,
        settings.explainer_model,
        key.get_secret_value() if key else None,
        timeout=settings.explainer_timeout,
    )


def _explainer(name: str | None, settings: Settings, engine, model_name: str):
    from app.db.engine import session_scope
    from app.db.queries import find_model
    from app.pipeline.explain import offline_explainer

    name = name or ("openai" if settings.explainer_base_url else "offline")
    if name == "offline":
        return offline_explainer(engine, model_name)
    if name == "openai":
        from app.autointerp.llm import LLMExplainer

        return LLMExplainer(
            _chat_client(settings),
            settings.explainer_concurrency,
            settings.explainer_price_prompt,
            settings.explainer_price_completion,
        )
    if name == "self":
        from app.autointerp.self_explain import SelfExplainer
        from app.core.model import load_model

        with session_scope(engine) as session:
            row = find_model(session, model_name)
            if row is None:
                raise MonoscopeError(f"no model {model_name!r} in the database")
            source = row.source
        return SelfExplainer(load_model(source, device=settings.device))
    raise MonoscopeError(f"unknown explainer {name!r}; use offline, openai or self")


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise MonoscopeError(f"bad --features {text!r}: expected indices like 1,2,3") from exc


@cli.command("add-sae")
def add_sae(
    path: Annotated[str, typer.Argument(help="SAELens or sparsify directory, params.npz, hf://")],
    corpus: Annotated[str, typer.Option(help="A token store from ingest, or " + CORPUS_HELP)],
    model: HarvestModelOpt = None,
    tokens: TokensOpt = 1_000_000,
    name: NameOpt = None,
    batch_size: BatchOpt = 16,
    replace: ReplaceOpt = False,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Bring your own SAE in one command: import it, harvest it into the database, label its
    features (the LLM explainer when an endpoint is set, else offline) and score the labels."""
    from app.pipeline.explain import run_explain
    from app.pipeline.score import run_score

    result = _harvest(model, path, corpus, tokens, name, batch_size, replace, device, database_url)
    settings = _settings(database_url=database_url, device=device)
    engine = _database(settings)
    explained = run_explain(
        engine, result.model, result.sae, _explainer(None, settings, engine, result.model)
    )
    resident, resident_sae = _resident(engine, result.model, result.sae, settings.device)
    scored = run_score(engine, result.model, result.sae, ["simulation"], resident, resident_sae)
    out.print(
        f"labelled {explained.explained:,} features ({explained.failed:,} failed); "
        f"scored {scored.scored:,} labels by simulation"
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
    from app.core.inspect import inspect as inspect_text

    workspace = _workspace(_settings(model=model, saes=sae, device=device))
    result = inspect_text(workspace.model, workspace.saes, text, top_k=top, reduce=reduce)
    for name, found in result.saes.items():
        table = Table(title=f"{name} ({workspace.saes[name].hook_name})")
        table.add_column("feature", justify="right")
        table.add_column(reduce, justify="right")
        table.add_column("strongest on")
        for hit in found.overall:
            where = int(found.activations[:, hit.index].argmax())
            table.add_row(str(hit.index), f"{hit.value:.3f}", repr(result.tokens[where]))
        out.print(table)


def _parse_feature(text: str):
    from app.core.steering import SteeringFeature

    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise MonoscopeError(
            f"bad feature {text!r}; expected SAE:INDEX:clamp|add:STRENGTH[:raw|max_act]"
        )
    try:
        return SteeringFeature(
            parts[0],
            int(parts[1]),
            parts[2],
            float(parts[3]),
            units=parts[4] if len(parts) == 5 else "raw",
        )
    except ValueError as exc:
        raise MonoscopeError(f"bad feature {text!r}: {exc}") from exc


@cli.command()
def steer(
    message: Annotated[str, typer.Argument(help="What the user says to the model.")],
    feature: Annotated[
        list[str], typer.Option("-f", "--feature", help="SAE:INDEX:clamp|add:STRENGTH (raw units).")
    ],
    model: ModelOpt = None,
    sae: SaeOpt = None,
    device: DeviceOpt = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.7,
    seed: Annotated[int, typer.Option(help="Shared by the default and steered replies.")] = 0,
) -> None:
    """Reply to a message with and without steering, side by side."""
    from app.core.generation import SamplingParams, chat_prompt_ids, complete, pair_rows
    from app.core.steering import SteeringSpec, resolve_steering

    spec = SteeringSpec(tuple(_parse_feature(f) for f in feature))
    workspace = _workspace(_settings(model=model, saes=sae, device=device))
    edits = resolve_steering(spec, workspace.saes)
    ids, stops = chat_prompt_ids(workspace.model.tokenizer, [{"role": "user", "content": message}])
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, stop_strings=stops)
    default, steered = complete(
        workspace.model, workspace.saes, pair_rows(ids, edits, seed), params
    )
    out.print("[bold]default[/bold]", default, sep="\n", markup=True, highlight=False)
    out.print("[bold]steered[/bold]", steered, sep="\n", markup=True, highlight=False)


@cli.command("train-sae")
def train_sae(
    out: Annotated[Path, typer.Argument(help="Folder to write the SAELens-format SAE to.")],
    model: Annotated[str, typer.Option(help="Hub id or local directory of the model.")],
    site: Annotated[str, typer.Option(help="Hook site, e.g. blocks.6.hook_resid_post.")],
    corpus: Annotated[
        str, typer.Option(help="demo-world[:SEED], a .txt or .jsonl file, or a .npy of token ids.")
    ],
    eval_corpus: Annotated[
        str | None, typer.Option(help="Held-out text for the final metrics.")
    ] = None,
    d_sae: Annotated[int, typer.Option(help="Number of latents.")] = 4096,
    k: Annotated[int, typer.Option(help="Active latents per token; 0 for ReLU + L1.")] = 32,
    l1: Annotated[float, typer.Option(help="L1 coefficient (ReLU SAEs).")] = 0.0,
    tokens: Annotated[int, typer.Option(help="Activations to cache and train on.")] = 2_000_000,
    epochs: Annotated[int, typer.Option(help="Passes over the cached activations.")] = 2,
    context_size: Annotated[int, typer.Option(help="Tokens per context.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Activations per step.")] = 2048,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-4,
    seed: Annotated[int, typer.Option(help="Initialisation and data order.")] = 0,
    device: DeviceOpt = None,
    work_dir: Annotated[
        Path, typer.Option(help="Activation cache and checkpoints (resume from here).")
    ] = Path("data/train-sae"),
) -> None:
    """Train a TopK (or ReLU + L1) SAE on one site of a model."""
    from app.pipeline.train_sae import TrainSaeConfig, TrainSaeJob

    config = TrainSaeConfig(
        model=model, hook_name=site, corpus=corpus, out=out, eval_corpus=eval_corpus,
        d_sae=d_sae, k=k or None, l1_coefficient=l1, train_tokens=tokens, epochs=epochs,
        context_size=context_size, batch_size=batch_size, lr=lr, seed=seed,
        device=device or "auto", work_dir=work_dir,
    )  # fmt: skip
    if k == 0 and l1 <= 0:
        raise MonoscopeError("a ReLU SAE (--k 0) needs an L1 coefficient: pass --l1")
    sae = TrainSaeJob(config).run()
    _print_metrics(f"wrote {sae.architecture} SAE to {out}", sae.cfg.metadata["metrics"])


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
        str, typer.Option(help="What to rebuild: all, model (tokenizer + LM) or sae.")
    ] = "all",
    work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches.")] = Path(
        "data/demo-build"
    ),
) -> None:
    """Reproduce the shipped demo model and SAEs from their seeds (CPU: about 50 minutes)."""
    from app.pipeline.demo_build import build_language_model, build_saes

    if stage not in ("all", "model", "sae"):
        raise MonoscopeError(f"unknown stage {stage!r}; use all, model or sae")
    if stage in ("all", "model"):
        report = build_language_model(work_dir)
        out.print(f"validation loss {report['val_loss']:.4f}")
        for sample in report["samples"]:
            out.print(sample, markup=False, highlight=False)
    if stage in ("all", "sae"):
        for sae in build_saes(work_dir):
            _print_metrics(f"demo SAE at {sae.hook_name}", sae.cfg.metadata["metrics"])


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


@eval_cli.command("ground-truth")
def ground_truth(
    model: Annotated[str | None, typer.Option(help="A model trained on the demo world.")] = None,
    sae: Annotated[str | None, typer.Option("--sae", help="An SAE on that model.")] = None,
    documents: Annotated[int, typer.Option(help="Held-out world documents to read.")] = 10_000,
    seed: Annotated[int | None, typer.Option(help="World seed of the held-out text.")] = None,
    min_occurrences: Annotated[
        int, typer.Option(help="Concepts seen fewer times are left out.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """How well the SAE's features match the demo world's planted concepts (F1 per concept), and,
    when the database holds labels for it, how often the best feature's label names the concept."""
    import json

    from app.core.model import load_model
    from app.core.sae import load_sae
    from app.demo import DEMO_MODEL, DEMO_SAE, EVAL_SEED
    from app.demo.corpus import pack
    from app.demo.ground_truth import evaluate_ground_truth
    from app.demo.world import World

    loaded = load_model(model or DEMO_MODEL, device=device or "auto")
    attached = loaded.attach(load_sae(sae or str(DEMO_SAE)))
    context = min(128, loaded.tokenizer.model_max_length)
    tokens = pack(World(EVAL_SEED if seed is None else seed), documents, loaded.tokenizer, context)
    report = evaluate_ground_truth(loaded, attached, tokens, min_occurrences)
    from app.core.workspace import sae_name
    from app.demo.ground_truth import label_accuracy, score_agreement
    from app.pipeline.explain import label_scores, labels

    engine = _database(_settings(database_url=database_url))
    stored_name = sae_name(sae or str(DEMO_SAE))
    found = labels(engine, loaded.name, stored_name)
    accuracy = label_accuracy(report, found) if found else None
    simulation = label_scores(engine, loaded.name, stored_name, "simulation")
    agreement = score_agreement(report, found, simulation) if simulation else None
    if as_json:
        extra = {"labels": accuracy.to_dict()} if accuracy else {}
        if agreement:
            extra["simulation_vs_label_correctness"] = agreement
        print(json.dumps(report.to_dict() | extra, indent=2))
        return
    for title, rows in (("concept", report.concepts), ("category", report.categories)):
        table = Table(title=f"best feature per {title}")
        for column in (title, "occurrences", "feature", "F1", "precision", "recall"):
            table.add_column(column, justify="left" if column == title else "right")
        for c in rows:
            table.add_row(c.key, str(c.occurrences), str(c.feature), f"{c.f1:.3f}",
                          f"{c.precision:.3f}", f"{c.recall:.3f}")  # fmt: skip
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
    if agreement:
        summary |= {f"simulation_{k}": v for k, v in agreement.items()}
    _print_metrics("ground truth", summary)


@cli.command("convert-sae")
def convert_sae(
    source: Annotated[
        str, typer.Argument(help="SAELens dir, Gemma Scope params.npz, sparsify dir, or hf://...")
    ],
    destination: Annotated[Path, typer.Argument(help="Folder to write the SAELens directory to.")],
    hook_name: Annotated[
        str | None, typer.Option(help="The site, where the source does not say.")
    ] = None,
) -> None:
    """Rewrite any supported SAE as a SAELens directory."""
    from app.core.sae import load_sae, save_saelens

    sae = load_sae(source, hook_name=hook_name)
    save_saelens(sae, destination)
    out.print(
        f"wrote {sae.architecture} SAE ({sae.d_in}→{sae.d_sae}, {sae.hook_name}) to {destination}"
    )


def _fail(message: str) -> None:
    Console(stderr=True).print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
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
