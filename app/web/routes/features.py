"""Feature pages (the dashboard of one feature), test-your-text, and /api/v1/features."""

import io
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.routing import NoMatchFound

from app.core.errors import NotFoundError
from app.core.harvest import closest_decoders
from app.db.queries import ExampleView, feature_view, find_feature, find_sae, labels_of
from app.web import views
from app.web.charts import bar_chart, decade_label, log_ticks, trimmed
from app.web.deps import (
    FeatureIndex,
    InferenceDep,
    SaeDep,
    SessionDep,
    TemplatesDep,
    VocabularyDep,
    WorkspaceDep,
    parse_feature_index,
    sae_or_404,
)
from app.web.markup import TokenTexts, token_cells
from app.web.resident import require_resident, resident, run_text

router = APIRouter()


def _activation_chart(sae, feature, typed_peak: float | None = None):
    """The harvest's activation histogram, marked at the stored max and, once text is typed into
    the test box, at that text's peak, so a reader sees where it falls among the examples."""
    edges = sae.harvest.get("histogram_log10_edges")
    counts = (feature.histogram or {}).get("counts")
    if not edges or not counts or not any(counts):
        return None
    counts, edges = trimmed(counts, edges)
    marks = {"max": math.log10(feature.max_act)} if feature.max_act > 0 else {}
    if typed_peak is not None and typed_peak > 0:
        marks["your text"] = math.log10(typed_peak)
    return bar_chart(
        counts,
        edges,
        title="Activation histogram (tokens where it fires)",
        x_label="activation (log scale)",
        y_label="tokens",
        x_tick_format=decade_label,
        x_ticks_at=log_ticks(edges[0], edges[-1]),
        marks=marks,
        highlighted=("your text",),
    )


def _logit_chart(detail):
    """How the feature's direction moves every token's logit: the vocabulary's spread, against
    which the promoted and suppressed lists are the two tails."""
    logits = (detail.feature.histogram or {}).get("logits")
    if not logits or not any(logits["counts"]):
        return None
    counts, low, high = logits["counts"], logits["low"], logits["high"]
    edges = [low + (high - low) * i / len(counts) for i in range(len(counts) + 1)]
    return bar_chart(
        counts,
        edges,
        title="Logit effects over the vocabulary",
        x_label="change in logit per unit of activation",
        y_label="tokens",
        x_tick_format=lambda v: f"{v:.2g}",
        marks={"0": 0.0} if low < 0 < high else None,
    )


@dataclass(frozen=True)
class Elsewhere:
    sae: str
    index: int
    cosine: float
    label: str | None


def _similar_elsewhere(session, workspace, model: str, sae: str, index: int) -> list[Elsewhere]:
    """The closest features by decoder cosine in the other loaded SAEs that write where this one
    does (a dictionary-size family shows feature splitting here); none without loaded SAEs."""
    found = resident(workspace, model, sae)
    if found is None:
        return []
    direction = found.sae.W_dec[index]
    similar = []
    for name, other in sorted(workspace.saes.items()):
        if name == sae or other.hook_name_out != found.sae.hook_name_out:
            continue  # decoder directions compare only in the same space
        indices, cosines = closest_decoders(direction, other.W_dec, k=3)
        row = find_sae(session, model, name)
        labels = (
            {f.index: f.label for f in labels_of(session, row.id, indices.tolist())} if row else {}
        )
        similar += [
            Elsewhere(name, int(i), round(float(c), 3), labels.get(int(i)))
            for i, c in zip(indices, cosines, strict=True)
        ]
    return similar


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
    context: Literal["narrow", "wide", "whole"] = "wide",
):
    number = parse_feature_index(index)
    if number is None:
        raise NotFoundError(f"{index!r} is not a feature index.")
    view = feature_view(session, model, sae, number)
    if view is None:
        sae_row = sae_or_404(session, model, sae)
        raise NotFoundError(
            f"{model}/{sae} has features 0 to {sae_row.d_sae - 1:,}; there is no feature {index}."
        )
    detail = view.detail
    vocab = vocabularies.get(session, detail.model)
    feature = detail.feature
    n_intervals = detail.sae.harvest.get("config", {}).get("n_intervals", 5)
    labels = [views.label_view(e) for e in detail.explanations]
    window = views.CONTEXT_WINDOWS[context]
    page = {
        "model": model,
        "sae": detail.sae,
        "feature": feature,
        "labels": labels,
        "score_methods": views.score_methods(labels),
        "shown_label": feature.label,
        "top": [
            views.example_row(e, vocab, feature.max_act, *window) for e in detail.of_kind("top")
        ],
        "intervals": views.interval_groups(
            detail.of_kind("quantile"), vocab, feature.max_act, n_intervals, window
        ),
        "context": context,
        "contexts": list(views.CONTEXT_WINDOWS),
        "neighbours": view.neighbours,
        "elsewhere": _similar_elsewhere(session, workspace, model, sae, feature.index),
        "activation_chart": _activation_chart(detail.sae, feature),
        "logit_chart": _logit_chart(detail),
        "previous": feature.index - 1 if feature.index > 0 else None,
        "next": feature.index + 1 if feature.index + 1 < detail.sae.d_sae else None,
        "can_run_text": resident(workspace, model, sae) is not None,
        "steer_url": _steer_url(request, model, sae, feature.index),
        "embed": embed,
    }
    return templates.TemplateResponse(request, "features/show.html", page)


