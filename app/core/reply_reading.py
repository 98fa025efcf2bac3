"""How a model reads a reply: its loss and features unsteered, and each token's probabilities.

    [reading] = read_replies(model, saes, prompt_ids, ["The bridge was red."], [("res1", 946)])
    reading.loss          # mean next-token cross-entropy of the reply's tokens, unsteered
    reading.activations   # per feature: its largest activation over the reply's tokens
    choices = token_logprobs(model, saes, prompt_ids, reply, edits, None)  # a steered reply
    choices[0].logprob, choices[0].other_logprob, choices[0].top   # steered, unsteered, top 5

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
from app.core.steering import BatchSteerer, FeatureEdit


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


@dataclass(frozen=True)
class TokenChoice:
    """One token of a reply, as the model that wrote it and the other side's model saw it."""

    token: str
    logprob: float  # under the writing side's model (the steered side: with its edits)
    other_logprob: float  # under the other side's model
    top: tuple[tuple[str, float], ...]  # the writing side's most likely tokens here


def _reply_log_probs(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    ids: torch.Tensor,  # (1, pos): prompt + reply
    prompt_length: int,
    edits: Sequence[FeatureEdit] | None,
) -> torch.Tensor:
    """(reply tokens, vocab) log-probabilities of each reply token's position, teacher-forced."""
    steerer = BatchSteerer(saes, [edits], [prompt_length], model.tokenizer.bos_token_id)
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    steerer.set_step(positions, torch.ones_like(ids, dtype=torch.bool), ids)
    with model.isolated(), model.hooked(steerer.site_edits()):
        logits = model.hf(input_ids=ids, use_cache=False).logits[0].float()
    return torch.log_softmax(logits[prompt_length - 1 : -1], dim=-1)


@torch.inference_mode()
def token_logprobs(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    prompt_ids: Sequence[int],
    reply: str,
    edits: Sequence[FeatureEdit] | None,
    other_edits: Sequence[FeatureEdit] | None,
    top: int = 5,
) -> list[TokenChoice]:
    """Per token of `reply`: its log-probability with `edits` (the side that wrote it) and with
    `other_edits`, and the `top` likeliest tokens with `edits`. These are the model's own
    probabilities, before temperature, top-p and penalties reshape them for sampling."""
    reply_ids = model.tokenizer(reply, add_special_tokens=False)["input_ids"]
    if not reply_ids:
        return []
    ids = torch.tensor([[*prompt_ids, *reply_ids]], device=model.device)
    own = _reply_log_probs(model, saes, ids, len(prompt_ids), edits)
    other = _reply_log_probs(model, saes, ids, len(prompt_ids), other_edits)
    chosen = ids[0, len(prompt_ids) :, None]
    own_chosen, other_chosen = own.gather(1, chosen)[:, 0], other.gather(1, chosen)[:, 0]
    best, best_ids = own.topk(min(top, own.shape[-1]), dim=-1)

    def decode(token: int) -> str:
        return str(model.tokenizer.decode([token]))

    return [
        TokenChoice(
            decode(token),
            float(own_chosen[i]),
            float(other_chosen[i]),
            tuple(
                (decode(t), p) for t, p in zip(best_ids[i].tolist(), best[i].tolist(), strict=True)
            ),
        )
        for i, token in enumerate(reply_ids)
    ]
