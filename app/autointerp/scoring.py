"""Scorers: how far a label predicts where its feature fires, on examples the explainer never saw.

    scoring = ScoringSet(positives=held_out, negatives=negatives)
    keyword_score("Golden Gate (Gate) → Bridge", scoring)         # offline, always available
    await judge.detection(label, scoring)                          # an LLM decides, per REFERENCE
    await judge.fuzzing(label, scoring, max_act)

Keyword (offline): each token's activation is predicted from the label alone (1 where the token
is one of the label's words or shares a stem with it, else 0) and scored by the Pearson
correlation with the true activations over the held-out positives and the negatives. It was
called "simulation" until it was seen for what it is: a keyword match, not a simulator reading
the label; it cannot credit a label that describes a context in other words.
Detection: the judge sees unmarked excerpts (held-out activating ones and negatives, shuffled) and
names those the label says should fire. Fuzzing: the judge sees activating excerpts, half marked
where the feature really fires and half marked on random other tokens, and names the correctly
marked ones. Both report balanced accuracy (TP/P + TN/N)/2, precision and recall.
"""

import asyncio
import json
import random
import re
from dataclasses import dataclass

import numpy as np

from app.autointerp.evidence import Example, format_example, marked
from app.autointerp.llm import ChatClient, LLMError, _excerpt

SCORERS = ("keyword", "embedding", "detection", "fuzzing")
JUDGED_SCORERS = ("detection", "fuzzing")  # these need an LLM judge
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an the of in on at to for and or but is are was were be been it its this that these "
        "those with as by from about into over after before words word token tokens text feature "
        "fires mentions references related",
    )
)
_WORD = re.compile(r"\w+")
_ANSWER = re.compile(r"\[ANSWER\]\s*:\s*(\[[^\]]*\])", re.IGNORECASE)


class ScoreError(Exception):
    """A scorer could not produce a score; the reason is stored as the failure."""


@dataclass(frozen=True)
class ScoringSet:
    positives: list[Example]  # held out from the explainer; true per-token activations
    negatives: list[Example]  # contexts where the feature does not fire (random and hard)


def label_terms(label: str) -> set[str]:
    """The label's content words; "→ token" (what the feature predicts, not where it fires) is
    left out."""
    firing = label.split("→")[0]
    return {w for w in _WORD.findall(firing.lower()) if w not in STOPWORDS}


def _matches(token: str, terms: set[str]) -> bool:
    word = token.strip().lower()
    if not _WORD.search(word):
        return False
    if word in terms:
        return True
    return len(word) >= 4 and any(
        len(t) >= 4 and (t.startswith(word[:4]) and word.startswith(t[:4])) for t in terms
    )


def predicted_activations(label: str, example: Example) -> np.ndarray:
    terms = label_terms(label)
    return np.array([1.0 if _matches(t, terms) else 0.0 for t in example.tokens], np.float32)


def keyword_score(label: str, scoring: ScoringSet) -> dict:
    examples = scoring.positives + scoring.negatives
    if not scoring.positives:
        raise ScoreError("no held-out activating examples")
    truth = np.concatenate([e.activations for e in examples]).astype(np.float64)
    guess = np.concatenate([predicted_activations(label, e) for e in examples]).astype(np.float64)
    # A label that matches no token (or every token) predicts nothing: 0.
    constant = guess.std() == 0 or truth.std() == 0
    value = 0.0 if constant else float(np.corrcoef(guess, truth)[0, 1])
    return {
        "value": round(value, 4),
        "method": "term-match",
        "positives": len(scoring.positives),
        "negatives": len(scoring.negatives),
        "tokens": len(truth),
        "matched_tokens": int(guess.sum()),
    }


def classification(predicted: list[bool], actual: list[bool]) -> dict:
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    fp = sum(p and not a for p, a in zip(predicted, actual, strict=True))
    positives = sum(actual)
    negatives = len(actual) - positives
    tn = negatives - fp
    recall = tp / positives if positives else 0.0
    specificity = tn / negatives if negatives else 0.0
    return {
        "balanced_accuracy": round((recall + specificity) / 2, 4),
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(recall, 4),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": positives - tp,
    }


