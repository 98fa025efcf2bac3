"""The embedding scorer with the packaged MiniLM: labels that describe the activating contexts
rank them above the negatives, in other words than the tokens' own."""

import numpy as np
import pytest

from app.autointerp.embedding import BEFORE, embedding_scores, excerpt
from app.autointerp.evidence import Example
from app.autointerp.scoring import ScoringSet
from app.core.text_embedding import TextEmbedder


def _example(text: str, peak_word: str | None) -> Example:
    tokens = tuple(" " + w for w in text.split())
    acts = np.array([3.0 if w.strip(" .") == peak_word else 0.0 for w in tokens], np.float32)
    return Example(tokens, acts, "top" if peak_word else "negative")


FOG = [
    ("The towers of the bridge vanished in the thick morning fog.", "fog"),
    ("Ships sounded their horns as fog rolled under the bridge.", "fog"),
    ("A cold grey fog hid the red cables of the bridge.", "fog"),
    ("By noon the fog had lifted from the bay and the bridge.", "fog"),
]
KITCHEN = [
    "She stirred the soup and added a pinch of salt.",
    "The bread came out of the oven golden and warm.",
    "He chopped onions for the stew while the kettle boiled.",
    "They ate pancakes with honey for breakfast.",
]
SCORING = ScoringSet([_example(t, w) for t, w in FOG], [_example(t, None) for t in KITCHEN])


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder.packaged()


def test_a_describing_label_scores_high_and_a_wrong_one_low(embedder):
    good, wrong = embedding_scores(
        [("mist hiding a bridge over the water", SCORING), ("cooking food in a kitchen", SCORING)],
        embedder,
    )
    assert (
        good["value"] == 1.0 and wrong["value"] == 0.0
    )  # AUROC: every pair ranked right, or wrong
    assert good["mean_similarity_positive"] > good["mean_similarity_negative"]
    assert good["positives"] == 4 and good["negatives"] == 4 and "MiniLM" in good["method"]


def test_sets_without_both_kinds_fail_with_a_reason(embedder):
    no_negatives, no_positives = embedding_scores(
        [("fog", ScoringSet(SCORING.positives, [])), ("fog", ScoringSet([], SCORING.negatives))],
        embedder,
    )
    assert "no negatives" in no_negatives["failed"] and "no held-out" in no_positives["failed"]


def test_excerpts_keep_what_led_up_to_the_peak():
    words = [f"w{i}" for i in range(60)]
    example = _example(" ".join(words), "w40")
    text = excerpt(example)
    assert text.startswith(f"w{40 - BEFORE}") and text.endswith("w48")
    quiet = excerpt(_example(" ".join(words), None))  # a negative has no peak: its middle
    assert quiet.startswith(f"w{30 - BEFORE}") and quiet.endswith("w38")
