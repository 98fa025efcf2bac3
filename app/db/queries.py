"""The reads behind pages and the API; each page costs a fixed, small number of round trips.

sae = find_sae(session, "monoscope-demo", "res1")
detail = feature_detail(session, "monoscope-demo", "res1", 946)   # 3 queries
page = list_features(session, sae.id, sort="density", descending=True, limit=50)
page2 = list_features(session, sae.id, sort="density", descending=True, after=page.next_key)
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import Session, aliased, contains_eager, load_only

from app.db.codec import unpack_activations, unpack_ids
from app.db.labels import label_order, showable
from app.db.models import Context, Example, Explanation, Feature, Model, SaeRow, Token
from app.db.search import features_matching

LISTED = (
    Feature.index,
    Feature.density,
    Feature.max_act,
    Feature.mean_act,
    Feature.label,
    Feature.label_score,
)
SortKey = Literal["index", "density", "max_act", "score"]
SORT_COLUMNS = {
    "index": Feature.index,
    "density": Feature.density,
    "max_act": Feature.max_act,
    "score": Feature.label_score,
}


@dataclass(frozen=True)
class ExampleView:
    kind: str
    rank: int
    interval: int | None
    max_act: float
    context_row: int
    token_ids: np.ndarray  # (pos,) int32
    activations: np.ndarray  # (pos,) float32

    @property
    def max_position(self) -> int:
        return int(self.activations.argmax())


@dataclass(frozen=True)
class FeatureDetail:
    model: Model
    sae: SaeRow
    feature: Feature
    examples: list[ExampleView]
    explanations: list[Explanation]

    def of_kind(self, kind: str) -> list[ExampleView]:
        return [e for e in self.examples if e.kind == kind]


@dataclass(frozen=True)
class FeaturePage:
    features: list[Feature]
    next_key: tuple[float | int, int] | None = None  # pass as `after` for the following page
    sort: SortKey = "index"
    descending: bool = False
    filters: dict = field(default_factory=dict)


def find_model(session: Session, name: str) -> Model | None:
    return session.scalar(select(Model).where(Model.name == name))


def find_sae(session: Session, model: str, sae: str) -> SaeRow | None:
    return session.scalar(select(SaeRow).join(Model).where(Model.name == model, SaeRow.name == sae))


def find_feature(session: Session, sae_id: int, index: int) -> Feature | None:
    return session.scalar(select(Feature).where(Feature.sae_id == sae_id, Feature.index == index))


def labels_of(session: Session, sae_id: int, indices: list[int]) -> list[Feature]:
    """Feature rows (label, density, max activation) for a set of indices, in one query."""
    if not indices:
        return []
    return list(
        session.scalars(select(Feature).where(Feature.sae_id == sae_id, Feature.index.in_(indices)))
    )


def list_saes(session: Session) -> list[SaeRow]:
    return list(
        session.scalars(
            select(SaeRow)
            .join(Model)
            .options(contains_eager(SaeRow.model))
            .order_by(Model.name, SaeRow.name)
        )
    )


def _example_view(e: Example, c: Context) -> ExampleView:
    return ExampleView(
        kind=e.kind,
        rank=e.rank,
        interval=e.interval,
        max_act=e.max_act,
        context_row=c.row,
        token_ids=unpack_ids(c.token_ids),
        activations=unpack_activations(e.activations),
    )


def feature_details(
    session: Session, model: str, sae: str, indices: list[int]
) -> list[FeatureDetail]:
    """Feature pages for many features in three queries (batch jobs such as explain use it)."""
    rows = session.execute(
        select(Feature, SaeRow, Model)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .where(Model.name == model, SaeRow.name == sae, Feature.index.in_(indices))
        .order_by(Feature.index)
    ).all()
    ids = [feature.id for feature, _, _ in rows]
    examples: dict[int, list[ExampleView]] = {i: [] for i in ids}
    for e, c in session.execute(
        select(Example, Context)
        .join(Context, Context.id == Example.context_id)
        .where(Example.feature_id.in_(ids))
        .order_by(Example.feature_id, Example.kind.desc(), Example.rank)  # top, then quantiles
    ).tuples():
        examples[e.feature_id].append(_example_view(e, c))
    explanations: dict[int, list[Explanation]] = {i: [] for i in ids}
    for explanation in session.scalars(
        select(Explanation)
        .where(Explanation.feature_id.in_(ids))
        .order_by(Explanation.created_at.desc(), Explanation.id.desc())
    ):
        explanations[explanation.feature_id].append(explanation)
    return [
        FeatureDetail(model_row, sae_row, feature, examples[feature.id], explanations[feature.id])
        for feature, sae_row, model_row in rows
    ]


def feature_detail(session: Session, model: str, sae: str, index: int) -> FeatureDetail | None:
    """Everything a feature page shows, in three queries: feature, examples, explanations."""
    found = feature_details(session, model, sae, [index])
    return found[0] if found else None


def token_counts(session: Session, model_id: int, vocab_size: int) -> np.ndarray:
    """(vocab,) how often each token occurs in the model's stored contexts: a background
    frequency for contrasting a feature's tokens with the corpus."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for (blob,) in session.execute(select(Context.token_ids).where(Context.model_id == model_id)):
        counts += np.bincount(unpack_ids(blob), minlength=vocab_size)[:vocab_size]
    return counts


