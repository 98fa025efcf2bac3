"""Contrast two sets of texts: the features whose peak activations differ most between them.

Page: /contrast?a=...&b=... (one text per line in each; the URL is the shareable result).
JSON: POST /api/v1/contrast {a: [texts], b: [texts], top}. Each feature comes with its effect
size (Cohen's d, app.core.contrast), label and page, and the page links a steering preset
that clamps the top features of a side at their typical peak on that side's texts.
"""

from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.contrast import ContrastFeature, contrast
from app.core.errors import MonoscopeError
from app.db.steering import max_acts_and_labels
from app.web.auth import limit_generation
from app.web.deps import InferenceDep, SessionDep, TemplatesDep, WorkspaceDep
from app.web.resident import MAX_TEXT_CHARS, MAX_TEXT_TOKENS, require_loaded, run_on_model

router = APIRouter()
MAX_TEXTS = 32  # per set
MAX_TOP = 50
# The page's sets travel in its URL, and uvicorn refuses a request line past 16 KiB (h11).
MAX_PAGE_CHARS = 6_000
STEER_TOP = 3  # features a side's steering preset clamps


@dataclass(frozen=True)
class Contrasted:
    feature: ContrastFeature
    label: str | None


def run_contrast(
    session: Session, workspace, inference, texts_a: list[str], texts_b: list[str], top: int
) -> list[Contrasted]:
    loaded = require_loaded(workspace, "contrast with")
    for side, texts in (("first", texts_a), ("second", texts_b)):
        if len(texts) > MAX_TEXTS:
            raise MonoscopeError(
                f"The {side} set has {len(texts)} texts; the limit is {MAX_TEXTS}."
            )
        if any(len(t) > MAX_TEXT_CHARS for t in texts):
            raise MonoscopeError(f"A text in the {side} set is over {MAX_TEXT_CHARS:,} characters.")
    model, saes = loaded.model, loaded.saes

    def compute() -> list[ContrastFeature]:  # on the inference worker, the model's one owner
        return contrast(model, saes, texts_a, texts_b, top, MAX_TEXT_TOKENS)

    found = run_on_model(inference, compute)
    known = max_acts_and_labels(session, model.name, ((f.sae, f.index) for f in found))
    return [Contrasted(f, known.get((f.sae, f.index), (None, None))[1]) for f in found]


def steer_query(model: str, side: list[Contrasted]) -> str:
    """The steering page's ?f= presets clamping a side's top features at their mean peak on its
    texts (raw units): the activation those texts typically reach."""
    presets = [
        f"{model}/{c.feature.sae}/{c.feature.index}:clamp:{c.feature.mean_a:.4g}:raw"
        if c.feature.effect > 0
        else f"{model}/{c.feature.sae}/{c.feature.index}:clamp:{c.feature.mean_b:.4g}:raw"
        for c in side[:STEER_TOP]
    ]
    return urlencode([("f", preset) for preset in presets])


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@router.get("/contrast", response_class=HTMLResponse, name="contrast_page")
def contrast_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    a: Annotated[str, Query(max_length=MAX_PAGE_CHARS)] = "",
    b: Annotated[str, Query(max_length=MAX_PAGE_CHARS)] = "",
    top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20,
):
    model = workspace.model.name if workspace else None
    context: dict = {"a": a, "b": b, "top": top, "model": model, "found": None}
    context["steer_top"] = STEER_TOP
    if a.strip() or b.strip():
        limit_generation(request)
        found = run_contrast(session, workspace, inference, _lines(a), _lines(b), top)
        more_a = [c for c in found if c.feature.effect > 0]
        more_b = [c for c in found if c.feature.effect < 0]
        context |= {
            "found": found,
            "more_a": more_a,
            "more_b": more_b,
            "steer_a": steer_query(model or "", more_a),
            "steer_b": steer_query(model or "", more_b),
        }
    return templates.TemplateResponse(request, "contrast/index.html", context)


class ContrastIn(BaseModel):
    a: list[str] = Field(min_length=2, max_length=MAX_TEXTS, description="the first set")
    b: list[str] = Field(min_length=2, max_length=MAX_TEXTS, description="the second set")
    top: int = Field(20, ge=1, le=MAX_TOP)


class ContrastFeatureOut(BaseModel):
    sae: str
    index: int
    label: str | None
    effect: float = Field(description="Cohen's d of per-text peak activation, a minus b")
    mean_a: float = Field(description="mean over a's texts of the feature's peak activation")
    mean_b: float
    fires_a: float = Field(description="share of a's texts it fires on")
    fires_b: float


class ContrastOut(BaseModel):
    features: list[ContrastFeatureOut]


@router.post("/api/v1/contrast", response_model=ContrastOut, tags=["api"])
def api_contrast(
    request: Request,
    body: ContrastIn,
    session: SessionDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
) -> ContrastOut:
    """The features of every loaded SAE whose peak activations differ most between two sets of
    texts, largest effect first. Same rate limit as chat."""
    limit_generation(request)
    found = run_contrast(session, workspace, inference, body.a, body.b, body.top)
    return ContrastOut(
        features=[ContrastFeatureOut(label=c.label, **asdict(c.feature)) for c in found]
    )
