"""AutoSteer on the demo model: from "the Golden Gate Bridge" to a feature and a strength."""

import pytest
from fastapi.testclient import TestClient

from app.core.autosteer import stutters
from app.db.engine import session_scope
from app.pipeline.config import EmbedLabelsConfig
from app.pipeline.embed_labels import EmbedLabelsJob
from app.settings import Settings
from app.web.app import create_app
from tests.web_world import build_demo_saes


@pytest.fixture
def client(engine, demo_workspace):
    with session_scope(engine) as session:
        bridge = build_demo_saes(session, demo_workspace)
    # label embeddings, so that "the Golden Gate Bridge" finds its label by meaning
    EmbedLabelsJob(EmbedLabelsConfig("monoscope-demo", "res1", progress=False), engine).run()
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url), workspace=demo_workspace)) as c:
        c.bridge = bridge
        yield c


def test_stutter_is_a_word_three_times_running():
    assert stutters("Bridge Bridge Bridge") and stutters("the bridge, bridge. Bridge!")
    assert not stutters("the bridge and the bridge")


def test_autosteer_tries_the_labelled_feature_and_never_ranks_a_stutter_first(client):
    answer = client.post(
        "/api/v1/steer/auto",
        json={
            "description": "the Golden Gate Bridge",
            "message": "What is your favourite food?",
            "multiples": [2, 8],
            "seeds": 2,
            "max_new_tokens": 24,
        },
    )
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert len(found["default_replies"]) == 2
    bridge = [t for t in found["trials"] if (t["sae"], t["index"]) == ("res1", client.bridge)]
    assert {t["multiple"] for t in bridge} == {2, 8} and bridge[0]["found_by"] == "label"
    assert bridge[0]["label"] == "Golden Gate Bridge"
    fluent = [t["fluent"] for t in found["trials"]]
    assert fluent == sorted(fluent, reverse=True)  # every fluent trial before any other
    for trial in found["trials"]:
        if any(stutters(r) for r in trial["replies"]) or trial["loss_ratio"] > 1.5:
            assert not trial["fluent"]
    at_eight = next(t for t in bridge if t["multiple"] == 8)
    assert not at_eight["fluent"]  # "Bridge Bridge Bridge" on the shipped model
    if found["preset"] is not None:
        assert "/steer?f=monoscope-demo%2F" in found["preset"]
        assert client.get(found["preset"]).status_code == 200


def test_autosteer_refuses_what_it_cannot_do(client):
    for body, status in (
        ({"description": "", "message": "hi"}, 422),
        ({"description": "x", "message": "hi", "multiples": [11]}, 422),
        ({"description": "x", "message": "hi", "seeds": 9}, 422),
    ):
        assert client.post("/api/v1/steer/auto", json=body).status_code == status
