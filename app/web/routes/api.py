"""The JSON API, /api/v1: the same queries as the pages, as stable, documented shapes."""

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from app.db.queries import ExampleView, feature_view, find_sae, list_saes
from app.web.deps import FeatureIndex, InferenceDep, SessionDep, VocabularyDep, WorkspaceDep
from app.web.markup import TokenTexts
from app.web.resident import loaded_sae, run_text
from app.web.routes.features import TableQuery, _sae_or_404, format_cursor, table_page
from app.web.routes.search import label_search, read_text

router = APIRouter(prefix="/api/v1", tags=["api"])


class SaeOut(BaseModel):
    model: str
    name: str
    site: str
    architecture: str
    d_in: int
    d_sae: int
    metrics: dict = Field(description="L0, variance explained, CE loss recovered, dead fraction...")
    features: int | None = Field(None, description="features stored for this SAE")
    labelled: int | None = None
    scored: int | None = None
    url: str


class FeatureRowOut(BaseModel):
    index: int
    label: str | None
    label_score: float | None
    density: float
    max_act: float
    mean_act: float
    url: str


class FeatureListOut(BaseModel):
    features: list[FeatureRowOut]
    next_cursor: str | None = Field(description="pass as `after` for the next page")


class LabelOut(BaseModel):
    id: int
    text: str
    method: str
    explainer_model: str | None
    author: str | None
    status: str
    error: str | None
    verdict: str | None = Field(description="a person's review: verified, wrong or null")
    retired: bool
    scores: dict


class ExampleOut(BaseModel):
    rank: int
    interval: int | None
    max_act: float
    tokens: list[str]
    activations: list[float]


class FeatureOut(BaseModel):
    model: str
    sae: str
    index: int
    label: str | None
    density: float
    max_act: float
    mean_act: float
    labels: list[LabelOut] = Field(description="best first")
    top_examples: list[ExampleOut]
    interval_examples: list[ExampleOut]
    histogram: dict = Field(description="counts over the SAE's log10 activation edges")
    histogram_log10_edges: list[float]
    top_logits: list[tuple[int, str, float]]
    bottom_logits: list[tuple[int, str, float]]
    neighbours: list[dict]
    url: str


class SearchHitOut(BaseModel):
    model: str
    sae: str
    index: int
    label: str
    method: str
    scores: dict
    density: float
    max_act: float
    rank: float
    snippet: str | None = Field(description="text around the feature's strongest activation")
    url: str


class ActivationsIn(BaseModel):
    text: str = Field(max_length=8_000)
    sae: str | None = Field(None, description="a loaded SAE (default: the first)")
    top_k: int = Field(10, ge=1, le=100)
    reduce: Literal["max", "sum"] = "max"


class TokenFeatureOut(BaseModel):
    index: int
    value: float
    label: str | None


class ActivationsOut(BaseModel):
    model: str
    sae: str
    tokens: list[str]
    excluded_positions: list[int] = Field(description="left out of `overall` (BOS)")
    overall: list[TokenFeatureOut]
    per_token: list[list[TokenFeatureOut]]


def _feature_url(request: Request, model: str, sae: str, index: int) -> str:
    return str(request.url_for("feature_page", model=model, sae=sae, index=str(index)))


@router.get("/saes", response_model=list[SaeOut])
def api_saes(request: Request, session: SessionDep) -> list[SaeOut]:
    return [
        SaeOut(
            model=s.model.name,
            name=s.name,
            site=s.site,
            architecture=s.architecture,
            d_in=s.d_in,
            d_sae=s.d_sae,
            metrics=s.metrics,
            features=s.summary.get("features"),
            labelled=s.summary.get("labelled"),
            scored=s.summary.get("scored"),
            url=str(request.url_for("sae_page", model=s.model.name, sae=s.name)),
        )
        for s in list_saes(session)
    ]


