"""Hook site names, TransformerLens style, so that public SAE configs load as they are.

    parse_site("blocks.6.hook_resid_post")  -> Site(layer=6, kind="resid_post")
    parse_site("layers.6")                   -> the same site (EleutherAI sparsify name)
    parse_site("layers.6.mlp")               -> Site(layer=6, kind="mlp_out")
    parse_site("blocks.6.ln2.hook_normalized") -> Site(layer=6, kind="mlp_in")

The canonical name (`Site.name`) is what configs, database rows and URLs use.

`mlp_in` is what the MLP module itself receives, after the block's pre-MLP norm: the site every
published transcoder reads. Their files name it three ways, all read here as that one site:
TransformerLens's `ln2.hook_normalized` (Gemma Scope and SAELens transcoders), circuit-tracer's
`mlp.hook_in` (its per-layer sets) and `hook_mlp_in` (Gemma Scope 2, whose config says it hooks
`pre_feedforward_layernorm.output`). TransformerLens's own `hook_mlp_in` is the residual before
the norm; no transcoder we know of reads that.
"""

import re
from dataclasses import dataclass
from typing import Literal

from app.core.errors import SiteError

SiteKind = Literal["resid_pre", "resid_post", "mlp_in", "mlp_out", "attn_out"]

_FORWARD_ORDER = ("resid_pre", "attn_out", "mlp_in", "mlp_out", "resid_post")
_TL_NAME = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_in|mlp_out|attn_out)$")
_MLP_IN_ALIASES = re.compile(r"^blocks\.(\d+)\.(ln2\.hook_normalized|mlp\.hook_in)$")
_SPARSIFY_NAME = re.compile(r"^layers\.(\d+)(\.mlp)?$")
SUPPORTED_SITE_FORMS = (
    "blocks.{L}.hook_resid_pre, blocks.{L}.hook_resid_post, blocks.{L}.hook_mlp_in "
    "(or ln2.hook_normalized, mlp.hook_in), blocks.{L}.hook_mlp_out, blocks.{L}.hook_attn_out "
    "(sparsify: layers.{L}, layers.{L}.mlp)"
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
    def transformer_lens_name(self) -> str:
        """The name TransformerLens gives this site (its `hook_mlp_in` is before the norm)."""
        if self.kind == "mlp_in":
            return f"blocks.{self.layer}.ln2.hook_normalized"
        return self.name

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
    match = _MLP_IN_ALIASES.match(name.strip())
    if match:
        return Site(int(match.group(1)), "mlp_in")
    match = _SPARSIFY_NAME.match(name.strip())
    if match:
        return Site(int(match.group(1)), "mlp_out" if match.group(2) else "resid_post")
    raise SiteError(f"unknown hook site {name!r}; supported forms: {SUPPORTED_SITE_FORMS}")
