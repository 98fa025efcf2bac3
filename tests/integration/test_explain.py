"""The explain job on SQLite and PostgreSQL: labels stored, resumable, failures kept and retried."""

import pytest
from sqlalchemy import select

from app.autointerp.base import Outcome
from app.core.errors import MonoscopeError
from app.db.engine import session_scope
from app.db.models import Explanation, Feature, InterpRun, SaeRow
from app.db.search import search_explanations
from app.pipeline.config import ExplainConfig, ScoreConfig
from app.pipeline.explain import ExplainJob, labels, offline_explainer
from app.pipeline.harvest import HarvestJob
from tests.integration.test_harvest import _config, corpus, sae_dir  # noqa: F401 (fixtures)


@pytest.fixture
def harvested(engine, gpt2, corpus, sae_dir, tmp_path):  # noqa: F811
    HarvestJob(_config(corpus, sae_dir, tmp_path), engine, model=gpt2).run()
    return engine


class Scripted:
    """An explainer whose outcomes a test decides: failures for some features."""

    method, model = "openai", "scripted-1"

    def __init__(self, failing: set[int]):
        self.failing = failing
        self.calls: list[int] = []

    async def explain_batch(self, evidence):
        self.calls += [e.index for e in evidence]
        return [
            Outcome(error="HTTP 402: no credit")
            if e.index in self.failing
            else Outcome(f"label {e.index}", prompt_tokens=100, completion_tokens=10, cost_usd=0.01)
            for e in evidence
        ]


def _alive(engine) -> list[int]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Feature.index).where(Feature.density > 0)))


def test_offline_labels_every_alive_feature_once(harvested, gpt2):
    engine = harvested
    explainer = offline_explainer(engine, gpt2.name)
    first = ExplainJob(ExplainConfig(gpt2.name, "res1", progress=False), engine, explainer).run()
    alive = _alive(engine)
    assert first.explained + first.failed == len(alive) and first.explained > 0
    found = labels(engine, gpt2.name, "res1")
    assert set(found) <= set(alive) and all(found.values())
    again = ExplainJob(ExplainConfig(gpt2.name, "res1", progress=False), engine, explainer).run()
    assert again.explained == 0 and again.skipped == first.explained
    forced = ExplainJob(
        ExplainConfig(gpt2.name, "res1", features=[alive[0]], force=True, progress=False),
        engine,
        explainer,
    ).run()
    assert forced.explained == 1
    with session_scope(engine) as session:
        assert session.query(Explanation).count() == first.explained + first.failed
    label = found[alive[0]]
    with session_scope(engine) as session:  # labels are searchable as soon as they are stored
        hits = search_explanations(session, label, limit=100)
        shown = dict(session.execute(select(Feature.index, Feature.label)).all())
        summary = session.scalar(select(SaeRow.summary))
    assert alive[0] in [h.index for h in hits]
    assert {i: t for i, t in shown.items() if t} == found  # listings show each feature's label
    assert summary["labelled"] == len(found) and summary["alive"] == len(alive)


def test_failures_are_stored_with_their_reason_and_retried(harvested, gpt2):
    engine = harvested
    alive = _alive(engine)
    failing = set(alive[:3])
    result = ExplainJob(
        ExplainConfig(gpt2.name, "res1", progress=False), engine, Scripted(failing)
    ).run()
    assert result.failed == 3 and result.explained == len(alive) - 3
    assert result.prompt_tokens == 100 * (len(alive) - 3)
    with session_scope(engine) as session:
        failed = session.query(Explanation).filter_by(status="failed").all()
        assert {f.error for f in failed} == {"HTTP 402: no credit"}
        assert all(f.text == "" and f.scores == {} for f in failed)
        run = session.get(InterpRun, result.run_id)
        assert (run.features, run.failures) == (len(alive) - 3, 3)
        assert run.cost_usd == pytest.approx(0.01 * (len(alive) - 3))
    retry = Scripted(set())
    second = ExplainJob(ExplainConfig(gpt2.name, "res1", progress=False), engine, retry).run()
    assert sorted(retry.calls) == sorted(failing) and second.explained == 3
    with session_scope(engine) as session:
        assert session.query(Explanation).filter_by(status="failed").count() == 0
        assert session.query(Explanation).count() == len(alive)


