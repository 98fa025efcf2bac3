"""Feature maps: /{model}/{sae}/map draws the SAE's features where `monoscope map` placed them
(UMAP of decoder directions), and /api/v1/saes/{model}/{sae}/map serves the points.

The points travel as columns in one JSON document (about 70 bytes a feature, a third of that
gzipped: bench/map.py), which the page's canvas draws whole: no request per feature on hover, and
a search only sends back the matching indices.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from app.core.errors import NotFoundError
from app.db.maps import map_points
from app.web.deps import MAX_INDEX, LabelIndexDep, SaeDep, SessionDep, TemplatesDep
from app.web.semantic import ranked_labels

router = APIRouter()
COLOURINGS = {"density": "density", "score": "label score", "labelled": "labelled or not"}
MAX_HITS = 200


@router.get("/{model}/{sae}/map", response_class=HTMLResponse, name="sae_map")
def map_page(
    request: Request,
    model: str,
    sae_row: SaeDep,
    templates: TemplatesDep,
    colour: str = "density",
    q: Annotated[str, Query(max_length=500)] = "",
    focus: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None,
):
    context = {
        "model": model,
        "sae": sae_row,
        "layout": sae_row.map_layout or {},
        "colour": colour if colour in COLOURINGS else "density",
        "colourings": COLOURINGS,
        "q": q,
        "focus": focus,
        # The page's script swaps this index in a url_for link for the one clicked.
        "placeholder": MAX_INDEX,
    }
    return templates.TemplateResponse(request, "maps/show.html", context)


class MapOut(BaseModel):
    """An SAE's map as columns: entry i of every list describes one feature."""

    model: str
    sae: str
    layout: dict = Field(description="how the map was drawn: method, parameters, features, when")
    index: list[int]
    x: list[float] = Field(description="position in [0, 1]")
    y: list[float]
    density: list[float]
    label: list[str | None]
    score: list[float | None] = Field(description="the shown label's headline score")


@router.get("/api/v1/saes/{model}/{sae}/map", response_model=MapOut, tags=["api"])
def api_map(model: str, sae_row: SaeDep, session: SessionDep) -> MapOut:
    """Every placed feature of the SAE's map (dead features are left off)."""
    if not sae_row.map_layout:
        raise NotFoundError(
            f"{model}/{sae_row.name} has no map yet: run `monoscope map --model {model} "
            f"--sae {sae_row.name}`."
        )
    points = map_points(session, sae_row.id)
    return MapOut(
        model=model,
        sae=sae_row.name,
        layout=sae_row.map_layout,
        index=points.index,
        x=[round(v, 5) for v in points.x],
        y=[round(v, 5) for v in points.y],
        density=[float(f"{v:.4g}") for v in points.density],
        label=points.label,
        score=[None if v is None else round(v, 3) for v in points.score],
    )


class MapHitsOut(BaseModel):
    index: list[int] = Field(description="matching features of this SAE, best first")


@router.get("/api/v1/saes/{model}/{sae}/map/hits", response_model=MapHitsOut, tags=["api"])
def api_map_hits(
    model: str,
    sae_row: SaeDep,
    session: SessionDep,
    label_index: LabelIndexDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
) -> MapHitsOut:
    """The SAE's features whose labels match the query by words or meaning, as site search
    ranks them, for the map to light up."""
    ranked = ranked_labels(session, label_index, q, model, sae_row.name, MAX_HITS)
    return MapHitsOut(index=list(dict.fromkeys(r.hit.index for r in ranked)))
