"""How the unsteered model reads a reply: its loss, and how strongly features fire on it.

    [reading] = read_replies(model, saes, prompt_ids, ["The bridge was red."], [("res1", 946)])
    reading.loss          # mean next-token cross-entropy of the reply's tokens, unsteered
    reading.activations   # per feature: its largest activation over the reply's tokens

A steered reply is judged by the model without the intervention: a loss far above the default
reply's marks the coherence cliff ("Bridge Bridge Bridge" reads as unlikely), and a feature's
activation on the text says whether the words themselves now carry the concept, which a clamp's
own value cannot say.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from app.core.model import LoadedModel
from app.core.sae import Sae


@dataclass(frozen=True)
class ReplyReading:
    loss: float
    activations: tuple[float, ...]


@torch.inference_mode()
def read_replies(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    prompt_ids: Sequence[int],
    replies: Sequence[str],
    features: Sequence[tuple[str, int]] = (),
) -> list[ReplyReading]:
    """One unhooked forward pass per reply over prompt + reply (isolated from any generation's
    steering hooks); an empty reply reads as loss 0 and no activation."""
    cache: dict[str, torch.Tensor] = {}  # site -> the residual at the reply's tokens

    def recorder(site: str):
        def record(x: torch.Tensor) -> None:
            cache[site] = x[0, len(prompt_ids) :]

        return record

    recorders = {site: recorder(site) for site in {saes[name].hook_name for name, _ in features}}
    readings = []
    for reply in replies:
        reply_ids = model.tokenizer(reply, add_special_tokens=False)["input_ids"]
        if not reply_ids:
            readings.append(ReplyReading(0.0, tuple(0.0 for _ in features)))
            continue
        ids = torch.tensor([[*prompt_ids, *reply_ids]], device=model.device)
        with model.isolated(), model.hooked(recorders):
            logits = model.hf(input_ids=ids, use_cache=False).logits[0].float()
        loss = torch.nn.functional.cross_entropy(
            logits[len(prompt_ids) - 1 : -1], ids[0, len(prompt_ids) :]
        )
        peaks = []
        for name, index in features:
            sae = saes[name]
            x = cache[sae.hook_name].to(sae.device)
            peaks.append(float(sae.feature_activations(x, torch.tensor([index])).max()))
        readings.append(ReplyReading(float(loss), tuple(peaks)))
    return readings
