"""Feature classifiers on peaks whose answer is known."""

import numpy as np
import pytest
import torch

from app.core.classifier import (
    FeatureClassifier,
    best_cut,
    learn_classifier,
    pick_classifier,
    precision_recall,
)
from app.core.errors import MonoscopeError


def _peaks(seed=0, texts=40):
    """Feature 3 fires on the concept's texts, feature 5 on a third of all texts at random."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(texts) % 2 == 0
    values = torch.rand(texts, 16, generator=g) * (torch.rand(texts, 16, generator=g) < 0.3)
    values[:, 3] = labels * (1.5 + torch.rand(texts, generator=g)) + 0.1 * torch.rand(
        texts, generator=g
    )
    return {"res1": values}, labels.tolist()


def test_a_learned_classifier_finds_the_concepts_feature_and_generalises():
    peaks, labels = _peaks(0)
    clf = learn_classifier(peaks, labels)
    assert clf.kind == "logistic" and clf.features[0] == ("res1", 3)
    weights = dict(zip(clf.features, clf.weights, strict=True))
    assert weights[("res1", 3)] > 0 and weights[("res1", 3)] == max(weights.values())
    held, held_labels = _peaks(1)  # other texts from the same source
    figures = precision_recall(clf.decide(held) > 0, held_labels)
    assert figures["precision"] == figures["recall"] == 1.0
    again = FeatureClassifier.from_dict(clf.to_dict())
    np.testing.assert_allclose(again.decide(held), clf.decide(held))


def test_a_picked_feature_gets_the_threshold_with_the_best_training_f1():
    peaks, labels = _peaks(0)
    clf = pick_classifier(peaks, labels, "res1", 3)
    values = peaks["res1"][:, 3].numpy()
    assert values[~np.asarray(labels)].max() < -clf.bias < values[np.asarray(labels)].min()
    assert precision_recall(clf.decide(peaks) > 0, labels)["f1"] == 1.0
    with pytest.raises(MonoscopeError, match="not in the loaded SAEs"):
        pick_classifier(peaks, labels, "res1", 99)
    with pytest.raises(MonoscopeError, match="two texts with the concept and two without"):
        learn_classifier(peaks, [True] + [False] * 39)


def test_precision_recall_and_cuts_on_hand_counted_cases():
    figures = precision_recall([True, True, False, False], [True, False, True, False])
    assert (figures["precision"], figures["recall"], figures["f1"]) == (0.5, 0.5, 0.5)
    assert precision_recall([False, False], [True, False])["f1"] == 0.0
    assert best_cut(np.array([0.1, 0.2, 0.8, 0.9]), [False, False, True, True]) == pytest.approx(
        0.5
    )
    with pytest.raises(MonoscopeError, match="reads SAE res9"):
        FeatureClassifier((("res9", 1),), (1.0,), 0.0, "feature").decide(
            {"res1": torch.zeros(2, 4)}
        )
