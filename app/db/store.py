"""Bulk writes of harvest results. Callers run them inside one session_scope transaction, so a
failure anywhere leaves no rows behind.

    model = upsert_model(session, ModelInfo(...), vocabulary)
    sae = create_sae(session, model, SaeInfo(...), replace=False)
    context_ids = insert_contexts(session, model.id, store_fingerprint, rows, token_ids)
    feature_ids = insert_features(session, sae.id, columns)
    insert_examples(session, feature_ids[features], context_ids[...], ...)
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from sqlalchemy import CursorResult, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError
from app.db.codec import pack_activations, pack_ids
from app.db.models import (
    Context,
    Example,
    Explanation,
    Feature,
    FeatureListItem,
    LabelEvent,
    Model,
    SaeRow,
    Token,
)

CHUNK = 5000  # rows per INSERT batch: bounded memory, few round trips


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    architecture: str
    n_layers: int
    d_model: int
    vocab_size: int


@dataclass(frozen=True)
class SaeInfo:
    name: str
    source: str
    site: str
    architecture: str
    d_in: int
    d_sae: int
    metrics: dict
    harvest: dict
    site_out: str | None = None  # a transcoder's output site


def printable(text: str) -> str:
    """Token text as the database can hold it: NUL (which PostgreSQL refuses) shown as ␀."""
    return text.replace("\x00", "\u2400")


def _insert_chunked(session: Session, entity, rows: Sequence[dict]) -> None:
    """Rows into an entity's table through Core: the ORM's bulk path spends a quarter of the
    time on per-row bookkeeping (173k example rows into SQLite: 2.2 s through it, 1.6 s here)."""
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(entity.__table__), rows[start : start + CHUNK])


def upsert_model(session: Session, info: ModelInfo, vocabulary: Sequence[str]) -> Model:
    """The model's row, created with its vocabulary on first sight."""
    model = session.scalar(select(Model).where(Model.name == info.name))
    if model is None:
        model = Model(**info.__dict__)
        session.add(model)
        session.flush()
        _insert_chunked(
            session,
            Token,
            [
                {"model_id": model.id, "token_id": i, "text": printable(t)}
                for i, t in enumerate(vocabulary)
            ],
        )
    elif model.vocab_size != info.vocab_size:
        raise MonoscopeError(
            f"the database already has a model named {info.name!r} with a different vocabulary "
            f"({model.vocab_size} tokens, not {info.vocab_size})"
        )
    return model


def name_taken(model: str, sae: str) -> MonoscopeError:
    return MonoscopeError(
        f"{model}/{sae} is already in the database; pass --replace to harvest it again, "
        "or --name to store it under another name"
    )


def human_work(session: Session, sae_id: int) -> dict[str, int]:
    """What people made on an SAE's features, by kind: labels written or reviewed by hand, the
    history of label changes, and list entries. A machine job must never delete any of it."""
    features = select(Feature.id).where(Feature.sae_id == sae_id).scalar_subquery()
    counted = {
        "human labels": select(func.count())
        .select_from(Explanation)
        .where(
            Explanation.feature_id.in_(features),
            (Explanation.method == "human") | Explanation.verdict.is_not(None),
        ),
        "label changes": select(func.count())
        .select_from(LabelEvent)
        .where(LabelEvent.feature_id.in_(features)),
        "list entries": select(func.count())
        .select_from(FeatureListItem)
        .where(FeatureListItem.feature_id.in_(features)),
    }
    found = {kind: int(session.scalar(query) or 0) for kind, query in counted.items()}
    return {kind: n for kind, n in found.items() if n}


def refuse_to_drop_human_work(session: Session, model: str, sae_id: int, name: str) -> None:
    """Replacing an SAE drops its features and everything on them: refused while people's work
    is there (MonoscopeError naming it), so it is never lost to a re-harvest."""
    found = human_work(session, sae_id)
    if found:
        what = ", ".join(f"{n:,} {kind}" for kind, n in found.items())
        raise MonoscopeError(
            f"{model}/{name} holds work people did ({what}); --replace would delete it. "
            "Harvest under another --name instead"
        )


def create_sae(session: Session, model: Model, info: SaeInfo, replace: bool = False) -> SaeRow:
    existing = session.scalar(
        select(SaeRow).where(SaeRow.model_id == model.id, SaeRow.name == info.name)
    )
    if existing is not None:
        if not replace:
            raise name_taken(model.name, info.name)
        refuse_to_drop_human_work(session, model.name, existing.id, info.name)
        session.delete(existing)
        session.flush()
    sae = SaeRow(model_id=model.id, **info.__dict__)
    session.add(sae)
    session.flush()
    return sae


def insert_contexts(
    session: Session, model_id: int, corpus: str, rows: np.ndarray, token_ids: np.ndarray
) -> dict[int, int]:
    """Store contexts not yet stored; returns context row -> database id for the given rows."""
    dialect = session.get_bind().dialect.name
    upsert = sqlite_insert if dialect == "sqlite" else pg_insert
    values = [
        {"model_id": model_id, "corpus": corpus, "row": int(r), "token_ids": pack_ids(ids)}
        for r, ids in zip(rows, token_ids, strict=True)
    ]
    for start in range(0, len(values), CHUNK):
        statement = upsert(Context).on_conflict_do_nothing(
            index_elements=["model_id", "corpus", "row"]
        )
        session.execute(statement, values[start : start + CHUNK])
    wanted = {int(r) for r in rows}
    found = session.execute(
        select(Context.row, Context.id).where(
            Context.model_id == model_id, Context.corpus == corpus
        )
    )
    return {row: id_ for row, id_ in found if row in wanted}


def insert_features(session: Session, sae_id: int, columns: Mapping[str, Sequence]) -> np.ndarray:
    """One row per feature from equal-length columns; returns database ids indexed by feature."""
    n = len(columns["index"])
    names = list(columns)
    _insert_chunked(
        session,
        Feature,
        [{"sae_id": sae_id} | {name: columns[name][i] for name in names} for i in range(n)],
    )
    ids = np.zeros(n, dtype=np.int64)
    for index, id_ in session.execute(
        select(Feature.index, Feature.id).where(Feature.sae_id == sae_id)
    ):
        ids[index] = id_
    return ids


def insert_examples(
    session: Session,
    feature_ids: np.ndarray,
    context_ids: np.ndarray,
    kinds: Sequence[str],
    ranks: np.ndarray,
    intervals: np.ndarray,
    max_acts: np.ndarray,
    activations: np.ndarray,  # (n, pos)
) -> None:
    rows = [
        {
            "feature_id": int(feature_ids[i]),
            "context_id": int(context_ids[i]),
            "kind": kinds[i],
            "rank": int(ranks[i]),
            "interval": None if intervals[i] < 0 else int(intervals[i]),
            "max_act": float(max_acts[i]),
            "activations": pack_activations(activations[i]),
        }
        for i in range(len(feature_ids))
    ]
    _insert_chunked(session, Example, rows)


def delete_orphan_contexts(session: Session, model_id: int) -> int:
    """Contexts no example refers to any more (after a re-harvest)."""
    used = select(Example.context_id).distinct()
    result = session.execute(
        delete(Context).where(Context.model_id == model_id, Context.id.not_in(used))
    )
    return cast(CursorResult, result).rowcount or 0


def count_rows(session: Session) -> dict[str, int]:
    """Rows per table: what tests compare to prove a failed job left nothing behind."""
    return {
        table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
        for table in (Model, Token, SaeRow, Context, Feature, Example)
    }
