"""AutoSteer over the API: a description in, a feature and strength that do it out.

POST /api/v1/steer/auto {description, message}: candidates are the loaded features whose labels
match the description (semantic label search) and those that fire on the description but not
on the message (contrast); app.core.autosteer tries each at several strengths and ranks the
fluent ones by how far their replies moved towards the description (MiniLM cosine). The best
comes back as a /steer preset link.
"""

from typing import Annotated
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.core.autosteer import Candidate, autosteer
from app.core.contrast import contrast
from app.core.errors import MonoscopeError
from app.core.generation import chat_prompt_ids
from app.db.steering import max_acts_and_labels
from app.web.auth import limit_generation
from app.web.deps import InferenceDep, LabelIndexDep, SessionDep, SettingsDep, WorkspaceDep
from app.web.resident import MAX_TEXT_TOKENS, require_loaded, run_on_model
from app.web.semantic import ranked_labels

router = APIRouter()
LABEL_CANDIDATES = 3
CONTRAST_CANDIDATES = 2


class AutoIn(BaseModel):
    description: str = Field(
        min_length=1, max_length=200, description="the change wanted, e.g. 'mention the bridge'"
    )
    message: str = Field(min_length=1, max_length=2000, description="a user turn to try it on")
    multiples: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=lambda: [2.0, 4.0, 6.0, 8.0], min_length=1, max_length=5
    )
    seeds: int = Field(2, ge=1, le=3)
    max_new_tokens: int = Field(32, ge=1, le=64)


class TrialOut(BaseModel):
    sae: str
    index: int
    label: str | None
    found_by: str = Field(description="label (search) or contrast (fires on the description)")
    multiple: float = Field(description="clamped at this many times its max activation")
    relevance_gain: float = Field(description="MiniLM cosine to the description, minus default's")
    loss_ratio: float = Field(description="unsteered loss of the replies over the default's")
    fluent: bool
    replies: list[str]


class AutoOut(BaseModel):
    default_replies: list[str]
    trials: list[TrialOut] = Field(description="fluent first, then by relevance gained")
    preset: str | None = Field(description="/steer link with the best fluent trial, if any")


@router.post("/api/v1/steer/auto", response_model=AutoOut, tags=["api"])
def api_autosteer(
    request: Request,
    body: AutoIn,
    session: SessionDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    index: LabelIndexDep,
    settings: SettingsDep,
) -> AutoOut:
    """Search features and strengths for a described change, judged offline (MiniLM similarity
    to the description, unsteered loss for fluency). Same rate limit as chat."""
    limit_generation(request)
    loaded = require_loaded(workspace, "steer")
    model, saes = loaded.model, loaded.saes
    if body.max_new_tokens > settings.steer_max_new_tokens:
        raise MonoscopeError(f"max_new_tokens: the limit is {settings.steer_max_new_tokens}.")
    ranked = ranked_labels(session, index, body.description, model.name, None, 20)
    picked = [(r.hit.sae, r.hit.index) for r in ranked if r.hit.sae in saes]
    picked = list(dict.fromkeys(picked))[:LABEL_CANDIDATES]
    prompt, stops = chat_prompt_ids(model.tokenizer, [{"role": "user", "content": body.message}])
    goal = index.embed([body.description])[0]

    def relevance(texts: list[str]) -> np.ndarray:
        return index.embed(texts) @ goal

    def fired() -> list[tuple[str, int]]:  # on the inference worker
        found = contrast(
            model, saes, [body.description] * 2, [body.message] * 2, 10, MAX_TEXT_TOKENS
        )
        return [(f.sae, f.index) for f in found if f.effect > 0]

    extra = [f for f in run_on_model(inference, fired) if f not in picked]
    chosen = picked + extra[:CONTRAST_CANDIDATES]
    known = max_acts_and_labels(session, model.name, chosen)
    candidates = [
        Candidate(sae, i, known[(sae, i)][0], "label" if (sae, i) in picked else "contrast")
        for sae, i in chosen
        if known.get((sae, i), (0.0,))[0]
    ]
    if not candidates:
        raise MonoscopeError("No stored feature matches the description or fires on it.")

    def search():
        return autosteer(
            model,
            saes,
            candidates,
            prompt,
            stops,
            relevance,
            body.multiples,
            body.seeds,
            body.max_new_tokens,
        )

    defaults, trials = run_on_model(inference, search)
    best = next((t for t in trials if t.fluent and t.relevance_gain > 0), None)
    preset = None
    if best is not None:
        c = best.candidate
        feature = f"{model.name}/{c.sae}/{c.index}:clamp:{best.multiple:g}"
        preset = f"{request.url_for('steer_page')}?{urlencode({'f': feature})}"
    return AutoOut(
        default_replies=list(defaults),
        trials=[
            TrialOut(
                sae=t.candidate.sae,
                index=t.candidate.index,
                label=known[(t.candidate.sae, t.candidate.index)][1],
                found_by=t.candidate.why,
                multiple=t.multiple,
                relevance_gain=t.relevance_gain,
                loss_ratio=t.loss_ratio,
                fluent=t.fluent,
                replies=list(t.replies),
            )
            for t in trials
        ],
        preset=preset,
    )
