"""Search by label text, and "which features fire on this text"; both are shareable URLs, and
both are in the JSON API (/api/v1/search, /api/v1/activations)."""

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError, NotLoadedError
from app.core.inspect import FeatureHit, Inspection
from app.db.labels import headline_score
from app.db.queries import find_sae, labels_of, list_saes
from app.db.search import SearchHit, decoder_neighbours
from app.web import views
from app.web.deps import (
    InferenceDep,
    LabelIndexDep,
    SessionDep,
    TemplatesDep,
    VocabularyDep,
    WorkspaceDep,
)
from app.web.markup import TokenCell, display_token
from app.web.resident import loaded_sae, require_loaded, resident, run_text
from app.web.semantic import LabelIndex, ranked_labels

router = APIRouter()
RESULTS_PER_PAGE = 20
MAX_RESULT_OFFSET = 1_000


@dataclass(frozen=True)
class SearchResult:
    hit: SearchHit
    headline: tuple[str, float] | None
    snippet: views.ExampleRow | None
    words: bool  # the label holds every word of the query
    similarity: float | None  # cosine of the label's and the query's embeddings, when close
    duplicate_of: tuple[int, float] | None  # a feature ranked above it: (index, decoder cosine)


def label_search(
    session: Session,
    vocabularies,
    index: LabelIndex,
    q: str,
    model: str | None,
    sae: str | None,
    page: int,
) -> list[SearchResult]:
    """Labels ranked by full-text match and by meaning (app.web.semantic), with each feature's
    strongest example as a snippet, and near-duplicate features marked against those above."""
    if page < 1 or (page - 1) * RESULTS_PER_PAGE > MAX_RESULT_OFFSET:
        raise MonoscopeError(f"page must be between 1 and {MAX_RESULT_OFFSET // 20 + 1}")
    window = page * RESULTS_PER_PAGE
    ranked = ranked_labels(session, index, q, model or None, sae or None, window)
    shown = ranked[(page - 1) * RESULTS_PER_PAGE : window]
    snippets = views.hit_snippets(
        session, vocabularies, [r.hit for r in shown], before=8, after=6, with_text=True
    )
    hits = [r.hit for r in ranked]
    duplicates = views.near_duplicates(
        hits, decoder_neighbours(session, [h.feature_id for h in hits])
    )
    return [
        SearchResult(
            r.hit,
            headline_score(r.hit.scores),
            snippets.get(r.hit.feature_id),
            r.words,
            r.similarity,
            duplicates.get(r.hit.feature_id),
        )
        for r in shown
    ]


@router.get("/search", response_class=HTMLResponse, name="search")
def search_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    vocabularies: VocabularyDep,
    index: LabelIndexDep,
    q: Annotated[str, Query(max_length=500)] = "",
    model: str = "",
    sae: str = "",
    page: int = 1,
):
    results = label_search(session, vocabularies, index, q, model, sae, page) if q.strip() else []
    context = {
        "q": q,
        "model": model,
        "sae": sae,
        "page": page,
        "results": results,
        "more": len(results) == RESULTS_PER_PAGE,
        "saes": list_saes(session),
    }
    return templates.TemplateResponse(request, "search/index.html", context)


@dataclass(frozen=True)
class FeatureLine:
    index: int
    value: float
    label: str | None
    max_act: float | None
    density: float | None


@dataclass(frozen=True)
class TextReading:
    cells: list[TokenCell]
    overall: list[FeatureLine]
    per_token: list[list[FeatureLine]]
    excluded: set[int]
    focus: FeatureLine | None = None  # the feature the heat strip shows, when one is chosen


