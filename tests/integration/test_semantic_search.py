"""Semantic label search: labels embedded by the job are found by meaning as well as by words,
with the real packaged MiniLM."""

import pytest
from fastapi.testclient import TestClient

from app.core.text_embedding import TextEmbedder
from app.db.embeddings import labels_to_embed
from app.db.engine import session_scope
from app.db.models import Explanation, LabelEmbedding
from app.db.queries import find_sae
from app.pipeline.config import EmbedLabelsConfig
from app.pipeline.embed_labels import EmbedLabelsJob
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed
from tests.web_world import build_world


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
