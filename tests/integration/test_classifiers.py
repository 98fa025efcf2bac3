"""Feature classifiers over the API on the demo model: train, measure, save, run."""

import pytest
from fastapi.testclient import TestClient

from app.db.accounts import add_user, create_key
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.web_world import build_demo_saes

BRIDGE = [
    "We walked across the Golden Gate Bridge in the fog.",
    "The Golden Gate Bridge is red and very long.",
    "From the hill we saw the Golden Gate Bridge.",
    "Tom took a photo of the Golden Gate Bridge.",
    "Mia painted the Golden Gate Bridge at dawn.",
    "The ships sailed under the Golden Gate Bridge.",
    "At night the Golden Gate Bridge was quiet.",
    "Sam drove over the Golden Gate Bridge to work.",
]
OTHER = [
    "We ate pizza in the kitchen.",
    "Mia made soup with carrots for lunch.",
    "The bread was warm and the cheese was soft.",
    "Tom likes apples more than pears.",
    "The cat chased a mouse under the bed.",
    "Sam played chess with his sister.",
    "The dog barked at the mail carrier.",
    "We went to the library on Monday.",
]


@pytest.fixture
def client(engine, demo_workspace):
    with session_scope(engine) as session:
        bridge = build_demo_saes(session, demo_workspace)
        _, secret = create_key(session, add_user(session, "ada", "correct horse battery"), "t")
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url), workspace=demo_workspace)) as c:
        c.writer = {"Authorization": f"Bearer {secret}"}
        c.bridge = bridge
        yield c


def _train(client, **extra):
    body = {"name": "bridge", "concept": "the Golden Gate Bridge", "positive": BRIDGE}
    return client.post(
        "/api/v1/classifiers", headers=client.writer, json=body | {"negative": OTHER} | extra
    )


def test_a_classifier_is_trained_measured_on_held_out_texts_saved_and_run(client):
    trained = _train(client)
    assert trained.status_code == 200, trained.text
    report = trained.json()
    assert report["held_out"]["texts"] == 4 and report["held_out"]["positives"] == 2
    assert report["held_out"]["f1"] == 1.0 and report["train"]["f1"] == 1.0
    assert 0 <= report["baseline_held_out"]["f1"] <= 1  # the prompted model, measured alike
    assert report["author"] == "ada" and report["kind"] == "logistic"
    listed = client.get("/api/v1/classifiers").json()
    assert [c["name"] for c in listed] == ["bridge"] and listed[0]["held_out"] == report["held_out"]
    verdicts = client.post(
        "/api/v1/classifiers/bridge/run",
        json={"texts": ["The fog hid the Golden Gate Bridge.", "We baked a cake for Tom."]},
    ).json()
    assert [v["positive"] for v in verdicts] == [True, False]
    assert verdicts[0]["top"] and verdicts[0]["top"][0]["contribution"] > 0
    picked = _train(
        client, name="bridge-946", kind="pick", feature={"sae": "res1", "index": client.bridge}
    )
    assert picked.status_code == 200, picked.text
    assert picked.json()["features"] == [
        {"sae": "res1", "index": client.bridge, "label": "Golden Gate Bridge", "weight": 1.0}
    ]
    assert picked.json()["held_out"]["f1"] == 1.0


def test_names_are_never_reused_and_bad_requests_say_why(client):
    assert _train(client).status_code == 200
    again = _train(client)
    assert again.status_code == 409 and "exists" in again.json()["detail"]
    anonymous = client.post("/api/v1/classifiers", json={"name": "x"})
    assert anonymous.status_code in (401, 422)
    for extra, status, message in (
        ({"name": "no/slashes"}, 400, "bad name"),
        ({"name": "p", "kind": "pick"}, 400, "needs the feature"),
        ({"name": "few", "positive": BRIDGE[:3]}, 422, None),
        ({"name": "p2", "kind": "pick", "feature": {"sae": "res1", "index": 10**6}}, 400, "not in"),
    ):
        refused = _train(client, **extra)
        assert refused.status_code == status, refused.text
        assert message is None or message in refused.json()["detail"]
    missing = client.post("/api/v1/classifiers/nothing/run", json={"texts": ["hi"]})
    assert missing.status_code == 404
