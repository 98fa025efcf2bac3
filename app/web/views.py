"""View models: what templates render, shaped from query results.

Token text is hostile input (any byte sequence a tokenizer can emit); it reaches templates only
as data and is escaped there, or in app.web.markup, which owns token cells and strips.
"""

import math
from dataclasses import dataclass
from urllib.parse import quote

from markupsafe import Markup
from sqlalchemy.orm import Session
from starlette.requests import Request

from app.db.labels import SCORE_PREFERENCE, headline_score
from app.db.models import Model
from app.db.queries import ExampleView, top_examples
from app.db.search import SearchHit
from app.web.markup import TokenTextCache, TokenTexts, example_strip

WINDOW_BEFORE, WINDOW_AFTER = 40, 12  # tokens shown around an example's peak
CONTEXT_WINDOWS: dict[str, tuple[int | None, int | None]] = {
    "narrow": (8, 4),
    "wide": (WINDOW_BEFORE, WINDOW_AFTER),
    "whole": (None, None),
}
"""The feature page's context control: tokens before and after each example's peak (None: to
the stored context's edge). Narrow lines peaks up for scanning; whole shows what led there."""


@dataclass(frozen=True)
class ExampleRow:
    html: Markup  # the shaded token strip (app.web.markup)
    text: str | None  # the same window as plain text, when asked for
    max_act: float
    cut_before: bool  # the context goes on before the window
    cut_after: bool
    rank: int


def example_row(
    example: ExampleView,
    texts: TokenTexts,
    scale: float,
    before: int | None = WINDOW_BEFORE,
    after: int | None = WINDOW_AFTER,
    with_text: bool = False,
) -> ExampleRow:
    ids = example.token_ids
    peak = example.max_position
    start = 0 if before is None else max(peak - before, 0)
    end = len(ids) if after is None else min(peak + after + 1, len(ids))
    return ExampleRow(
        example_strip(texts, ids, example.activations, scale, start, end, peak),
        "".join(texts.raw_at(t) for t in ids[start:end].tolist()) if with_text else None,
        example.max_act,
        start > 0,
        end < len(ids),
        example.rank,
    )


@dataclass(frozen=True)
class IntervalGroup:
    low: float
    high: float
    rows: list[ExampleRow]


def interval_groups(
    examples: list[ExampleView],
    texts: TokenTexts,
    max_act: float,
    n_intervals: int,
    window: tuple[int | None, int | None] = (WINDOW_BEFORE, WINDOW_AFTER),
) -> list[IntervalGroup]:
    """Quantile examples grouped by their activation interval, strongest interval first."""
    groups: dict[int, list[ExampleRow]] = {}
    for e in examples:
        groups.setdefault(e.interval or 0, []).append(example_row(e, texts, max_act, *window))
    width = max_act / max(n_intervals, 1)
    return [
        IntervalGroup(i * width, (i + 1) * width, groups[i]) for i in sorted(groups, reverse=True)
    ]


@dataclass(frozen=True)
class LabelView:
    id: int
    author: str | None
    verdict: str | None
    retired: bool
    text: str
    method: str
    explainer_model: str | None
    status: str
    error: str | None
    headline: tuple[str, float] | None
    scores: list[tuple[str, float | None, str | None]]  # (scorer, value, failure)


SCORE_METHODS = {
    "detection": "an LLM judge picks, from shuffled held-out excerpts, those the label says fire "
    "(balanced accuracy)",
    "fuzzing": "an LLM judge tells excerpts marked where the feature fires from ones marked at "
    "random (balanced accuracy)",
    "embedding": "offline: how well the label's MiniLM similarity to each held-out excerpt tells "
    "activating excerpts from negatives (AUROC; 0.5 is chance)",
    "keyword": "offline: correlation of the activations with tokens that are the label's own "
    "words; a label that describes a context in other words scores low",
}
"""What each stored score measures, in a line the feature page shows under the labels."""


