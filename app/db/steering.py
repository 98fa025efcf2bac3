"""Steering's reads: features' max activations (the unit of a strength) and shared sessions."""

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Feature, Model, SaeRow, SteeringSession


def max_acts_and_labels(
    session: Session, model: str, features: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[float, str | None]]:
    """(sae, index) -> (max activation, label) for stored features, in one query."""
    wanted = set(features)
    if not wanted:
        return {}
    rows = session.execute(
        select(SaeRow.name, Feature.index, Feature.max_act, Feature.label)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .where(
            Model.name == model,
            SaeRow.name.in_({sae for sae, _ in wanted}),
            Feature.index.in_({index for _, index in wanted}),
        )
    )
    return {(sae, index): (max_act, label) for sae, index, max_act, label in rows}


def shared_session(session: Session, share_id: str) -> SteeringSession | None:
    return session.scalar(select(SteeringSession).where(SteeringSession.share_id == share_id))
