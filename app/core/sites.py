"""Hook site names, TransformerLens style, so that public SAE configs load as they are.

    parse_site("blocks.6.hook_resid_post")  -> Site(layer=6, kind="resid_post")
    parse_site("layers.6")                   -> the same site (EleutherAI sparsify name)
    parse_site("layers.6.mlp")               -> Site(layer=6, kind="mlp_out")

The canonical name (`Site.name`) is what configs, database rows and URLs use.
"""

import re
from dataclasses import dataclass
from typing import Literal

from app.core.errors import SiteError

SiteKind = Literal["resid_pre", "resid_post", "mlp_out", "attn_out"]

_FORWARD_ORDER = ("resid_pre", "attn_out", "mlp_out", "resid_post")
_TL_NAME = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|attn_out)$")
_SPARSIFY_NAME = re.compile(r"^layers\.(\d+)(\.mlp)?$")
SUPPORTED_SITE_FORMS = (
    "blocks.{L}.hook_resid_pre, blocks.{L}.hook_resid_post, blocks.{L}.hook_mlp_out, "
    "blocks.{L}.hook_attn_out (sparsify: layers.{L}, layers.{L}.mlp)"
)


@dataclass(frozen=True, order=True)
class Site:
    """A place in the forward pass whose activation can be read or edited."""

    layer: int
    kind: SiteKind

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.kind}"

    @property
    def depth(self) -> tuple[int, int]:
        """Order in the forward pass: a site can only depend on sites of smaller depth."""
        return self.layer, _FORWARD_ORDER.index(self.kind)

    def __str__(self) -> str:
        return self.name


def parse_site(name: str) -> Site:
    """Read a TransformerLens or sparsify site name; anything else is a SiteError."""
    match = _TL_NAME.match(name.strip())
    if match:
        return Site(int(match.group(1)), match.group(2))  # type: ignore[arg-type]
    match = _SPARSIFY_NAME.match(name.strip())
    if match:
        return Site(int(match.group(1)), "mlp_out" if match.group(2) else "resid_post")
    raise SiteError(f"unknown hook site {name!r}; supported forms: {SUPPORTED_SITE_FORMS}")