def test_an_unknown_sae_is_a_clear_error(engine):
    with pytest.raises(MonoscopeError, match="no SAE nowhere/none"):
        ExplainJob(ExplainConfig("nowhere", "none", progress=False), engine, Scripted(set())).run()


def test_llm_labels_through_a_real_endpoint_resume_without_new_requests(harvested, gpt2):
    from app.autointerp.llm import ChatClient, LLMExplainer
    from tests.llm_server import ScriptedLLM, ok, status

    engine = harvested
    alive = _alive(engine)[:5]
    script = [ok("[EXPLANATION]: tiny things")] * 2 + [status(402)] + [ok("[EXPLANATION]: more")]
    with ScriptedLLM(script) as llm:
        explainer = LLMExplainer(ChatClient(llm.url, "scripted", backoff=0.01), concurrency=1)
        first = ExplainJob(
            ExplainConfig(gpt2.name, "res1", features=alive, progress=False), engine, explainer
        ).run()
        assert (first.explained, first.failed) == (4, 1) and len(llm.requests) == 5
        second = ExplainJob(
            ExplainConfig(gpt2.name, "res1", features=alive, progress=False), engine, explainer
        ).run()
        assert second.explained == 1 and len(llm.requests) == 6  # only the failure is retried
    found = labels(engine, gpt2.name, "res1", method="openai")
    assert set(found) == set(alive) and set(found.values()) <= {"tiny things", "more"}


def test_a_model_that_cannot_explain_leaves_failures_with_its_reply(harvested, gpt2):
    from app.autointerp.self_explain import SelfExplainer

    engine = harvested
    alive = _alive(engine)[:2]
    explainer = SelfExplainer(gpt2, max_new_tokens=8)
    result = ExplainJob(
        ExplainConfig(gpt2.name, "res1", features=alive, progress=False), engine, explainer
    ).run()
    assert result.failed == 2 and result.explained == 0
    with session_scope(engine) as session:
        errors = [e.error for e in session.query(Explanation).filter_by(method="self")]
    assert all(e.startswith(("unparseable reply", "prompt longer")) for e in errors)


def _label_offline(engine, gpt2):
    """Label every feature of the harvested SAE with the offline explainer."""
    return ExplainJob(
        ExplainConfig(gpt2.name, "res1", progress=False),
        engine,
        offline_explainer(engine, gpt2.name),
    ).run()


def _score(engine, gpt2, scorers, **options):
    from app.core.sae import load_sae
    from app.pipeline.score import ScoreJob

    with session_scope(engine) as session:
        source = session.query(SaeRow).one().source
    sae = gpt2.attach(load_sae(source))
    judge = options.pop("judge", None)
    config = ScoreConfig(gpt2.name, "res1", tuple(scorers), progress=False, **options)
    return ScoreJob(config, engine, gpt2, sae, judge=judge).run()


def _scores(engine) -> list[dict]:
    with session_scope(engine) as session:
        return [e.scores for e in session.query(Explanation).filter_by(status="ok")]


def test_a_rerun_reads_only_features_whose_labels_lack_a_score(harvested, gpt2, monkeypatch):
    """A scored SAE (the demo on every restart) is checked from the labels alone: no negative
    pool, no examples read."""
    from app.pipeline import score as score_module

    engine = harvested
    _label_offline(engine, gpt2)
    first = _score(engine, gpt2, ["keyword"])
    with session_scope(engine) as session:
        labelled = session.execute(
            select(Feature.index, Explanation.scores)
            .join(Explanation)
            .where(Explanation.status == "ok")
        ).all()
    retried = {index for index, scores in labelled if "failed" in scores["keyword"]}
    read, real = [], score_module.feature_details
    monkeypatch.setattr(
        score_module,
        "feature_details",
        lambda session, model, sae, indices: (
            read.extend(indices) or real(session, model, sae, indices)
        ),
    )
    again = _score(engine, gpt2, ["keyword"])
    assert set(read) == retried and again.skipped == first.scored

    with session_scope(engine) as session:  # every label scored: the rerun has nothing to read
        for label in session.query(Explanation).filter_by(status="ok"):
            if "failed" in label.scores["keyword"]:
                label.scores = {**label.scores, "keyword": {"value": 0.0}}
    monkeypatch.setattr(score_module, "negative_pool", lambda *a, **k: pytest.fail("pool built"))
    read.clear()
    last = _score(engine, gpt2, ["keyword"])
    assert read == [] and last.scored == 0 and last.skipped == len(labelled)


