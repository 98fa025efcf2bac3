"""How well an SAE's features find the demo world's planted concepts, topics and personas.

    report = evaluate_ground_truth(model, sae, tokens)   # tokens: PackedTokens, aligned
    report.fraction_at(0.5), report.best["places/golden_gate_bridge"]
    report.spans[0].f1_union, report.documents[0]

Three views, all over counted tokens only (never BOS, separators or re-read left context):
- token F1: "feature active at the token" against "concept present at the token", best feature
  per concept and per category; the (concept, feature) overlap counts are one bincount;
- span F1: an occurrence (a span) is found if the feature fires on any of its tokens, a firing is
  right if its token lies in one, for the best feature and the best union of up to three (a
  concept split over its singular and plural, or over positions, is still found);
- document F1, for topics and personas: a document is claimed if the feature fires anywhere in
  it.
"""

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from app.core.errors import MonoscopeError
from app.core.model import LoadedModel
from app.core.sae import Sae
from app.demo.catalogue import CATALOGUE
from app.demo.corpus import PackedTokens

GOLDEN_GATE = "places/golden_gate_bridge"


@dataclass(frozen=True)
class ConceptMatch:
    key: str
    name: str
    category: str
    occurrences: int  # tokens where the concept is present
    feature: int  # the best-matching feature
    f1: float
    precision: float
    recall: float
    feature_max_activation: float


@dataclass(frozen=True)
class SpanMatch:
    key: str
    category: str
    spans: int  # occurrences
    features: tuple[int, ...]  # the best union, its best single feature first
    f1_single: float  # of features[0] alone
    f1_union: float
    precision: float  # of the union
    recall: float


@dataclass(frozen=True)
class DocumentMatch:
    label: str  # "topic/<subject>" or "persona/<name>"
    documents: int  # documents that carry it
    feature: int
    f1: float
    precision: float
    recall: float


@dataclass(frozen=True)
class GroundTruthReport:
    tokens: int
    min_occurrences: int
    concepts: tuple[ConceptMatch, ...]  # concepts with at least min_occurrences, best F1 first
    categories: tuple[ConceptMatch, ...]  # each category as one concept (any of its members)
    feature_max: np.ndarray  # (d_sae,) max activation of each feature on these tokens
    spans: tuple[SpanMatch, ...] = ()  # concepts with at least min_occurrences spans
    documents: tuple[DocumentMatch, ...] = ()  # every topic and persona the text carries

    @property
    def best(self) -> dict[str, ConceptMatch]:
        return {c.key: c for c in self.concepts}

    def fraction_at(self, threshold: float) -> float:
        return sum(c.f1 >= threshold for c in self.concepts) / max(1, len(self.concepts))

    @property
    def mean_best_f1(self) -> float:
        return float(np.mean([c.f1 for c in self.concepts])) if self.concepts else 0.0

    def feature_for(self, target: str) -> int:
        """The feature ground truth names for a target: "topic/<subject>" or "persona/<name>"
        by document F1, a concept key by span F1 (its best single feature), else token F1."""
        found = (
            {c.key: c.feature for c in self.concepts}
            | {m.key: m.features[0] for m in self.spans}
            | {m.label: m.feature for m in self.documents}
        )
        if target not in found:
            raise MonoscopeError(
                f"no feature for {target!r} in this text; targets are concept keys such as "
                f"{GOLDEN_GATE!r}, topic/<subject> or persona/<name>"
            )
        return found[target]

    def span_fraction_at(self, threshold: float, union: bool = True) -> float:
        hits = sum((m.f1_union if union else m.f1_single) >= threshold for m in self.spans)
        return hits / max(1, len(self.spans))

    def summary(self) -> dict:
        by_label = {m.label: m.f1 for m in self.documents}
        spans = {m.key: m.f1_union for m in self.spans}
        return {
            "tokens": self.tokens,
            "concepts_evaluated": len(self.concepts),
            "min_occurrences": self.min_occurrences,
            "fraction_f1_at_least_0.8": round(self.fraction_at(0.8), 4),
            "fraction_f1_at_least_0.5": round(self.fraction_at(0.5), 4),
            "mean_best_f1": round(self.mean_best_f1, 4),
            "category_mean_best_f1": round(float(np.mean([c.f1 for c in self.categories])), 4)
            if self.categories
            else 0.0,
            "span_concepts_evaluated": len(self.spans),
            "fraction_span_f1_at_least_0.8": round(self.span_fraction_at(0.8, union=False), 4),
            "fraction_span_f1_at_least_0.5": round(self.span_fraction_at(0.5, union=False), 4),
            "fraction_span_f1_or3_at_least_0.8": round(self.span_fraction_at(0.8), 4),
            "fraction_span_f1_or3_at_least_0.5": round(self.span_fraction_at(0.5), 4),
            "golden_gate_span_f1_or3": spans.get(GOLDEN_GATE, 0.0),
        } | {f"document_f1 {label}": f1 for label, f1 in sorted(by_label.items())}

    def to_dict(self) -> dict:
        return self.summary() | {
            "concepts": [asdict(c) for c in self.concepts],
            "categories": [asdict(c) for c in self.categories],
            "spans": [asdict(m) for m in self.spans],
            "documents": [asdict(m) for m in self.documents],
        }


