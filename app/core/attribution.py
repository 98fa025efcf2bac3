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

`trace_chain` follows a prediction one site further back: for each load-bearing feature at a
later site, which features at an earlier site (at its own or earlier positions) drive it, as
activation × d(later activation)/d(earlier activation) through both error-keeping splices, with
the exact change from zeroing each source at its position beside it. A feature cannot depend on
features of its own site, so a chain needs SAEs at two sites.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from app.core.errors import MonoscopeError
from app.core.model import LoadedModel, SiteEdit, decode_text
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


@dataclass(frozen=True)
class ChainSource:
    index: int  # feature at the earlier site
    position: int
    activation: float
    effect: float  # activation × d(target feature's activation)/d(this activation)
    exact: float  # the target feature's activation with this one zeroed here, minus clean


@dataclass(frozen=True)
class ChainLink:
    index: int  # load-bearing feature at the later site
    position: int  # where its attribution to the target is largest
    activation: float
    attribution: float  # at that position
    earlier: list[ChainSource]  # strongest sources at earlier positions (through attention)
    local: list[ChainSource]  # strongest sources at its own position


def _skip_bos(model: LoadedModel, ids: Sequence[int]) -> int:
    bos = model.tokenizer.bos_token_id
    return 1 if bos is not None and len(ids) > 1 and ids[0] == bos else 0


def _splices(
    model: LoadedModel, sae: Sae, features: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, SiteEdit]:
    """Site edits that write, where the SAE writes, the reconstruction from `features(f)` plus the
    error term (what the site held minus the reconstruction from f), so that features(f) = f
    leaves the forward pass unchanged. f is encoded from the site itself, or for a transcoder
    from what it read earlier in the same pass (the MLP's input), and a transcoder's skip term is
    part of its reconstruction. The error term is a constant: gradients see the replacement."""
    seen: dict[str, torch.Tensor] = {}

    def read(x: torch.Tensor) -> None:
        seen["x"] = x

    def splice(y: torch.Tensor) -> torch.Tensor:
        x = seen.pop("x", y).to(sae.dtype)
        f = sae.encode(x)
        with torch.no_grad():
            error = y.to(sae.dtype) - sae.reconstruct(x, f)
        return (sae.reconstruct(x, features(f)) + error).to(y.dtype)

    edits: dict[str, SiteEdit] = {model.site(sae.hook_name_out).name: splice}
    if sae.is_transcoder:
        edits[model.site(sae.hook_name).name] = read
    return edits


