"""Scorer arithmetic on hand-made examples: keyword match, classification, answers, fuzzing."""

import random

import numpy as np
import pytest

from app.autointerp.evidence import Example, marked
from app.autointerp.scoring import (
    ScoreError,
    ScoringSet,
    _mislabelled,
    classification,
    keyword_score,
    parse_answer,
)


def _example(tokens, values, kind="top") -> Example:
    return Example(tuple(tokens), np.asarray(values, np.float32), kind)


SCORING = ScoringSet(
    positives=[
        _example([" the", " Golden", " Gate", " Bridge"], [0, 1.0, 5.0, 0]),
        _example([" a", " golden", " gate", " opens"], [0, 0.5, 4.0, 0]),
    ],
    negatives=[_example([" the", " red", " fox", " ran"], [0, 0, 0, 0], "negative")],
)


def test_a_label_naming_the_firing_tokens_matches_well_and_a_wrong_one_does_not():
    good = keyword_score("Golden Gate (Gate)", SCORING)
    wrong = keyword_score("foxes running", SCORING)
    assert good["value"] > 0.7 and good["matched_tokens"] == 4
    assert wrong["value"] < 0.1  # "foxes"/"running" share a stem with nothing that fires
    assert keyword_score("nothing here", SCORING)["value"] == 0.0  # matches no token
    with pytest.raises(ScoreError, match="no held-out"):
        keyword_score("x", ScoringSet([], SCORING.negatives))


def test_balanced_accuracy_precision_and_recall():
    result = classification([True, True, False, False, True], [True, False, False, True, True])
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 1, 1)
    assert result["recall"] == pytest.approx(2 / 3, abs=1e-4) and result[
        "precision"
    ] == pytest.approx(2 / 3, abs=1e-4)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-4)
    assert classification([True] * 4, [True, True, False, False])["balanced_accuracy"] == 0.5


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("think\n[ANSWER]: [1, 3]", [1, 3]),
        ("[answer]: []", []),
        ("[ANSWER]: [2]\n[ANSWER]: [4]", [4]),
    ],
)
def test_answers_are_parsed(reply, expected):
    assert parse_answer(reply, 4) == expected


@pytest.mark.parametrize(
    "reply", ["no answer", "[ANSWER]: [9]", "[ANSWER]: [1, 'x']", "[ANSWER]: [1,"]
)
def test_bad_answers_are_failures(reply):
    with pytest.raises(ScoreError):
        parse_answer(reply, 4)


def test_fuzzed_examples_move_the_marks_off_the_firing_tokens():
    example = SCORING.positives[0]
    fuzzed = _mislabelled(example, 5.0, random.Random(0))
    real, fake = marked(example, 5.0), marked(fuzzed, 5.0)
    assert sum(fake) == sum(real) and not any(r and f for r, f in zip(real, fake, strict=True))


def test_the_predicted_token_after_an_arrow_is_not_a_firing_word():
    from app.autointerp.scoring import label_terms

    assert label_terms("Golden Gate (Gate) → Bridge") == {"golden", "gate"}
