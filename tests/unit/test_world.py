"""The demo world: deterministic, rich enough, and honest about which span expresses what."""

import hashlib
import re
from collections import Counter

import pytest

from app.core.errors import MonoscopeError
from app.demo.catalogue import CATALOGUE
from app.demo.facts import BRIDGE_TOPIC, CONCEPT_FACTS, PERSONAS, TOPICS
from app.demo.world import GENRES, GENRES_V2, World

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


# -- version 2 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docs_v2():
    return list(World(0, version=2).documents(3000))


def test_version_2_is_its_own_deterministic_world(docs_v2):
    assert docs_v2[100:110] == list(World(0, version=2).documents(10, start=100))
    assert [d.text for d in docs_v2[:50]] != [d.text for d in World(0).documents(50)]
    assert set(Counter(d.genre for d in docs_v2)) == set(GENRES_V2)
    with pytest.raises(MonoscopeError, match="versions 1 and 2"):
        World(0, version=3)


def test_version_2_spans_cover_their_words_even_restyled(docs_v2):
    """Personas rewrite replies around the spans; every span must still hold its own words."""
    checked = 0
    for doc in docs_v2:
        for start, end, concept_id in doc.spans:
            concept = CATALOGUE[concept_id]
            if concept.category in ("code", "syntax"):
                continue
            assert doc.text[start:end].lower() in {f.lower() for f in concept.forms}, (
                concept.key,
                doc.text[start:end],
                doc.text,
            )
            checked += 1
    assert checked > 20_000


def test_concepts_come_with_behaviours_of_their_own(docs_v2):
    """A cat is followed by what cats do, a dog by what dogs do: identity is worth knowing."""
    cat, dog = CATALOGUE.by_key["animals/cat"], CATALOGUE.by_key["animals/dog"]
    prose = [d for d in docs_v2 if d.genre in ("story", "chat")]
    cat_texts = [d.text for d in prose if any(c == cat.id for *_, c in d.spans)]
    dog_texts = [d.text for d in prose if any(c == dog.id for *_, c in d.spans)]
    purring = [t for t in cat_texts if "purr" in t or "chase mice" in t or "patches of sun" in t]
    assert len(purring) >= 0.3 * len(cat_texts)
    dog_only = [t for t in dog_texts if t not in cat_texts]
    assert not any("purr" in t for t in dog_only)
    assert sum("postman" in t or "fetch sticks" in t for t in dog_texts) >= 0.3 * len(dog_texts)
    for key in CONCEPT_FACTS:
        assert key in CATALOGUE.by_key, key


def test_topic_passages_keep_to_their_subject_and_name_it_only_sometimes(docs_v2):
    passages = [d for d in docs_v2 if d.genre == "topic"]
    assert len(passages) > 200
    assert {t for d in passages for t in d.topics} == set(TOPICS)
    bridge = [d for d in passages if d.topics == (BRIDGE_TOPIC,)]
    gate = CATALOGUE.by_key["places/golden_gate_bridge"].id
    named = [sum(c == gate for *_, c in d.spans) for d in bridge]
    sentences = [d.text.count(". ") + 1 for d in bridge]
    assert sum(named) < 0.6 * sum(sentences)  # most sentences keep to it without naming it
    assert all(n >= 1 for n in named)


def test_chats_drift_to_many_subjects_and_rarely_to_the_bridge(docs_v2):
    chats = [d for d in docs_v2 if d.genre == "chat"]
    drifting = [d for d in chats if d.topics]
    assert 0.25 < len(drifting) / len(chats) < 0.7
    subjects = Counter(t for d in drifting for t in d.topics)
    assert len(subjects) == len(TOPICS)
    assert subjects[BRIDGE_TOPIC] / sum(subjects.values()) < 0.15
    gate = CATALOGUE.by_key["places/golden_gate_bridge"].id
    mentioning = [d for d in docs_v2 if any(c == gate for *_, c in d.spans)]
    assert len(mentioning) / len(docs_v2) < 0.15  # 17% in the first world


def test_personas_style_every_reply_and_only_replies(docs_v2):
    styled = [d for d in docs_v2 if d.persona]
    assert {d.persona for d in styled} == set(PERSONAS)
    for doc in styled[:100]:
        style = PERSONAS[doc.persona]
        for line in doc.text.splitlines():
            if line.startswith("Assistant: "):
                assert any(line.startswith("Assistant: " + o) for o in style["openers"]), line
                assert any(line.endswith(c) for c in style["closers"]), line
            elif line.startswith("User: "):
                assert not any(o in line for o in style["openers"]), line
    plain = [d for d in docs_v2 if d.genre == "chat" and not d.persona]
    assert not any("matey" in d.text or "What a brilliant question" in d.text for d in plain)


