"""`monoscope explain`: label an SAE's features with an explainer and store the labels.

    result = run_explain(engine, "monoscope-demo", "res1", OfflineExplainer(background))

Features are read from the database in batches (three queries per batch), explained, and written
batch by batch, so a crash loses at most one batch. Resumable and idempotent: a feature that
already has a label from the same method and explainer model is skipped unless force=True; a
failed attempt is stored as a failure with its reason and retried on the next run. Dead features
(no activating examples) are left unlabelled. Each run is recorded with its token use and cost.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, exists, select
from tqdm import tqdm

from app.autointerp.base import Explainer
from app.autointerp.evidence import FeatureEvidence
from app.autointerp.offline import OfflineExplainer, background_counts
from app.core.errors import MonoscopeError
from app.db.engine import job_lock, session_scope
from app.db.labels import refresh_sae
from app.db.models import Explanation, Feature, InterpRun, LabelEvent, Model, SaeRow
from app.db.queries import feature_details, find_model, find_sae, token_counts, vocabulary

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


def _ok_explanations(model: str, sae: str, column):
    """(feature index, column) of an SAE's successful explanations, oldest first, so that a
    dict built from the rows keeps each feature's newest."""
    return (
        select(Feature.index, column)
        .join(Explanation, Explanation.feature_id == Feature.id)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .where(Model.name == model, SaeRow.name == sae, Explanation.status == "ok")
        .order_by(Explanation.created_at, Explanation.id)
    )


def labels(engine: Engine, model: str, sae: str, method: str | None = None) -> dict[int, str]:
    """feature index -> its newest successful label (optionally from one method)."""
    statement = _ok_explanations(model, sae, Explanation.text)
    if method is not None:
        statement = statement.where(Explanation.method == method)
    with session_scope(engine) as session:
        return dict(session.execute(statement).tuples().all())


def label_scores(engine: Engine, model: str, sae: str, scorer: str) -> dict[int, float]:
    """feature index -> the scorer's value for its newest scored label."""
    with session_scope(engine) as session:
        rows = session.execute(_ok_explanations(model, sae, Explanation.scores)).tuples()
        found = {}
        for index, scores in rows:
            value = (scores or {}).get(scorer, {}).get("value")
            if value is not None:
                found[index] = float(value)
        return found


def _todo(session, sae_id: int, explainer: Explainer, features, force: bool) -> tuple[list, int]:
    """(alive features still to label, alive features considered)."""
    alive = select(Feature.index).where(Feature.sae_id == sae_id, Feature.density > 0)
    if features is not None:
        alive = alive.where(Feature.index.in_(features))
    indices = list(session.scalars(alive.order_by(Feature.index)))
    if force:
        return indices, len(indices)
    done = set(
        session.scalars(
            select(Feature.index)
            .join(Explanation, Explanation.feature_id == Feature.id)
            .where(
                Feature.sae_id == sae_id,
                Explanation.method == explainer.method,
                Explanation.explainer_model == explainer.model,
                Explanation.status == "ok",
            )
        )
    )
    return [i for i in indices if i not in done], len(indices)


def run_explain(
    engine: Engine,
    model: str,
    sae: str,
    explainer: Explainer,
    features: list[int] | None = None,
    force: bool = False,
    progress: bool = True,
) -> ExplainResult:
    """Label the SAE's alive features. Runs on one SAE take turns, on any machine (job_lock):
    the second starts once the first is done and skips what it labelled."""
    with job_lock(engine, f"explain:{model}/{sae}"):
        return _explain(engine, model, sae, explainer, features, force, progress)


def _explain(
    engine: Engine, model: str, sae: str, explainer: Explainer, features: list[int] | None,
    force: bool, progress: bool,
) -> ExplainResult:  # fmt: skip
    with session_scope(engine) as session:
        sae_row = find_sae(session, model, sae)
        if sae_row is None:
            raise MonoscopeError(f"no SAE {model}/{sae} in the database; harvest it first")
        vocab = vocabulary(session, sae_row.model_id)
        sae_id = sae_row.id
        todo, considered = _todo(session, sae_id, explainer, features, force)
        run = InterpRun(
            sae_id=sae_row.id, kind="explain", method=explainer.method,
            explainer_model=explainer.model,
        )  # fmt: skip
        session.add(run)
        session.flush()
        result = ExplainResult(run_id=run.id, skipped=considered - len(todo))
    bar = tqdm(total=len(todo), unit="feature", desc=f"explain ({explainer.method})",
               disable=not progress)  # fmt: skip
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        with session_scope(engine) as session:
            details = feature_details(session, model, sae, batch)
        evidence = [FeatureEvidence.from_detail(d, vocab) for d in details]
        outcomes = asyncio.run(explainer.explain_batch(evidence))
        with session_scope(engine) as session:
            ids = [d.feature.id for d in details]
            # A retry or --force replaces this explainer's earlier label or failure, unless a
            # person has touched it (reviewed, edited, retired): human work outlives machine runs.
            session.execute(
                delete(Explanation).where(
                    Explanation.feature_id.in_(ids),
                    Explanation.method == explainer.method,
                    Explanation.explainer_model == explainer.model,
                    ~exists().where(LabelEvent.explanation_id == Explanation.id),
                )
            )
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
            run = session.get(InterpRun, result.run_id)
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
