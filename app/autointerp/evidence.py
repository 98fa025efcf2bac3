"""What an explainer or scorer sees of a feature: examples as token texts with activations.

    evidence = FeatureEvidence.from_detail(detail, vocab)
    train, held_out = evidence.split()          # explainers never see the held-out examples
    format_example(example, evidence.max_act)   # 'the <<Golden>> <<Gate>> Bridge'

Tokens at or above MARK_FRACTION of the feature's max activation are marked <<like this>>;
per-token values are scaled to integers 0-10 by floor(10 * a / max) (so only the max token is 10).
"""

from dataclasses import dataclass

import numpy as np

MARK_FRACTION = 0.3
HOLD_OUT_EVERY = 3  # one top example in three is held out for scoring


@dataclass(frozen=True)
class Example:
    tokens: tuple[str, ...]
    activations: np.ndarray  # (pos,) float32
    kind: str  # top | quantile | negative
    interval: int | None = None

    @property
    def max_act(self) -> float:
        return float(self.activations.max()) if len(self.activations) else 0.0


@dataclass(frozen=True)
class FeatureEvidence:
    index: int
    max_act: float
    density: float
    examples: tuple[Example, ...]
    top_logits: tuple[str, ...]
    bottom_logits: tuple[str, ...]

    @classmethod
    def from_detail(cls, detail, vocab: list[str], skip_first: bool = True) -> "FeatureEvidence":
        """From app.db.queries.FeatureDetail; skip_first drops the BOS token of each context."""
        start = 1 if skip_first else 0
        examples = tuple(
            Example(
                tokens=tuple(vocab[t] for t in e.token_ids[start:]),
                activations=e.activations[start:],
                kind=e.kind,
                interval=e.interval,
            )
            for e in detail.examples
        )
        feature = detail.feature
        return cls(
            index=feature.index,
            max_act=float(feature.max_act),
            density=float(feature.density),
            examples=examples,
            top_logits=tuple(t for _, t, _ in feature.top_logits),
            bottom_logits=tuple(t for _, t, _ in feature.bottom_logits),
        )

    def split(self) -> tuple[list[Example], list[Example]]:
        """(shown to explainers, held out for scoring): disjoint by construction.

        Every third top example (ranks 2, 5, 8, ...) and the second half of each interval's
        samples are held out, so scorers see strong and weak examples alike."""
        shown: list[Example] = []
        held: list[Example] = []
        intervals: dict[int | None, list[Example]] = {}
        for rank, example in enumerate(e for e in self.examples if e.kind == "top"):
            (held if rank % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 else shown).append(example)
        for example in self.examples:
            if example.kind != "top":
                intervals.setdefault(example.interval, []).append(example)
        for samples in intervals.values():
            half = (len(samples) + 1) // 2
            shown += samples[:half]
            held += samples[half:]
        return shown, held


def marked(example: Example, max_act: float) -> list[bool]:
    threshold = MARK_FRACTION * max_act
    return [bool(a >= threshold and a > 0) for a in example.activations]


def format_example(example: Example, max_act: float) -> str:
    """The text with activating tokens wrapped in <<...>> (adjacent ones share one pair)."""
    out, inside = [], False
    for token, mark in zip(example.tokens, marked(example, max_act), strict=True):
        if mark and not inside:
            out.append("<<")
        if not mark and inside:
            out.append(">>")
        inside = mark
        out.append(token)
    if inside:
        out.append(">>")
    return "".join(out)


def scaled_activations(example: Example, max_act: float) -> list[tuple[str, int]]:
    """(token, 0-10) for every token with a non-zero scaled value."""
    scale = 10.0 / max_act if max_act > 0 else 0.0
    values = np.floor(np.clip(example.activations * scale, 0, 10)).astype(int)
    return [(t, int(v)) for t, v in zip(example.tokens, values, strict=True) if v > 0]
