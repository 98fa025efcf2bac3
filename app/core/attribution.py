"""Which features a prediction depends on, not only which are loud.

    found = attribute(model, sae, "Mia has a dog. The dog is", top_k=20, exact=32)
    found.target_text, found.prob                  # the predicted next token (or one you chose)
    for e in found.by_attribution: e.index, e.attribution, e.delta_logit, e.activation_rank

Attribution is gradient × activation at the SAE's site: the SAE reconstruction replaces the
site's activation with the error term (x − x̂) added back, so the forward pass is unchanged and
the target logit's gradient with respect to every feature activation is exact. Summed over
positions (BOS excluded) it is a first-order estimate of what zeroing the feature would do. The
exact effect re-runs the prompt with the feature zeroed at every position, error term kept;
`ablate` does many such runs as one batched forward.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from app.core.errors import MonoscopeError
from app.core.model import LoadedModel
from app.core.sae import Sae


@dataclass(frozen=True)
class FeatureEffect:
    index: int
    activation: float  # strongest activation over the prompt (BOS excluded)
    attribution: float  # Σ over positions of activation × d(target logit)/d(activation)
    activation_rank: int  # 1 = loudest
    attribution_rank: int  # 1 = largest |attribution|
    delta_logit: float | None = None  # exact: target logit with the feature zeroed, minus clean
    delta_prob: float | None = None


@dataclass(frozen=True)
class Attribution:
    token_ids: list[int]
    tokens: list[str]
    target: int
    target_text: str
    logit: float
    prob: float
    predictions: list[tuple[int, str, float]]  # the clean top next tokens with probabilities
    by_activation: list[FeatureEffect]
    by_attribution: list[FeatureEffect]


def _skip_bos(model: LoadedModel, ids: Sequence[int]) -> int:
    bos = model.tokenizer.bos_token_id
    return 1 if bos is not None and len(ids) > 1 and ids[0] == bos else 0


def _site(model: LoadedModel, sae: Sae) -> str:
    return model.site(sae.hook_name).name


def ablate(
    model: LoadedModel,
    sae: Sae,
    token_ids: Sequence[int],
    zeroed: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> torch.Tensor:
    """Next-token logits (len(zeroed), vocab) of the prompt re-run once per set of features,
    each set zeroed at every position after BOS, the SAE's error term kept."""
    if not token_ids:
        raise MonoscopeError("the prompt is empty")
    start = _skip_bos(model, token_ids)
    ids = torch.tensor([list(token_ids)], device=model.device)
    out = []
    with torch.inference_mode():
        for first in range(0, len(zeroed), batch_size):
            chunk = zeroed[first : first + batch_size]
            mask = torch.zeros(len(chunk), sae.d_sae, dtype=torch.bool, device=sae.device)
            for row, features in enumerate(chunk):
                mask[row, list(features)] = True

            def edit(x: torch.Tensor, mask=mask) -> torch.Tensor:
                x_sae = x.to(sae.dtype)
                f = sae.encode(x_sae)
                norm = sae.normalize(x_sae)[1]
                error = x_sae - sae.decode(f, norm)
                kept = f.clone()
                kept[:, start:] = kept[:, start:].masked_fill(mask[:, None, :], 0.0)
                return (sae.decode(kept, norm) + error).to(x.dtype)

            with model.hooked({_site(model, sae): edit}):
                logits = model.hf(input_ids=ids.expand(len(chunk), -1)).logits[:, -1, :]
            out.append(logits.float().cpu())
    return torch.cat(out)


def attribute(
    model: LoadedModel,
    sae: Sae,
    text: str,
    target: int | None = None,
    top_k: int = 20,
    exact: int = 32,
    batch_size: int = 32,
    max_tokens: int = 512,
) -> Attribution:
    """Features ranked by activation and by attribution to the target token's logit; the top
    `exact` by attribution also get their exact ablation effect."""
    token_ids = model.tokenizer(text)["input_ids"]
    if not token_ids:
        raise MonoscopeError("the prompt is empty")
    if len(token_ids) > max_tokens:
        raise MonoscopeError(f"the prompt has {len(token_ids)} tokens; the limit is {max_tokens}")
    start = _skip_bos(model, token_ids)
    ids = torch.tensor([token_ids], device=model.device)
    captured: dict[str, torch.Tensor] = {}

    def splice(x: torch.Tensor) -> torch.Tensor:
        # Same values as x, but the gradient reaches each feature activation.
        with torch.no_grad():
            x_sae = x.to(sae.dtype)
            f = sae.encode(x_sae)
            norm = sae.normalize(x_sae)[1]
            error = x_sae - sae.decode(f, norm)
        f = f.detach().requires_grad_(True)
        captured["f"] = f
        return (sae.decode(f, norm) + error).to(x.dtype)

    with torch.enable_grad(), model.hooked({_site(model, sae): splice}):
        logits = model.hf(input_ids=ids).logits[0, -1, :].float()
        probs = torch.softmax(logits.detach(), dim=-1)
        if target is None:
            target = int(probs.argmax())
        if not 0 <= target < logits.shape[-1]:
            raise MonoscopeError(f"target token {target} is outside the vocabulary")
        (grad,) = torch.autograd.grad(logits[target], captured["f"])
    logits = logits.detach()
    f = captured["f"].detach()[0, start:].float()  # (pos, d_sae)
    attributions = (f * grad[0, start:].float()).sum(dim=0).cpu()
    loudest = f.amax(dim=0).cpu() if len(f) else torch.zeros(sae.d_sae)

    active = torch.nonzero(loudest > 0).flatten()
    by_act = active[loudest[active].argsort(descending=True)]
    by_attr = active[attributions[active].abs().argsort(descending=True)]
    act_rank = {int(i): r + 1 for r, i in enumerate(by_act)}
    attr_rank = {int(i): r + 1 for r, i in enumerate(by_attr)}

    exact_ids = [int(i) for i in by_attr[:exact]]
    deltas: dict[int, tuple[float, float]] = {}
    if exact_ids:
        ablated = ablate(model, sae, token_ids, [[i] for i in exact_ids], batch_size)
        clean_logit, clean_prob = float(logits[target]), float(probs[target])
        new_probs = torch.softmax(ablated, dim=-1)[:, target]
        for row, i in enumerate(exact_ids):
            deltas[i] = (
                float(ablated[row, target]) - clean_logit,
                float(new_probs[row]) - clean_prob,
            )

    def effect(i: int) -> FeatureEffect:
        delta = deltas.get(i, (None, None))
        return FeatureEffect(i, float(loudest[i]), float(attributions[i]), act_rank[i],
                             attr_rank[i], *delta)  # fmt: skip

    top = probs.topk(min(10, probs.numel()))
    decode = model.tokenizer.decode
    return Attribution(
        token_ids=list(token_ids),
        tokens=[decode([t]) for t in token_ids],
        target=target,
        target_text=decode([target]),
        logit=float(logits[target]),
        prob=float(probs[target]),
        predictions=[(int(t), decode([int(t)]), float(p)) for p, t in zip(*top, strict=True)],
        by_activation=[effect(int(i)) for i in by_act[:top_k]],
        by_attribution=[effect(int(i)) for i in by_attr[:top_k]],
    )
