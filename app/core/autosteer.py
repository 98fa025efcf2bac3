"""AutoSteer: from a description of the change ("mention the bridge") to a feature and strength.

    trials = autosteer(model, saes, candidates, prompt_ids, stops, relevance, multiples=(2, 4, 8))
    best = trials[0]        # fluent, and the furthest towards the description

Every candidate feature is clamped at each multiple of its max activation, a few seeds each,
all in one batched generation beside the default replies. A reply is scored two ways, offline:
how much closer it comes to the description than the default replies do (`relevance`, e.g.
MiniLM cosine), and whether it still reads as language: its loss under the unsteered model
within FLUENT_LOSS_RATIO of the default replies' and no word three times in a row. Fluent
trials rank by relevance gained; the rest follow, so "Bridge Bridge Bridge" never wins.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from app.core.generation import GenerationRow, SamplingParams, complete
from app.core.model import LoadedModel
from app.core.reply_reading import read_replies
from app.core.sae import Sae
from app.core.steering import FeatureEdit

FLUENT_LOSS_RATIO = 1.5  # as the sweep marks its cliff
_STUTTER = re.compile(r"\b(\w+)\b(?:\W+\1\b){2}", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    sae: str
    index: int
    max_act: float
    why: str  # "label" (its label matches the description) or "contrast" (fires on it)


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    multiple: float  # of max activation, clamped
    replies: tuple[str, ...]
    relevance_gain: float  # mean relevance of the replies minus the default replies'
    loss_ratio: float  # their mean unsteered loss over the default replies'
    fluent: bool


def stutters(text: str) -> bool:
    return bool(_STUTTER.search(text))


def autosteer(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    candidates: Sequence[Candidate],
    prompt_ids: Sequence[int],
    stop_strings: Sequence[str],
    relevance: Callable[[list[str]], np.ndarray],
    multiples: Sequence[float] = (2.0, 4.0, 6.0, 8.0),
    seeds: int = 2,
    max_new_tokens: int = 32,
    temperature: float = 0.7,
) -> tuple[tuple[str, ...], list[Trial]]:
    """The default replies, and every (candidate, multiple) trial, best first."""
    params = SamplingParams(max_new_tokens, temperature, stop_strings=tuple(stop_strings))
    plans = [(c, m) for c in candidates for m in multiples]
    rows = [GenerationRow(prompt_ids, None, seed, params) for seed in range(seeds)]
    for candidate, multiple in plans:
        edit = FeatureEdit(candidate.sae, candidate.index, "clamp", multiple * candidate.max_act)
        rows += [GenerationRow(prompt_ids, [edit], seed, params) for seed in range(seeds)]
    texts = complete(model, saes, rows, params)
    losses = [r.loss for r in read_replies(model, saes, prompt_ids, texts)]
    scores = relevance(texts)
    default_loss = max(float(np.mean(losses[:seeds])), 1e-6)
    default_relevance = float(np.mean(scores[:seeds]))
    trials = []
    for n, (candidate, multiple) in enumerate(plans):
        part = slice(seeds * (n + 1), seeds * (n + 2))
        replies = tuple(texts[part])
        ratio = float(np.mean(losses[part])) / default_loss
        trials.append(
            Trial(
                candidate,
                multiple,
                replies,
                float(np.mean(scores[part])) - default_relevance,
                ratio,
                ratio <= FLUENT_LOSS_RATIO and not any(stutters(r) for r in replies),
            )
        )
    trials.sort(key=lambda t: (not t.fluent, -t.relevance_gain))
    return tuple(texts[:seeds]), trials
