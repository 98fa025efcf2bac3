"""The labelling jobs' queries (app.pipeline.explain and app.pipeline.score): which features
still need a label or a score, replacing machine labels, and storing scores."""

from collections.abc import Iterable
from typing import cast

from sqlalchemy import CursorResult, delete, exists, func, select, update
from sqlalchemy.orm import Session

from app.db.models import Context, Explanation, Feature, LabelEvent, Model, SaeRow


def _ok_explanations(model: str, sae: str, column):
    """(feature index, column) of an SAE's successful explanations, oldest first, so that a
    dict built from the rows keeps each feature's newest."""
    return (
        select(Feature.index, column)
        .join(Explanation, Explanation.feature_id == Feature.id)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .where(Model.name == model, SaeRow.name == sae, Explanation.status == "ok")
        .order_by(Explanation.created_at, Explanation.id)
    )


def newest_labels(
    session: Session, model: str, sae: str, method: str | None = None
) -> dict[int, str]:
    """feature index -> its newest successful label (optionally from one method)."""
    statement = _ok_explanations(model, sae, Explanation.text)
    if method is not None:
        statement = statement.where(Explanation.method == method)
    return dict(session.execute(statement).tuples().all())


def newest_scores(session: Session, model: str, sae: str, scorer: str) -> dict[int, float]:
    """feature index -> the scorer's value for its newest scored label."""
    rows = session.execute(_ok_explanations(model, sae, Explanation.scores)).tuples()
    values = {}
    for index, scores in rows:
        value = (scores or {}).get(scorer, {}).get("value")
        if value is not None:
            values[index] = float(value)
    return values


def features_to_label(
    session: Session,
    sae_id: int,
    method: str,
    explainer_model: str | None,
    features: Iterable[int] | None,
    force: bool,
) -> tuple[list[int], int]:
    """(alive features still without a label from this explainer, alive features considered)."""
    alive = select(Feature.index).where(Feature.sae_id == sae_id, Feature.density > 0)
    if features is not None:
        alive = alive.where(Feature.index.in_(list(features)))
    indices = list(session.scalars(alive.order_by(Feature.index)))
    if force:
        return indices, len(indices)
    done = set(
        session.scalars(
            select(Feature.index)
            .join(Explanation, Explanation.feature_id == Feature.id)
            .where(
                Feature.sae_id == sae_id,
                Explanation.method == method,
                Explanation.explainer_model == explainer_model,
                Explanation.status == "ok",
            )
        )
    )
    return [i for i in indices if i not in done], len(indices)


def delete_untouched_machine_labels(
    session: Session, feature_ids: list[int], method: str, explainer_model: str | None
) -> None:
    """An explainer's earlier labels and failures on these features, except those a person has
    touched (reviewed, edited, retired): human work outlives machine runs."""
    session.execute(
        delete(Explanation).where(
            Explanation.feature_id.in_(feature_ids),
            Explanation.method == method,
            Explanation.explainer_model == explainer_model,
            ~exists().where(LabelEvent.explanation_id == Explanation.id),
        )
    )


def labelled_features(
    session: Session, sae_id: int, features: Iterable[int] | None = None
) -> tuple[list[int], int]:
    """(indices of features with a successful label, how many such labels there are)."""
    labelled = (
        select(Feature.index)
        .join(Explanation)
        .where(Feature.sae_id == sae_id, Explanation.status == "ok")
    )
    if features is not None:
        labelled = labelled.where(Feature.index.in_(list(features)))
    n_labels = session.scalar(
        select(func.count())
        .select_from(Explanation)
        .join(Feature)
        .where(Feature.sae_id == sae_id, Explanation.status == "ok")
    )
    return sorted(set(session.scalars(labelled))), n_labels or 0


def lacks_score(scores: dict | None, scorer: str) -> bool:
    """A label needs `scorer` run: no result yet, or a failure, which the next run retries."""
    current = (scores or {}).get(scorer)
    return current is None or "failed" in current


def scored_already(
    session: Session, sae_id: int, scorers: Iterable[str], indices: Iterable[int]
) -> tuple[set[int], int, int]:
    """Of these features, those whose every successful label holds a result of every scorer
    (a rerun need not read their examples), with how many labels and results they hold."""
    statement = (
        select(Feature.index, Explanation.scores)
        .join(Explanation)
        .where(Feature.sae_id == sae_id, Explanation.status == "ok")
    )
    wanted, scorers = set(indices), list(scorers)
    lacking: set[int] = set()
    labels: dict[int, int] = {}
    results: dict[int, int] = {}
    for index, scores in session.execute(statement):
        if index not in wanted:
            continue
        missing = sum(lacks_score(scores, scorer) for scorer in scorers)
        if missing:
            lacking.add(index)
        labels[index] = labels.get(index, 0) + 1
        results[index] = results.get(index, 0) + len(scorers) - missing
    done = wanted - lacking
    return done, sum(labels.get(i, 0) for i in done), sum(results.get(i, 0) for i in done)


def stored_context_ids(session: Session, model_id: int) -> list[bytes]:
    """Every stored context's packed token ids, in storage order."""
    statement = select(Context.token_ids).where(Context.model_id == model_id)
    return list(session.execute(statement.order_by(Context.id)).scalars())


def store_scores(session: Session, label: Explanation, new: dict[str, dict]) -> bool:
    """Merge new scores into a label, only while it still reads as it did when scored: a person
    may have edited it meanwhile, and the old text's scores would then sit on the new. False when
    the label changed (nothing stored)."""
    result = session.execute(
        update(Explanation)
        .where(Explanation.id == label.id, Explanation.text == label.text)
        .values(scores=dict(label.scores or {}) | new)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult, result).rowcount)
