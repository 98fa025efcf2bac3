"""/dashboard on both databases: coverage and quality per SAE, reviews, steering and lists."""

import pytest
from fastapi.testclient import TestClient

from app.db import accounts, lists, review
from app.db.engine import session_scope
from app.db.labels import refresh_sae
from app.db.models import Explanation, Feature, SteeringSession
from app.settings import Settings
from app.web.app import create_app
from tests.web_world import HOSTILE_LABEL, SCRIPT, build_world


@pytest.fixture
def client(engine):
    with session_scope(engine) as session:
        sae_id = build_world(session)
        features = {f.index: f for f in session.query(Feature).filter_by(sae_id=sae_id)}
        accounts.add_user(session, "ada", "correct horse battery")
        review.add_label(session, features[4], SCRIPT, "ada")
        found = lists.create_list(session, "Bridge things", "", "ada")
        lists.add_item(session, found, features[1])
        session.add(
            Explanation(
                feature_id=features[5].id,
                text="",
                method="offline",
                status="failed",
                error="refused",
            )
        )
        session.flush()
        refresh_sae(session, sae_id)  # as the explain job does when it ends
        steered = {"sae": "res1", "index": 0, "mode": "clamp", "strength": 5, "label": "gate"}
        for n in range(3):
            config = {
                "model": "tiny",
                "features": [steered] if n else [steered, {**steered, "index": 2, "label": None}],
            }
            session.add(SteeringSession(share_id=f"s{n}", config=config, transcript=[]))
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url))) as client:
        yield client


def test_the_dashboard_shows_each_part(client):
    page = client.get("/dashboard")
    assert page.status_code == 200
    text = page.text
    section = text.split("tiny/res1</a>")[1].split("Recent label reviews")[0]
    assert "label coverage" in section and "labelling failed" in section
    assert 'metric-value">1</span><span class="metric-name">labelling failed' in section
    assert "Headline label scores" in section  # the score histogram
    reviews = text.split("Recent label reviews")[1].split("Most-steered")[0]
    assert "ada" in reviews and "added" in reviews and SCRIPT not in text
    steered = text.split("Most-steered features")[1].split("List activity")[0]
    assert steered.index("#0") < steered.index("#2") and ">3</td>" in steered
    assert "Bridge things" in text.split("List activity")[1]
    assert HOSTILE_LABEL not in text


def test_an_empty_database_has_an_empty_dashboard(engine):
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url))) as client:
        page = client.get("/dashboard")
    assert page.status_code == 200 and "No SAE is in the database yet" in page.text
