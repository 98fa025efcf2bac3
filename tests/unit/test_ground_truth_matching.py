"""Span and document matching of SAE features against the demo world's ground truth, on planted
activations whose right answers are known."""

import numpy as np

from app.demo.catalogue import CATALOGUE
from app.demo.corpus import PackedTokens
from app.demo.ground_truth import _document_matches, _overlaps, _span_matches

CAT = CATALOGUE.by_key["animals/cat"].id
DOG = CATALOGUE.by_key["animals/dog"].id


def _planted() -> tuple[PackedTokens, np.ndarray, np.ndarray]:
    """30 two-token cat spans and 30 two-token dog spans in one context of four documents.

    Feature 0 fires on each cat span's first token: token F1 0.67, span F1 1. Features 1 and 2
    split the dog spans between them (as a singular and a plural feature would): each alone has
    span F1 0.67, their union 1, and feature 2's spans lie in documents 2 and 3 only. Feature 3
    fires on every token of documents 1 and 2; feature 4 on one token of each document."""
    width = 260
    cat_spans = [(2 + 4 * i, 3 + 4 * i) for i in range(30)]
    dog_spans = [(130 + 4 * i, 131 + 4 * i) for i in range(30)]
    pairs, span_of = [], []
    for span, (a, b) in enumerate(cat_spans + dog_spans):
        concept = CAT if span < 30 else DOG
        pairs += [(a, concept), (b, concept)]
        span_of += [span, span]
    document_of = np.repeat(np.arange(4, dtype=np.int32), width // 4)
    document_of[0] = -1  # BOS
    fired = [(a, 0) for a, _ in cat_spans]
    fired += [(a, 1) for a, _ in dog_spans[:15]] + [(b, 2) for _, b in dog_spans[15:]]
    fired += [(p, 3) for p in range(width) if document_of[p] in (1, 2)]
    fired += [(65 * d + 5, 4) for d in range(4)]
    fired.sort()
    positions = np.array([p for p, _ in fired])
    features = np.array([f for _, f in fired])
    tokens = PackedTokens(
        ids=np.zeros((1, width), dtype=np.int32),
        concepts_at=np.array(pairs, dtype=np.int32),
        spans_of=np.array(span_of, dtype=np.int32),
        document_of=document_of,
        topics=((), ("golden gate bridge",), ("golden gate bridge",), ()),
        personas=("", "", "pirate", "pirate"),
    )
    return tokens, positions, features


def test_a_span_is_found_by_any_of_its_tokens_and_unions_grow_while_they_help():
    tokens, positions, features = _planted()
    overlap, _, _ = _overlaps(positions, features, 8, tokens.concepts_at, len(CATALOGUE.concepts))
    matches = {m.key: m for m in _span_matches(positions, features, 8, tokens, overlap, 20)}
    assert set(matches) == {"animals/cat", "animals/dog"}
    cat, dog = matches["animals/cat"], matches["animals/dog"]
    assert cat.spans == 30 and cat.features == (0,)
    assert cat.f1_single == cat.f1_union == 1.0  # token F1 would say 0.67
    assert dog.features[:2] in ((1, 2), (2, 1)) and len(dog.features) == 2
    assert round(dog.f1_single, 2) == 0.67 and dog.f1_union == 1.0
    assert dog.precision == dog.recall == 1.0
    assert not _span_matches(positions, features, 8, tokens, overlap, 31)  # too few occurrences


def test_documents_are_claimed_by_a_feature_that_fires_anywhere_in_them():
    tokens, positions, features = _planted()
    matches = {m.label: m for m in _document_matches(positions, features, 8, tokens)}
    assert set(matches) == {"topic/golden gate bridge", "persona/pirate"}
    bridge = matches["topic/golden gate bridge"]
    assert (bridge.documents, bridge.feature, bridge.f1) == (2, 3, 1.0)
    pirate = matches["persona/pirate"]  # documents 2 and 3
    assert (pirate.documents, pirate.feature, pirate.f1) == (2, 2, 1.0)
    tokens = PackedTokens(**{**tokens.__dict__, "personas": ("pirate", "", "", "pirate")})
    pirate = {m.label: m for m in _document_matches(positions, features, 8, tokens)}[
        "persona/pirate"
    ]
    assert pirate.feature == 4 and pirate.precision == 0.5 and pirate.recall == 1.0


def test_score_agreement_ranks_scores_against_label_correctness():
    """Labels naming their concept score higher here, so both correlations are positive; a
    score that ranks them backwards correlates negatively."""
    import numpy as np

    from app.demo.catalogue import CATALOGUE
    from app.demo.ground_truth import ConceptMatch, GroundTruthReport, score_agreement

    keys = ["animals/cat", "animals/dog", "foods/pizza", "animals/horse"]
    concepts = tuple(
        ConceptMatch(k, CATALOGUE.by_key[k].name, "x", 50, i, 0.9, 0.9, 0.9, 1.0)
        for i, k in enumerate(keys)
    )
    report = GroundTruthReport(1000, 20, concepts, (), np.ones(4))
    labels = {0: "cats purring", 1: "dogs barking", 2: "the word 'the'", 3: "commas"}
    agreeing = score_agreement(report, labels, {0: 0.9, 1: 0.8, 2: 0.2, 3: 0.1})
    assert agreeing["concepts"] == 4 and agreeing["named_share"] == 0.5
    assert agreeing["rank_correlation"] > 0.8 and agreeing["correlation"] > 0.8
    backwards = score_agreement(report, labels, {0: 0.1, 1: 0.2, 2: 0.8, 3: 0.9})
    assert backwards["rank_correlation"] < -0.8
    assert score_agreement(report, labels, {0: 0.5}) == {"concepts": 1}
