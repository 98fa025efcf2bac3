"""Schema, migrations and queries on SQLite and PostgreSQL (the `engine` fixture runs both)."""

import subprocess
import sys
import time

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from app.db import store as db
from app.db.engine import alembic_config, connect, migrate, session_scope
from app.db.models import Explanation, Feature
from app.db.queries import find_sae, list_features
from app.db.search import search_explanations
from tests.web_world import HOSTILE_LABEL, build_world


def _downgrade_to_base(engine, revision: str = "base") -> None:
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_migrations_go_down_and_up_and_match_the_models(engine):
    command.check(alembic_config(engine))  # raises if the models and migrations differ
    _downgrade_to_base(engine)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert {"features", "examples", "contexts", "explanations", "api_keys"} <= set(
        inspect(engine).get_table_names()
    )
    command.check(alembic_config(engine))


def test_migration_0002_keeps_data_going_down_and_fills_labels_going_up(engine):
    with session_scope(engine) as session:
        build_world(session)
        before = db.count_rows(session)
    _downgrade_to_base(engine, "0001")  # drops the label columns without touching any row
    assert "label" not in {c["name"] for c in inspect(engine).get_columns("features")}
    migrate(engine)  # back up: the upgrade computes labels and summaries for stored SAEs
    with session_scope(engine) as session:
        assert db.count_rows(session) == before
        labels = dict(session.query(Feature.index, Feature.label))
        summary = find_sae(session, "tiny", "res1").summary
    assert labels[0] == HOSTILE_LABEL and labels[3] is None
    assert summary["labelled"] == 3 and summary["alive"] == 5 and summary["scored"] == 3


def test_migration_0007_renames_the_keyword_score_both_ways(engine):
    """Labels scored as "simulation" keep their values, and their place among other scores, as
    "keyword"; going down restores the old name."""
    with session_scope(engine) as session:
        build_world(session)
    _downgrade_to_base(engine, "0006")
    with session_scope(engine) as session:
        for label in session.query(Explanation):  # as a store before 0007 held them
            label.scores = {
                ("simulation" if k == "keyword" else k): v for k, v in (label.scores or {}).items()
            }
    migrate(engine)
    with session_scope(engine) as session:
        scores = {e.text: e.scores for e in session.query(Explanation)}
    assert scores[HOSTILE_LABEL] == {"keyword": {"value": 0.8}}
    assert list(scores["common words"]) == ["detection", "keyword"]
    assert scores["common words"]["keyword"] == {"value": 0.9}
    _downgrade_to_base(engine, "0006")
    with engine.connect() as connection:
        stored = [row[0] for row in connection.execute(text("SELECT scores FROM explanations"))]
    assert any("simulation" in str(s) for s in stored) and not any(
        "keyword" in str(s) for s in stored
    )
    migrate(engine)