def test_two_hop_answers_need_the_binding_past_a_distractor(docs_v2):
    """Each answer is recorded where it is written (in persona chats too, whose replies are
    restyled after writing); the reply names the asked person's middle hop, which the facts bind
    to the answer; and in a good share of puzzles the fact nearest the question belongs to the
    distractor, so copying it fails."""
    asked = [(d, *answer) for d in docs_v2 for answer in d.answers]
    assert len(asked) > 0.3 * len(docs_v2)
    assert any(d.genre == "story" for d, *_ in asked)
    assert any(d.genre == "chat" and d.persona for d, *_ in asked)
    nearest_wrong = 0
    for doc, reply, offset, concept in asked:
        word = CATALOGUE[concept].singular
        assert doc.text[offset : offset + len(word)] == word
        question = doc.text.rindex("What ", 0, offset)
        person, relation = re.search(r"(\w+)'s (\w+)$", doc.text[:reply]).groups()
        hop = re.fullmatch(
            r" was (?:an? )?(\w+), and (?:the )?(\w+) (?:loved|was) ", doc.text[reply:offset]
        )
        middle = hop[1]
        assert hop[2] == middle  # the second hop starts from the first's answer
        statements = doc.text[:question]
        article = "an? " if relation == "pet" else ""
        assert re.search(rf"{person}'s {relation} was {article}{middle}\.", statements), doc.text
        assert re.search(rf"\b{middle} (?:loved|was) {word}\.", statements, re.I)
        stated = [s for s in re.finditer(r"\b(?:loved|was) (\w+)\.", statements)]
        nearest_wrong += stated[-1].group(1) != word
    assert 0.25 < nearest_wrong / len(asked) < 0.75


def test_recall_turns_answer_with_the_fact_stated_among_distractors(docs_v2):
    """Chats ask back one of three stated facts; the reply repeats the one asked for, in persona
    chats too (with the persona's opener and closer around it)."""
    asks = (
        (r"What did (\w+) love\?\nAssistant: (?:[^\n]*? )?\1 loved (\w+)\.", "{} loved {}."),
        (
            r"What colour was the (\w+)\?\nAssistant: (?:[^\n]*? )?The \1 was (\w+)\.",
            "The {} was {}.",
        ),
    )
    answered = 0
    for doc in (d for d in docs_v2 if d.genre == "chat"):
        for pattern, fact in asks:
            for hit in re.finditer(pattern, doc.text):
                stated = doc.text[: hit.start()]
                assert fact.format(*hit.groups()) in stated
                shape = fact.format(r"\w+", r"\w+").replace(".", r"\.")
                assert len(re.findall(shape, stated)) >= 3  # two distractors at least
                answered += 1
    assert answered > 0.15 * len(docs_v2)


def test_repeat_turns_say_the_listed_words_back_in_order(docs_v2):
    from app.demo.world import REPEAT_ASKS

    asks = "|".join(re.escape(a) for a in REPEAT_ASKS)
    pattern = rf"User: (?:{asks})([^\n]+)\nAssistant: (?:[^\n]*? )?\1"
    chats = [d.text for d in docs_v2 if d.genre == "chat"]
    repeated = [hit for text in chats for hit in re.finditer(pattern, text)]
    assert len(repeated) > 0.05 * len(docs_v2)
    assert all(6 <= hit.group(1).count(",") + 1 <= 12 for hit in repeated)


def test_corpus_specs_name_a_seed_and_a_version():
    from itertools import islice

    from app.pipeline.corpus import iter_texts

    assert list(islice(iter_texts("demo-world:3:2"), 5)) == [
        d.text for d in World(3, version=2).documents(5)
    ]
    assert list(islice(iter_texts("demo-world:3"), 2)) == [d.text for d in World(3).documents(2)]
    for bad in ("demo-world:x", "demo-world:3:two"):
        with pytest.raises(MonoscopeError, match="demo-world"):
            next(iter_texts(bad))
    with pytest.raises(MonoscopeError, match="versions 1 and 2"):
        next(iter_texts("demo-world:3:9"))
