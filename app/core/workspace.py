"""The resident model and its SAEs, as the server and CLI hold them.

ws = Workspace.load("gpt2", ["saes/res6", "hf://org/repo/layers.6"], device="auto")
ws.model, ws.saes["res6"]
ws = Workspace.load("gpt2", [], transcoders="transcoders/gpt2")   # a set, for attribution graphs
ws.transcoders                                                    # [(name, Sae)], layer 0 first

A transcoder set is held apart from the SAEs: it serves attribution graphs only, and the pages
that read or steer every loaded SAE (inspect, contrast, the steering picker) leave it alone.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.core.model import LoadedModel, load_model
from app.core.names import checked_name, url_name
from app.core.sae import Sae, load_sae
from app.core.sae.constants import GEMMA_SCOPE_PARAMS
from app.core.sae.formats import transcoder_set_paths


def sae_name(spec: str, chosen: str | None = None) -> str:
    """The name an SAE is known by: `chosen` when somebody gave one (refused unless it is one safe
    URL segment), else a short, URL-safe name from its path: its folder name."""
    if chosen:
        return checked_name(chosen)
    path = Path(spec.removeprefix("hf://").rstrip("/"))
    if path.name == GEMMA_SCOPE_PARAMS:
        path = path.parent
    return url_name(path.name, "sae")


@dataclass
class Workspace:
    model: LoadedModel
    saes: dict[str, Sae] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # SAE name -> the path it came from
    transcoders: list[tuple[str, Sae]] = field(default_factory=list)  # a set, layer 0 first

    @classmethod
    def load(
        cls,
        model: str,
        saes: Sequence[str] = (),
        device: str = "auto",
        transcoders: str | None = None,
    ) -> "Workspace":
        workspace = cls(load_model(model, device=device))
        for spec in saes:
            workspace.add_sae(spec)
        if transcoders:
            workspace.load_transcoders(transcoders)
        return workspace

    def load_transcoders(self, folder: str) -> None:
        """A set of one transcoder per layer (load_transcoder_set's formats), each named as
        `monoscope harvest --sae` would name its path, so harvested ones link to their pages."""
        self.transcoders = [
            (sae_name(str(path)), self.model.attach(load_sae(str(path)), source=str(path)))
            for path in transcoder_set_paths(folder)
        ]

    def add_sae(self, spec: str, name: str | None = None) -> str:
        """Load, check and attach an SAE; returns the name it is known by."""
        base = sae_name(spec, name)
        name, n = base, 2
        while name in self.saes:
            name, n = f"{base}-{n}", n + 1
        self.saes[name] = self.model.attach(load_sae(spec), source=spec)
        self.sources[name] = spec
        return name
