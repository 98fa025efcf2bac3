"""Label embeddings: which labels still need one, storing them, and reading them for search.

    todo = labels_to_embed(session, sae_id, "all-MiniLM-L6-v2")    # [(explanation id, text)]
    store_label_embeddings(session, "all-MiniLM-L6-v2", ids, texts, vectors)
    ids, vectors = label_vectors(session, "all-MiniLM-L6-v2")        # every searchable label

Vectors are stored as float16 bytes (768 per MiniLM label) and come back as float16 rows.
"""

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.db.models import Explanation, Feature, LabelEmbedding


def _current(embedder: str):
    """The join condition of an embedding that still describes its label's text."""
    return (
        (LabelEmbedding.explanation_id == Explanation.id)
        & (LabelEmbedding.embedder == embedder)
        & (LabelEmbedding.text == Explanation.text)
    )


def labels_to_embed(session: Session, sae_id: int, embedder: str) -> list[tuple[int, str]]:
    """Labels of the SAE a page can show (not failed, not retired) without a current embedding:
    never embedded, edited since, or embedded by another model."""
    statement = (
        select(Explanation.id, Explanation.text)
        .join(Feature, Feature.id == Explanation.feature_id)
        .outerjoin(LabelEmbedding, _current(embedder))
        .where(
            Feature.sae_id == sae_id,
            Explanation.status == "ok",
            Explanation.retired_at.is_(None),
            LabelEmbedding.explanation_id.is_(None),
        )
        .order_by(Explanation.id)
    )
    return [(int(i), str(t)) for i, t in session.execute(statement)]


def store_label_embeddings(
    session: Session, embedder: str, ids: list[int], texts: list[str], vectors: np.ndarray
) -> None:
    """Replace the labels' embeddings (an edited label keeps one row, of its new text)."""
    session.execute(delete(LabelEmbedding).where(LabelEmbedding.explanation_id.in_(ids)))
    half = vectors.astype(np.float16)
    session.add_all(
        LabelEmbedding(explanation_id=i, embedder=embedder, text=t, vector=v.tobytes())
        for i, t, v in zip(ids, texts, half, strict=True)
    )
    session.flush()


def embedding_fingerprint(session: Session, embedder: str) -> tuple[int, int]:
    """(count, newest id) of the stored embeddings: a cached index is stale when it changes."""
    count, newest = session.execute(
        select(func.count(), func.max(LabelEmbedding.explanation_id)).where(
            LabelEmbedding.embedder == embedder
        )
    ).one()
    return int(count), int(newest or 0)


def label_vectors(session: Session, embedder: str) -> tuple[np.ndarray, np.ndarray]:
    """(explanation ids, float16 unit vectors as stored) of every label with a current
    embedding that search may return (not failed, retired or reviewed wrong)."""
    statement = (
        select(LabelEmbedding.explanation_id, LabelEmbedding.vector)
        .join(Explanation, _current(embedder))
        .where(
            Explanation.status == "ok",
            Explanation.retired_at.is_(None),
            Explanation.verdict.is_distinct_from("wrong"),
        )
        .order_by(LabelEmbedding.explanation_id)
    )
    rows = session.execute(statement).all()
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float16)
    ids = np.array([r[0] for r in rows], np.int64)
    return ids, np.frombuffer(b"".join(r[1] for r in rows), np.float16).reshape(len(rows), -1)
