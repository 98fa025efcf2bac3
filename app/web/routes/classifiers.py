"""Feature classifiers over the API: train one from labelled texts, list them, run one.

POST /api/v1/classifiers trains (a signed-in user or an API key; it is saved under its name)
and answers with its held-out precision and recall beside the prompted baseline's;
GET /api/v1/classifiers lists this model's; POST /api/v1/classifiers/{name}/run scores texts,
naming the features behind each verdict.
"""

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.core.classifier import (
    FeatureClassifier,
    best_cut,
    learn_classifier,
    pick_classifier,
    precision_recall,
    prompted_scores,
)
from app.core.contrast import text_peaks
from app.core.errors import MonoscopeError, NotFoundError
from app.core.names import checked_name
from app.db.classifiers import (
    ClassifierExists,
    find_classifier,
    list_classifiers,
    save_classifier,
)
from app.db.models import ClassifierRow
from app.db.queries import find_model
from app.db.steering import max_acts_and_labels
from app.web.auth import WriterDep, limit_generation
from app.web.deps import InferenceDep, SessionDep, WorkspaceDep
from app.web.resident import MAX_TEXT_CHARS, MAX_TEXT_TOKENS, require_loaded, run_on_model

router = APIRouter()
MAX_TRAIN_TEXTS = 128  # per class
MAX_RUN_TEXTS = 32
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class FeatureRef(BaseModel):
    sae: str = Field(max_length=200)
    index: int = Field(ge=0)


class TrainIn(BaseModel):
    name: str = Field(max_length=100, description="letters, digits, '.', '_' or '-'")
    concept: str = Field(
        min_length=1, max_length=200, description="what it detects, in words (the baseline asks it)"
    )
    positive: list[Text] = Field(min_length=4, max_length=MAX_TRAIN_TEXTS)
    negative: list[Text] = Field(min_length=4, max_length=MAX_TRAIN_TEXTS)
    held_out_share: float = Field(
        0.25, gt=0, lt=1, description="of each class, kept out of training to measure it on"
    )
    kind: Literal["learn", "pick"] = Field(
        "learn", description="learn: logistic regression; pick: one feature and a threshold"
    )
    feature: FeatureRef | None = Field(None, description="pick: the feature")


class Figures(BaseModel):
    precision: float
    recall: float
    f1: float
    texts: int
    positives: int


class WeightOut(BaseModel):
    sae: str
    index: int
    label: str | None
    weight: float


class ClassifierOut(BaseModel):
    name: str
    concept: str
    kind: str
    bias: float
    features: list[WeightOut]
    train: Figures
    held_out: Figures
    baseline_held_out: Figures = Field(
        description="the resident model asked about the concept, threshold fit on training texts"
    )
    author: str | None


def _split(texts: list[str], share: float) -> tuple[list[str], list[str]]:
    """(train, held out): every k-th text held out, k from the share, at least one each."""
    every = max(2, round(1 / share))
    held = {i for i in range(len(texts)) if i % every == every - 1} or {len(texts) - 1}
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]


def _out(session, model: str, row: ClassifierRow) -> ClassifierOut:
    spec = FeatureClassifier.from_dict(row.spec)
    known = max_acts_and_labels(session, model, spec.features)
    return ClassifierOut(
        name=row.name,
        concept=row.concept,
        kind=spec.kind,
        bias=spec.bias,
        features=[
            WeightOut(sae=sae, index=i, label=known.get((sae, i), (None, None))[1], weight=w)
            for (sae, i), w in zip(spec.features, spec.weights, strict=True)
        ],
        author=row.author,
        **row.report,
    )


