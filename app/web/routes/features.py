"""SAE pages (metrics, histograms, the feature table) and feature pages (the dashboard)."""

import math
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.routing import NoMatchFound

from app.db.labels import SCORE_EDGES
from app.db.models import SaeRow
from app.db.queries import (
    FeatureFilters,
    FeaturePage,
    feature_view,
    find_feature,
    find_sae,
    list_features,
)
from app.web import views
from app.web.charts import bar_chart, decade_label, log_ticks, trimmed
from app.web.deps import (
    MAX_INDEX,
    FeatureIndex,
    InferenceDep,
    SessionDep,
    TemplatesDep,
    VocabularyDep,
    WorkspaceDep,
    parse_feature_index,
)
from app.web.resident import require_resident, resident, run_text

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
        if sort == "index":
            value, index = after, after
        else:
            value, index = after.rsplit(":", 1)
        number, index = (int(value) if sort == "index" else float(value)), int(index)
        if not math.isfinite(number) or not 0 <= index <= MAX_INDEX:  # past the column: refused
            raise ValueError
        return (number, index)
    except ValueError:
        raise HTTPException(400, f"bad page cursor {after[:40]!r}") from None


def format_cursor(key: tuple[float | int, int] | None, sort: str) -> str | None:
    if key is None:
        return None
    return str(key[1]) if sort == "index" else f"{key[0]!r}:{key[1]}"


def _sae_or_404(session, model: str, sae: str):
    row = find_sae(session, model, sae)
    if row is None:
        raise HTTPException(404, f"No SAE {sae!r} for model {model!r} in this database.")
    return row


def _density_chart(summary: dict):
    histogram = summary.get("density_log10")
    if not histogram:
        return None
    return bar_chart(
        histogram["counts"], histogram["edges"], title="Feature density (alive features)",
        x_label="fraction of tokens a feature fires on (log scale)", y_label="features",
        x_tick_format=decade_label, x_ticks_at=list(range(-8, 1)),
    )  # fmt: skip


def score_chart(summary: dict):
    histogram = summary.get("scores")
    if not histogram or not summary.get("scored"):
        return None
    return bar_chart(
        histogram["counts"], SCORE_EDGES, title="Headline label scores",
        x_label="score (detection or fuzzing accuracy, else simulation correlation)",
        y_label="features",
    )  # fmt: skip


def table_page(
    session, model: str, sae: str, query: TableQuery, after: str | None
) -> tuple[SaeRow, FeaturePage]:
    """The SAE and one page of its feature table, as the page and the API both read it."""
    if query.limit not in PAGE_SIZES:
        raise HTTPException(400, f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    sae_row = _sae_or_404(session, model, sae)
    page = list_features(
        session, sae_row.id, query.sort, query.descending,
        after=parse_cursor(after, query.sort), limit=query.limit, filters=query.filters,
    )  # fmt: skip
    return sae_row, page


@router.get("/{model}/{sae}", response_class=HTMLResponse, name="sae_page")
def sae_page(
    request: Request,
    model: str,
    sae: str,
    session: SessionDep,
    templates: TemplatesDep,
    query: Annotated[TableQuery, Query()],
    after: str | None = None,
):
    sae_row, page = table_page(session, model, sae, query, after)
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
        "density_chart": _density_chart(summary),
        "score_chart": score_chart(summary),
    }
    return templates.TemplateResponse(request, "saes/show.html", context)


def _activation_chart(detail):
    edges = detail.sae.harvest.get("histogram_log10_edges")
    counts = (detail.feature.histogram or {}).get("counts")
    if not edges or not counts or not any(counts):
        return None
    counts, edges = trimmed(counts, edges)
    return bar_chart(
        counts, edges, title="Activation histogram (tokens where it fires)",
        x_label="activation (log scale)", y_label="tokens", x_tick_format=decade_label,
        x_ticks_at=log_ticks(edges[0], edges[-1]),
        marks={"max": math.log10(detail.feature.max_act)} if detail.feature.max_act > 0 else None,
    )  # fmt: skip


def _steer_url(request: Request, model: str, sae: str, index: int) -> str | None:
    """The steering chat preloaded with this feature, when this server has that page."""
    try:
        url = request.url_for("steer_page")
    except NoMatchFound:
        return None
    return str(url.include_query_params(f=f"{model}/{sae}/{index}:clamp:5"))


@router.get("/{model}/{sae}/{index}", response_class=HTMLResponse, name="feature_page")
def feature_page(
    request: Request,
    model: str,
    sae: str,
    index: str,
    session: SessionDep,
    templates: TemplatesDep,
    vocabularies: VocabularyDep,
    workspace: WorkspaceDep,
    embed: bool = False,
):
    number = parse_feature_index(index)
    if number is None:
        raise HTTPException(404, f"{index!r} is not a feature index.")
    view = feature_view(session, model, sae, number)
    if view is None:
        sae_row = _sae_or_404(session, model, sae)
        raise HTTPException(404, f"{model}/{sae} has features 0 to {sae_row.d_sae - 1:,}; "
                                 f"there is no feature {index}.")  # fmt: skip
    detail = view.detail
    vocab = vocabularies.get(session, detail.model)
    feature = detail.feature
    n_intervals = detail.sae.harvest.get("config", {}).get("n_intervals", 5)
    labels = [views.label_view(e) for e in detail.explanations]
    context = {
        "model": model,
        "sae": detail.sae,
        "feature": feature,
        "labels": labels,
        "shown_label": feature.label,
        "top": [views.example_row(e, vocab, feature.max_act) for e in detail.of_kind("top")],
        "intervals": views.interval_groups(
            detail.of_kind("quantile"), vocab, feature.max_act, n_intervals
        ),
        "neighbours": view.neighbours,
        "activation_chart": _activation_chart(detail),
        "previous": feature.index - 1 if feature.index > 0 else None,
        "next": feature.index + 1 if feature.index + 1 < detail.sae.d_sae else None,
        "can_run_text": resident(workspace, model, sae) is not None,
        "steer_url": _steer_url(request, model, sae, feature.index),
        "embed": embed,
    }
    return templates.TemplateResponse(request, "features/show.html", context)


@router.get(
    "/{model}/{sae}/{index}/activations", response_class=HTMLResponse, name="feature_activations"
)
def feature_activations(
    request: Request,
    model: str,
    sae: str,
    index: FeatureIndex,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    text: Annotated[str, Query(max_length=20_000)] = "",
):
    """This feature's activation on each token of typed text (the 'test your text' box)."""
    sae_row = _sae_or_404(session, model, sae)
    feature = find_feature(session, sae_row.id, index)
    if feature is None:
        raise HTTPException(404, f"{model}/{sae} has no feature {index}.")
    found = require_resident(workspace, model, sae)
    result = run_text(inference, found, text, top_k=1)
    values = result.saes[sae].activations[:, index].numpy()
    peak = float(values.max()) if len(values) else 0.0
    context = {
        # Shaded against the feature's stored max, so typed text compares with its top examples.
        "cells": views.token_cells(result.tokens, values, max(feature.max_act, peak)),
        "peak": peak,
        "feature": feature,
        "excluded": set(result.excluded_positions),
    }
    return templates.TemplateResponse(request, "features/_activations.html", context)
