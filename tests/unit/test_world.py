"""The demo world: deterministic, rich enough, and honest about which span expresses what."""

import hashlib
from collections import Counter

import pytest

from app.demo.catalogue import CATALOGUE
from app.demo.world import GENRES, World

# The committed demo weights were trained on this exact text: a change to what the generator writes
# must be followed by `monoscope build-demo` and a new fingerprint here. (Spans may change freely.)
WORLD_TEXT_FINGERPRINT = "1b59878de312b788"


@pytest.fixture(scope="module")
def docs():
    return list(World(0).documents(3000))


def test_fingerprint_of_the_training_world():
    digest = hashlib.sha256()
    for doc in World(0).documents(2000):
        digest.update(doc.text.encode())
    assert digest.hexdigest()[:16] == WORLD_TEXT_FINGERPRINT


def test_same_seed_same_documents_and_any_slice_regenerates():
    a = list(World(7).documents(50))
    assert a == list(World(7).documents(50))
    assert a[20:30] == list(World(7).documents(10, start=20))
    assert a != list(World(8).documents(50))


def test_catalogue_size_and_named_landmarks():
    assert len(CATALOGUE) >= 300
    assert len(CATALOGUE.categories) >= 15
    assert CATALOGUE.by_key["places/golden_gate_bridge"].name == "Golden Gate Bridge"
    assert CATALOGUE.by_key["places/san_francisco"].name == "San Francisco"
    for key in ("code/for_loop", "code/string_literal", "code/exception", "french_words/chat"):
        assert key in CATALOGUE.by_key


def test_every_genre_appears(docs):
    assert set(Counter(d.genre for d in docs)) == set(GENRES)


def test_spans_cover_the_words_of_their_concept(docs):
    checked = 0
    for doc in docs:
        for start, end, concept_id in doc.spans:
            concept = CATALOGUE[concept_id]
            text = doc.text[start:end]
            assert text.strip(), (doc.text, start, end)
            if concept.category in ("code", "syntax"):
                continue
            assert text.strip() == text
            assert text.lower() in {f.lower() for f in concept.forms}, (concept.key, text)
            checked += 1
    assert checked > 10_000


def test_zipf_skew_and_coverage(docs):
    counts = Counter(c for doc in docs for _, _, c in doc.spans)
    assert sum(1 for c in CATALOGUE.concepts if counts[c.id]) >= 0.97 * len(CATALOGUE)
    for members in CATALOGUE.categories.values():
        assert counts[members[0].id] > counts[members[-1].id]


def test_two_hop_facts_are_stated_then_asked(docs):
    stories = [d.text for d in docs if "'s pet?" in d.text]
    assert len(stories) > 20
    story = stories[0]
    asked = story.index("What colour was")
    assert story.index("had a pet") < asked and story.index("The ") < asked
