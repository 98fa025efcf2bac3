"""`monoscope score`: score stored labels on examples their explainer never saw.

    result = ScoreJob(ScoreConfig("monoscope-demo", "res1"), engine, model, sae).run()
    config = ScoreConfig("gpt2", "res6", scorers=("detection", "fuzzing"))
    result = ScoreJob(config, engine, model, sae, judge=judge).run()

Positives are each feature's held-out examples (evidence.split); negatives come from a pool of
stored contexts run once through the model and SAE: random contexts where the feature never
fires, and hard negatives, contexts that contain the feature's peak tokens and still do not
fire. Scores are stored in the label's `scores` (with what they were computed on); a failure is
stored as {"failed": reason}, never as a score, and is retried on the next run. Resumable and
idempotent: a label that already has a scorer's score is skipped unless force=True.
"""

import asyncio
import random
from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import Engine
from tqdm import tqdm

from app.autointerp.embedding import embedding_scores
from app.autointerp.evidence import Example, FeatureEvidence
from app.autointerp.scoring import (
    JUDGED_SCORERS,
    SCORERS,
    LLMJudge,
    ScoreError,
    ScoringSet,
    keyword_score,
)
from app.core.errors import MonoscopeError
from app.core.model import LoadedModel, load_model
from app.core.sae import Sae, load_sae
from app.core.text_embedding import Encoder, TextEmbedder
from app.db.codec import unpack_ids
from app.db.engine import job_lock, session_scope
from app.db.interp import (
    labelled_features,
    lacks_score,
    scored_already,
    store_scores,
    stored_context_ids,
)
from app.db.labels import refresh_sae
from app.db.models import Explanation
from app.db.queries import feature_details, find_sae, vocabulary
from app.pipeline.config import ScoreConfig

BATCH = 256
JUDGE_POSITIVES = 6  # per judged prompt: held-out activating excerpts ...
JUDGE_NEGATIVES = 6  # ... and excerpts where the feature does not fire


@dataclass
class ScoreResult:
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    stale: int = 0  # scores dropped because the label was edited while they were computed
    prompt_tokens: int = 0
    completion_tokens: int = 0