def _leaf(store: dict, key: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Make the feature activations a leaf the gradient reaches, kept in store[key]."""

    def keep(f: torch.Tensor) -> torch.Tensor:
        store[key] = leaf = f.detach().requires_grad_(True)
        return leaf

    return keep


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

            def zero(f: torch.Tensor, mask=mask) -> torch.Tensor:
                kept = f.clone()
                kept[:, start:] = kept[:, start:].masked_fill(mask[:, None, :], 0.0)
                return kept

            with model.hooked(_splices(model, sae, zero)):
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
    model.check_length(len(token_ids), max_tokens, "prompt")
    start = _skip_bos(model, token_ids)
    ids = torch.tensor([token_ids], device=model.device)
    captured: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), model.hooked(_splices(model, sae, _leaf(captured, "f"))):
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
        return FeatureEffect(
            i, float(loudest[i]), float(attributions[i]), act_rank[i], attr_rank[i], *delta
        )

    top = probs.topk(min(10, probs.numel()))

    def decode(ids: list[int]) -> str:
        return decode_text(model.tokenizer, ids)

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


def trace_chain(
    model: LoadedModel,
    earlier: Sae,
    later: Sae,
    token_ids: Sequence[int],
    target: int,
    features: Sequence[int],
    sources: int = 6,
    batch_size: int = 32,
) -> list[ChainLink]:
    """For each of `features` (at the later SAE's site), its strongest sources among the earlier
    SAE's features: at earlier positions, and at its own."""
    # The earlier features must be written before the later ones are read.
    early_site, late_site = model.site(earlier.hook_name_out), model.site(later.hook_name)
    if early_site.depth >= late_site.depth:
        raise MonoscopeError(
            f"a chain runs from an earlier site to a later one; {early_site} is not before "
            f"{late_site}"
        )
    if not token_ids:
        raise MonoscopeError("the prompt is empty")
    start = _skip_bos(model, token_ids)
    ids = torch.tensor([list(token_ids)], device=model.device)
    graph: dict[str, torch.Tensor] = {}

    def keep_later(f: torch.Tensor) -> torch.Tensor:
        # The later features stay in the graph, so they can be differentiated both ways.
        graph["later"] = f
        return f

    splices = _splices(model, earlier, _leaf(graph, "earlier")) | _splices(model, later, keep_later)
    found = []  # (feature, position, activation, attribution, [(p, i, effect)] per group)
    with torch.enable_grad(), model.hooked(splices):
        logit = model.hf(input_ids=ids).logits[0, -1, target].float()
        late, early = graph["later"], graph["earlier"]
        (to_target,) = torch.autograd.grad(logit, late, retain_graph=True)
        per_position = (late.detach() * to_target)[0].float()  # (pos, d_sae)
        per_position[:start] = 0.0
        for index in features:
            q = int(per_position[:, index].abs().argmax())
            (grad,) = torch.autograd.grad(late[0, q, index], early, retain_graph=True)
            effects = (early.detach()[0] * grad[0]).float()  # (pos, d_sae)
            groups = [
                _strongest(effects, start, q, sources),
                _strongest(effects, q, q + 1, sources),
            ]
            activation = float(late[0, q, index].detach())
            found.append((index, q, activation, float(per_position[q, index]), groups))
    early = graph["earlier"].detach()[0]
    runs = [(index, q, p, i) for index, q, _, _, groups in found for g in groups for p, i, _ in g]
    clean = graph["later"].detach()[0]
    deltas = iter(_zero_sources(model, earlier, later, ids, clean, runs, batch_size))
    return [
        ChainLink(
            index,
            q,
            activation,
            attribution,
            *[
                [ChainSource(i, p, float(early[p, i]), effect, next(deltas)) for p, i, effect in g]
                for g in groups
            ],
        )
        for index, q, activation, attribution, groups in found
    ]


def _strongest(
    effects: torch.Tensor, first: int, stop: int, k: int
) -> list[tuple[int, int, float]]:
    """(position, feature, effect) of the k largest |effects| among positions [first, stop)."""
    block = effects[first:stop].flatten()
    if block.numel() == 0:
        return []
    top = block.abs().topk(min(k, block.numel()))
    width = effects.shape[1]
    return [
        (first + int(j) // width, int(j) % width, float(block[j]))
        for v, j in zip(*top, strict=True)
        if v > 0
    ]


def _zero_sources(
    model: LoadedModel,
    earlier: Sae,
    later: Sae,
    ids: torch.Tensor,
    clean: torch.Tensor,  # (pos, d_sae) the later features of the unedited pass
    runs: list[tuple[int, int, int, int]],
    batch_size: int,
) -> list[float]:
    """Exact effects of (later feature, its position, source position, source feature) runs: the
    source zeroed at its position only, both error terms kept; the later feature's change."""
    deltas: list[float] = []
    late_site = model.site(later.hook_name).name
    with torch.inference_mode():
        for first in range(0, len(runs), batch_size):
            chunk = runs[first : first + batch_size]
            rows = torch.arange(len(chunk))
            positions = torch.tensor([p for _, _, p, _ in chunk])
            sources = torch.tensor([i for _, _, _, i in chunk])

            def zero(f: torch.Tensor, rows=rows, positions=positions, sources=sources):
                f = f.clone()
                f[rows, positions, sources] = 0.0
                return f

            # the pass stops at the later site
            with model.hooked(_splices(model, earlier, zero)):
                acts = model.capture(ids.expand(len(chunk), -1), [late_site])[late_site]
            zeroed = later.encode(acts.to(later.dtype))
            for row, (index, q, _, _) in enumerate(chunk):
                deltas.append(float(zeroed[row, q, index] - clean[q, index]))
    return deltas
