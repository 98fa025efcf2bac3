"""Contrast two sets of texts on the demo model: the page, the API and their limits."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from app.core.contrast import contrast
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed
from tests.web_world import SCRIPT, build_demo_saes, golden_gate_feature

BRIDGE = [
    "We walked across the Golden Gate Bridge in the fog.",
    "The Golden Gate Bridge is red and very long.",
    "From the hill we saw the Golden Gate Bridge.",
    "Tom took a photo of the Golden Gate Bridge.",
]
FOOD = [
    "We ate pizza in the kitchen.",
    "Mia made soup with carrots for lunch.",
    "The bread was warm and the cheese was soft.",
    "Tom likes apples more than pears.",
]


@pytest.fixture
def client_for(engine, demo_workspace):
    with session_scope(engine) as session:
        bridge = build_demo_saes(session, demo_workspace)
    url = engine.url.render_as_string(hide_password=False)

    def make(**settings):
        return TestClient(
            create_app(Settings(database_url=url, **settings), workspace=demo_workspace)
        )

    make.bridge = bridge
    return make


def test_the_bridge_feature_tells_bridge_texts_from_food_texts(demo_workspace):
    bridge, _ = golden_gate_feature(demo_workspace)
    found = contrast(demo_workspace.model, demo_workspace.saes, BRIDGE, FOOD, top=10)
    toward_bridge = [(f.sae, f.index) for f in found if f.effect > 0]
    assert ("res1", bridge) in toward_bridge[:5]
    hit = next(f for f in found if (f.sae, f.index) == ("res1", bridge))
    assert hit.fires_a == 1.0 and hit.mean_a > hit.mean_b and hit.effect > 2
    assert [abs(f.effect) for f in found] == sorted((abs(f.effect) for f in found), reverse=True)
    # swapping the sets flips every sign and keeps every size
    swapped = contrast(demo_workspace.model, demo_workspace.saes, FOOD, BRIDGE, top=10)
    assert [(f.sae, f.index, round(-f.effect, 4)) for f in swapped] == [
        (f.sae, f.index, round(f.effect, 4)) for f in found
    ]


def test_the_page_and_the_api_rank_it_link_it_and_offer_to_steer_with_it(client_for):
    with client_for() as client:
        page = client.get("/contrast", params={"a": "\n".join(BRIDGE), "b": "\n".join(FOOD)})
        assert page.status_code == 200, page.text
        html = parsed(page.text)
        side_a = html.select("section.contrast-side")[0]
        assert f"/monoscope-demo/res1/{client_for.bridge}" in [
            a["href"] for a in side_a.select("td a")
        ]
        assert "Golden Gate Bridge" in side_a.text
        steer = side_a.select_one("a.steer-preset")["href"]
        assert re.search(r"f=monoscope-demo%2Fres1%2F\d+%3Aclamp%3A[\d.]+%3Araw", steer)
        assert client.get(steer).status_code == 200  # the preset opens on the steering page
        api = client.post("/api/v1/contrast", json={"a": BRIDGE, "b": FOOD, "top": 5})
        assert api.status_code == 200, api.text
        features = api.json()["features"]
        assert len(features) == 5 and features[0]["label"] in (None, "Golden Gate Bridge")
        assert any(f["index"] == client_for.bridge and f["effect"] > 0 for f in features)


def test_hostile_texts_are_escaped_and_bad_sets_refused_with_reasons(client_for):
    with client_for() as client:
        page = client.get("/contrast", params={"a": f"{SCRIPT}\nplain words", "b": "one\ntwo"})
        assert page.status_code == 200 and SCRIPT not in page.text
        for body, status, message in (
            ({"a": BRIDGE[:1], "b": FOOD}, 422, None),
            ({"a": BRIDGE * 9, "b": FOOD}, 422, None),
            ({"a": BRIDGE, "b": ["x" * 9000, "y"]}, 400, "over 8,000 characters"),
            ({"a": BRIDGE, "b": FOOD, "top": 0}, 422, None),
        ):
            refused = client.post("/api/v1/contrast", json=body)
            assert refused.status_code == status, refused.text
            assert message is None or message in refused.json()["detail"]
        one = client.get("/contrast", params={"a": "only one", "b": "one\ntwo"})
        assert one.status_code == 400 and "at least two texts" in one.text
        assert client.get("/contrast", params={"a": "x" * 7000}).status_code == 422


def test_contrast_counts_against_the_generation_rate_limit(client_for):
    with client_for(steer_rate_per_minute=2) as client:
        answers = [
            client.post("/api/v1/contrast", json={"a": BRIDGE[:2], "b": FOOD[:2], "top": 1})
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert json.loads(answers[2].text)["detail"].startswith("Too many generations")