@router.post("/api/v1/classifiers", response_model=ClassifierOut, tags=["api"])
def api_train_classifier(
    request: Request,
    body: TrainIn,
    session: SessionDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
    viewer: WriterDep,
) -> ClassifierOut:
    """Train a classifier from texts with and without the concept, measure it and the prompted
    baseline on the held-out share, and save it under `name` (names are never reused)."""
    limit_generation(request)
    name = checked_name(body.name)
    loaded = require_loaded(workspace, "train a classifier on")
    model, saes = loaded.model, loaded.saes
    stored = find_model(session, model.name)
    if stored is None:
        raise MonoscopeError(f"{model.name} has no stored features; harvest it first.")
    if find_classifier(session, model.name, name) is not None:
        raise ClassifierExists(f"A classifier named {name!r} exists; choose another name.")
    if body.kind == "pick" and body.feature is None:
        raise MonoscopeError("kind 'pick' needs the feature to threshold.")
    train_pos, held_pos = _split(body.positive, body.held_out_share)
    train_neg, held_neg = _split(body.negative, body.held_out_share)
    train_texts, held_texts = train_pos + train_neg, held_pos + held_neg
    train_y = [True] * len(train_pos) + [False] * len(train_neg)
    held_y = [True] * len(held_pos) + [False] * len(held_neg)

    def compute() -> tuple[FeatureClassifier, dict]:  # on the inference worker
        train = text_peaks(model, saes, train_texts, MAX_TEXT_TOKENS)
        held = text_peaks(model, saes, held_texts, MAX_TEXT_TOKENS)
        if body.kind == "pick" and body.feature is not None:
            clf = pick_classifier(train, train_y, body.feature.sae, body.feature.index)
        else:
            clf = learn_classifier(train, train_y)
        asked = prompted_scores(model, train_texts + held_texts, body.concept, MAX_TEXT_TOKENS)
        cut = best_cut(asked[: len(train_texts)], train_y)
        report = {
            "train": precision_recall(clf.decide(train) > 0, train_y),
            "held_out": precision_recall(clf.decide(held) > 0, held_y),
            "baseline_held_out": precision_recall(asked[len(train_texts) :] > cut, held_y),
        }
        return clf, report

    clf, report = run_on_model(inference, compute)
    row = save_classifier(session, stored, name, body.concept, clf.to_dict(), report, viewer.name)
    session.commit()
    return _out(session, model.name, row)


@router.get("/api/v1/classifiers", response_model=list[ClassifierOut], tags=["api"])
def api_classifiers(session: SessionDep, workspace: WorkspaceDep) -> list[ClassifierOut]:
    """The loaded model's classifiers, newest first."""
    model = require_loaded(workspace, "list classifiers of").model.name
    return [_out(session, model, row) for row in list_classifiers(session, model)]


class RunIn(BaseModel):
    texts: list[Text] = Field(min_length=1, max_length=MAX_RUN_TEXTS)


class ContributionOut(BaseModel):
    sae: str
    index: int
    label: str | None
    contribution: float = Field(description="weight × the feature's peak on this text")


class VerdictOut(BaseModel):
    score: float = Field(description="Σ weight × peak + bias")
    positive: bool
    top: list[ContributionOut] = Field(description="the features that moved the score most")


@dataclass(frozen=True)
class _Verdict:
    score: float
    contributions: list[float]


@router.post("/api/v1/classifiers/{name}/run", response_model=list[VerdictOut], tags=["api"])
def api_run_classifier(
    request: Request,
    name: str,
    body: RunIn,
    session: SessionDep,
    workspace: WorkspaceDep,
    inference: InferenceDep,
) -> list[VerdictOut]:
    """Score texts with a saved classifier: its verdict on each, and the features behind it."""
    limit_generation(request)
    loaded = require_loaded(workspace, "run a classifier on")
    model, saes = loaded.model, loaded.saes
    row = find_classifier(session, model.name, name)
    if row is None:
        raise NotFoundError(f"No classifier {name!r} for {model.name}.")
    clf = FeatureClassifier.from_dict(row.spec)

    def compute() -> list[_Verdict]:
        peaks = text_peaks(model, saes, body.texts, MAX_TEXT_TOKENS)
        parts = clf.contributions(peaks)
        return [_Verdict(float(p.sum() + clf.bias), p.tolist()) for p in parts]

    verdicts = run_on_model(inference, compute)
    known = max_acts_and_labels(session, model.name, clf.features)
    out = []
    for verdict in verdicts:
        ranked = sorted(
            zip(clf.features, verdict.contributions, strict=True), key=lambda fc: -abs(fc[1])
        )
        top = [
            ContributionOut(
                sae=sae, index=i, label=known.get((sae, i), (None, None))[1], contribution=c
            )
            for (sae, i), c in ranked[:5]
            if c != 0
        ]
        out.append(VerdictOut(score=verdict.score, positive=verdict.score > 0, top=top))
    return out
