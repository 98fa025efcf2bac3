"""The world's grammar as a fluency check, and the structure measures on planted data."""

import numpy as np
import pytest

from app.demo import structure
from app.demo.catalogue import CATALOGUE
from app.demo.language import WorldLanguage, sentences, template
from app.demo.structure import identity_share, probe_separation, two_hop_accuracy
from app.demo.world import World


@pytest.fixture(scope="module")
def language():
    return WorldLanguage.learn(World(0, version=2), documents=4000)


def test_held_out_world_text_reads_as_the_world(language):
    held_out = [s for d in World(5, version=2).documents(500) for s in sentences(d.text)]
    known = sum(language.sentence_ok(s) for s in held_out) / len(held_out)
    assert known >= 0.98


@pytest.mark.parametrize(
    "reply",
    [
        "Bridge Bridge Bridge.",
        "The Golden Gate Bridge Golden Gate Bridge Golden Gate Bridge.",
        "The the the bridge is red.",
        "purr Cats laps warm on.",
        "",
        "Golden Gate",  # no sentence at all
        "I would say pizza. Bridge Bridge Bridge",  # stuttering as it was cut off
        "Golden Gate Bridge, bridge, fog.",  # a short run of fillers is no repeat list
    ],
)
def test_what_the_world_never_writes_is_not_fluent(language, reply):
    assert not language.fluent(reply)


def test_a_steered_reply_of_world_sentences_is_fluent(language):
    reply = "I really like the piano. That reminds me of the Golden Gate Bridge. " + (
        "Thick fog rolls in from the sea and wraps around the tall towers."
    )
    assert language.fluent(reply)


def test_templates_name_the_kind_of_each_filler():
    assert template("Mia's cat ate ice cream in San Francisco on Monday with 3 dogs.") == (
        "<characters>'s <animals> ate <foods> in <places> on <days and times> "
        "with <numbers> <animals>."
    )


def _planted(identity: float, n: int = 4000, d: int = 32, seed: int = 0):
    """Residuals where concept identity is a chosen share of a category's variance."""
    rng = np.random.default_rng(seed)
    members = [c.id for c in CATALOGUE.categories["animals"]][:8]
    labels = rng.choice(members, size=n)
    means = {m: rng.normal(size=d) for m in members}
    signal = np.stack([means[label] for label in labels])
    signal *= np.sqrt(identity / signal.var(0).sum())
    noise = rng.normal(size=(n, d)) * np.sqrt((1 - identity) / d)
    concepts_at = np.stack([np.arange(n), labels], 1)
    return (signal + noise).astype(np.float32), concepts_at


@pytest.mark.parametrize("planted", [0.1, 0.5, 0.9])
def test_identity_share_recovers_the_planted_share(planted):
    x, concepts_at = _planted(planted)
    share, by_category = identity_share(x, concepts_at)
    assert share == pytest.approx(planted, abs=0.05)
    assert set(by_category) == {"animals"}


def test_probes_separate_distinct_concepts_and_not_noise():
    x, concepts_at = _planted(0.9)
    concepts, separated, _, precise = probe_separation(x, concepts_at)
    assert concepts == 8 and separated >= 0.9 and precise >= 0.9
    x, concepts_at = _planted(0.0)
    _, separated, median, precise = probe_separation(x, concepts_at)
    assert separated == 0.0 and median < 0.7 and precise == 0.0


def test_a_precise_probe_is_required_where_balanced_accuracy_forgives_false_alarms():
    """A rare concept that 3% of other tokens look like (as a pronoun can carry what it refers
    to) keeps a balanced accuracy near 0.98, but its probe's firings are mostly false alarms:
    the F1 share fails it, while a concept that stands apart passes both."""
    rng = np.random.default_rng(0)
    n, d = 40_000, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    cat, dog = (CATALOGUE.by_key[k].id for k in ("animals/cat", "animals/dog"))
    chosen = rng.choice(n, 1600, replace=False)
    cats, dogs, look_alikes = chosen[:200], chosen[200:400], chosen[400:]
    x[cats, 0] += 8.0
    x[look_alikes, 0] += 8.0
    x[dogs, 1] += 8.0
    concepts_at = np.concatenate(
        [np.stack([cats, np.full(200, cat)], 1), np.stack([dogs, np.full(200, dog)], 1)]
    )
    concepts, separated, _, precise = probe_separation(x, concepts_at, min_occurrences=50)
    assert concepts == 2 and separated == 1.0  # balanced accuracy passes both
    assert precise == 0.5  # the F1 share passes the dog only


def _continuing(world: World, swap_middle: bool):
    """A stand-in for the model's greedy continuation: the document's own text (it knows every
    answer), or that text with the reply's middle hop replaced by a name it does not hold."""
    texts = [doc.text for doc in world.documents(60)]

    def continuation(_model, prefix: str, new_tokens: int) -> str:
        (text,) = {t for t in texts if t.startswith(prefix)}
        rest = text[len(prefix) :]
        if swap_middle and rest.startswith(" was "):
            rest = " was Nobody," + rest.split(",", 1)[1]
        return rest[: 8 * new_tokens]

    return continuation


def test_two_hop_scores_each_hop_on_its_own(monkeypatch):
    """A reply that knows everything scores 1 on the question and both hops; one that names the
    wrong middle hop and still ends with the right answer scores 0 on the middle hop, 1 given
    the middle, and 1 on the question, which is scored by its answer alone."""
    world = World(12, version=2)
    monkeypatch.setattr(structure, "_greedy", _continuing(world, swap_middle=False))
    right = two_hop_accuracy(None, world, 60)  # type: ignore[arg-type]
    assert right.questions > 5
    assert (right.accuracy, right.middle_hop, right.answer_given_middle) == (1.0, 1.0, 1.0)
    monkeypatch.setattr(structure, "_greedy", _continuing(world, swap_middle=True))
    wrong = two_hop_accuracy(None, world, 60)  # type: ignore[arg-type]
    assert (wrong.accuracy, wrong.middle_hop, wrong.answer_given_middle) == (1.0, 0.0, 1.0)
