"""The Golden Gate check's judge: what counts as a steered reply a person would accept."""

from app.demo.language import WorldLanguage
from app.demo.steering_check import (
    Reply,
    SteeringCheck,
    mentions_bridge,
    speaks_as,
    world_language,
)


def _check(steered: list[Reply]) -> SteeringCheck:
    default = tuple(Reply("I would say pizza.", False, True, 1.0) for _ in range(10))
    return SteeringCheck(4.0, default, tuple(steered), loss_ratio=1.5)


def test_a_steered_reply_counts_only_on_aim_fluent_and_likely():
    good = Reply("That reminds me of the Golden Gate Bridge.", True, True, 1.2)
    stutter = Reply("Bridge Bridge Bridge", True, False, 0.4)  # low loss: a loop is likely
    unlikely = Reply("The bridge is red.", True, True, 1.6)  # over 1.5x the default loss
    off_aim = Reply("I would say pasta.", False, True, 1.0)
    check = _check([good, stutter, unlikely, off_aim])
    assert [check.passes(r) for r in check.steered] == [True, False, False, False]
    assert check.steered_share == 0.25 and check.default_share == 0.0
    assert check.summary()["steered_on_aim"] == 0.75


def test_the_judges_read_replies_as_a_person_would():
    language = world_language()
    assert mentions_bridge("Fog rolls over the Golden Gate.") and not mentions_bridge("A fox.")
    assert not language.fluent("Bridge Bridge Bridge") and not language.fluent("Bridge bridge.")
    assert language.fluent("I would say pizza. It tastes so good.")
    pirate = speaks_as("pirate")
    assert pirate("Ahoy there! I would say pizza. Arr, that be all.")
    assert not pirate("I would say pizza.")


def test_the_judge_learns_the_grammar_of_the_world_version_it_judges(monkeypatch):
    """Each world version writes sentences the other cannot: a v2 model judged by v1's grammar
    read as foreign, so the version asked for must be the one learned."""
    learned = []

    def learn(cls, world, documents=20_000):
        learned.append(world.version)
        return cls(frozenset())

    monkeypatch.setattr(WorldLanguage, "learn", classmethod(learn))
    world_language.cache_clear()
    try:
        world_language(2)
        world_language(1)
    finally:
        world_language.cache_clear()
    assert learned == [2, 1]
