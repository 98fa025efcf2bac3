"""Which features fire on a text: per token and overall, for every loaded SAE.

    result = inspect(model, saes, "The Golden Gate Bridge is red.", top_k=10)
    result.saes["res6"].overall      # [(feature, value), ...] best first, BOS excluded
    result.saes["res6"].per_token[3] # top features at token 3

One forward pass reads every SAE's site (stopping after the deepest one).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from app.core.errors import MonoscopeError
from app.core.model import LoadedModel, decode_text
from app.core.sae import Sae

Reduce = Literal["max", "sum"]


@dataclass(frozen=True)
class FeatureHit:
    index: int
    value: float


@dataclass(frozen=True)
class SaeInspection:
    per_token: list[list[FeatureHit]]  # [position][rank]
    overall: list[FeatureHit]
    activations: torch.Tensor  # (pos, d_sae) on CPU, for callers that need more than top-k


@dataclass(frozen=True)
class Inspection:
    token_ids: list[int]
    tokens: list[str]
    excluded_positions: list[int]  # left out of the overall ranking (BOS)
    saes: dict[str, SaeInspection]


def _top(values: torch.Tensor, k: int) -> list[FeatureHit]:
    """The k largest positive entries of a 1-D tensor."""
    top = values.topk(min(k, values.numel()))
    return [
        FeatureHit(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True) if v > 0
    ]


@torch.inference_mode()
def inspect(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    text: str,
    top_k: int = 10,
    reduce: Reduce = "max",
    exclude_bos: bool = True,
    max_tokens: int = 1024,
) -> Inspection:
    """Top features per token and over the whole text, for each SAE."""
    if reduce not in ("max", "sum"):
        raise MonoscopeError(f"unknown reduction {reduce!r}; use max or sum")
    if not saes:
        raise MonoscopeError("no SAE is loaded")
    token_ids = model.tokenizer(text)["input_ids"]
    if not token_ids:
        raise MonoscopeError("the text is empty")
    model.check_length(len(token_ids), max_tokens)
    ids = torch.tensor([token_ids])
    acts = model.capture(ids, sorted({sae.hook_name for sae in saes.values()}))
    bos = model.tokenizer.bos_token_id
    excluded = [0] if exclude_bos and bos is not None and token_ids[0] == bos else []
    keep = torch.ones(len(token_ids), dtype=torch.bool)
    keep[excluded] = False

    inspections = {}
    for name, sae in saes.items():
        site = model.site(sae.hook_name).name
        features = sae.encode(acts[site][0]).float().cpu()  # (pos, d_sae)
        kept = features[keep] if keep.any() else features
        summary = kept.amax(dim=0) if reduce == "max" else kept.sum(dim=0)
        inspections[name] = SaeInspection(
            per_token=[_top(row, top_k) for row in features],
            overall=_top(summary, top_k),
            activations=features,
        )
    tokens = [decode_text(model.tokenizer, [t]) for t in token_ids]
    return Inspection(token_ids, tokens, excluded, inspections)