@torch.inference_mode()
def _active_features(
    model: LoadedModel, sae: Sae, tokens: PackedTokens, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat token positions (ascending) and feature ids of every non-zero activation on a counted
    token, and each feature's maximum there."""
    positions, features = [], []
    feature_max = torch.zeros(sae.d_sae)
    counted = torch.from_numpy(tokens.counted)
    width = tokens.ids.shape[1]
    for start in range(0, len(tokens.ids), batch_size):
        batch = torch.from_numpy(tokens.ids[start : start + batch_size]).long()
        x = model.capture(batch, [sae.hook_name])[sae.hook_name]
        f = sae.encode(x).float().cpu().flatten(0, 1)
        f[~counted[start * width : start * width + len(f)]] = 0
        feature_max = torch.maximum(feature_max, f.max(0).values)
        token, feature = f.nonzero(as_tuple=True)
        positions.append(token.numpy() + start * width)
        features.append(feature.numpy())
    return np.concatenate(positions), np.concatenate(features), feature_max.numpy()


def evaluate_ground_truth(
    model: LoadedModel,
    sae: Sae,
    tokens: PackedTokens,
    min_occurrences: int = 20,
    batch_size: int = 32,
) -> GroundTruthReport:
    positions, features, feature_max = _active_features(model, sae, tokens, batch_size)
    names = list(CATALOGUE.categories)
    category_of = np.array([names.index(c.category) for c in CATALOGUE.concepts])
    as_categories = np.stack([tokens.concepts_at[:, 0], category_of[tokens.concepts_at[:, 1]]], 1)
    by_concept = _overlaps(
        positions, features, sae.d_sae, tokens.concepts_at, len(CATALOGUE.concepts)
    )
    by_category = _overlaps(positions, features, sae.d_sae, as_categories, len(names))
    concepts = _best_features(
        by_concept,
        feature_max,
        [(c.key, c.name, c.category) for c in CATALOGUE.concepts],
        min_occurrences,
    )
    categories = _best_features(
        by_category,
        feature_max,
        [(f"category/{name}", name, name) for name in names],
        min_occurrences,
    )
    spans = _span_matches(positions, features, sae.d_sae, tokens, by_concept[0], min_occurrences)
    documents = _document_matches(positions, features, sae.d_sae, tokens)
    return GroundTruthReport(
        int(tokens.counted.sum()),
        min_occurrences,
        concepts,
        categories,
        feature_max,
        spans,
        documents,
    )


def _overlaps(
    positions: np.ndarray,  # (n_active,) sorted flat token positions of active features
    features: np.ndarray,  # (n_active,) which feature
    d_sae: int,
    labelled: np.ndarray,  # (n_pairs, 2): flat token position, label id
    n_labels: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_labels, d_sae) tokens where a label and a feature meet, each feature's active tokens and
    each label's tokens."""
    feature_count = np.bincount(features, minlength=d_sae)
    pairs = np.unique(labelled, axis=0)  # one (token, label) pair counts once
    label_count = np.bincount(pairs[:, 1], minlength=n_labels)
    # Join (token, label) with (token, feature) on the token: both are sorted by token.
    starts = np.searchsorted(positions, pairs[:, 0], side="left")
    ends = np.searchsorted(positions, pairs[:, 0], side="right")
    lengths = ends - starts
    label_rep = np.repeat(pairs[:, 1], lengths)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    overlap = np.bincount(
        label_rep.astype(np.int64) * d_sae + features[offsets], minlength=n_labels * d_sae
    ).reshape(n_labels, d_sae)
    return overlap, feature_count, label_count


def _best_features(
    overlaps: tuple[np.ndarray, np.ndarray, np.ndarray],  # from _overlaps
    feature_max: np.ndarray,
    labels: list[tuple[str, str, str]],  # key, name, category per label id
    min_occurrences: int,
) -> tuple[ConceptMatch, ...]:
    """The best feature by F1 for each label seen at least min_occurrences times."""
    overlap, feature_count, concept_count = overlaps
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * overlap / (feature_count[None, :] + concept_count[:, None]))
    matches = []
    for label, (key, name, category) in enumerate(labels):
        occurrences = int(concept_count[label])
        if occurrences < min_occurrences:
            continue
        best = int(f1[label].argmax())
        tp = int(overlap[label, best])
        matches.append(
            ConceptMatch(
                key=key,
                name=name,
                category=category,
                occurrences=occurrences,
                feature=best,
                f1=round(float(f1[label, best]), 4),
                precision=round(tp / max(1, int(feature_count[best])), 4),
                recall=round(tp / occurrences, 4),
                feature_max_activation=round(float(feature_max[best]), 4),
            )
        )
    matches.sort(key=lambda c: (-c.f1, c.key))
    return tuple(matches)