@router.get("/saes/{model}/{sae}/features", response_model=FeatureListOut)
def api_features(
    request: Request,
    model: str,
    sae: str,
    session: SessionDep,
    query: Annotated[TableQuery, Query()],
    after: str | None = None,
) -> FeatureListOut:
    _, page = table_page(session, model, sae, query, after)
    return FeatureListOut(
        features=[
            FeatureRowOut(
                index=f.index,
                label=f.label,
                label_score=f.label_score,
                density=f.density,
                max_act=f.max_act,
                mean_act=f.mean_act,
                url=_feature_url(request, model, sae, f.index),
            )
            for f in page.features
        ],
        next_cursor=format_cursor(page.next_key, query.sort),
    )


def _example_out(e: ExampleView, texts: TokenTexts) -> ExampleOut:
    return ExampleOut(
        rank=e.rank, interval=e.interval, max_act=e.max_act,
        tokens=[texts.raw_at(t) for t in e.token_ids.tolist()],
        activations=[round(float(a), 4) for a in e.activations],
    )  # fmt: skip


@router.get("/features/{model}/{sae}/{index}", response_model=FeatureOut)
def api_feature(
    request: Request, model: str, sae: str, index: FeatureIndex, session: SessionDep,
    vocabularies: VocabularyDep,
) -> FeatureOut:  # fmt: skip
    view = feature_view(session, model, sae, index)
    if view is None:
        _sae_or_404(session, model, sae)
        raise HTTPException(404, f"{model}/{sae} has no feature {index}.")
    d = view.detail
    vocab = vocabularies.get(session, d.model)
    f = d.feature
    return FeatureOut(
        model=model, sae=sae, index=f.index, label=f.label, density=f.density, max_act=f.max_act,
        mean_act=f.mean_act,
        labels=[
            LabelOut(id=e.id, text=e.text, method=e.method, explainer_model=e.explainer_model,
                     author=e.author, status=e.status, error=e.error, verdict=e.verdict,
                     retired=e.retired_at is not None, scores=e.scores or {})
            for e in d.explanations
        ],
        top_examples=[_example_out(e, vocab) for e in d.of_kind("top")],
        interval_examples=[_example_out(e, vocab) for e in d.of_kind("quantile")],
        histogram=f.histogram or {},
        histogram_log10_edges=d.sae.harvest.get("histogram_log10_edges", []),
        top_logits=[tuple(x) for x in f.top_logits],
        bottom_logits=[tuple(x) for x in f.bottom_logits],
        neighbours=[
            {"index": n.index, "cosine": n.cosine, "label": n.label} for n in view.neighbours
        ],
        url=_feature_url(request, model, sae, f.index),
    )  # fmt: skip


@router.get("/search", response_model=list[SearchHitOut])
def api_search(
    request: Request,
    session: SessionDep,
    vocabularies: VocabularyDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    model: str = "",
    sae: str = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> list[SearchHitOut]:
    return [
        SearchHitOut(
            model=r.hit.model,
            sae=r.hit.sae,
            index=r.hit.index,
            label=r.hit.text,
            method=r.hit.method,
            scores=r.hit.scores or {},
            density=r.hit.density,
            max_act=r.hit.max_act,
            rank=r.hit.rank,
            snippet=r.snippet.text if r.snippet else None,
            url=_feature_url(request, r.hit.model, r.hit.sae, r.hit.index),
        )
        for r in label_search(session, vocabularies, q, model, sae, page)
    ]


@router.post("/activations", response_model=ActivationsOut)
def api_activations(
    body: ActivationsIn, session: SessionDep, workspace: WorkspaceDep, inference: InferenceDep
) -> ActivationsOut:
    """Which features fire on a text: per token and overall (BOS excluded from overall)."""
    found = loaded_sae(workspace, body.sae, "read text with")
    model, sae = found.model.name, found.sae_name
    inspection = run_text(inference, found, body.text, top_k=body.top_k, reduce=body.reduce)
    sae_row = find_sae(session, model, sae)  # not harvested yet: features come without labels
    reading = read_text(session, sae_row.id if sae_row else None, inspection, sae)

    def out(line) -> TokenFeatureOut:
        return TokenFeatureOut(index=line.index, value=round(line.value, 4), label=line.label)

    return ActivationsOut(
        model=model, sae=sae, tokens=inspection.tokens,
        excluded_positions=inspection.excluded_positions,
        overall=[out(x) for x in reading.overall],
        per_token=[[out(x) for x in row] for row in reading.per_token],
    )  # fmt: skip