def read_text(
    session: Session,
    sae_id: int | None,
    inspection: Inspection,
    sae: str,
    focus: int | None = None,
) -> TextReading:
    """Labels for every feature that shows up, in one query, and a heat strip: each token's
    strongest feature relative to that feature's stored maximum, or, with `focus`, that one
    feature's activation relative to its maximum."""
    found = inspection.saes[sae]
    indices = {h.index for h in found.overall} | {h.index for row in found.per_token for h in row}
    if focus is not None:
        indices.add(focus)
    stored = labels_of(session, sae_id, sorted(indices)) if sae_id is not None else []
    known = {f.index: f for f in stored}

    def line(hit) -> FeatureLine:
        f = known.get(hit.index)
        return FeatureLine(
            hit.index,
            hit.value,
            f.label if f else None,
            f.max_act if f else None,
            f.density if f else None,
        )

    per_token = [[line(h) for h in row] for row in found.per_token]
    heat = [max((h.value / h.max_act for h in row if h.max_act), default=0.0) for row in per_token]
    focused = None
    if focus is not None:
        values = found.activations[:, focus].tolist()
        focused = line(FeatureHit(focus, max(values)))
        scale = focused.max_act or max(max(values), 1e-9)
        heat = [max(v, 0.0) / scale for v in values]
    cells = [
        TokenCell(
            display_token(text),
            heat[i],
            round(min(heat[i], 1.0), 3),
            False,
            i in inspection.excluded_positions,
            i,
        )
        for i, text in enumerate(inspection.tokens)
    ]
    return TextReading(
        cells,
        [line(h) for h in found.overall],
        per_token,
        set(inspection.excluded_positions),
        focused,
    )


@router.get("/search/text", response_class=HTMLResponse, name="search_text")
def search_text_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    text: Annotated[str, Query(max_length=20_000)] = "",
    sae: str = "",
    reduce: Literal["max", "sum"] = "max",
    pos: int | None = None,
    feature: Annotated[int | None, Query(ge=0)] = None,
):
    loaded = sorted(workspace.saes) if workspace else []
    model = workspace.model.name if workspace else None
    sae = sae or (loaded[0] if loaded else "")
    context: dict[str, object] = {
        "text": text,
        "sae": sae,
        "reduce": reduce,
        "pos": pos,
        "model": model,
        "feature": feature,
        "loaded": loaded,
        "reading": None,
    }
    if text:
        require_loaded(workspace, "read text with")
        found = resident(workspace, model or "", sae)
        if found is None:
            raise NotLoadedError(f"SAE {sae!r} is not loaded on this server.")
        sae_row = find_sae(session, found.model.name, sae)
        if sae_row is None:
            raise NotLoadedError(
                f"{model}/{sae} is loaded but not harvested into this "
                "database, so its features have no pages yet."
            )
        if feature is not None and feature >= found.sae.d_sae:
            raise MonoscopeError(f"{sae} has features 0 to {found.sae.d_sae - 1}.")
        inspection = run_text(inference, found, text, top_k=10, reduce=reduce)
        reading = read_text(session, sae_row.id, inspection, sae, focus=feature)
        if pos is not None and not 0 <= pos < len(reading.cells):
            raise MonoscopeError(f"pos must be between 0 and {len(reading.cells) - 1}")
        context["reading"] = reading
    return templates.TemplateResponse(request, "search/text.html", context)


# -- JSON ----------------------------------------------------------------------------------------
class SearchHitOut(BaseModel):
    model: str
    sae: str
    index: int
    label: str
    method: str
    scores: dict
    density: float
    max_act: float
    rank: float = Field(description="full-text rank (0 when only the meaning matched)")
    words: bool = Field(description="the label holds every word of the query")
    similarity: float | None = Field(
        description="cosine of the label's and the query's MiniLM embeddings, when close"
    )
    snippet: str | None = Field(description="text around the feature's strongest activation")
    near_duplicate_of: int | None = Field(
        description="a feature of the same SAE ranked above this one whose decoder direction "
        "is nearly the same (cosine >= 0.8)"
    )
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


@router.get("/api/v1/search", response_model=list[SearchHitOut], tags=["api"])
def api_search(
    request: Request,
    session: SessionDep,
    vocabularies: VocabularyDep,
    index: LabelIndexDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    model: str = "",
    sae: str = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> list[SearchHitOut]:
    """Labels matching the query's words or its meaning, fused best first."""
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
            words=r.words,
            similarity=round(r.similarity, 4) if r.similarity is not None else None,
            snippet=r.snippet.text if r.snippet else None,
            near_duplicate_of=r.duplicate_of[0] if r.duplicate_of else None,
            url=views.feature_url(request, r.hit.model, r.hit.sae, r.hit.index),
        )
        for r in label_search(session, vocabularies, index, q, model, sae, page)
    ]


@router.post("/api/v1/activations", response_model=ActivationsOut, tags=["api"])
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
        model=model,
        sae=sae,
        tokens=inspection.tokens,
        excluded_positions=inspection.excluded_positions,
        overall=[out(x) for x in reading.overall],
        per_token=[[out(x) for x in row] for row in reading.per_token],
    )
