"""The offline explainer: a short label from the evidence alone, no LLM.

    explainer = OfflineExplainer(background)          # token text -> count over the corpus
    label = explainer.explain(evidence)               # 'Golden Gate (Gate, Golden, Bridge)'

Terms are the marked tokens that are most characteristic of the feature: activation-weighted
counts (each example counts a token once) against the token's corpus frequency, scored as
weight x log-odds. The phrase is the longest n-gram (up to 3 tokens) ending at or spanning the
peak token that recurs most often (in at least PHRASE_SHARE of the examples). When the examples
share no phrase, the label lists the terms alone. The strongest word-like logit effect, when it is
not already a term, is appended as "→ token": what the feature makes the model say next.
"""

import math
import re
from collections import Counter
from collections.abc import Iterable

from app.autointerp.base import Outcome
from app.autointerp.evidence import FeatureEvidence, marked

METHOD = "offline"
EXPLAINER = "monoscope-offline-1"
N_TERMS = 3
PHRASE_SHARE = 0.4
MIN_LIFT = 40.0  # a phrase's other words: share of examples over corpus frequency, at least
_WORDLIKE = re.compile(r"\w")
_SPECIAL = re.compile(r"^<\|?[\w/ ]+\|?>$")  # <|endoftext|>, <bos>, </s>: never part of a label


def _usable(token: str) -> bool:
    return bool(token.strip()) and not _SPECIAL.match(token.strip())


def key(token: str) -> str:
    return token.strip().lower()


def background_counts(token_texts: Iterable[str], counts: Iterable[int]) -> Counter:
    """Corpus frequency per normalised token text (' Gate' and 'Gate' count together)."""
    background: Counter = Counter()
    for text, count in zip(token_texts, counts, strict=True):
        if count:
            background[key(text)] += int(count)
    return background


class OfflineExplainer:
    method = METHOD
    model = EXPLAINER

    def __init__(self, background: Counter):
        self.background = background
        self.total = max(sum(background.values()), 1)

    def _term_scores(self, examples, max_act: float) -> tuple[dict[str, float], dict[str, Counter]]:
        weights: Counter = Counter()
        surfaces: dict[str, Counter] = {}
        for example in examples:
            best: dict[str, float] = {}
            for token, mark, value in zip(
                example.tokens, marked(example, max_act), example.activations, strict=True
            ):
                k = key(token)
                if mark and k and _usable(token):
                    best[k] = max(best.get(k, 0.0), float(value) / max_act)
                    surfaces.setdefault(k, Counter())[token.strip()] += 1
            weights.update(best)
        total = max(sum(weights.values()), 1e-9)
        scores: dict[str, float] = {}
        for k, w in weights.items():
            foreground = w / total
            background = (self.background.get(k, 0) + 1) / self.total
            scores[k] = w * math.log(foreground / background)
        return scores, surfaces

    def _lift(self, token: str, share: float) -> float:
        """How much more often a token sits in the phrase than anywhere in the corpus."""
        return share / ((self.background.get(key(token), 0) + 1) / self.total)

    def _phrase(self, examples, max_act: float, anchor: str) -> str | None:
        """The most recurrent n-gram around the peak token that contains the anchor term and
        whose other words are characteristic of it: "the Golden Gate" is just "Golden Gate"."""
        counts: Counter = Counter()
        for example in examples:
            if not len(example.activations):
                continue
            peak = int(example.activations.argmax())
            marks = marked(example, max_act)
            seen = set()
            for start in range(max(peak - 2, 0), peak + 1):
                for end in range(peak + 1, min(peak + 3, len(example.tokens)) + 1):
                    if end - start > 3 or any(not marks[i] for i in range(peak + 1, end)):
                        continue
                    gram = tuple(example.tokens[start:end])
                    if anchor in (key(t) for t in gram) and gram not in seen:
                        seen.add(gram)
                        counts[gram] += 1
        needed = PHRASE_SHARE * max(len(examples), 1)
        candidates = [
            (n, len(gram), gram)
            for gram, n in counts.items()
            if n >= needed
            and len(gram) > 1
            and all(_WORDLIKE.search(t) and _usable(t) for t in gram)
            and all(key(t) == anchor or self._lift(t, n / len(examples)) >= MIN_LIFT for t in gram)
        ]
        if not candidates:
            return None
        _, _, gram = max(candidates)  # the most frequent; among equals, the longest
        return "".join(gram).strip()

    def explain(self, evidence: FeatureEvidence, examples=None) -> str | None:
        """A label, or None for a feature with no activating examples."""
        examples = [e for e in (examples or evidence.examples) if e.max_act > 0]
        if not examples or evidence.max_act <= 0:
            return None
        scores, surfaces = self._term_scores(examples, evidence.max_act)
        strongest_first = sorted(scores, key=scores.__getitem__, reverse=True)  # stable on ties
        ranked = [k for k in strongest_first if _WORDLIKE.search(k)] or strongest_first
        terms = [surfaces[k].most_common(1)[0][0] for k in ranked[:N_TERMS]]
        if not terms:
            return None
        phrase = self._phrase(examples, evidence.max_act, ranked[0])
        label = f"{phrase} ({', '.join(terms)})" if phrase else ", ".join(terms)
        predicted = [t.strip() for t in evidence.top_logits[:3] if _WORDLIKE.search(t)]
        if predicted and key(predicted[0]) not in (key(t) for t in terms):
            label += f" → {predicted[0]}"
        return label

    async def explain_batch(self, evidence: list[FeatureEvidence]) -> list[Outcome]:
        outcomes = []
        for item in evidence:
            label = self.explain(item, item.split()[0])
            outcomes.append(Outcome(label) if label else Outcome(error="no activating examples"))
        return outcomes
