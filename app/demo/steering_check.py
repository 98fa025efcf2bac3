"""The Golden Gate check, as a person judges a steered reply.

    edits = resolve_steering(spec, saes, max_act=...)        # the feature, clamped at 4x max
    check = steering_check(model, saes, edits, aim=mentions_bridge, strength=4)
    check.steered_share, check.default_share, check.steered[0].text

A reply counts only if it is on aim (it turns to the bridge, or speaks in the persona) and fluent:
every sentence is one the world can write (`WorldLanguage`), no word comes three times in a row,
and its loss under the unsteered model is within `loss_ratio` of the default replies' mean. A
count of the word "bridge" would pass "Bridge Bridge Bridge"; this check fails it.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from app.core.generation import SamplingParams, chat_prompt_ids, complete, pair_rows
from app.core.model import LoadedModel
from app.core.reply_reading import read_replies
from app.core.sae import Sae
from app.core.steering import FeatureEdit
from app.demo import TRAIN_SEED, WORLD_VERSION
from app.demo.facts import PERSONAS
from app.demo.language import WorldLanguage
from app.demo.world import World

# In-world prompts that have nothing to do with places: a reply that reaches the bridge from
# these was taken there by the steering.
STEERING_PROMPTS = ("What is your favourite food?", "How do you feel today?", "Tell me about cats.")
_BRIDGE = re.compile(r"golden gate|\bbridge\b", re.IGNORECASE)


def mentions_bridge(reply: str) -> bool:
    return bool(_BRIDGE.search(reply))


def speaks_as(persona: str) -> Callable[[str], bool]:
    """Whether a reply opens or closes the way the persona's replies do."""
    style = PERSONAS[persona]
    markers = (*style["openers"], *style["closers"])
    return lambda reply: any(marker in reply for marker in markers)


@cache
def world_language(version: int = WORLD_VERSION) -> WorldLanguage:
    """The grammar of a version of the training world (seconds to learn; kept for the process).
    The version must be the one the steered model speaks: each version writes sentences the
    other cannot, so judged by the shipped version's grammar a world v2 model's replies read
    as foreign."""
    return WorldLanguage.learn(World(TRAIN_SEED, version))


@dataclass(frozen=True)
class Reply:
    text: str
    on_aim: bool
    fluent: bool  # every sentence the world's, no stutter
    loss: float  # mean next-token loss of the reply under the unsteered model


@dataclass(frozen=True)
class SteeringCheck:
    strength: float
    default: tuple[Reply, ...]
    steered: tuple[Reply, ...]
    loss_ratio: float

    @property
    def default_loss(self) -> float:
        return sum(r.loss for r in self.default) / len(self.default)

    def passes(self, reply: Reply) -> bool:
        return reply.on_aim and reply.fluent and reply.loss <= self.loss_ratio * self.default_loss

    @property
    def steered_share(self) -> float:
        """Steered replies on aim, fluent and not much less likely than default ones."""
        return sum(map(self.passes, self.steered)) / len(self.steered)

    @property
    def default_share(self) -> float:
        """Default replies on aim: what the prompts give without steering."""
        return sum(r.on_aim for r in self.default) / len(self.default)

    def summary(self) -> dict:
        return {
            "strength": self.strength,
            "steered_share": round(self.steered_share, 4),
            "steered_on_aim": round(sum(r.on_aim for r in self.steered) / len(self.steered), 4),
            "steered_fluent": round(sum(r.fluent for r in self.steered) / len(self.steered), 4),
            "default_share": round(self.default_share, 4),
            "default_loss": round(self.default_loss, 4),
            "steered_loss": round(sum(r.loss for r in self.steered) / len(self.steered), 4),
        }


def steering_check(
    model: LoadedModel,
    saes: dict[str, Sae],
    edits: Sequence[FeatureEdit],
    aim: Callable[[str], bool],
    strength: float = 0.0,
    prompts: Sequence[str] = STEERING_PROMPTS,
    seeds: int = 10,
    max_new_tokens: int = 48,
    loss_ratio: float = 1.5,
    world_version: int = WORLD_VERSION,
) -> SteeringCheck:
    """Sample a default and a steered reply per prompt and seed (the pair shares its random
    draws, so they differ only by the intervention) and judge each, by the grammar of the world
    version the model was trained on. `strength` is recorded."""
    language = world_language(world_version)
    default: list[Reply] = []
    steered: list[Reply] = []
    for prompt in prompts:
        ids, stops = chat_prompt_ids(model.tokenizer, [{"role": "user", "content": prompt}])
        params = SamplingParams(max_new_tokens=max_new_tokens, stop_strings=stops)
        rows = [row for seed in range(seeds) for row in pair_rows(ids, edits, seed)]
        texts = complete(model, saes, rows, params)
        readings = read_replies(model, saes, ids, texts)
        for i, (text, reading) in enumerate(zip(texts, readings, strict=True)):
            reply = text.strip()
            judged = Reply(reply, aim(reply), language.fluent(reply), reading.loss)
            (steered if i % 2 else default).append(judged)
    return SteeringCheck(strength, tuple(default), tuple(steered), loss_ratio)
