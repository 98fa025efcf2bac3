"""The resident model and its SAEs, as the server and CLI hold them.

ws = Workspace.load("gpt2", ["saes/res6", "hf://org/repo/layers.6"], device="auto")
ws.model, ws.saes["res6"]
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.core.model import LoadedModel, load_model
from app.core.names import checked_name, url_name
from app.core.sae import Sae, load_sae
from app.core.sae.constants import GEMMA_SCOPE_PARAMS


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

    @classmethod
    def load(cls, model: str, saes: Sequence[str] = (), device: str = "auto") -> "Workspace":
        workspace = cls(load_model(model, device=device))
        for spec in saes:
            workspace.add_sae(spec)
        return workspace

    def add_sae(self, spec: str, name: str | None = None) -> str:
        """Load, check and attach an SAE; returns the name it is known by."""
        base = sae_name(spec, name)
        name, n = base, 2
        while name in self.saes:
            name, n = f"{base}-{n}", n + 1
        self.saes[name] = self.model.attach(load_sae(spec), source=spec)
        self.sources[name] = spec
        return name