@dataclass(frozen=True)
class _Occurrences:
    """One concept's tokens inside a universe of token positions, for scoring feature masks."""

    at: np.ndarray  # universe index of each concept token
    is_concept: np.ndarray  # (universe,) bool
    span: np.ndarray  # span of each concept token, 0..spans-1
    spans: int

    def score(self, mask: np.ndarray) -> tuple[float, float, float]:
        """Span F1, precision and recall of the firings in `mask` (over the universe)."""
        claimed = int(mask.sum())
        precision = int((mask & self.is_concept).sum()) / max(1, claimed)
        recall = len(np.unique(self.span[mask[self.at]])) / self.spans
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return f1, precision, recall

    def best_union(self, masks: np.ndarray, most: int) -> tuple[list[int], float, tuple]:
        """Rows of `masks` whose union scores best, grown greedily from the best single row
        while F1 improves; with the single row's F1 and the union's score."""
        singles = [self.score(mask) for mask in masks]
        best = int(np.argmax([f1 for f1, _, _ in singles]))
        chosen, union, scored = [best], masks[best].copy(), singles[best]
        while len(chosen) < most:
            grown = [
                (self.score(union | masks[r]), r) for r in range(len(masks)) if r not in chosen
            ]
            if not grown or max(grown)[0][0] <= scored[0]:
                break
            scored, row = max(grown)
            chosen.append(row)
            union |= masks[row]
        return chosen, singles[best][0], scored


def _span_matches(
    positions: np.ndarray,
    features: np.ndarray,
    d_sae: int,
    tokens: PackedTokens,
    overlap: np.ndarray,  # (concepts, d_sae) tokens where each concept and feature meet
    min_occurrences: int,
    candidates: int = 24,
    most: int = 3,
) -> tuple[SpanMatch, ...]:
    """Per concept, the best feature by span F1 and the best union of up to `most` features,
    grown greedily from the `candidates` features that meet the concept on the most tokens."""
    order = np.argsort(features, kind="stable")
    fired_at = positions[order]
    bounds = np.searchsorted(features[order], np.arange(d_sae + 1))
    pos, concept_ids, span_ids = tokens.concepts_at[:, 0], tokens.concepts_at[:, 1], tokens.spans_of
    matches = []
    for concept in CATALOGUE.concepts:
        mine = concept_ids == concept.id
        n_spans = len(np.unique(span_ids[mine]))
        if n_spans < min_occurrences:
            continue
        where, first = np.unique(pos[mine], return_index=True)  # a token counts once
        _, span_local = np.unique(span_ids[mine][first], return_inverse=True)
        pool = [
            int(f) for f in np.argsort(-overlap[concept.id])[:candidates] if overlap[concept.id, f]
        ]
        if not pool:
            continue
        fired = [fired_at[bounds[f] : bounds[f + 1]] for f in pool]
        universe = np.unique(np.concatenate([where, *fired]))
        at = np.searchsorted(universe, where)
        is_concept = np.zeros(len(universe), dtype=bool)
        is_concept[at] = True
        masks = np.zeros((len(pool), len(universe)), dtype=bool)
        for row, hits in enumerate(fired):
            masks[row, np.searchsorted(universe, hits)] = True
        occurrences = _Occurrences(at, is_concept, span_local, n_spans)
        chosen, f1_single, (f1, precision, recall) = occurrences.best_union(masks, most)
        matches.append(
            SpanMatch(
                key=concept.key,
                category=concept.category,
                spans=n_spans,
                features=tuple(pool[r] for r in chosen),
                f1_single=round(f1_single, 4),
                f1_union=round(f1, 4),
                precision=round(precision, 4),
                recall=round(recall, 4),
            )
        )
    matches.sort(key=lambda m: (-m.f1_union, m.key))
    return tuple(matches)


