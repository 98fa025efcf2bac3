"""/inspect: which features a next-token prediction depends on, beside which are loudest.

The page and /api/v1/inspect share `run_inspection`: attribution (gradient × activation for every
feature, exact ablation for the top ones), when asked the predictions with a set of features zeroed
at once, and, when an SAE at an earlier site is loaded, the chain: which of its features drive the
load-bearing ones.
"""

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.attribution import (
    Attribution,
    ChainLink,
    FeatureEffect,
    ablate,
    attribute,
    trace_chain,
)
from app.core.errors import MonoscopeError
from app.core.generation import chat_prompt_ids
from app.core.model import decode_text
from app.core.serving import ModelOwner
from app.db.queries import find_sae, labels_of
from app.web.deps import InferenceDep, SessionDep, TemplatesDep, WorkspaceDep
from app.web.resident import (
    MAX_TEXT_CHARS,
    MAX_TEXT_TOKENS,
    check_text,
    loaded_sae,
    require_loaded,
    run_on_model,
)

router = APIRouter()
MAX_EXACT = 64
MAX_ABLATE = 64
MAX_CHAIN = 10


@dataclass(frozen=True)
class Inspected:
    model: str
    sae: str
    prompt: str  # the text the model read (a chat is rendered with its template)
    found: Attribution
    labels: dict[int, str | None]
    ablated: list[int]
    after_ablation: list[tuple[int, str, float]]  # top predictions with `ablated` zeroed
    target_after: float | None  # the target's probability with `ablated` zeroed
    chain_sae: str | None  # the earlier SAE the chain runs back to
    chain: list[ChainLink]
    chain_labels: dict[int, str | None]


def earlier_saes(workspace, sae: str) -> list[str]:
    """Loaded SAEs that write before `sae` reads, nearest first: the ones a chain can run back
    to (a transcoder writes at its MLP's output, later than it reads)."""
    model, site = workspace.model, workspace.model.site(workspace.saes[sae].hook_name)

    def writes(name: str) -> tuple[int, int]:
        return model.site(workspace.saes[name].hook_name_out).depth

    before = [n for n in workspace.saes if writes(n) < site.depth]
    return sorted(before, key=writes, reverse=True)


def default_sae(workspace) -> str:
    """The SAE nearest the output: its load-bearing features are the ones a chain starts from."""
    model = workspace.model
    return max(sorted(workspace.saes), key=lambda n: model.site(workspace.saes[n].hook_name).depth)


def _target_id(tokenizer, target: str | None) -> int | None:
    if target is None or target == "":
        return None
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise MonoscopeError(
            f"The target {target!r} is {len(ids)} tokens; give one token "
            "(a leading space usually matters)."
        )
    return ids[0]


def run_inspection(
    session: Session,
    workspace,
    inference: ModelOwner | None,
    text: str,
    sae: str | None,
    target: str | None,
    mode: str,
    top_k: int,
    exact: int,
    zeroed: list[int],
    chain_from: str | None = None,
    chain: int = 0,
) -> Inspected:
    workspace = require_loaded(workspace, "inspect with")
    loaded = loaded_sae(workspace, sae or default_sae(workspace), "inspect with")
    model, sae, found_sae = loaded.model, loaded.sae_name, loaded.sae
    check_text(text, "Type a prompt to inspect.")
    if any(not 0 <= i < found_sae.d_sae for i in zeroed) or len(zeroed) > MAX_ABLATE:
        raise MonoscopeError(
            f"Ablate at most {MAX_ABLATE} features, each 0 to {found_sae.d_sae - 1}."
        )
    prompt = text
    if mode == "chat":
        ids, _ = chat_prompt_ids(model.tokenizer, [{"role": "user", "content": text}])
        prompt = decode_text(model.tokenizer, ids, skip_special_tokens=True)
    target_id = _target_id(model.tokenizer, target)
    chain_sae = _chain_sae(workspace, sae, chain_from) if chain else None

    def compute():  # on the inference worker, the model's one owner
        found = attribute(
            model,
            found_sae,
            prompt,
            target=target_id,
            top_k=top_k,
            exact=exact,
            max_tokens=MAX_TEXT_TOKENS,
        )
        after, target_after = [], None
        if zeroed:
            probs = torch.softmax(ablate(model, found_sae, found.token_ids, [zeroed])[0], -1)
            decode = model.tokenizer.decode
            after = [
                (int(t), decode([int(t)]), float(p)) for p, t in zip(*probs.topk(10), strict=True)
            ]
            target_after = float(probs[found.target])
        links = []
        if chain_sae and chain:
            chosen = [e.index for e in found.by_attribution[:chain]]
            links = trace_chain(
                model, workspace.saes[chain_sae], found_sae, found.token_ids, found.target, chosen
            )
        return found, after, target_after, links

    found, after, target_after, links = run_on_model(inference, compute)
    shown = {e.index for e in found.by_activation + found.by_attribution} | set(zeroed)
    sources = {s.index for link in links for s in link.earlier + link.local}
    return Inspected(
        model.name,
        sae,
        prompt,
        found,
        _labels(session, model.name, sae, shown),
        sorted(set(zeroed)),
        after,
        target_after,
        chain_sae,
        links,
        _labels(session, model.name, chain_sae, sources),
    )


def _labels(session: Session, model: str, sae: str | None, indices: set[int]) -> dict:
    sae_row = find_sae(session, model, sae) if sae and indices else None
    if sae_row is None:
        return {}
    return {f.index: f.label for f in labels_of(session, sae_row.id, sorted(indices))}