@router.get(
    "/{model}/{sae}/{index}/activations", response_class=HTMLResponse, name="feature_activations"
)
def feature_activations(
    request: Request,
    model: str,
    sae: str,
    index: FeatureIndex,
    sae_row: SaeDep,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    text: Annotated[str, Query(max_length=20_000)] = "",
):
    """This feature's activation on each token of typed text (the 'test your text' box)."""
    feature = find_feature(session, sae_row.id, index)
    if feature is None:
        raise NotFoundError(f"{model}/{sae} has no feature {index}.")
    found = require_resident(workspace, model, sae)
    result = run_text(inference, found, text, top_k=1)
    values = result.saes[sae].activations[:, index].numpy()
    peak = float(values.max()) if len(values) else 0.0
    context = {
        # Shaded against the feature's stored max, so typed text compares with its top examples.
        "cells": token_cells(result.tokens, values, max(feature.max_act, peak)),
        "peak": peak,
        "feature": feature,
        "excluded": set(result.excluded_positions),
        "activation_chart": _activation_chart(sae_row, feature, peak),
    }
    return templates.TemplateResponse(request, "features/_activations.html", context)


# -- JSON ----------------------------------------------------------------------------------------
class FeatureLabelOut(BaseModel):
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
    labels: list[FeatureLabelOut] = Field(description="best first")
    top_examples: list[ExampleOut]
    interval_examples: list[ExampleOut]
    histogram: dict = Field(
        description="counts over the SAE's log10 activation edges; under 'logits', the logit "
        "effects of every vocabulary token in equal bins from 'low' to 'high'"
    )
    histogram_log10_edges: list[float]
    top_logits: list[tuple[int, str, float]]
    bottom_logits: list[tuple[int, str, float]]
    neighbours: list[dict]
    elsewhere: list[dict] = Field(
        description="closest features by decoder cosine in the other SAEs this server holds at "
        "the same site (empty when it holds none)"
    )
    url: str


def _example_out(e: ExampleView, texts: TokenTexts) -> ExampleOut:
    return ExampleOut(
        rank=e.rank,
        interval=e.interval,
        max_act=e.max_act,
        tokens=[texts.raw_at(t) for t in e.token_ids.tolist()],
        activations=[round(float(a), 4) for a in e.activations],
    )


@router.get("/api/v1/features/{model}/{sae}/{index}", response_model=FeatureOut, tags=["api"])
def api_feature(
    request: Request,
    model: str,
    sae: str,
    index: FeatureIndex,
    session: SessionDep,
    vocabularies: VocabularyDep,
    workspace: WorkspaceDep,
) -> FeatureOut:
    view = feature_view(session, model, sae, index)
    if view is None:
        sae_or_404(session, model, sae)
        raise NotFoundError(f"{model}/{sae} has no feature {index}.")
    d = view.detail
    vocab = vocabularies.get(session, d.model)
    f = d.feature
    return FeatureOut(
        model=model,
        sae=sae,
        index=f.index,
        label=f.label,
        density=f.density,
        max_act=f.max_act,
        mean_act=f.mean_act,
        labels=[
            FeatureLabelOut(
                id=e.id,
                text=e.text,
                method=e.method,
                explainer_model=e.explainer_model,
                author=e.author,
                status=e.status,
                error=e.error,
                verdict=e.verdict,
                retired=e.retired_at is not None,
                scores=e.scores or {},
            )
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
        elsewhere=[vars(e) for e in _similar_elsewhere(session, workspace, model, sae, f.index)],
        url=views.feature_url(request, model, sae, f.index),
    )


@router.get("/api/v1/features/{model}/{sae}/{index}/decoder", tags=["api"], name="feature_decoder")
def feature_decoder(
    model: str,
    sae: str,
    index: FeatureIndex,
    workspace: WorkspaceDep,
    format: Literal["json", "npy"] = "json",
) -> Response:
    """The feature's decoder vector (its row of W_dec, in the SAE's input space, float32), from
    the SAE this server holds: as JSON, or as a `.npy` file for `numpy.load`."""
    found = require_resident(workspace, model, sae)
    if index >= found.sae.d_sae:
        raise NotFoundError(f"{model}/{sae} has features 0 to {found.sae.d_sae - 1:,}.")
    vector = found.sae.W_dec[index].detach().float().cpu().numpy()
    if format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, vector)
        name = f"{model}-{sae}-{index}-decoder.npy".replace("/", "_")
        return Response(
            buffer.getvalue(),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    body = {
        "model": model,
        "sae": sae,
        "index": index,
        "hook_name": found.sae.hook_name,
        "d_in": int(vector.shape[0]),
        "decoder": [round(float(v), 7) for v in vector],
    }
    return JSONResponse(body)
