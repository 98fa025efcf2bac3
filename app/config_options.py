"""CLI options derived from a job's config dataclass, so a default or a help text is written once.

    @cli.command()
    @config_options(HarvestConfig, "sae", "corpus", "tokens", defaults={"model": None})
    def harvest(config_values: dict, device: DeviceOpt = None) -> None:
        HarvestJob(HarvestConfig(**config_values, device=...), engine).run()

Each named field becomes `--field-name` (or the flag `flags` gives it, or a positional argument
when named in `arguments`) with the field's default and, as its help, the string written under
the field (an attribute docstring, as SAELens and simple_parsing read them). A field in
`defaults` gets that default instead (None: "the command's own choice", which the field's
docstring should then say). Fields without a default become required options.
"""

import ast
import dataclasses
import inspect
import textwrap
import typing
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any

import typer

_UNSET: Any = object()


@cache
def field_help(config_cls: type) -> dict[str, str]:
    """field name -> the docstring written right under it in the class body."""
    body = ast.parse(textwrap.dedent(inspect.getsource(config_cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    helps = {}
    for node, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            helps[node.target.id] = " ".join(following.value.value.split())
    return helps


def _flag(name: str, boolean: bool) -> str:
    dashed = name.replace("_", "-")
    return f"--{dashed}/--no-{dashed}" if boolean else f"--{dashed}"


def _parameter(
    config_cls: type, field: dataclasses.Field, default: Any, flag: str | None, argument: bool
) -> inspect.Parameter:
    annotation = typing.get_type_hints(config_cls)[field.name]
    if default is _UNSET:
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = inspect.Parameter.empty
    elif default is None:
        annotation = annotation | None
    help_text = field_help(config_cls).get(field.name, "")
    declared = (
        typer.Argument(help=help_text)
        if argument
        else typer.Option(flag or _flag(field.name, annotation is bool), help=help_text)
    )
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, declared],
    )


def config_options(
    config_cls: type,
    *names: str,
    arguments: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> Callable:
    """A decorator giving a Typer command one parameter per named config field (and per field
    in `arguments` or `defaults`); the command receives their values as its first argument,
    `config_values`, a dict of field name -> value."""
    flags, defaults = flags or {}, defaults or {}
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    chosen = list(dict.fromkeys([*arguments, *names, *defaults]))
    unknown = [n for n in [*chosen, *flags] if n not in fields]
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no field {unknown[0]!r}")
    derived = [
        _parameter(config_cls, fields[n], defaults.get(n, _UNSET), flags.get(n), n in arguments)
        for n in chosen
    ]

    def decorate(command: Callable) -> Callable:
        own = list(inspect.signature(command, eval_str=True).parameters.values())
        if not own or own[0].name != "config_values":
            raise TypeError(f"{command.__name__} must take config_values first")

        def run(**values: Any) -> Any:
            config_values = {name: values.pop(name) for name in chosen}
            return command(config_values, **values)

        run.__name__, run.__doc__ = command.__name__, command.__doc__
        # Typer reads the parameters from the signature: the command's own after the config's.
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]]
        run.__signature__ = inspect.Signature([*derived, *rest])  # type: ignore[attr-defined]
        return run

    return decorate
