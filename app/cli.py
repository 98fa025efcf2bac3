"""The `monoscope` command: thin over the same functions the web server uses.

monoscope serve --model gpt2 --sae saes/res6
monoscope inspect --model gpt2 --sae saes/res6 "The Golden Gate Bridge"
monoscope steer --model gpt2 --sae saes/res6 -f res6:1234:clamp:10 "Tell me about yourself"
monoscope convert-sae params.npz out/ --hook-name blocks.12.hook_resid_post
"""

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.core.errors import MonoscopeError
from app.settings import Settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Explore SAE features.")
out = Console()
FIELDS = Settings.model_fields

ModelOpt = Annotated[str | None, typer.Option(help=FIELDS["model"].description)]
SaeOpt = Annotated[list[str] | None, typer.Option("--sae", help=FIELDS["saes"].description)]
DeviceOpt = Annotated[str | None, typer.Option(help=FIELDS["device"].description)]


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v not in (None, [])})


def _workspace(settings: Settings):
    from app.core.workspace import Workspace

    if not settings.model:
        raise MonoscopeError("no model given: pass --model or set MONOSCOPE_MODEL")
    return Workspace.load(settings.model, settings.saes, device=settings.device)


@cli.command()
def serve(
    model: ModelOpt = None,
    sae: SaeOpt = None,
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=FIELDS["host"].description)] = None,
    port: Annotated[int | None, typer.Option(help=FIELDS["port"].description)] = None,
) -> None:
    """Serve the web app with the model and SAEs resident."""
    import uvicorn

    from app.web.app import create_app

    settings = _settings(model=model, saes=sae, device=device, host=host, port=port)
    workspace = _workspace(settings) if settings.model else None  # bad paths fail here, plainly
    uvicorn.run(create_app(settings, workspace), host=settings.host, port=settings.port)


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

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