def test_keyword_scores_are_stored_once_and_redone_on_force(harvested, gpt2):
    engine = harvested
    _label_offline(engine, gpt2)
    first = _score(engine, gpt2, ["keyword"])
    scores = _scores(engine)
    assert first.scored + first.failed == len(scores) and first.scored > 0
    stored = [s["keyword"] for s in scores if "failed" not in s["keyword"]]
    assert all(-1 <= s["value"] <= 1 for s in stored)
    assert any(s["negatives"] > 0 for s in stored)  # dense random features may have none
    again = _score(engine, gpt2, ["keyword"])
    assert again.scored == 0 and again.skipped == first.scored
    forced = _score(engine, gpt2, ["keyword"], force=True)
    assert forced.scored == first.scored
    with session_scope(engine) as session:  # the headline score follows onto the feature rows
        headline = (
            session.execute(select(Feature.label_score).where(Feature.label_score.is_not(None)))
            .scalars()
            .all()
        )
        summary = session.scalar(select(SaeRow.summary))
    assert len(headline) == len(stored) == summary["scored"] == sum(summary["scores"]["counts"])


def test_embedding_scores_are_stored_beside_keyword_scores(harvested, gpt2):
    """One run computes both offline scores for every label; the embedding score is an AUROC over
    the same held-out positives and negatives, and a rerun skips what is stored."""
    engine = harvested
    with session_scope(engine) as session:  # the sparsest: dense random features lack negatives
        alive = list(
            session.scalars(
                select(Feature.index).where(Feature.density > 0).order_by(Feature.density).limit(8)
            )
        )
    ExplainJob(
        ExplainConfig(gpt2.name, "res1", features=alive, progress=False),
        engine,
        offline_explainer(engine, gpt2.name),
    ).run()
    first = _score(engine, gpt2, ["keyword", "embedding"], features=alive)
    scores = [s for s in _scores(engine) if s]
    assert first.scored + first.failed == 2 * len(scores) > 0
    embedded = [s["embedding"] for s in scores if "failed" not in s["embedding"]]
    assert embedded and all(0 <= s["value"] <= 1 for s in embedded)
    for s in scores:
        if "failed" not in s["embedding"] and "failed" not in s["keyword"]:
            assert s["embedding"]["positives"] == s["keyword"]["positives"]
            assert s["embedding"]["negatives"] == s["keyword"]["negatives"]
    again = _score(engine, gpt2, ["keyword", "embedding"], features=alive)
    assert again.scored == 0 and again.skipped == first.scored + first.failed - again.failed


def test_judged_scores_and_their_failures(harvested, gpt2):
    from app.autointerp.llm import ChatClient
    from app.autointerp.scoring import LLMJudge
    from tests.llm_server import ScriptedLLM, malformed, ok

    engine = harvested
    alive = _alive(engine)[:3]
    ExplainJob(
        ExplainConfig(gpt2.name, "res1", features=alive, progress=False), engine, Scripted(set())
    ).run()
    with pytest.raises(MonoscopeError, match="need an LLM"):
        _score(engine, gpt2, ["detection"])
    with ScriptedLLM([malformed(), ok("[ANSWER]: [1, 2]")]) as llm:
        judge = LLMJudge(ChatClient(llm.url, "judge", backoff=0.01, max_retries=0))
        first = _score(engine, gpt2, ["detection", "fuzzing"], judge=judge, concurrency=1)
        assert first.failed >= 1 and len(llm.requests) == 6
        second = _score(engine, gpt2, ["detection", "fuzzing"], judge=judge, concurrency=1)
        assert second.skipped == first.scored and len(llm.requests) == 6 + first.failed
    for scores in _scores(engine):
        for name in ("detection", "fuzzing"):
            score = scores[name]
            assert "failed" in score or 0 <= score["balanced_accuracy"] <= 1
        if "failed" not in scores["detection"]:
            assert set(scores["detection"]["examples"]) <= {
                "top",
                "quantile",
                "negative",
                "hard_negative",
            }


