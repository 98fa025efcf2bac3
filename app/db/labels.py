"""Which label a feature is shown by, and the per-SAE aggregates pages show.

    refresh_sae(session, sae_id)   # after any job that adds labels or scores

A feature may carry many labels (one per explainer or person) with several scores each. Pages and
listings need one: a label people verified first, then the best-scored, by the first scorer of
SCORE_PREFERENCE it has; labels marked wrong or retired are never shown. Keeping that
choice on the feature row (`label`, `label_score`) lets a million-feature listing sort and filter
by score through an index, and keeping the SAE's counts and histograms in `saes.summary` spares
SAE pages and the dashboard a full scan; a person's review shifts them by its difference.
Written with Core statements on named columns only, so the migrations that introduced these
columns can run them too.
"""

from datetime import UTC, datetime
from typing import cast

import numpy as np
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.db.models import Explanation, Feature, SaeRow

# LLM judges say more about a label than the offline keyword match does, so they lead.
SCORE_PREFERENCE = ("detection", "fuzzing", "keyword")
DENSITY_LOG10_EDGES = [round(-8 + 0.25 * i, 2) for i in range(33)]  # 1e-8 … 1
SCORE_EDGES = [round(-1 + 0.1 * i, 1) for i in range(21)]  # correlations and accuracies


def headline_score(scores: dict | None) -> tuple[str, float] | None:
    """(scorer, value) of the first preferred scorer that succeeded, else None."""
    for scorer in SCORE_PREFERENCE:
        entry = (scores or {}).get(scorer)
        if entry and "value" in entry and entry["value"] is not None:
            return scorer, float(entry["value"])
    return None


def label_order(scores: dict | None, explanation_id: int, verdict: str | None = None) -> tuple:
    """Sort key, larger is better: verified first, then scored before unscored, then by score,
    then newest."""
    headline = headline_score(scores)
    return (
        verdict == "verified",
        headline is not None,
        headline[1] if headline else 0.0,
        explanation_id,
    )


def showable(status: str, verdict: str | None, retired_at) -> bool:
    return status == "ok" and verdict != "wrong" and retired_at is None


def _best_labels(session: Session | Connection, where, reviewed: bool) -> dict:
    review = (Explanation.verdict, Explanation.retired_at) if reviewed else ()
    rows = session.execute(
        select(
            Explanation.feature_id, Explanation.id, Explanation.text, Explanation.scores, *review
        )
        .join(Feature, Feature.id == Explanation.feature_id)
        .where(where, Explanation.status == "ok")
    )
    best: dict[int, tuple[tuple, str, float | None]] = {}
    for feature_id, explanation_id, text, scores, *rest in rows:
        verdict, retired_at = rest or (None, None)
        if not showable("ok", verdict, retired_at):
            continue
        key = label_order(scores, explanation_id, verdict)
        if feature_id not in best or key > best[feature_id][0]:
            headline = headline_score(scores)
            best[feature_id] = (key, text, headline[1] if headline else None)
    return best


def refresh_feature_label(session: Session, feature_id: int) -> None:
    """One feature's shown label, after a person changed one of its labels, and its SAE's
    summary shifted by the difference: a review click reads a few rows, never the whole SAE."""
    features = cast(Table, Feature.__table__)
    sae_id, old_label, old_score = session.execute(
        select(features.c.sae_id, features.c.label, features.c.label_score).where(
            features.c.id == feature_id
        )
    ).one()
    best = _best_labels(session, Feature.id == feature_id, reviewed=True)
    _, text, score = best.get(feature_id, (None, None, None))
    session.execute(
        update(features).where(features.c.id == feature_id).values(label=text, label_score=score)
    )
    _shift_summary(session, sae_id, feature_id, (old_label, old_score), (text, score))


def _has_failed_attempt(session: Session, feature_id: int) -> bool:
    failed = select(Explanation.id).where(
        Explanation.feature_id == feature_id, Explanation.status == "failed"
    )
    return session.scalar(select(failed.exists())) or False