class NegativePool:
    """Stored contexts, encoded once: for any feature, contexts where it never fires."""

    def __init__(self, model: LoadedModel, sae: Sae, ids: np.ndarray, vocab: list[str], seed: int):
        self.ids, self.vocab = ids, vocab
        self.skip_first = model.tokenizer.bos_token_id is not None
        self.rng_seed = seed
        peaks = []
        with torch.inference_mode():
            for start in range(0, len(ids), 16):
                batch = torch.from_numpy(ids[start : start + 16].astype(np.int64))
                acts = sae.encode(model.capture(batch, [sae.hook_name])[sae.hook_name])
                peaks.append(acts[:, int(self.skip_first) :].amax(dim=1).float().cpu())
        self.peak = torch.cat(peaks).numpy()  # (contexts, d_sae)

    def negatives(self, feature: int, peak_tokens: set[int], k: int) -> list[Example]:
        quiet = np.flatnonzero(self.peak[:, feature] <= 0)
        rng = random.Random(self.rng_seed * 1_000_003 + feature)
        hard = [int(c) for c in quiet if peak_tokens & set(self.ids[c].tolist())]
        chosen = rng.sample(hard, min(len(hard), k // 2))
        rest = [int(c) for c in quiet if int(c) not in set(chosen)]
        chosen_random = rng.sample(rest, min(len(rest), k - len(chosen)))
        start = int(self.skip_first)
        return [
            Example(
                tuple(self.vocab[t] for t in self.ids[c][start:]),
                np.zeros(len(self.ids[c]) - start, np.float32),
                kind,
            )
            for kind, contexts in (("hard_negative", chosen), ("negative", chosen_random))
            for c in contexts
        ]


def negative_pool(
    engine: Engine,
    model_id: int,
    model: LoadedModel,
    sae: Sae,
    vocab: list[str],
    size: int,
    seed: int = 0,
) -> NegativePool:
    with session_scope(engine) as session:
        rows = stored_context_ids(session, model_id)
    if not rows:
        raise MonoscopeError("no stored contexts to draw negatives from; harvest first")
    picked = random.Random(seed).sample(range(len(rows)), min(size, len(rows)))
    lengths = {len(unpack_ids(rows[i])) for i in picked}
    if len(lengths) != 1:
        raise MonoscopeError("stored contexts differ in length; score one corpus at a time")
    ids = np.stack([unpack_ids(rows[i]) for i in sorted(picked)])
    return NegativePool(model, sae, ids, vocab, seed)


def load_harvested(engine: Engine, model: str, sae: str, device: str) -> tuple[LoadedModel, Sae]:
    """The model and SAE a stored SAE was harvested from, loaded from their recorded sources."""
    with session_scope(engine) as session:
        row = find_sae(session, model, sae)
        if row is None:
            raise MonoscopeError(f"no SAE {model}/{sae} in the database; harvest it first")
        sources = row.model.source, row.source
    loaded = load_model(sources[0], device=device)
    return loaded, loaded.attach(load_sae(sources[1]), source=sources[1])


def _needs(explanation: Explanation, scorer: str, force: bool) -> bool:
    return force or lacks_score(explanation.scores, scorer)


class ScoreJob:
    """Score the SAE's labels with the config's scorers. Runs on one SAE take turns (job_lock),
    so two at once never pay a judge twice for the same label."""

    def __init__(
        self,
        config: ScoreConfig,
        engine: Engine,
        resident: LoadedModel,
        resident_sae: Sae,
        judge: LLMJudge | None = None,
        embedder: Encoder | None = None,
    ):
        """`embedder` serves the embedding scorer (default: the packaged MiniLM on the
        resident model's device; app.pipeline.sharding.ShardedEmbedder spreads it over Ray)."""
        self.config, self.engine, self.judge = config, engine, judge
        self.resident, self.resident_sae = resident, resident_sae
        self.embedder = embedder

    def run(self) -> ScoreResult:
        c = self.config
        return _score(
            self.engine,
            c.model,
            c.sae,
            list(c.scorers),
            self.resident,
            self.resident_sae,
            self.judge,
            c.features,
            c.force,
            c.n_negatives,
            c.pool_size,
            c.concurrency,
            c.progress,
            self.embedder,
        )


def _score(
    engine: Engine,
    model: str,
    sae: str,
    scorers: list[str],
    resident: LoadedModel,
    resident_sae: Sae,
    judge: LLMJudge | None = None,
    features: list[int] | None = None,
    force: bool = False,
    n_negatives: int = 10,
    pool_size: int = 64,
    concurrency: int = 8,
    progress: bool = True,
    embedder: Encoder | None = None,
) -> ScoreResult:
    with job_lock(engine, f"score:{model}/{sae}"):
        unknown = [s for s in scorers if s not in SCORERS]
        if unknown:
            raise MonoscopeError(f"unknown scorer {unknown[0]!r}; use {', '.join(SCORERS)}")
        if any(s in JUDGED_SCORERS for s in scorers) and judge is None:
            raise MonoscopeError(
                "detection and fuzzing need an LLM: set MONOSCOPE_EXPLAINER_BASE_URL"
            )
        with session_scope(engine) as session:
            sae_row = find_sae(session, model, sae)
            if sae_row is None:
                raise MonoscopeError(f"no SAE {model}/{sae} in the database; harvest it first")
            vocab = vocabulary(session, sae_row.model_id)
            todo, n_labels = labelled_features(session, sae_row.id, features)
            model_id, sae_id = sae_row.model_id, sae_row.id
            # Features whose labels are all scored are skipped unread: a rerun on a scored SAE
            # (the demo's every restart) builds no negative pool and reads no examples.
            done, labels_done, results_done = (
                (set(), 0, 0) if force else scored_already(session, sae_id, scorers, todo)
            )
        todo = [index for index in todo if index not in done]
        result = ScoreResult(skipped=results_done)
        if not todo:
            return result
        pool = negative_pool(engine, model_id, resident, resident_sae, vocab, pool_size)
        if "embedding" in scorers and embedder is None:
            embedder = TextEmbedder.packaged(str(resident.device))
        bar = tqdm(
            total=n_labels if features is None else None,
            initial=labels_done,
            unit="label",
            desc="score",
            disable=not progress,
        )
        for start in range(0, len(todo), BATCH):
            with session_scope(engine) as session:
                details = feature_details(session, model, sae, todo[start : start + BATCH])
                updates, jobs, targets, embedded = [], [], [], []
                for detail in details:
                    evidence = FeatureEvidence.from_detail(detail, vocab)
                    peak_tokens = {int(e.token_ids[e.max_position]) for e in detail.of_kind("top")}
                    positives = evidence.split()[1]
                    negatives = pool.negatives(detail.feature.index, peak_tokens, n_negatives)
                    scoring = ScoringSet(positives, negatives)
                    judged = ScoringSet(positives[:JUDGE_POSITIVES], negatives[:JUDGE_NEGATIVES])
                    for explanation in (e for e in detail.explanations if e.status == "ok"):
                        bar.update(1)
                        for scorer in scorers:
                            if not _needs(explanation, scorer, force):
                                result.skipped += 1
                            elif scorer == "keyword":
                                try:
                                    score = keyword_score(explanation.text, scoring)
                                except ScoreError as exc:
                                    score = {"failed": str(exc)}
                                updates.append((explanation, scorer, score))
                            elif scorer == "embedding":
                                embedded.append((explanation, scoring))
                            else:
                                jobs.append(
                                    (
                                        scorer,
                                        explanation.text,
                                        judged,
                                        detail.feature.index,
                                        evidence.max_act,
                                    )
                                )
                                targets.append((explanation, scorer))
                if embedded:
                    assert embedder is not None
                    found = embedding_scores([(e.text, s) for e, s in embedded], embedder)
                    updates += [
                        (e, "embedding", v) for (e, _), v in zip(embedded, found, strict=True)
                    ]
                if jobs:
                    assert judge is not None
                    judged_scores = asyncio.run(judge.score_many(jobs, concurrency))
                    updates += [(e, s, v) for (e, s), v in zip(targets, judged_scores, strict=True)]
                by_label: dict[int, tuple[Explanation, dict]] = {}
                for explanation, scorer, score in updates:
                    new = by_label.setdefault(explanation.id, (explanation, {}))[1]
                    new[scorer] = score
                for explanation, new in by_label.values():
                    if not store_scores(session, explanation, new):  # edited meanwhile
                        result.stale += len(new)
                        continue
                    for score in new.values():
                        usage = score.get("usage", {})
                        result.prompt_tokens += usage.get("prompt_tokens", 0)
                        result.completion_tokens += usage.get("completion_tokens", 0)
                        result.failed += "failed" in score
                        result.scored += "failed" not in score
        bar.close()
        with session_scope(engine) as session:
            refresh_sae(session, sae_id)
        return result
