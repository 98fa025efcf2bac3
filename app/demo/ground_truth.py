"""How well an SAE's features find the demo world's planted concepts.

    report = evaluate_ground_truth(model, sae, tokenizer_tokens)   # tokens: PackedTokens
    report.fraction_at(0.5), report.mean_best_f1, report.best["places/golden_gate_bridge"]

For each concept with enough occurrences, every feature is scored by F1 of "feature active at the
token" against "concept present at the token", and the best feature kept. BOS positions count for
neither side. One pass over the tokens; the (concept, feature) overlap counts are one bincount.
"""

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch

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
class GroundTruthReport:
    tokens: int
    min_occurrences: int
    concepts: tuple[ConceptMatch, ...]  # concepts with at least min_occurrences, best F1 first
    categories: tuple[ConceptMatch, ...]  # each category as one concept (any of its members)
    feature_max: np.ndarray  # (d_sae,) max activation of each feature on these tokens

    @property
    def best(self) -> dict[str, ConceptMatch]:
        return {c.key: c for c in self.concepts}

    def fraction_at(self, threshold: float) -> float:
        return sum(c.f1 >= threshold for c in self.concepts) / max(1, len(self.concepts))

    @property
    def mean_best_f1(self) -> float:
        return float(np.mean([c.f1 for c in self.concepts])) if self.concepts else 0.0

    def summary(self) -> dict:
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
        }

    def to_dict(self) -> dict:
        return self.summary() | {
            "concepts": [asdict(c) for c in self.concepts],
            "categories": [asdict(c) for c in self.categories],
        }


@torch.inference_mode()
def _active_features(
    model: LoadedModel, sae: Sae, ids: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat token positions and feature ids of every non-zero activation, and feature maxima."""
    positions, features = [], []
    feature_max = torch.zeros(sae.d_sae)
    width = ids.shape[1]
    for start in range(0, len(ids), batch_size):
        batch = torch.from_numpy(ids[start : start + batch_size]).long()
        x = model.capture(batch, [sae.hook_name])[sae.hook_name]
        f = sae.encode(x).float().cpu()
        f[:, 0] = 0  # BOS
        feature_max = torch.maximum(feature_max, f.flatten(0, 1).max(0).values)
        token, feature = f.flatten(0, 1).nonzero(as_tuple=True)
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
    positions, features, feature_max = _active_features(model, sae, tokens.ids, batch_size)
    names = list(CATALOGUE.categories)
    category_of = np.array([names.index(c.category) for c in CATALOGUE.concepts])
    as_categories = np.stack([tokens.concepts_at[:, 0], category_of[tokens.concepts_at[:, 1]]], 1)
    concepts = _best_features(
        positions,
        features,
        feature_max,
        sae.d_sae,
        tokens.concepts_at,
        [(c.key, c.name, c.category) for c in CATALOGUE.concepts],
        min_occurrences,
    )
    categories = _best_features(
        positions,
        features,
        feature_max,
        sae.d_sae,
        as_categories,
        [(f"category/{name}", name, name) for name in names],
        min_occurrences,
    )
    return GroundTruthReport(tokens.ids.size, min_occurrences, concepts, categories, feature_max)


def _best_features(
    positions: np.ndarray,  # (n_active,) sorted flat token positions of active features
    features: np.ndarray,  # (n_active,) which feature
    feature_max: np.ndarray,
    d_sae: int,
    labelled: np.ndarray,  # (n_pairs, 2): flat token position, label id
    labels: list[tuple[str, str, str]],  # key, name, category per label id
    min_occurrences: int,
) -> tuple[ConceptMatch, ...]:
    """The best feature by F1 for each label seen at least min_occurrences times."""
    n_concepts = len(labels)
    feature_count = np.bincount(features, minlength=d_sae)
    pairs = np.unique(labelled, axis=0)  # one (token, label) pair counts once
    concept_count = np.bincount(pairs[:, 1], minlength=n_concepts)
    # Join (token, concept) with (token, feature) on the token: both are sorted by token.
    starts = np.searchsorted(positions, pairs[:, 0], side="left")
    ends = np.searchsorted(positions, pairs[:, 0], side="right")
    lengths = ends - starts
    concept_rep = np.repeat(pairs[:, 1], lengths)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    overlap = np.bincount(
        concept_rep.astype(np.int64) * d_sae + features[offsets], minlength=n_concepts * d_sae
    ).reshape(n_concepts, d_sae)

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
    correlation of the score with "the label names the concept" (point-biserial)."""
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
        "mean_score_named": round(float(value[named == 1].mean()), 4) if named.any() else None,
        "mean_score_not_named": round(float(value[named == 0].mean()), 4)
        if (named == 0).any()
        else None,
    }