def test_servers_starting_together_migrate_once(engine):
    """Every server process migrates as it starts; four at once must not apply a revision twice."""
    with session_scope(engine) as session:
        build_world(session)
    _downgrade_to_base(engine, "0003")
    url = engine.url.render_as_string(hide_password=False)
    code = (
        "import sys, time; from app.db.engine import connect, migrate; engine = connect("
        "sys.argv[1]); time.sleep(float(sys.argv[2]) - time.time()); migrate(engine)"
    )
    at = str(time.time() + 4)  # all four begin at once, after their imports
    starts = [
        subprocess.Popen([sys.executable, "-c", code, url, at], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for start in starts:
        _, errors = start.communicate(timeout=120)
        assert start.returncode == 0, errors
    with engine.connect() as connection:
        version = connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with session_scope(engine) as session:
        assert find_sae(session, "tiny", "res1").summary["failed"] == 0


def test_an_empty_sqlite_file_upgrades_to_head_in_wal_mode(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'new' / 'monoscope.db'}")
    migrate(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def _sae(session, name="res1", d_sae=500):
    model = db.upsert_model(
        session,
        db.ModelInfo("tiny", "tests/tiny", "gpt2", 2, 16, 3),
        ["<bos>", "Golden", " Gate"],
    )
    sae = db.create_sae(
        session,
        model,
        db.SaeInfo(name, "saes/" + name, "blocks.1.hook_resid_post", "topk", 16, d_sae, {}, {}),
    )
    rng = np.random.default_rng(0)
    density = rng.random(d_sae).round(2)  # many ties: pagination must still be exact
    db.insert_features(
        session,
        sae.id,
        {
            "index": list(range(d_sae)),
            "density": density.tolist(),
            "max_act": (rng.random(d_sae) * 10).tolist(),
            "mean_act": [1.0] * d_sae,
        },
    )
    return sae


def _walk(session, sae_id, sort, descending, limit):
    seen, after = [], None
    while True:
        page = list_features(session, sae_id, sort, descending, after=after, limit=limit)
        seen += [(getattr(f, sort), f.index) for f in page.features]
        if page.next_key is None:
            return seen
        after = page.next_key


@pytest.mark.parametrize("sort", ["index", "density", "max_act"])
@pytest.mark.parametrize("descending", [False, True])
def test_keyset_pages_walk_every_feature_once_in_order(engine, sort, descending):
    with session_scope(engine) as session:
        sae = _sae(session)
        walked = _walk(session, sae.id, sort, descending, limit=37)
        everything = sorted(
            ((getattr(f, sort), f.index) for f in session.query(Feature)), reverse=descending
        )
    assert walked == everything


def test_a_failed_transaction_leaves_no_rows(engine):
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        _sae(session)
        raise RuntimeError("crash in the middle of an import")
    with session_scope(engine) as session:
        assert all(n == 0 for n in db.count_rows(session).values())


def test_the_same_sae_name_twice_needs_replace(engine):
    with session_scope(engine) as session:
        _sae(session)
    with pytest.raises(Exception, match="already in the database"), session_scope(engine) as s:
        _sae(s)


LABELS = [
    "the Golden Gate Bridge in San Francisco",
    "bridges and other large structures",
    "French words for food",
    "Python for loops",
    "golden colours and gold",
]


def _labelled(session):
    sae = _sae(session, d_sae=len(LABELS))
    for index, label in enumerate(LABELS):
        feature = session.query(Feature).filter_by(sae_id=sae.id, index=index).one()
        session.add(Explanation(feature_id=feature.id, text=label, method="offline"))
    session.flush()
    return sae


def test_label_search_ranks_matches_stems_and_prefixes(engine):
    with session_scope(engine) as session:
        _labelled(session)
        hits = search_explanations(session, "golden gate")
        assert [h.index for h in hits] == [0]
        assert {h.index for h in search_explanations(session, "bridge")} == {0, 1}
        assert {h.index for h in search_explanations(session, "brid")} == {0, 1}  # prefix
        assert {h.index for h in search_explanations(session, "loop")} == {3}  # stemming
        assert search_explanations(session, "golden", sae="nope") == []
        assert {h.index for h in search_explanations(session, "golden", model="tiny")} == {0, 4}
        hit = search_explanations(session, "french")[0]
        assert (hit.model, hit.sae, hit.text) == ("tiny", "res1", LABELS[2])


HOSTILE = [
    '"',
    "*",
    "AND OR NOT",
    "golden' OR 1=1; DROP TABLE features; --",
    "gate)(",
    "NEAR(golden gate)",
    "^golden",
    "col:golden",
    "!!! :* & |",
    "\x00golden",
    "",
    "   ",
    "x" * 5000,
]


@pytest.mark.parametrize("query", HOSTILE)
def test_search_takes_any_string_as_plain_words(engine, query):
    with session_scope(engine) as session:
        _labelled(session)
        hits = search_explanations(session, query)
        assert all(h.text in LABELS for h in hits)
        assert session.query(Feature).count() == len(LABELS)


def test_an_edited_or_deleted_label_leaves_the_index(engine):
    with session_scope(engine) as session:
        _labelled(session)
        explanation = session.query(Explanation).filter_by(text=LABELS[3]).one()
        explanation.text = "recursion loops"
        session.flush()
        assert [h.text for h in search_explanations(session, "recursion")] == ["recursion loops"]
        assert search_explanations(session, "python") == []
        session.delete(explanation)
        session.flush()
        assert search_explanations(session, "recursion") == []


def test_find_sae_by_model_and_name(engine):
    with session_scope(engine) as session:
        _sae(session)
        assert find_sae(session, "tiny", "res1").d_sae == 500
        assert find_sae(session, "tiny", "nope") is None


def _plan(session, statement) -> str:
    compiled = statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    if session.get_bind().dialect.name == "sqlite":
        rows = session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
        return " ".join(str(r[-1]) for r in rows)
    session.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: ask for the index
    return " ".join(r[0] for r in session.execute(text(f"EXPLAIN {compiled}")))


def test_page_queries_use_their_indexes(engine):
    from sqlalchemy import select, tuple_

    from app.db.models import Example

    with session_scope(engine) as session:
        sae = _sae(session)
        listing = (
            select(Feature)
            .where(Feature.sae_id == sae.id, tuple_(Feature.density, Feature.index) < (0.5, 10))
            .order_by(Feature.density.desc(), Feature.index.desc())
            .limit(50)
        )
        assert "ix_features_sae_density" in _plan(session, listing)
        examples = select(Example).where(Example.feature_id == 3).order_by(Example.rank)
        assert "ix_examples_feature_kind_rank" in _plan(session, examples)
