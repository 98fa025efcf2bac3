"""The Golden Gate check's judge: what counts as a steered reply a person would accept."""

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
