"""Contrast: the features whose activations differ most between two sets of texts.

    found = contrast(model, saes, pirate_texts, plain_texts, top=20)
    found[0].sae, found[0].index, found[0].effect   # effect > 0: stronger in the first set

Each text is summarised per feature by its peak activation over the text's tokens (BOS left
out), the number a feature page's examples rank by. A feature's effect is Cohen's d of those
peaks between the sets, with the pooled standard deviation floored at 5% of the feature's
largest peak: sparse features are often exactly 0 on every text of one set and nearly constant
on the other, and an unfloored d would rank them by float noise. With the floor, a feature that
separates the sets perfectly scores at most 20, more the steadier its peak.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from app.core.errors import MonoscopeError
from app.core.model import LoadedModel
from app.core.sae import Sae

SD_FLOOR = 0.05  # of the feature's largest peak over both sets


@dataclass(frozen=True)
class ContrastFeature:
    sae: str
    index: int
    effect: float  # Cohen's d of per-text peaks, first set minus second
    mean_a: float  # mean peak activation over the first set's texts
    mean_b: float
    fires_a: float  # share of the first set's texts on which it fires at all
    fires_b: float


def text_peaks(
    model: LoadedModel, saes: Mapping[str, Sae], texts: Sequence[str], max_tokens: int
) -> dict[str, torch.Tensor]:
    """Per SAE, (texts, d_sae) peak activation of every feature on each text."""
    sites = sorted({sae.hook_name for sae in saes.values()})
    bos = model.tokenizer.bos_token_id
    peaks: dict[str, list[torch.Tensor]] = {name: [] for name in saes}
    for text in texts:
        ids = model.tokenizer(text)["input_ids"]
        model.check_length(len(ids), max_tokens, "text")
        start = 1 if bos is not None and ids and ids[0] == bos and len(ids) > 1 else 0
        if len(ids) <= start:
            raise MonoscopeError("every text needs at least one token")
        acts = model.capture(torch.tensor([ids]), sites)
        for name, sae in saes.items():
            features = sae.encode(acts[model.site(sae.hook_name).name][0, start:])
            peaks[name].append(features.float().amax(dim=0).cpu())
    return {name: torch.stack(rows) for name, rows in peaks.items()}


def effect_sizes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(d_sae,) Cohen's d of (texts, d_sae) peaks `a` against `b`, the pooled SD floored; 0 for
    a feature that fires on neither."""
    pooled = ((a.var(0) + b.var(0)) / 2).sqrt()
    scale = torch.maximum(a.amax(0), b.amax(0))
    sd = torch.maximum(pooled, SD_FLOOR * scale)
    return torch.where(scale > 0, (a.mean(0) - b.mean(0)) / sd.clamp(min=1e-12), 0.0)


@torch.inference_mode()
def contrast(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    top: int = 20,
    max_tokens: int = 512,
) -> list[ContrastFeature]:
    """The `top` features over every loaded SAE by |effect|, largest first."""
    if len(texts_a) < 2 or len(texts_b) < 2:
        raise MonoscopeError("Give at least two texts in each set: one text has no spread.")
    if not saes:
        raise MonoscopeError("no SAE is loaded")
    a, b = (
        text_peaks(model, saes, texts_a, max_tokens),
        text_peaks(model, saes, texts_b, max_tokens),
    )
    found = []
    for name in saes:
        mean_a, mean_b = a[name].mean(0), b[name].mean(0)
        effect = effect_sizes(a[name], b[name])
        fires_a, fires_b = (a[name] > 0).float().mean(0), (b[name] > 0).float().mean(0)
        for index in effect.abs().argsort(descending=True)[:top].tolist():
            if effect[index] == 0:
                break
            found.append(
                ContrastFeature(
                    name,
                    index,
                    float(effect[index]),
                    float(mean_a[index]),
                    float(mean_b[index]),
                    float(fires_a[index]),
                    float(fires_b[index]),
                )
            )
    return sorted(found, key=lambda f: -abs(f.effect))[:top]
