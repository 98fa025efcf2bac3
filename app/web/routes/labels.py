"""Label review from the feature page and the API: add a label, edit, retire or restore it, mark
it verified or wrong, and read the history. Every change is a write (a user or an API key).
A label added or edited is embedded at once where labels are embedded for semantic search."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.db import review
from app.db.models import Explanation, Feature, Model, SaeRow
from app.web.auth import WriterDep
from app.web.deps import (
    FeatureIndex,
    LabelIndexDep,
    RowId,
    SessionDep,
    TemplatesDep,
    feature_or_404,
    label_or_404,
    parse_feature_ref,
)
from app.web.views import feature_path

router = APIRouter()


def _path_of(session: Session, feature_id: int) -> str:
    feature = session.get_one(Feature, feature_id)
    sae = session.get_one(SaeRow, feature.sae_id)
    return feature_path(session.get_one(Model, sae.model_id).name, sae.name, feature.index)


@router.post("/labels/add", name="label_add")
def label_add(
    session: SessionDep,
    viewer: WriterDep,
    index: LabelIndexDep,
    feature: Annotated[str, Form(max_length=500)],
    text: Annotated[str, Form(max_length=review.MAX_LABEL * 2)],
):
    row = feature_or_404(session, *parse_feature_ref(feature))
    label = review.add_label(session, row, text, viewer.name)
    index.remember(session, label.id, label.text)
    session.commit()
    return RedirectResponse(_path_of(session, row.id) + "#labels", status_code=303)


@router.post("/labels/{label_id}", name="label_review")
def label_review(
    label_id: RowId,
    session: SessionDep,
    viewer: WriterDep,
    index: LabelIndexDep,
    action: Annotated[str, Form(max_length=16)],
    text: Annotated[str, Form(max_length=review.MAX_LABEL * 2)] = "",
):
    label = label_or_404(session, label_id)
    review.review_label(session, label, action, viewer.name, text)
    if action == "edit":
        index.remember(session, label.id, label.text)
    session.commit()
    return RedirectResponse(_path_of(session, label.feature_id) + "#labels", status_code=303)


@router.get(
    "/labels/history/{model}/{sae}/{index}", response_class=HTMLResponse, name="label_history"
)
def label_history(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    model: str,
    sae: str,
    index: FeatureIndex,
):
    """The feature's review history (htmx partial, so the feature page keeps its 3 queries)."""
    events = review.history(session, feature_or_404(session, model, sae, index).id)
    return templates.TemplateResponse(request, "labels/_history.html", {"events": events})


class LabelOut(BaseModel):
    id: int
    text: str
    method: str
    author: str | None
    verdict: str | None
    retired: bool
    scores: dict


class LabelIn(BaseModel):
    text: str = Field(min_length=1, max_length=review.MAX_LABEL)


class ReviewIn(BaseModel):
    action: str = Field(description="edit, retire, restore, verified, wrong or unreviewed")
    text: str = Field("", max_length=review.MAX_LABEL, description="the new text, for edit")


class EventOut(BaseModel):
    label_id: int
    label: str = Field(description="the label's text now")
    author: str
    action: str
    before: str | None
    after: str | None
    at: str


def _label_out(label: Explanation) -> LabelOut:
    return LabelOut(
        id=label.id,
        text=label.text,
        method=label.method,
        author=label.author,
        verdict=label.verdict,
        retired=label.retired_at is not None,
        scores=label.scores or {},
    )


@router.post(
    "/api/v1/features/{model}/{sae}/{index}/labels",
    response_model=LabelOut,
    status_code=201,
    tags=["api"],
)
def api_add_label(
    model: str,
    sae: str,
    index: FeatureIndex,
    body: LabelIn,
    session: SessionDep,
    viewer: WriterDep,
    labels: LabelIndexDep,
) -> LabelOut:
    """Add a human label to a feature."""
    row = feature_or_404(session, model, sae, index)
    label = review.add_label(session, row, body.text, viewer.name)
    labels.remember(session, label.id, label.text)
    session.commit()
    return _label_out(label)


@router.patch("/api/v1/labels/{label_id}", response_model=LabelOut, tags=["api"])
def api_review_label(
    label_id: RowId, body: ReviewIn, session: SessionDep, viewer: WriterDep, index: LabelIndexDep
) -> LabelOut:
    """Edit, retire, restore, or mark a label verified, wrong or unreviewed."""
    label = label_or_404(session, label_id)
    review.review_label(session, label, body.action, viewer.name, body.text)
    if body.action == "edit":
        index.remember(session, label.id, label.text)
    session.commit()
    return _label_out(label)


@router.get(
    "/api/v1/features/{model}/{sae}/{index}/history", response_model=list[EventOut], tags=["api"]
)
def api_label_history(
    model: str, sae: str, index: FeatureIndex, session: SessionDep
) -> list[EventOut]:
    events = review.history(session, feature_or_404(session, model, sae, index).id)
    return [
        EventOut(
            label_id=e.explanation_id,
            label=text,
            author=e.author,
            action=e.action,
            before=e.before,
            after=e.after,
            at=e.created_at.isoformat(),
        )
        for e, text in events
    ]
