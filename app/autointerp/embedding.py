"""The embedding scorer: does a label read like the contexts where its feature fires?

    embedder = TextEmbedder.packaged()              # all-MiniLM-L6-v2 from its PyPI wheel, offline
    embedding_scores([(label, scoring), ...], embedder)   # [{"value": AUROC, ...}, ...]

As delphi's embedding scorer: the label and each held-out excerpt (activating ones and negatives)
are embedded, and the score is the AUROC with which label-to-excerpt cosine similarity ranks the
activating excerpts above the negatives (0.5 is chance, 1 perfect). Unlike the keyword score it
can credit a label that describes a context in other words than the tokens it fires on.
"""

import numpy as np
from sklearn.metrics import roc_auc_score

from app.autointerp.evidence import Example
from app.autointerp.scoring import ScoreError, ScoringSet
from app.core.text_embedding import Encoder

BEFORE, AFTER = 24, 8
"""Tokens of an excerpt before and after its peak: what led up to the firing, as a reader of the
feature page sees it, and short enough for the embedder's 256-piece limit."""


def excerpt(example: Example) -> str:
    """The text around the example's strongest token (the middle of a negative, which has none)."""
    acts = example.activations
    peak = int(acts.argmax()) if acts.max() > 0 else len(example.tokens) // 2
    return "".join(example.tokens[max(peak - BEFORE, 0) : peak + AFTER + 1]).strip()


def embedding_scores(items: list[tuple[str, ScoringSet]], embedder: Encoder) -> list[dict]:
    """One score per (label, scoring set), every text embedded once in a single pass; a set with
    no positives or no negatives fails, as AUROC needs both."""
    texts: dict[str, int] = {}
    for label, scoring in items:
        for text in [label, *map(excerpt, scoring.positives + scoring.negatives)]:
            texts.setdefault(text, len(texts))
    vectors = embedder.encode(list(texts)) if texts else np.zeros((0, 0), np.float32)
    scores = []
    for label, scoring in items:
        try:
            scores.append(_score(label, scoring, vectors, texts))
        except ScoreError as exc:
            scores.append({"failed": str(exc)})
    return scores


def _score(label: str, scoring: ScoringSet, vectors: np.ndarray, texts: dict[str, int]) -> dict:
    if not scoring.positives:
        raise ScoreError("no held-out activating examples")
    if not scoring.negatives:
        raise ScoreError("no negatives to tell the activating examples from")
    excerpts = [excerpt(e) for e in scoring.positives + scoring.negatives]
    similarity = vectors[[texts[t] for t in excerpts]] @ vectors[texts[label]]
    truth = [1] * len(scoring.positives) + [0] * len(scoring.negatives)
    positives = similarity[: len(scoring.positives)]
    return {
        "value": round(float(roc_auc_score(truth, similarity)), 4),
        "method": "all-MiniLM-L6-v2 label-to-excerpt cosine, AUROC",
        "positives": len(scoring.positives),
        "negatives": len(scoring.negatives),
        "mean_similarity_positive": round(float(positives.mean()), 4),
        "mean_similarity_negative": round(float(similarity[len(positives) :].mean()), 4),
    }
