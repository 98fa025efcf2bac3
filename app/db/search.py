"""Full-text search over explanations, one function over two engines.

    hits = search_explanations(session, "golden gate", model="monoscope-demo", limit=20)

SQLite ranks with FTS5's bm25 (porter stemming); PostgreSQL with ts_rank over a stored English
tsvector column (GIN index) that the migration adds outside the ORM model. A query is a set of
words that must all match, the last one also as a prefix, so typing "brid" finds "bridge".
Operators and quotes in the query are taken as plain words.
"""

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, column, func, literal_column, select, table
from sqlalchemy.orm import Session

from app.db.models import Explanation, Feature, Model, SaeRow

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 16


@dataclass(frozen=True)
class SearchHit:
    model: str
    sae: str
    index: int
    model_id: int
    feature_id: int
    density: float
    max_act: float
    explanation_id: int
    text: str
    method: str
    scores: dict
    rank: float  # higher is better


def _words(query: str) -> list[str]:
    return _WORD.findall(query.lower())[:MAX_TERMS]


def fts5_query(query: str) -> str | None:
    """A MATCH expression that cannot be a syntax error: each word quoted, the last a prefix."""
    words = _words(query)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def tsquery(query: str) -> str | None:
    """A to_tsquery expression: words ANDed, the last a prefix; no user-supplied operators."""
    words = _words(query)
    if not words:
        return None
    return " & ".join([*words[:-1], words[-1] + ":*"])


def _hits(session: Session, statement: Select) -> list[SearchHit]:
    return [SearchHit(**row._mapping) for row in session.execute(statement)]


def _matches(session: Session, query: str):
    """(SELECT id, rank of matching explanations, rank expression, key column), or None when
    the query has no words."""
    if session.get_bind().dialect.name == "sqlite":
        match = fts5_query(query)
        if match is None:
            return None
        fts = table("explanations_fts", column("rowid"))
        rank: ColumnElement[float] = -func.bm25(literal_column("explanations_fts"))
        matches = select(fts.c.rowid.label("id"), rank.label("rank")).where(
            literal_column("explanations_fts").op("MATCH")(match)
        )
        return matches, rank, fts.c.rowid
    expression = tsquery(query)
    if expression is None:
        return None
    ts = func.to_tsquery("english", expression)
    vector: ColumnElement = literal_column(
        "explanations.search_vector"
    )  # generated column, GIN-indexed
    rank = func.ts_rank(vector, ts)
    matches = select(Explanation.id.label("id"), rank.label("rank")).where(vector.op("@@")(ts))
    return matches, rank, Explanation.id


def features_matching(session: Session, query: str) -> Select | None:
    """SELECT of the feature ids with a label matching the query (for filtering listings)."""
    found = _matches(session, query)
    if found is None:
        return None
    ids = found[0].subquery()
    return select(Explanation.feature_id).join(ids, ids.c.id == Explanation.id)


def search_explanations(
    session: Session,
    query: str,
    model: str | None = None,
    sae: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> list[SearchHit]:
    """Explanations matching every word of the query, best first."""
    found = _matches(session, query)
    if found is None:
        return []
    matches, rank, key = found
    if model is None and sae is None:
        # Unfiltered, the best page is found before any join: a common word matching tens of
        # thousands of labels then costs one ranking pass, not a join per match.
        matches = matches.order_by(rank.desc(), key).limit(limit + offset)
    ranked = matches.subquery()
    statement = (
        _hit_select(ranked.c.rank)
        .join(ranked, Explanation.id == ranked.c.id)
        .order_by(ranked.c.rank.desc(), Explanation.id)
        .limit(limit)
        .offset(offset)
    )
    return _hits(session, _filtered(statement, model, sae))


def _hit_select(rank: ColumnElement) -> Select:
    """A hit's columns, for labels a page may show (not retired, not reviewed wrong)."""
    return (
        select(
            Model.name.label("model"),
            SaeRow.name.label("sae"),
            Feature.index.label("index"),
            Model.id.label("model_id"),
            Feature.id.label("feature_id"),
            Feature.density,
            Feature.max_act,
            Explanation.id.label("explanation_id"),
            Explanation.text,
            Explanation.method,
            Explanation.scores,
            rank.label("rank"),
        )
        .select_from(Explanation)
        .join(Feature, Feature.id == Explanation.feature_id)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .where(Explanation.retired_at.is_(None), Explanation.verdict.is_distinct_from("wrong"))
    )


def _filtered(statement: Select, model: str | None, sae: str | None) -> Select:
    if model is not None:
        statement = statement.where(Model.name == model)
    if sae is not None:
        statement = statement.where(SaeRow.name == sae)
    return statement


def hits_by_ids(
    session: Session, ids: list[int], model: str | None = None, sae: str | None = None
) -> dict[int, SearchHit]:
    """The hits for these explanation ids that the filters and review allow, by id (rank 0: the
    caller ranks them)."""
    if not ids:
        return {}
    statement = _hit_select(literal_column("0.0")).where(Explanation.id.in_(ids))
    return {hit.explanation_id: hit for hit in _hits(session, _filtered(statement, model, sae))}


def decoder_neighbours(session: Session, feature_ids: list[int]) -> dict[int, list]:
    """Each feature's stored decoder neighbours ([[index, cosine], ...], same SAE), by feature
    id, in one query."""
    if not feature_ids:
        return {}
    rows = session.execute(
        select(Feature.id, Feature.neighbours).where(Feature.id.in_(sorted(set(feature_ids))))
    )
    return {feature_id: neighbours or [] for feature_id, neighbours in rows}