def _chain_sae(workspace, sae: str, chain_from: str | None) -> str | None:
    earlier = earlier_saes(workspace, sae)
    if chain_from is None:
        return earlier[0] if earlier else None
    if chain_from not in earlier:
        where = ", ".join(earlier) or "none is loaded"
        raise MonoscopeError(
            f"A chain runs back from {sae} to an SAE at an earlier site "
            f"({where}), not to {chain_from!r}."
        )
    return chain_from


def _parse_ablate(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MonoscopeError(
            f"ablate must be feature indices separated by commas, not {text!r}."
        ) from None


@router.get("/inspect", response_class=HTMLResponse, name="inspect_page")
def inspect_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    text: Annotated[str, Query(max_length=20_000)] = "",
    sae: str = "",
    target: Annotated[str, Query(max_length=200)] = "",
    mode: Literal["text", "chat"] = "text",
    exact: Annotated[int, Query(ge=0, le=MAX_EXACT)] = 32,
    ablate: Annotated[str, Query(max_length=2_000)] = "",
    chain: Annotated[int, Query(ge=0, le=MAX_CHAIN)] = 5,
):
    loaded = sorted(workspace.saes) if workspace else []
    context = {
        "text": text,
        "sae": sae or (default_sae(workspace) if loaded else ""),
        "target": target,
        "mode": mode,
        "exact": exact,
        "chain": chain,
        "loaded": loaded,
        "result": None,
        "model": workspace.model.name if workspace else None,
    }
    if text:
        context["result"] = run_inspection(
            session,
            workspace,
            inference,
            text,
            sae or None,
            target,
            mode,
            20,
            exact,
            _parse_ablate(ablate),
            chain=chain,
        )
    return templates.TemplateResponse(request, "inspect/index.html", context)


class InspectIn(BaseModel):
    text: str = Field(max_length=MAX_TEXT_CHARS)
    sae: str | None = None
    target: str | None = Field(None, max_length=200, description="one token; default: top")
    mode: Literal["text", "chat"] = "text"
    top_k: int = Field(20, ge=1, le=200)
    exact: int = Field(32, ge=0, le=MAX_EXACT)
    ablate: list[int] = Field(
        default_factory=list, max_length=MAX_ABLATE, description="features to zero together"
    )
    chain: int = Field(
        5, ge=0, le=MAX_CHAIN, description="load-bearing features to trace to an earlier SAE"
    )
    chain_from: str | None = Field(None, description="that SAE; default: the nearest earlier one")


class EffectOut(BaseModel):
    index: int
    label: str | None
    activation: float
    attribution: float
    activation_rank: int
    attribution_rank: int
    delta_logit: float | None
    delta_prob: float | None


class PredictionOut(BaseModel):
    token_id: int
    token: str
    prob: float


class ChainSourceOut(BaseModel):
    index: int
    label: str | None
    position: int
    token: str
    activation: float
    effect: float = Field(description="activation × gradient of the later feature")
    exact: float = Field(description="the later feature's change with this source zeroed")


class ChainLinkOut(BaseModel):
    index: int
    label: str | None
    position: int
    token: str
    activation: float
    attribution: float
    earlier: list[ChainSourceOut] = Field(description="strongest sources at earlier positions")
    local: list[ChainSourceOut] = Field(description="strongest sources at its own position")


class InspectOut(BaseModel):
    model: str
    sae: str
    tokens: list[str]
    target: PredictionOut
    predictions: list[PredictionOut]
    by_activation: list[EffectOut]
    by_attribution: list[EffectOut]
    ablated: list[int]
    after_ablation: list[PredictionOut]
    target_prob_after_ablation: float | None
    chain_sae: str | None
    chain: list[ChainLinkOut]


@router.post("/api/v1/inspect", response_model=InspectOut, tags=["api"])
def api_inspect(
    body: InspectIn, session: SessionDep, workspace: WorkspaceDep, inference: InferenceDep
) -> InspectOut:
    """Features ranked by activation and by attribution to the target's logit, with exact
    ablation effects for the top `exact`, and predictions with `ablate` zeroed together."""
    found = run_inspection(
        session,
        workspace,
        inference,
        body.text,
        body.sae,
        body.target,
        body.mode,
        body.top_k,
        body.exact,
        body.ablate,
        body.chain_from,
        body.chain,
    )
    a = found.found

    def sources(items) -> list[ChainSourceOut]:
        return [
            ChainSourceOut(
                label=found.chain_labels.get(s.index), token=a.tokens[s.position], **s.__dict__
            )
            for s in items
        ]

    chain = [
        ChainLinkOut(
            index=link.index,
            label=found.labels.get(link.index),
            position=link.position,
            token=a.tokens[link.position],
            activation=link.activation,
            attribution=link.attribution,
            earlier=sources(link.earlier),
            local=sources(link.local),
        )
        for link in found.chain
    ]

    def out(e: FeatureEffect) -> EffectOut:
        return EffectOut(label=found.labels.get(e.index), **e.__dict__)

    def predictions(items) -> list[PredictionOut]:
        return [PredictionOut(token_id=t, token=s, prob=p) for t, s, p in items]

    return InspectOut(
        model=found.model,
        sae=found.sae,
        tokens=a.tokens,
        target=PredictionOut(token_id=a.target, token=a.target_text, prob=a.prob),
        predictions=predictions(a.predictions),
        by_activation=[out(e) for e in a.by_activation],
        by_attribution=[out(e) for e in a.by_attribution],
        ablated=found.ablated,
        after_ablation=predictions(found.after_ablation),
        target_prob_after_ablation=found.target_after,
        chain_sae=found.chain_sae,
        chain=chain,
    )