@dataclass(frozen=True)
class FeatureFilters:
    """What narrows an SAE's feature listing; None means no constraint."""

    labelled: bool | None = None
    alive: bool | None = None
    min_density: float | None = None
    max_density: float | None = None
    label_query: str | None = None


def list_features(
    session: Session,
    sae_id: int,
    sort: SortKey = "index",
    descending: bool = False,
    after: tuple[float | int, int] | None = None,
    limit: int = 50,
    filters: FeatureFilters | None = None,
) -> FeaturePage:
    """One page of an SAE's features by keyset pagination: as fast at page 10,000 as at page 1.

    `after` is the (sort value, index) of the last row of the previous page. Sorting by score
    lists only scored features (an unscored one has no place in that order)."""
    column = SORT_COLUMNS[sort]
    keys = (column, Feature.index) if sort != "index" else (Feature.index,)
    # Listings never show histograms, logit effects or neighbours: decoding that JSON for every
    # row was the biggest cost of a table page.
    statement = select(Feature).options(load_only(*LISTED)).where(Feature.sae_id == sae_id)
    if sort == "score":
        statement = statement.where(Feature.label_score.is_not(None))
    f = filters or FeatureFilters()
    if f.min_density is not None:
        statement = statement.where(Feature.density >= f.min_density)
    if f.max_density is not None:
        statement = statement.where(Feature.density <= f.max_density)
    if f.labelled is not None:
        label = Feature.label
        statement = statement.where(label.is_not(None) if f.labelled else label.is_(None))
    if f.alive is not None:
        statement = statement.where(Feature.density > 0 if f.alive else Feature.density == 0)
    if f.label_query:
        matching = features_matching(session, f.label_query)
        if matching is not None:
            statement = statement.where(Feature.id.in_(matching))
    if after is not None:
        boundary = tuple_(*keys) if len(keys) > 1 else keys[0]
        value = tuple_(*map(literal, after)) if len(keys) > 1 else after[1]
        statement = statement.where(boundary < value if descending else boundary > value)
    order = [k.desc() if descending else k.asc() for k in keys]
    features = list(session.scalars(statement.order_by(*order).limit(limit + 1)))
    next_key = None
    if len(features) > limit:
        features = features[:limit]
        last = features[-1]
        next_key = (getattr(last, column.key), last.index)
    return FeaturePage(features, next_key, sort, descending)


@dataclass(frozen=True)
class Neighbour:
    index: int
    cosine: float
    label: str | None
    density: float | None


@dataclass(frozen=True)
class FeatureView:
    """A feature page's data: the detail (labels best first) and its labelled neighbours."""

    detail: FeatureDetail
    neighbours: list[Neighbour]


def feature_view(session: Session, model: str, sae: str, index: int) -> FeatureView | None:
    """A feature page in three round trips: feature with SAE, model and labels; examples with
    their contexts; the neighbours' labels."""
    rows = session.execute(
        select(Feature, SaeRow, Model, Explanation)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .outerjoin(Explanation, Explanation.feature_id == Feature.id)
        .where(Model.name == model, SaeRow.name == sae, Feature.index == index)
    ).all()
    if not rows:
        return None
    feature, sae_row, model_row, _ = rows[0]

    def shown_first(e: Explanation) -> tuple:
        return (
            showable(e.status, e.verdict, e.retired_at),
            e.status == "ok",
            *label_order(e.scores, e.id, e.verdict),
        )

    labels = sorted((e for *_, e in rows if e is not None), key=shown_first, reverse=True)
    examples = [
        _example_view(e, c)
        for e, c in session.execute(
            select(Example, Context)
            .join(Context, Context.id == Example.context_id)
            .where(Example.feature_id == feature.id)
            .order_by(Example.kind.desc(), Example.rank)
        ).tuples()
    ]
    cosines = {int(i): float(c) for i, c in feature.neighbours or []}
    near = aliased(Feature)
    found = (
        {
            i: (label, density)
            for i, label, density in session.execute(
                select(near.index, near.label, near.density).where(
                    near.sae_id == sae_row.id, near.index.in_(list(cosines))
                )
            )
        }
        if cosines
        else {}
    )
    neighbours = [
        Neighbour(i, c, *found.get(i, (None, None)))
        for i, c in sorted(cosines.items(), key=lambda ic: -ic[1])
    ]
    detail = FeatureDetail(model_row, sae_row, feature, examples, labels)
    return FeatureView(detail, neighbours)


def top_examples(session: Session, feature_ids: list[int]) -> dict[int, ExampleView]:
    """Each feature's strongest example, for result lists that show a snippet per feature."""
    if not feature_ids:
        return {}
    rows = session.execute(
        select(Example, Context)
        .join(Context, Context.id == Example.context_id)
        .where(Example.feature_id.in_(feature_ids), Example.kind == "top", Example.rank == 0)
    ).tuples()
    return {e.feature_id: _example_view(e, c) for e, c in rows}


def vocabulary(session: Session, model_id: int) -> list[str]:
    """Display text of every token id of a model (pages cache it per model)."""
    rows = session.execute(
        select(Token.token_id, Token.text)
        .where(Token.model_id == model_id)
        .order_by(Token.token_id)
    ).all()
    texts = [""] * (rows[-1][0] + 1 if rows else 0)
    for token_id, text in rows:
        texts[token_id] = text
    return texts
