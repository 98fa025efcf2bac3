"""Semantic label search: labels embedded by the job are found by meaning as well as by words,
with the real packaged MiniLM."""

import pytest
from fastapi.testclient import TestClient

from app.core.text_embedding import TextEmbedder
from app.db import accounts
from app.db.embeddings import labels_to_embed
from app.db.engine import session_scope
from app.db.models import Explanation, Feature, LabelEmbedding
from app.db.queries import find_sae
from app.pipeline.config import EmbedLabelsConfig
from app.pipeline.embed_labels import EmbedLabelsJob
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed
from tests.web_world import PASSWORD, build_world


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder.packaged()


@pytest.fixture
def embedded(engine, embedder):
    with session_scope(engine) as session:
        build_world(session)
    result = EmbedLabelsJob(
        EmbedLabelsConfig("tiny", "res1", progress=False), engine, embedder
    ).run()
    assert result.embedded == 4  # every label but the failed attempt
    return engine


@pytest.fixture
def client(embedded, embedder):
    url = embedded.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url, model=None, saes=[]))
    with TestClient(app) as client:
        app.state.label_index._load_embedder = lambda: embedder  # one MiniLM for the module
        yield client


def test_the_job_embeds_each_label_once_and_again_after_an_edit(embedded, embedder):
    config = EmbedLabelsConfig("tiny", "res1", progress=False)
    assert EmbedLabelsJob(config, embedded, embedder).run().embedded == 0
    with session_scope(embedded) as session:
        label = session.query(Explanation).filter_by(text="common words").one()
        label.text = "frequent function words"
    assert EmbedLabelsJob(config, embedded, embedder).run().embedded == 1
    with session_scope(embedded) as session:
        assert session.query(LabelEmbedding).count() == 4
        stored = session.query(LabelEmbedding).filter_by(explanation_id=label.id).one()
        assert stored.text == "frequent function words" and len(stored.vector) == 2 * 384
        assert labels_to_embed(session, find_sae(session, "tiny", "res1").id, embedder.name) == []


def test_a_query_in_other_words_finds_the_label_by_meaning(client):
    page = parsed(client.get("/search", params={"q": "mist hanging over a suspension bridge"}).text)
    first = page.select_one("li.result")
    assert first.select_one("a.result-label")["href"] == "/tiny/res1/1"  # "...Bridge in the fog"
    assert "similar meaning" in first.select_one(".match-kind").get_text()
    api = client.get("/api/v1/search", params={"q": "mist hanging over a suspension bridge"})
    best = api.json()[0]
    assert best["index"] == 1 and best["words"] is False and best["similarity"] >= 0.3
    assert best["rank"] == 0


def test_words_and_meaning_fuse_and_nonsense_finds_nothing(client):
    hits = client.get("/api/v1/search", params={"q": "golden gate"}).json()
    assert {h["index"] for h in hits[:2]} == {0, 1} and all(h["words"] for h in hits[:2])
    nothing = client.get("/search", params={"q": "qzxv wplm"})
    assert "in its words or its meaning" in nothing.text


def test_retired_and_wrong_labels_are_not_found_by_meaning(client, embedded):
    with session_scope(embedded) as session:
        label = session.query(Explanation).filter_by(text="Golden Gate Bridge in the fog").one()
        label.verdict = "wrong"
    hits = client.get("/api/v1/search", params={"q": "mist hanging over a suspension bridge"})
    assert 1 not in {h["index"] for h in hits.json()}


def test_a_large_set_is_indexed_in_the_background_and_then_searched(
    embedded, embedder, monkeypatch
):
    """Past EXACT_LIMIT the first query is answered without meaning while the index builds, and
    later ones through it."""
    from app.web import semantic

    monkeypatch.setattr(semantic, "EXACT_LIMIT", 2)
    index = semantic.LabelIndex(lambda: embedder)
    with session_scope(embedded) as session:
        index.nearest(session, "fog on a bridge", 5)  # starts the build
        if index._building is not None:
            index._building.join(timeout=60)
        nearest = index.nearest(session, "mist hanging over a suspension bridge", 5)
        label = session.get(Explanation, nearest[0][0])
    assert index._search._index is not None and label.text == "Golden Gate Bridge in the fog"


def _same(found: list, expected: list) -> bool:
    return [k for k, _ in found] == [k for k, _ in expected] and [
        s for _, s in found
    ] == pytest.approx([s for _, s in expected], abs=1e-3)


def _join(index) -> None:
    if index._building is not None:
        index._building.join(timeout=60)