def score_methods(labels: list[LabelView]) -> list[tuple[str, str]]:
    """The methods behind the scores shown, in the order they rank labels."""
    shown = {name for label in labels for name, _, _ in label.scores}
    return [
        (name, SCORE_METHODS.get(name, "a score from another tool"))
        for name in sorted(
            shown, key=lambda n: (SCORE_PREFERENCE.index(n) if n in SCORE_PREFERENCE else 99, n)
        )
    ]


def label_view(explanation) -> LabelView:
    scores = explanation.scores or {}
    ordered = [s for s in SCORE_PREFERENCE if s in scores] + sorted(
        s for s in scores if s not in SCORE_PREFERENCE
    )
    return LabelView(
        explanation.id,
        explanation.author,
        explanation.verdict,
        explanation.retired_at is not None,
        explanation.text,
        explanation.method,
        explanation.explainer_model,
        explanation.status,
        explanation.error,
        headline_score(scores),
        [(s, scores[s].get("value"), scores[s].get("failed")) for s in ordered],
    )


def feature_path(model: str, sae: str, index: int) -> str:
    """A feature page's path. Starlette's url_for matches every route per call, which on a page
    of 50 rows cost more than the page's queries; links in loops use this instead."""
    return f"/{quote(model, safe='')}/{quote(sae, safe='')}/{int(index)}"


def feature_url(request: Request, model: str, sae: str, index: int) -> str:
    """A feature page's absolute URL, as the JSON API gives it."""
    return str(request.url_for("feature_page", model=model, sae=sae, index=str(index)))


def format_density(density: float | None) -> str:
    """Firing rate as a percentage with sensible precision; 0 reads 'dead'."""
    if density is None:
        return "–"
    if density <= 0:
        return "dead"
    percent = density * 100
    if percent >= 1:
        return f"{percent:.1f}%"
    if percent >= 0.01:
        return f"{percent:.3f}%"
    return f"{percent:.1e}%"


def format_number(value: float | None, digits: int = 3) -> str:
    """Significant digits for the eye; anything missing (None, NaN, an absent key) reads '–'."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"


NEAR_DUPLICATE = 0.8
"""Decoder cosine from which two features of one SAE are shown as near-duplicates: they write
nearly the same direction, so steering or reading either does much the same."""


def near_duplicates(hits: list[SearchHit], neighbours: dict[int, list]) -> dict[int, tuple]:
    """For each hit (by feature id) whose feature nearly duplicates that of a hit ranked above
    it (same model and SAE, decoder cosine >= NEAR_DUPLICATE either way round): (that index,
    the cosine)."""
    found: dict[int, tuple] = {}
    above: dict[tuple[int, str], dict[int, int]] = {}  # (model, sae) -> index -> feature id
    for hit in hits:
        earlier = above.setdefault((hit.model_id, hit.sae), {})
        if hit.feature_id not in found and hit.index not in earlier:
            close = [
                (int(index), float(cosine))
                for index, cosine in neighbours.get(hit.feature_id, [])
                if int(index) in earlier and cosine >= NEAR_DUPLICATE
            ]
            close += [
                (index, float(cosine))
                for index, other in earlier.items()
                for j, cosine in neighbours.get(other, [])
                if int(j) == hit.index and cosine >= NEAR_DUPLICATE
            ]
            if close:
                found[hit.feature_id] = max(close, key=lambda c: c[1])
        earlier.setdefault(hit.index, hit.feature_id)
    return found


def hit_snippets(
    session: Session,
    vocabularies: TokenTextCache,
    hits: list[SearchHit],
    before: int,
    after: int,
    with_text: bool = False,
) -> dict[int, ExampleRow]:
    """Each hit's feature's strongest stored example as a snippet, by feature id, in one query."""
    examples = top_examples(session, sorted({h.feature_id for h in hits}))
    snippets = {}
    for hit in hits:
        example = examples.get(hit.feature_id)
        if example is not None and hit.feature_id not in snippets:
            vocab = vocabularies.get(session, session.get_one(Model, hit.model_id))
            snippets[hit.feature_id] = example_row(
                example, vocab, example.max_act, before, after, with_text
            )
    return snippets