def _review(engine, index: int, action: str, text: str = "") -> int:
    from app.db.review import review_label

    with session_scope(engine) as session:
        label = session.scalars(
            select(Explanation)
            .join(Feature)
            .where(Feature.index == index, Explanation.status == "ok")
        ).first()
        review_label(session, label, action, author="ada", text=text)
        return label.id


def test_a_forced_relabel_keeps_every_label_a_person_touched(harvested, gpt2):
    """Reviews made before the run and while it runs survive it, with their history."""
    from app.db.models import LabelEvent
    from app.db.review import add_label

    engine = harvested
    explainer = offline_explainer(engine, gpt2.name)
    ExplainJob(ExplainConfig(gpt2.name, "res1", progress=False), engine, explainer).run()
    alive = _alive(engine)
    verified = _review(engine, alive[0], "verified")
    edited = _review(engine, alive[1], "edit", "a person's own words")
    with session_scope(engine) as session:
        feature = session.scalars(select(Feature).where(Feature.index == alive[2])).one()
        human = add_label(session, feature, "written by hand", author="ada").id

    class ReviewsMidRun:  # a reviewer marks a later feature's label wrong while the run goes on
        method, model = explainer.method, explainer.model

        def __init__(self):
            self.done = False

        async def explain_batch(self, evidence):
            if not self.done:
                self.done = True
                self.wrong = _review(engine, alive[-1], "wrong")
            return await explainer.explain_batch(evidence)

    mid_run = ReviewsMidRun()
    result = ExplainJob(
        ExplainConfig(gpt2.name, "res1", force=True, progress=False), engine, mid_run
    ).run()
    assert result.explained == len(alive)
    with session_scope(engine) as session:
        kept = {e.id: e for e in session.scalars(select(Explanation))}
        assert kept[verified].verdict == "verified"
        assert kept[edited].text == "a person's own words" and kept[edited].author == "ada"
        assert kept[human].text == "written by hand"
        assert kept[mid_run.wrong].verdict == "wrong"
        events = session.scalars(select(LabelEvent.explanation_id)).all()
        assert {verified, edited, human, mid_run.wrong} <= set(events)
        untouched = [e for e in kept.values() if e.method == "offline" and e.id not in events]
        assert len(untouched) == len(alive)  # every feature got its fresh machine label


def test_a_score_of_a_label_edited_meanwhile_is_not_stored(harvested, gpt2, monkeypatch):
    from app.pipeline import score

    engine = harvested
    _label_offline(engine, gpt2)
    alive = _alive(engine)
    real = score.keyword_score
    edited = {}

    def edits_while_scoring(text, scoring):
        if not edited:  # a person edits the first label while the job computes its score
            edited["id"] = _review(engine, alive[0], "edit", "edited while scoring")
        return real(text, scoring)

    monkeypatch.setattr(score, "keyword_score", edits_while_scoring)
    result = _score(engine, gpt2, ["keyword"])
    assert result.stale == 1
    with session_scope(engine) as session:
        label = session.get(Explanation, edited["id"])
        assert label.text == "edited while scoring" and label.scores == {}


def test_two_explain_runs_at_once_take_turns_and_label_each_feature_once(harvested, gpt2):
    import threading

    engine = harvested
    started = threading.Barrier(2)

    class Slow(Scripted):  # long enough that both runs are under way at once
        async def explain_batch(self, evidence):
            import asyncio

            await asyncio.sleep(0.2)
            return await super().explain_batch(evidence)

    explainers = [Slow(set()), Slow(set())]
    results = []

    def run(explainer):
        started.wait()
        results.append(
            ExplainJob(ExplainConfig(gpt2.name, "res1", progress=False), engine, explainer).run()
        )

    threads = [threading.Thread(target=run, args=(e,)) for e in explainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alive = _alive(engine)
    with session_scope(engine) as session:
        labelled = session.scalars(
            select(Feature.index).join(Explanation).where(Explanation.method == "openai")
        ).all()
    assert sorted(labelled) == sorted(alive)  # once each
    assert sorted(r.explained for r in results) == [0, len(alive)]
    assert sorted(len(e.calls) for e in explainers) == [0, len(alive)]  # nothing paid twice