def test_a_built_index_is_saved_and_restored_by_the_next_process(
    embedded, embedder, monkeypatch, tmp_path
):
    """The first server builds and saves the index; a restart (a new LabelIndex on the same
    folder) memory-maps it without building, and answers the same. A damaged file is rebuilt."""
    from app.web import semantic

    monkeypatch.setattr(semantic, "EXACT_LIMIT", 2)
    query = "mist hanging over a suspension bridge"
    first = semantic.LabelIndex(lambda: embedder, folder=tmp_path)
    with session_scope(embedded) as session:
        first.nearest(session, query, 5)
        _join(first)
        expected = first.nearest(session, query, 5)
    (saved,) = tmp_path.glob("*.usearch")

    def no_building(*args, **kwargs):
        raise AssertionError("the saved index should have been restored")

    restarted = semantic.LabelIndex(lambda: embedder, folder=tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(semantic.Index, "add", no_building)
        with session_scope(embedded) as session:
            assert _same(restarted.nearest(session, query, 5), expected)
    assert restarted._building is None and expected

    saved.write_bytes(b"not an index")
    repaired = semantic.LabelIndex(lambda: embedder, folder=tmp_path)
    with session_scope(embedded) as session:
        repaired.nearest(session, query, 5)
        _join(repaired)
        assert _same(repaired.nearest(session, query, 5), expected)


def test_one_process_builds_while_the_others_wait_for_its_file(
    embedded, embedder, monkeypatch, tmp_path
):
    """While another process holds the build lock, search goes by words alone and nothing is
    built here; once the lock is free the index is built (or restored) on a later look."""
    import fcntl

    from app.web import semantic

    monkeypatch.setattr(semantic, "EXACT_LIMIT", 2)
    query = "mist hanging over a suspension bridge"
    index = semantic.LabelIndex(lambda: embedder, folder=tmp_path)
    with session_scope(embedded) as session:
        ids, vectors = semantic.label_vectors(session, TextEmbedder.name)
    path = tmp_path / f"{TextEmbedder.name}-{semantic._digest(ids, vectors)}.usearch"
    with open(path.with_suffix(".lock"), "a") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        with session_scope(embedded) as session:
            assert index.nearest(session, query, 5) == []
            _join(index)
            assert index.nearest(session, query, 5) == []  # waiting: not built here
        assert not path.exists()
    index._checked_at = -semantic.REFRESH_SECONDS  # the next look, without waiting 30 s
    with session_scope(embedded) as session:
        index.nearest(session, query, 5)
        _join(index)
        assert index.nearest(session, query, 5)
    assert path.exists()


def test_a_label_a_person_adds_or_edits_is_found_by_meaning_at_once(embedded, embedder):
    """No embed-labels run between: the label is embedded as it is written."""
    with session_scope(embedded) as session:
        _, secret = accounts.create_key(session, accounts.add_user(session, "ada", PASSWORD), "t")
    key = {"Authorization": f"Bearer {secret}"}
    url = embedded.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url, model=None, saes=[]))
    query = "counting numbers written in a row"
    with TestClient(app) as client:
        app.state.label_index._load_embedder = lambda: embedder
        before = client.get("/api/v1/search", params={"q": query}).json()
        assert 3 not in {h["index"] for h in before if not h["words"]}
        added = client.post(
            "/api/v1/features/tiny/res1/3/labels", json={"text": "digits in a list"}, headers=key
        )
        assert added.status_code == 201
        found = client.get("/api/v1/search", params={"q": query}).json()
        assert found[0]["index"] == 3 and found[0]["words"] is False
        edited = client.patch(
            f"/api/v1/labels/{added.json()['id']}",
            json={"action": "edit", "text": "flowers in a garden"},
            headers=key,
        )
        assert edited.status_code == 200
        again = client.get("/api/v1/search", params={"q": "roses and tulips"}).json()
        assert again[0]["index"] == 3
    with session_scope(embedded) as session:
        stored = session.query(LabelEmbedding).filter_by(explanation_id=added.json()["id"]).one()
        assert stored.text == "flowers in a garden"


def test_near_duplicate_features_are_marked_against_the_one_above(client, embedded):
    """Two features writing nearly the same direction (decoder cosine 0.91, stored on one side
    only): the lower-ranked one says which it duplicates, on the page and in the API; at 0.62
    (build_world's own neighbours) neither is marked."""
    plain = client.get("/api/v1/search", params={"q": "golden gate"}).json()
    assert all(h["near_duplicate_of"] is None for h in plain)
    with session_scope(embedded) as session:
        sae = find_sae(session, "tiny", "res1")
        feature = session.query(Feature).filter_by(sae_id=sae.id, index=1).one()
        feature.neighbours = [[0, 0.91]]
    hits = client.get("/api/v1/search", params={"q": "golden gate"}).json()
    first, second = hits[0]["index"], hits[1]["index"]
    assert {first, second} == {0, 1}
    assert hits[0]["near_duplicate_of"] is None and hits[1]["near_duplicate_of"] == first
    page = parsed(client.get("/search", params={"q": "golden gate"}).text)
    marks = page.select(".near-duplicate")
    assert len(marks) == 1 and f"near-duplicate of #{first} (cosine 0.91)" in marks[0].text
