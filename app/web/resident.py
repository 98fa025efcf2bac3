"""The model and SAEs this server holds, as pages and the API reach them.

A database may describe SAEs the server has not loaded; pages still show everything stored and
say plainly when a live computation (activations for typed text) needs an SAE that is not here.
"""

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from app.core.errors import MonoscopeError, NotLoadedError
from app.core.inspect import Inspection, Reduce, inspect
from app.core.model import LoadedModel
from app.core.sae import Sae
from app.core.serving import ModelOwner
from app.core.workspace import Workspace

T = TypeVar("T")
MAX_TEXT_TOKENS = 512  # or the model's own window, when that is shorter
MAX_TEXT_CHARS = 8_000


@dataclass(frozen=True)
class Resident:
    model: LoadedModel
    sae_name: str
    sae: Sae


def resident(workspace: Workspace | None, model: str, sae: str) -> Resident | None:
    if workspace is None or workspace.model.name != model or sae not in workspace.saes:
        return None
    return Resident(workspace.model, sae, workspace.saes[sae])


def require_loaded(workspace: Workspace | None, purpose: str) -> Workspace:
    """The workspace, or a 409 saying the server has nothing loaded to `purpose`."""
    if workspace is None or not workspace.saes:
        raise NotLoadedError(f"This server has no model and SAE loaded to {purpose}.")
    return workspace


def loaded_sae(workspace: Workspace | None, sae: str | None, purpose: str) -> Resident:
    """A loaded SAE by name (default: the first), on the loaded model."""
    workspace = require_loaded(workspace, purpose)
    return require_resident(workspace, workspace.model.name, sae or sorted(workspace.saes)[0])


def check_text(text: str, empty: str) -> None:
    """Typed text a page may run: not blank (`empty` says what to do), within the limit."""
    if not text.strip():
        raise MonoscopeError(empty)
    if len(text) > MAX_TEXT_CHARS:
        raise MonoscopeError(
            f"The text is {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}."
        )


def require_resident(workspace: Workspace | None, model: str, sae: str) -> Resident:
    found = resident(workspace, model, sae)
    if found is None:
        raise NotLoadedError(
            f"{model}/{sae} is not loaded on this server, so it cannot read new text"
        )
    return found


def run_text(
    worker: ModelOwner | None,
    found: Resident,
    text: str,
    top_k: int = 10,
    reduce: Reduce = "max",
) -> Inspection:
    """Per-token and overall features of `text`, run by the model's owner (the inference
    worker), with limits a page can state."""
    check_text(text, "Type some text to run through the model.")
    return run_on_model(
        worker,
        lambda: inspect(
            found.model,
            {found.sae_name: found.sae},
            text,
            top_k=top_k,
            reduce=reduce,
            max_tokens=MAX_TEXT_TOKENS,
        ),
    )


def run_on_model(worker: ModelOwner | None, compute: Callable[[], T]) -> T:
    """`compute` run by the inference worker (the model's one owner). Its refusals (the text is
    too long, a bad target) and a full queue reach the app's handlers as they are."""
    if worker is None:
        raise NotLoadedError("This server has no model loaded.")
    return worker.run(compute)


def run_on_model_in_steps(
    worker: ModelOwner | None, steps: Callable[[], Generator[None, None, T]]
) -> T:
    """Long work (a generator function) run by the inference worker a step at a time, chats
    decoding between its steps; errors as run_on_model's."""
    if worker is None:
        raise NotLoadedError("This server has no model loaded.")
    return worker.run_in_steps(steps)
