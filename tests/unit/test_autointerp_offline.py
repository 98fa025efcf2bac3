"""Evidence formatting and the offline explainer on hand-made features."""

import asyncio
from collections import Counter

import numpy as np

from app.autointerp.evidence import (
    Example,
    FeatureEvidence,
    format_example,
    scaled_activations,
)
from app.autointerp.offline import OfflineExplainer


def _example(tokens, values, kind="top", interval=None) -> Example:
    return Example(tuple(tokens), np.asarray(values, np.float32), kind, interval)


def _evidence(examples, top_logits=(" Bridge", " in", ",")) -> FeatureEvidence:
    peak = max(e.max_act for e in examples)
    return FeatureEvidence(7, peak, 0.01, tuple(examples), tuple(top_logits), ())


BACKGROUND = Counter({"the": 5000, "golden": 40, "gate": 30, "we": 800, "saw": 300, ".": 4000})


def test_marks_wrap_runs_of_activating_tokens_and_values_floor_to_0_10():
    example = _example(["We", " saw", " the", " Golden", " Gate", "."], [0, 0, 0, 2.0, 4.0, 1.0])
    assert format_example(example, 4.0) == "We saw the<< Golden Gate>>."
    assert scaled_activations(example, 4.0) == [(" Golden", 5), (" Gate", 10), (".", 2)]


def test_split_keeps_explainer_and_scorer_examples_disjoint():
    tops = [_example(["a"], [float(i + 1)]) for i in range(30)]
    quantiles = [_example(["b"], [0.5], "quantile", i // 5) for i in range(25)]
    shown, held = _evidence(tops + quantiles).split()
    assert len(shown) == 20 + 5 * 3 and len(held) == 10 + 5 * 2
    assert not {id(e) for e in shown} & {id(e) for e in held}


def test_a_recurring_phrase_becomes_the_label_with_its_terms():
    examples = [
        _example(["<|endoftext|>", " the", " Golden", " Gate"], [0, 0, 1.5, 4.0 + i / 10])
        for i in range(8)
    ] + [_example(["We", " saw", " the", " Gate"], [0, 0, 0, 3.0])]
    label = OfflineExplainer(BACKGROUND).explain(_evidence(examples))
    assert label.startswith("Golden Gate (") and "endoftext" not in label
    assert "Gate" in label and label.endswith("→ Bridge")


def test_a_feature_without_a_shared_phrase_lists_its_terms():
    words = [" red", " blue", " green", " red", " blue", " red"]
    examples = [_example([" the", w, " ball"], [0, 3.0, 0]) for w in words]
    label = OfflineExplainer(BACKGROUND).explain(_evidence(examples, top_logits=(",",)))
    assert label == "red, blue, green"


def test_dead_features_get_no_label_but_a_failure_reason():
    dead = _evidence([_example(["a", "b"], [0.0, 0.0])])
    explainer = OfflineExplainer(BACKGROUND)
    assert explainer.explain(dead) is None
    [outcome] = asyncio.run(explainer.explain_batch([dead]))
    assert outcome.text is None and outcome.error == "no activating examples"
