"""What a team dashboard shows: per SAE, label coverage and quality; across the database, recent
label changes, the features shared steering sessions use most, and list activity.

Coverage, failures and the score histogram come from each SAE's stored summary (no scan); the
rest are small indexed queries with limits, so the page costs the same at a million features.
"""

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.lists import all_lists
from app.db.models import (
    Explanation,
    Feature,
    FeatureList,
    LabelEvent,
    Model,
    SaeRow,
    SteeringSession,
)

LOW_SCORE = 0.2


@dataclass(frozen=True)
class SaeHealth:
    sae: SaeRow
    failed_labels: int  # features with no shown label whose labelling failed
    lowest: list[Feature]  # labelled features with the lowest headline scores


@dataclass(frozen=True)
class LabelChange:
    event: LabelEvent
    label: str
    model: str
    sae: str
    index: int


def sae_health(session: Session, sae: SaeRow, limit: int = 8) -> SaeHealth:
    lowest = session.scalars(
        select(Feature)
        .where(Feature.sae_id == sae.id, Feature.label_score < LOW_SCORE)
        .order_by(Feature.label_score, Feature.index)
        .limit(limit)
    ).all()
    return SaeHealth(sae, sae.summary.get("failed", 0), list(lowest))


def recent_label_changes(session: Session, limit: int = 12) -> list[LabelChange]:
    rows = session.execute(
        select(LabelEvent, Explanation.text, Model.name, SaeRow.name, Feature.index)
        .join(Explanation, Explanation.id == LabelEvent.explanation_id)
        .join(Feature, Feature.id == LabelEvent.feature_id)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .order_by(LabelEvent.id.desc())
        .limit(limit)
    )
    return [LabelChange(*row) for row in rows]


def most_steered(session: Session, limit: int = 10, sessions: int = 2_000) -> list[tuple]:
    """((model, sae, index, label), times) over the latest shared steering sessions."""
    counts: Counter = Counter()
    labels: dict[tuple, str | None] = {}
    configs = session.scalars(
        select(SteeringSession.config).order_by(SteeringSession.id.desc()).limit(sessions)
    )
    for config in configs:
        for f in (config or {}).get("features", []):
            if "sae" in f and "index" in f:
                key = (config.get("model"), f["sae"], int(f["index"]))
                counts[key] += 1
                labels[key] = f.get("label")
    return [((*key, labels[key]), n) for key, n in counts.most_common(limit)]


def list_activity(session: Session, limit: int = 8) -> list[tuple[FeatureList, int]]:
    return all_lists(session, limit)
