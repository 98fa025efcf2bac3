"""Feature classifiers, the guardrail use of an SAE: does a text carry a concept?

    peaks = text_peaks(model, saes, texts, max_tokens)            # (texts, d_sae) per SAE
    clf = learn_classifier(peaks, labels)                         # logistic over features
    clf = pick_classifier(peaks, labels, "res1", 946)             # one feature, a threshold
    clf.decide(text_peaks(model, saes, new_texts, max_tokens))    # scores; > 0 means yes

A classifier reads each text as every feature's peak activation over its tokens (as contrast
does) and scores it with a linear function of a few features, so every verdict names the
features behind it. `learn_classifier` keeps the features that tell the training sets apart
best (Cohen's d, app.core.contrast) and fits an L2 logistic regression on them (scikit-learn),
the inputs scaled by their training spread and the scaling folded into the weights.
`prompted_scores` is the baseline a classifier should beat: the resident model asked whether
the text is about the concept, scored by log p(" yes") − log p(" no").
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from app.core.contrast import effect_sizes
from app.core.errors import MonoscopeError
from app.core.model import LoadedModel

MAX_LEARNED_FEATURES = 32  # kept by effect size before the regression: few texts, few weights


@dataclass(frozen=True)
class FeatureClassifier:
    """score(text) = Σ weights[i] · peak(features[i]) + bias; positive when the score is > 0."""

    features: tuple[tuple[str, int], ...]  # (SAE name, feature index)
    weights: tuple[float, ...]
    bias: float
    kind: str  # "feature": one feature over a threshold; "logistic": learned

    def decide(self, peaks: Mapping[str, torch.Tensor]) -> np.ndarray:
        """(texts,) scores from per-SAE (texts, d_sae) peaks."""
        return self.contributions(peaks).sum(axis=1) + self.bias

    def contributions(self, peaks: Mapping[str, torch.Tensor]) -> np.ndarray:
        """(texts, features): each feature's part of each text's score."""
        missing = sorted({sae for sae, _ in self.features} - set(peaks))
        if missing:
            raise MonoscopeError(f"the classifier reads SAE {', '.join(missing)}: not loaded")
        columns = [peaks[sae][:, index].double().numpy() for sae, index in self.features]
        return np.stack(columns, axis=1) * np.asarray(self.weights)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeatureClassifier":
        return cls(
            tuple((str(sae), int(i)) for sae, i in data["features"]),
            tuple(float(w) for w in data["weights"]),
            float(data["bias"]),
            str(data["kind"]),
        )


def _both_classes(labels: Sequence[bool]) -> np.ndarray:
    y = np.asarray(labels, dtype=bool)
    if y.sum() < 2 or (~y).sum() < 2:
        raise MonoscopeError("Train on at least two texts with the concept and two without.")
    return y


def learn_classifier(
    peaks: Mapping[str, torch.Tensor],
    labels: Sequence[bool],
    most: int = MAX_LEARNED_FEATURES,
    strength: float = 1.0,
) -> FeatureClassifier:
    """Logistic regression on the `most` features with the largest |effect| between the texts
    with the concept and those without; `strength` is scikit-learn's C (inverse L2 penalty)."""
    y = _both_classes(labels)
    candidates = []
    for sae, values in peaks.items():
        effect = effect_sizes(values[torch.from_numpy(y)], values[torch.from_numpy(~y)])
        for index in effect.abs().argsort(descending=True)[:most].tolist():
            if effect[index] != 0:
                candidates.append((abs(float(effect[index])), sae, index))
    chosen = [(sae, index) for _, sae, index in sorted(candidates, reverse=True)[:most]]
    if not chosen:
        raise MonoscopeError("No feature differs between the texts with the concept and without.")
    x = np.stack([peaks[sae][:, index].double().numpy() for sae, index in chosen], axis=1)
    spread = x.std(axis=0)
    spread[spread == 0] = 1.0
    fit = LogisticRegression(C=strength, max_iter=1000).fit(x / spread, y)
    weights = fit.coef_[0] / spread  # folded back: the classifier reads raw peaks
    return FeatureClassifier(
        tuple(chosen), tuple(weights.tolist()), float(fit.intercept_[0]), "logistic"
    )


def pick_classifier(
    peaks: Mapping[str, torch.Tensor], labels: Sequence[bool], sae: str, index: int
) -> FeatureClassifier:
    """One feature: positive where its peak exceeds the threshold with the best F1 on these
    texts."""
    y = _both_classes(labels)
    if sae not in peaks or not 0 <= index < peaks[sae].shape[1]:
        raise MonoscopeError(f"feature {sae}/{index} is not in the loaded SAEs")
    cut = best_cut(peaks[sae][:, index].double().numpy(), y)
    return FeatureClassifier(((sae, index),), (1.0,), -cut, "feature")


Labels = Sequence[bool] | np.ndarray


def f1(predicted: Labels, actual: Labels) -> float:
    return precision_recall(predicted, actual)["f1"]


def precision_recall(predicted: Labels, actual: Labels) -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions (0 where undefined)."""
    predicted, actual = np.asarray(predicted, dtype=bool), np.asarray(actual, dtype=bool)
    hits = float((predicted & actual).sum())
    precision = hits / predicted.sum() if predicted.sum() else 0.0
    recall = hits / actual.sum() if actual.sum() else 0.0
    both = precision + recall
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / both if both else 0.0,
        "texts": int(actual.size),
        "positives": int(actual.sum()),
    }


PROMPT = "{text}\nQuestion: Is that text about {concept}? Answer:"


@torch.inference_mode()
def prompted_scores(
    model: LoadedModel, texts: Sequence[str], concept: str, max_tokens: int
) -> np.ndarray:
    """log p(" yes") − log p(" no") for the model's next token after a question about each
    text (each answer word's first token, case-insensitively summed)."""
    tokenizer = model.tokenizer

    def answer_ids(word: str) -> list[int]:
        variants = {f" {word}", f" {word.capitalize()}"}
        return sorted({tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in variants})

    yes, no = answer_ids("yes"), answer_ids("no")
    scores = []
    for text in texts:
        ids = tokenizer(PROMPT.format(text=text, concept=concept))["input_ids"]
        model.check_length(len(ids), max_tokens, "question")
        logits = model.hf(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores.append(float(torch.logsumexp(logp[yes], 0) - torch.logsumexp(logp[no], 0)))
    return np.asarray(scores)


def best_cut(scores: np.ndarray, labels: Labels) -> float:
    """The threshold with the best F1 on these (training) texts, midway between neighbouring
    scores. It picks a single feature's level, and calibrates the prompted baseline so that it
    is judged on held-out texts as fairly as the classifiers are."""
    y = np.asarray(labels, dtype=bool)
    levels = np.unique(scores)
    cuts = np.concatenate([[levels[0] - 1.0], (levels[:-1] + levels[1:]) / 2])
    return float(max(cuts, key=lambda cut: f1(scores > cut, y)))
