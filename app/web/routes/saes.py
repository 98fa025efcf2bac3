"""SAE pages (metrics, histograms, the feature table) and their JSON: /api/v1/saes."""

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError
from app.db.models import SaeRow
from app.db.queries import FeatureFilters, FeaturePage, list_features, list_saes
from app.web import views
from app.web.charts import density_chart, score_chart
from app.web.deps import MAX_INDEX, SaeDep, SessionDep, TemplatesDep

router = APIRouter()
PAGE_SIZES = (25, 50, 100, 200)
DESCENDING_BY_DEFAULT = {"density", "max_act", "score"}


class TableQuery(BaseModel):
    """A feature table's state, read from and written back to the URL so any view is a link."""

    model_config = ConfigDict(frozen=True)

    sort: Literal["index", "density", "max_act", "score"] = "index"
    order: Literal["asc", "desc", ""] = ""
    labelled: Literal["yes", "no", ""] = ""
    alive: Literal["yes", "no", ""] = ""
    min_density: float | None = None
    max_density: float | None = None
    q: str = Field("", max_length=500)
    limit: int = 50

    @field_validator("min_density", "max_density", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        """Forms send an empty box as an empty string: no bound."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def descending(self) -> bool:
        return self.order == "desc" or (not self.order and self.sort in DESCENDING_BY_DEFAULT)

    @property
    def filters(self) -> FeatureFilters:
        yes_no = {"yes": True, "no": False, "": None}
        return FeatureFilters(
            labelled=yes_no[self.labelled],
            alive=yes_no[self.alive],
            min_density=self.min_density,
            max_density=self.max_density,
            label_query=self.q.strip() or None,
        )

    def params(self, **changes) -> dict:
        """Query parameters for a link to this view with some fields changed (defaults left out)."""
        state = self.model_dump() | changes
        defaults = TableQuery().model_dump()
        return {k: v for k, v in state.items() if v not in (None, "") and v != defaults.get(k)}


def parse_cursor(after: str | None, sort: str) -> tuple[float | int, int] | None:
    """`after` is 'INDEX' for index order, else 'VALUE:INDEX' (the last row of the page before)."""
    if not after:
        return None
    try:
        value, _, index_text = after.rpartition(":") if sort != "index" else (after, "", after)
        number: float | int = int(value) if sort == "index" else float(value)
        index = int(index_text)
        if not math.isfinite(number) or not 0 <= index <= MAX_INDEX:  # past the column: refused
            raise ValueError
        return (number, index)
    except ValueError:
        raise MonoscopeError(f"bad page cursor {after[:40]!r}") from None


def format_cursor(key: tuple[float | int, int] | None, sort: str) -> str | None:
    if key is None:
        return None
    return str(key[1]) if sort == "index" else f"{key[0]!r}:{key[1]}"


def table_page(
    session: Session, sae_row: SaeRow, query: TableQuery, after: str | None
) -> FeaturePage:
    """One page of an SAE's feature table, as the page and the API both read it."""
    if query.limit not in PAGE_SIZES:
        raise MonoscopeError(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    return list_features(
        session,
        sae_row.id,
        query.sort,
        query.descending,
        after=parse_cursor(after, query.sort),
        limit=query.limit,
        filters=query.filters,
    )


@router.get("/{model}/{sae}", response_class=HTMLResponse, name="sae_page")
def sae_page(
    request: Request,
    model: str,
    sae_row: SaeDep,
    session: SessionDep,
    templates: TemplatesDep,
    query: Annotated[TableQuery, Query()],
    after: str | None = None,
):
    page = table_page(session, sae_row, query, after)
    context = {
        "model": model,
        "sae": sae_row,
        "query": query,
        "page": page,
        "after": after,
        "next_cursor": format_cursor(page.next_key, query.sort),
        "page_sizes": PAGE_SIZES,
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "feature-table":
        return templates.TemplateResponse(request, "saes/_table.html", context)
    summary = sae_row.summary or {}
    context |= {
        "summary": summary,
        "density_chart": density_chart(summary),
        "score_chart": score_chart(summary),
    }
    return templates.TemplateResponse(request, "saes/show.html", context)


# -- JSON ----------------------------------------------------------------------------------------
class SaeOut(BaseModel):
    model: str
    name: str
    site: str
    site_out: str | None = Field(None, description="where a transcoder writes; null for an SAE")
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


class FeaturePageOut(BaseModel):
    features: list[FeatureRowOut]
    next_cursor: str | None = Field(description="pass as `after` for the next page")


@router.get("/api/v1/saes", response_model=list[SaeOut], tags=["api"])
def api_saes(request: Request, session: SessionDep) -> list[SaeOut]:
    return [
        SaeOut(
            model=s.model.name,
            name=s.name,
            site=s.site,
            site_out=s.site_out,
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


@router.get("/api/v1/saes/{model}/{sae}/features", response_model=FeaturePageOut, tags=["api"])
def api_features(
    request: Request,
    model: str,
    sae: str,
    sae_row: SaeDep,
    session: SessionDep,
    query: Annotated[TableQuery, Query()],
    after: str | None = None,
) -> FeaturePageOut:
    page = table_page(session, sae_row, query, after)
    return FeaturePageOut(
        features=[
            FeatureRowOut(
                index=f.index,
                label=f.label,
                label_score=f.label_score,
                density=f.density,
                max_act=f.max_act,
                mean_act=f.mean_act,
                url=views.feature_url(request, model, sae, f.index),
            )
            for f in page.features
        ],
        next_cursor=format_cursor(page.next_key, query.sort),
    )
