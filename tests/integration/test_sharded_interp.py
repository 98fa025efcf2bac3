"""Explain and score sharded over Ray: the self-explainer and the embedding scorer (the parts that
run a model) on a local cluster of two CPU workers store what one process stores."""

import pytest
from sqlalchemy import select

from app.autointerp.self_explain import SelfExplainer
from app.core.errors import MonoscopeError
from app.core.model import load_model
from app.core.sae import load_sae
from app.core.text_embedding import TextEmbedder
from app.db.engine import session_scope
from app.db.models import Explanation, Feature, SaeRow
from app.pipeline.config import ExplainConfig, ScoreConfig
from app.pipeline.explain import ExplainJob, explainer_for, offline_explainer
from app.pipeline.harvest import HarvestJob
from app.pipeline.score import ScoreJob
from app.pipeline.sharding import ShardedEmbedder, _slices
from app.settings import Settings
from tests.helpers import build_model
from tests.integration.test_harvest import _config, corpus, ray_cluster, sae_dir  # noqa: F401

pytestmark = pytest.mark.slow  # Ray workers load their own model


@pytest.fixture(scope="module")
def long_gpt2_dir(tmp_path_factory):
    """The tiny GPT-2 with room for the explainer's prompt (its 256 positions have none)."""
    return build_model(tmp_path_factory.mktemp("long-gpt2"), positions=2048)


@pytest.fixture(scope="module")
def gpt2(long_gpt2_dir):
    return load_model(long_gpt2_dir, device="cpu")


@pytest.fixture
def harvested(engine, gpt2, long_gpt2_dir, corpus, sae_dir, tmp_path):  # noqa: F811
    """A harvest whose model row names a directory the workers can load."""
    config = _config(corpus, sae_dir, tmp_path, model=str(long_gpt2_dir))
    HarvestJob(config, engine, model=gpt2).run()
    return engine


def _sparsest(engine, n: int) -> list[int]:
    """The sparsest alive features: dense random ones lack negatives to score against."""
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(Feature.index).where(Feature.density > 0).order_by(Feature.density).limit(n)
            )
        )


def _stored(engine, method: str) -> dict[int, tuple]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(Feature.index, Explanation.text, Explanation.error, Explanation.status)
            .join(Explanation, Explanation.feature_id == Feature.id)
            .where(Explanation.method == method)
        )
        return {index: (text, error, status) for index, text, error, status in rows}


def test_the_self_explainer_on_two_workers_stores_what_one_process_stores(
    harvested,
    gpt2,
    ray_cluster,  # noqa: F811
):
    engine, features = harvested, _sparsest(harvested, 6)
    config = ExplainConfig(gpt2.name, "res1", features=features, progress=False)
    ExplainJob(config, engine, SelfExplainer(gpt2)).run()
    alone = _stored(engine, "self")

    sharded = explainer_for(engine, Settings(), gpt2.name, "self", ray="local", ray_workers=2)
    try:
        assert len(sharded.workers) == 2 and sharded.model == gpt2.name
        forced = ExplainConfig(gpt2.name, "res1", features=features, force=True, progress=False)
        result = ExplainJob(forced, engine, sharded).run()
    finally:
        sharded.close()
    assert result.explained + result.failed == len(features) == len(alone)
    assert all(error.startswith("unparseable reply: ") for _, error, _ in alone.values())
    assert len({error for _, error, _ in alone.values()}) > 1  # each feature's own reply
    assert _stored(engine, "self") == alone  # the same greedy replies, features in place


def test_embedding_scores_from_two_workers_match_one_process(harvested, gpt2, ray_cluster):  # noqa: F811
    engine, features = harvested, _sparsest(harvested, 8)
    ExplainJob(
        ExplainConfig(gpt2.name, "res1", features=features, progress=False),
        engine,
        offline_explainer(engine, gpt2.name),
    ).run()
    with session_scope(engine) as session:
        sae = gpt2.attach(load_sae(session.scalars(select(SaeRow.source)).one()))

    def scores(embedder, force: bool) -> dict[int, dict]:
        config = ScoreConfig(
            gpt2.name, "res1", ("embedding",), features=features, force=force, progress=False
        )
        ScoreJob(config, engine, gpt2, sae, embedder=embedder).run()
        with session_scope(engine) as session:
            return {
                e.feature_id: e.scores["embedding"] for e in session.scalars(select(Explanation))
            }

    alone = scores(TextEmbedder.packaged("cpu"), force=False)
    embedder = ShardedEmbedder("local", 2)
    try:
        sharded = scores(embedder, force=True)
    finally:
        embedder.close()
    assert sharded.keys() == alone.keys() and any("value" in s for s in alone.values())
    for feature, score in alone.items():
        if "value" in score:  # the vectors agree to float rounding, so the AUROCs do too
            assert sharded[feature]["value"] == pytest.approx(score["value"], abs=2e-3)
        else:
            assert sharded[feature] == score


def test_only_the_self_explainer_is_sharded(harvested, gpt2):
    with pytest.raises(MonoscopeError, match="shards the self-explainer"):
        explainer_for(harvested, Settings(), gpt2.name, "offline", ray="local")


def test_slices_keep_order_and_leave_no_empty_part():
    assert _slices(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _slices([1], 4) == [[1]] and _slices([], 2) == []
