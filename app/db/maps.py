"""Feature maps: where each feature sits on its SAE's map, and the columns a map page draws.

    indices = mapped_candidates(session, sae_id)             # alive features, by index
    store_map(session, sae_id, indices, xy, {"method": "umap", ...})
    points = map_points(session, sae_id)                     # columns, one entry per placed feature

A map is replaced whole: positions of the last layout are cleared in the same transaction that
writes the new ones, so a page never mixes two layouts.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import numpy as np
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from app.db.models import Feature, SaeRow

CHUNK = 5000  # rows per UPDATE batch


def mapped_candidates(session: Session, sae_id: int) -> np.ndarray:
    """Indices of the features a map places: those that fired at least once. A dead feature's
    decoder row never wrote anything into the model, so where it points says nothing."""
    rows = session.scalars(
        select(Feature.index)
        .where(Feature.sae_id == sae_id, Feature.density > 0)
        .order_by(Feature.index)
    )
    return np.fromiter(rows, dtype=np.int64)


def store_map(
    session: Session, sae_id: int, indices: np.ndarray, xy: np.ndarray, layout: dict
) -> None:
    """Replace the SAE's map: `xy` (n, 2) are the positions of features `indices` (n,)."""
    features = cast(Table, Feature.__table__)
    session.execute(
        update(features).where(features.c.sae_id == sae_id).values(map_x=None, map_y=None)
    )
    rows = [
        {"sae": sae_id, "feature_index": int(i), "x": float(x), "y": float(y)}
        for i, (x, y) in zip(indices, xy, strict=True)
    ]
    statement = (
        update(features)
        .where(
            features.c.sae_id == bindparam("sae"), features.c.index == bindparam("feature_index")
        )
        .values(map_x=bindparam("x"), map_y=bindparam("y"))
    )
    for start in range(0, len(rows), CHUNK):
        session.execute(statement, rows[start : start + CHUNK])
    stamped = layout | {"features": len(rows), "created": datetime.now(UTC).isoformat()}
    session.execute(update(SaeRow).where(SaeRow.id == sae_id).values(map_layout=stamped))


@dataclass
class MapPoints:
    """A map's features as columns (what the page's canvas draws), ordered by index."""

    index: list[int] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    density: list[float] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    score: list[float | None] = field(default_factory=list)


def map_points(session: Session, sae_id: int) -> MapPoints:
    """Every placed feature of the SAE: one query, no per-feature lookups."""
    points = MapPoints()
    statement = (
        select(
            Feature.index,
            Feature.map_x,
            Feature.map_y,
            Feature.density,
            Feature.label,
            Feature.label_score,
        )
        .where(Feature.sae_id == sae_id, Feature.map_x.is_not(None))
        .order_by(Feature.index)
    )
    for index, x, y, density, label, score in session.execute(statement):
        points.index.append(index)
        points.x.append(x)
        points.y.append(y)
        points.density.append(density)
        points.label.append(label)
        points.score.append(score)
    return points