def _shift_summary(
    session: Session, sae_id: int, feature_id: int, before: tuple, after: tuple
) -> None:
    saes = cast(Table, SaeRow.__table__)
    # FOR UPDATE: two reviewers of one SAE shift its summary one after the other.
    stored = session.scalar(select(saes.c.summary).where(saes.c.id == sae_id).with_for_update())
    if not stored or "score_sum" not in stored:  # never summarised
        refresh_summary(session, sae_id)
        return
    summary = dict(stored)
    if (before[0] is None) != (after[0] is None) and _has_failed_attempt(session, feature_id):
        summary["failed"] += 1 if after[0] is None else -1
    counts = list(summary["scores"]["counts"])
    for (label, score), sign in ((before, -1), (after, 1)):
        summary["labelled"] += sign * (label is not None)
        if score is not None:
            summary["scored"] += sign
            summary["score_sum"] += sign * score
            counts[_bin(score, SCORE_EDGES)] += sign
    summary["scores"] = {"edges": SCORE_EDGES, "counts": counts}
    summary["mean_score"] = _mean(summary["score_sum"], summary["scored"])
    summary["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    session.execute(update(saes).where(saes.c.id == sae_id).values(summary=summary))


def refresh_labels(session: Session | Connection, sae_id: int, reviewed: bool = True) -> int:
    """Store each feature's best label and its headline score; returns how many have one.
    `reviewed=False` ignores review columns, for the migration that ran before they existed."""
    best = _best_labels(session, Feature.sae_id == sae_id, reviewed)
    features = cast(Table, Feature.__table__)
    session.execute(
        update(features).where(features.c.sae_id == sae_id).values(label=None, label_score=None)
    )
    if best:
        session.execute(
            update(features)
            .where(features.c.id == bindparam("feature_id"))
            .values(label=bindparam("text"), label_score=bindparam("score")),
            [{"feature_id": f, "text": text, "score": s} for f, (_, text, s) in best.items()],
        )
    return len(best)


def _histogram(values: np.ndarray, edges: list[float]) -> dict:
    clipped = np.clip(values, edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=np.asarray(edges))
    return {"edges": edges, "counts": counts.tolist()}


def _bin(value: float, edges: list[float]) -> int:
    """The bin _histogram counts `value` in."""
    return int(np.argmax(_histogram(np.array([value]), edges)["counts"]))


def _mean(total: float, n: int) -> float | None:
    return round(total / n, 4) if n else None


def refresh_summary(session: Session | Connection, sae_id: int) -> dict:
    """Recompute the SAE's coverage and histograms from its feature rows and store them."""
    rows = session.execute(
        select(Feature.density, Feature.label_score, Feature.label.is_not(None)).where(
            Feature.sae_id == sae_id
        )
    ).all()
    failed = session.scalar(
        select(func.count(func.distinct(Explanation.feature_id)))
        .join(Feature, Feature.id == Explanation.feature_id)
        .where(Feature.sae_id == sae_id, Feature.label.is_(None), Explanation.status == "failed")
    )
    density = np.array([r[0] for r in rows], dtype=np.float64)
    scores = np.array([r[1] for r in rows if r[1] is not None], dtype=np.float64)
    alive = density > 0
    summary = {
        "features": len(rows),
        "alive": int(alive.sum()),
        "labelled": int(sum(1 for r in rows if r[2])),
        "scored": int(scores.size),
        "failed": int(failed or 0),
        "score_sum": float(scores.sum()),
        "mean_score": _mean(float(scores.sum()), int(scores.size)),
        "density_log10": _histogram(np.log10(density[alive]), DENSITY_LOG10_EDGES),
        "scores": _histogram(scores, SCORE_EDGES),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    saes = cast(Table, SaeRow.__table__)
    session.execute(update(saes).where(saes.c.id == sae_id).values(summary=summary))
    return summary


def refresh_sae(session: Session | Connection, sae_id: int, reviewed: bool = True) -> dict:
    refresh_labels(session, sae_id, reviewed)
    return refresh_summary(session, sae_id)