def parse_answer(reply: str, n: int) -> list[int]:
    """The excerpt numbers of the reply's last [ANSWER]: [...] line, all within 1..n."""
    found = _ANSWER.findall(reply or "")
    if not found:
        raise ScoreError(f"unparseable reply: {_excerpt(reply)}")
    try:
        numbers = json.loads(found[-1])
    except ValueError as exc:
        raise ScoreError(f"unparseable answer: {found[-1][:100]}") from exc
    if not all(isinstance(x, int) and 1 <= x <= n for x in numbers):
        raise ScoreError(f"answer out of range: {found[-1][:100]}")
    return numbers


def _mislabelled(example: Example, max_act: float, rng: random.Random) -> Example:
    """The same excerpt with as many marks, placed on tokens where the feature does not fire."""
    real = marked(example, max_act)
    quiet = [i for i, m in enumerate(real) if not m and example.tokens[i].strip()]
    chosen = set(rng.sample(quiet, min(max(sum(real), 1), len(quiet))))
    fake = np.array([max_act if i in chosen else 0.0 for i in range(len(real))], np.float32)
    return Example(example.tokens, fake, "fuzzed")


DETECTION = (
    "You judge explanations of a language-model feature. Given the explanation and numbered text "
    "excerpts, decide in which excerpts the feature fires according to the explanation. End with "
    "one line: [ANSWER]: a JSON list of the excerpt numbers, e.g. [1, 4] (or [] for none)."
)
FUZZING = (
    "You judge explanations of a language-model feature. In each numbered excerpt some tokens are "
    "marked <<like this>>. Decide for which excerpts the marked tokens are the ones the "
    "explanation says the feature fires on. End with one line: [ANSWER]: a JSON list of the "
    "excerpt numbers whose marks are right, e.g. [2, 3] (or [] for none)."
)


class LLMJudge:
    """Detection and fuzzing scores judged by a model behind an OpenAI-compatible endpoint."""

    def __init__(self, client: ChatClient, seed: int = 0):
        self.client = client
        self.seed = seed

    async def _ask(self, system: str, label: str, excerpts: list[str]) -> tuple[list[int], dict]:
        numbered = "\n".join(f"{i}. {text}" for i, text in enumerate(excerpts, 1))
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: {label}\n\nExcerpts:\n{numbered}"},
        ]
        try:
            reply = await self.client.chat(messages, max_tokens=300)
        except LLMError as exc:
            raise ScoreError(str(exc)) from exc
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        return parse_answer(reply.text, len(excerpts)), usage

    async def detection(self, label: str, scoring: ScoringSet, feature: int) -> dict:
        items = [(e, True) for e in scoring.positives] + [(e, False) for e in scoring.negatives]
        random.Random(self.seed * 1_000_003 + feature).shuffle(items)
        excerpts = ["".join(e.tokens).strip() for e, _ in items]
        chosen, usage = await self._ask(DETECTION, label, excerpts)
        predicted = [i + 1 in chosen for i in range(len(items))]
        actual = [a for _, a in items]
        return classification(predicted, actual) | {
            "examples": [e.kind for e, _ in items],
            "judged_firing": sorted(chosen),
            "usage": usage,
        }

    async def fuzzing(self, label: str, scoring: ScoringSet, feature: int, max_act: float) -> dict:
        rng = random.Random(self.seed * 1_000_003 + feature + 1)
        items = []
        for i, example in enumerate(scoring.positives):
            right = i % 2 == 0
            shown = example if right else _mislabelled(example, max_act, rng)
            items.append((format_example(shown, max_act), right))
        if not any(right for _, right in items) or all(right for _, right in items):
            raise ScoreError("fuzzing needs at least two held-out activating examples")
        rng.shuffle(items)
        chosen, usage = await self._ask(FUZZING, label, [text for text, _ in items])
        predicted = [i + 1 in chosen for i in range(len(items))]
        return classification(predicted, [right for _, right in items]) | {
            "judged_right": sorted(chosen),
            "usage": usage,
        }

    async def score_many(self, jobs: list[tuple], concurrency: int) -> list[dict]:
        """jobs: (scorer, label, scoring, feature, max_act); each result or {'failed': reason}."""
        limit = asyncio.Semaphore(concurrency)

        async def one(scorer, label, scoring, feature, max_act) -> dict:
            async with limit:
                try:
                    if scorer == "detection":
                        return await self.detection(label, scoring, feature)
                    return await self.fuzzing(label, scoring, feature, max_act)
                except ScoreError as exc:
                    return {"failed": str(exc)}

        async with self.client:
            return list(await asyncio.gather(*(one(*job) for job in jobs)))