def _document_matches(
    positions: np.ndarray, features: np.ndarray, d_sae: int, tokens: PackedTokens
) -> tuple[DocumentMatch, ...]:
    """Per topic and persona, the feature whose "fires anywhere in the document" best matches
    "the document carries it", over the documents the contexts hold."""
    seen = np.unique(tokens.document_of[tokens.document_of >= 0])
    pairs = np.unique(tokens.document_of[positions].astype(np.int64) * d_sae + features)
    fired_doc, fired_feature = np.divmod(pairs, d_sae)
    claimed = np.bincount(fired_feature, minlength=d_sae)
    carriers: dict[str, list[int]] = {}
    for doc in seen.tolist():
        for topic in tokens.topics[doc]:
            carriers.setdefault(f"topic/{topic}", []).append(doc)
        if tokens.personas[doc]:
            carriers.setdefault(f"persona/{tokens.personas[doc]}", []).append(doc)
    matches = []
    for label, docs in sorted(carriers.items()):
        carries = np.zeros(len(tokens.personas), dtype=bool)
        carries[docs] = True
        tp = np.bincount(fired_feature[carries[fired_doc]], minlength=d_sae)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.nan_to_num(2 * tp / (claimed + len(docs)))
        best = int(f1.argmax())
        matches.append(
            DocumentMatch(
                label=label,
                documents=len(docs),
                feature=best,
                f1=round(float(f1[best]), 4),
                precision=round(int(tp[best]) / max(1, int(claimed[best])), 4),
                recall=round(int(tp[best]) / len(docs), 4),
            )
        )
    return tuple(matches)


def names_concept(label: str, terms: tuple[str, ...]) -> bool:
    """Whether a label names a concept: one of its terms appears as whole words."""
    text = label.lower()
    return any(re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text) for term in terms)


@dataclass(frozen=True)
class LabelAccuracy:
    threshold: float
    concepts: int  # concepts whose best feature reaches the F1 threshold
    named: int  # ... and whose best feature's label names the concept or a synonym
    rows: tuple[dict, ...]

    @property
    def accuracy(self) -> float:
        return self.named / self.concepts if self.concepts else 0.0

    def to_dict(self) -> dict:
        return {
            "f1_threshold": self.threshold,
            "concepts": self.concepts,
            "named": self.named,
            "label_accuracy": round(self.accuracy, 4),
            "labels": list(self.rows),
        }


def label_accuracy(
    report: GroundTruthReport, labels: dict[int, str], threshold: float = 0.5
) -> LabelAccuracy:
    """Among concepts whose best feature has F1 >= threshold, the share whose label names it."""
    rows = []
    for match in report.concepts:
        if match.f1 < threshold:
            continue
        label = labels.get(match.feature, "")
        terms = CATALOGUE.by_key[match.key].label_terms()
        rows.append(
            {
                "concept": match.key,
                "feature": match.feature,
                "f1": match.f1,
                "label": label,
                "named": bool(label) and names_concept(label, terms),
            }
        )
    return LabelAccuracy(threshold, len(rows), sum(bool(r["named"]) for r in rows), tuple(rows))


def score_agreement(
    report: GroundTruthReport, labels: dict[int, str], scores: dict[int, float]
) -> dict:
    """How a label score tracks label correctness, over every concept's best feature: the
    correlation of the score with "the label names the concept" (point-biserial) and its rank
    correlation (Spearman), which a few extreme scores cannot carry."""
    rows = label_accuracy(report, labels, threshold=0.0).rows
    pairs = [(scores[r["feature"]], float(r["named"])) for r in rows if r["feature"] in scores]
    if len(pairs) < 3:
        return {"concepts": len(pairs)}
    value, named = (np.array(column) for column in zip(*pairs, strict=True))
    spread = value.std() > 0 and named.std() > 0
    return {
        "concepts": len(pairs),
        "named_share": round(float(named.mean()), 4),
        "correlation": round(float(np.corrcoef(value, named)[0, 1]), 4) if spread else 0.0,
        "rank_correlation": round(float(spearmanr(value, named).statistic), 4) if spread else 0.0,
        "mean_score_named": round(float(value[named == 1].mean()), 4) if named.any() else None,
        "mean_score_not_named": round(float(value[named == 0].mean()), 4)
        if (named == 0).any()
        else None,
    }
