"""`monoscope explain`: label an SAE's features with an explainer and store the labels.

    config = ExplainConfig("monoscope-demo", "res1")
    result = ExplainJob(config, engine, OfflineExplainer(background)).run()

Features are read from the database in batches (three queries per batch), explained, and written
batch by batch, so a crash loses at most one batch. Resumable and idempotent: a feature that
already has a label from the same method and explainer model is skipped unless force=True; a
failed attempt is stored as a failure with its reason and retried on the next run. Dead features
(no activating examples) are left unlabelled. Each run is recorded with its token use and cost.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from tqdm import tqdm

from app.autointerp.base import Explainer
from app.autointerp.evidence import FeatureEvidence
from app.autointerp.factory import build_explainer
from app.autointerp.offline import OfflineExplainer, background_counts
from app.core.errors import MonoscopeError
from app.core.model import load_model
from app.db.engine import job_lock, session_scope
from app.db.interp import (
    delete_untouched_machine_labels,
    features_to_label,
    newest_labels,
    newest_scores,
)
from app.db.labels import refresh_sae
from app.db.models import Explanation, InterpRun
from app.db.queries import feature_details, find_model, find_sae, token_counts, vocabulary
from app.pipeline.config import ExplainConfig
from app.settings import Settings

BATCH = 256


@dataclass
class ExplainResult:
    run_id: int
    explained: int = 0
    failed: int = 0
    skipped: int = 0  # already labelled by this explainer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def offline_explainer(engine: Engine, model: str) -> OfflineExplainer:
    """The offline explainer with token frequencies from the model's stored contexts."""
    with session_scope(engine) as session:
        model_row = find_model(session, model)
        if model_row is None:
            raise MonoscopeError(f"no model {model!r} in the database; harvest an SAE first")
        vocab = vocabulary(session, model_row.id)
        counts = token_counts(session, model_row.id, len(vocab))
    return OfflineExplainer(background_counts(vocab, counts))


def explainer_for(
    engine: Engine,
    settings: Settings,
    model: str,
    name: str | None = None,
    ray: str | None = None,
    ray_workers: int = 0,
) -> Explainer:
    """The explainer `name` (see app.autointerp.factory) for a model stored in the database;
    with `ray`, the self-explainer on that cluster's workers (the only explainer that runs a
    model: the others wait on the network or count tokens)."""

    def source() -> str:
        with session_scope(engine) as session:
            row = find_model(session, model)
            if row is None:
                raise MonoscopeError(f"no model {model!r} in the database")
            return row.source

    if ray is not None:
        if name != "self":
            raise MonoscopeError(
                "--ray shards the self-explainer (--explainer self), the one that runs a model; "
                "offline and openai labels need no Ray"
            )
        from app.pipeline.sharding import ShardedSelfExplainer

        return ShardedSelfExplainer(source(), ray, ray_workers)
    return build_explainer(
        name,
        settings,
        lambda: offline_explainer(engine, model),
        lambda: load_model(source(), device=settings.device),
    )


def labels(engine: Engine, model: str, sae: str, method: str | None = None) -> dict[int, str]:
    """feature index -> its newest successful label (optionally from one method)."""
    with session_scope(engine) as session:
        return newest_labels(session, model, sae, method)


def label_scores(engine: Engine, model: str, sae: str, scorer: str) -> dict[int, float]:
    """feature index -> the scorer's value for its newest scored label."""
    with session_scope(engine) as session:
        return newest_scores(session, model, sae, scorer)


class ExplainJob:
    """Label the SAE's alive features. Runs on one SAE take turns, on any machine (job_lock):
    the second starts once the first is done and skips what it labelled."""

    def __init__(self, config: ExplainConfig, engine: Engine, explainer: Explainer):
        self.config, self.engine, self.explainer = config, engine, explainer

    def run(self) -> ExplainResult:
        c = self.config
        with job_lock(self.engine, f"explain:{c.model}/{c.sae}"):
            return _explain(
                self.engine, c.model, c.sae, self.explainer, c.features, c.force, c.progress
            )


def _explain(
    engine: Engine,
    model: str,
    sae: str,
    explainer: Explainer,
    features: list[int] | None,
    force: bool,
    progress: bool,
) -> ExplainResult:
    with session_scope(engine) as session:
        sae_row = find_sae(session, model, sae)
        if sae_row is None:
            raise MonoscopeError(f"no SAE {model}/{sae} in the database; harvest it first")
        vocab = vocabulary(session, sae_row.model_id)
        sae_id = sae_row.id
        todo, considered = features_to_label(
            session, sae_id, explainer.method, explainer.model, features, force
        )
        run = InterpRun(
            sae_id=sae_row.id,
            kind="explain",
            method=explainer.method,
            explainer_model=explainer.model,
        )
        session.add(run)
        session.flush()
        result = ExplainResult(run_id=run.id, skipped=considered - len(todo))
    bar = tqdm(
        total=len(todo), unit="feature", desc=f"explain ({explainer.method})", disable=not progress
    )
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        with session_scope(engine) as session:
            details = feature_details(session, model, sae, batch)
        evidence = [FeatureEvidence.from_detail(d, vocab) for d in details]
        outcomes = asyncio.run(explainer.explain_batch(evidence))
        with session_scope(engine) as session:
            ids = [d.feature.id for d in details]
            # A retry or --force replaces this explainer's earlier label or failure.
            delete_untouched_machine_labels(session, ids, explainer.method, explainer.model)
            for detail, outcome in zip(details, outcomes, strict=True):
                session.add(
                    Explanation(
                        feature_id=detail.feature.id,
                        text=outcome.text or "",
                        method=explainer.method,
                        explainer_model=explainer.model,
                        status="ok" if outcome.text else "failed",
                        error=outcome.error,
                        run_id=result.run_id,
                    )
                )
                result.explained += outcome.text is not None
                result.failed += outcome.text is None
                result.prompt_tokens += outcome.prompt_tokens
                result.completion_tokens += outcome.completion_tokens
                result.cost_usd += outcome.cost_usd
            run = session.get_one(InterpRun, result.run_id)
            run.features, run.failures = result.explained, result.failed
            run.prompt_tokens, run.completion_tokens = (
                result.prompt_tokens,
                result.completion_tokens,
            )
            run.cost_usd = result.cost_usd
            run.finished_at = datetime.now(UTC)
        bar.update(len(batch))
    bar.close()
    with session_scope(engine) as session:
        refresh_sae(session, sae_id)
    return result
