"""/inspect and /api/v1/inspect on the demo model, labels from the database."""

import re

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.attribution import ablate
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.web_world import SCRIPT, build_demo_rows

PROMPT = "User: What colour is a banana?\nAssistant: A banana is"


@pytest.fixture
def client(engine, demo_workspace):
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace)
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url), workspace=demo_workspace)) as client:
        yield client


def test_the_api_ranks_both_ways_and_ablates_a_set(client, demo_workspace):
    body = client.post("/api/v1/inspect", json={"text": PROMPT, "top_k": 10, "exact": 10}).json()
    assert body["target"]["token"] == " yellow" and body["target"]["prob"] > 0.5
    ranked = body["by_attribution"]
    assert [e["attribution_rank"] for e in ranked] == list(range(1, 11))
    assert all(e["delta_logit"] is not None for e in ranked)
    top_two = [ranked[0]["index"], ranked[1]["index"]]
    zeroed = client.post("/api/v1/inspect", json={"text": PROMPT, "exact": 0, "ablate": top_two})
    result = zeroed.json()
    model, sae = demo_workspace.model, demo_workspace.saes["res1"]
    direct = torch.softmax(
        ablate(model, sae, model.tokenizer(PROMPT)["input_ids"], [top_two])[0], -1
    )
    assert result["ablated"] == sorted(top_two)
    target = body["target"]["token_id"]
    assert result["target_prob_after_ablation"] == pytest.approx(float(direct[target]), abs=1e-5)
    assert result["after_ablation"][0]["prob"] == pytest.approx(float(direct.max()), abs=1e-5)


@pytest.mark.parametrize(
    "json, status, message",
    [
        ({"text": PROMPT, "target": " green banana"}, 400, "give one token"),
        ({"text": "   "}, 400, "Type a prompt"),
        ({"text": PROMPT, "sae": "nope"}, 409, "not loaded"),
        ({"text": PROMPT, "ablate": [10**6]}, 400, "Ablate at most"),
        ({"text": PROMPT, "exact": 500}, 422, None),
    ],
)
def test_bad_requests_get_clear_errors(client, json, status, message):
    response = client.post("/api/v1/inspect", json=json)
    assert response.status_code == status
    assert message is None or message in response.json()["detail"]


def test_the_page_shows_both_lists_links_and_the_ablation(client):
    page = client.get("/inspect", params={"text": PROMPT, "target": " green", "exact": 8})
    assert page.status_code == 200
    assert "Loudest: ranked by activation" in page.text and "Load-bearing" in page.text
    assert re.search(r'Target <span class="tok-text">\s*green</span>', page.text)
    first = re.search(r'name="zero" value="(\d+)"', page.text.split("Load-bearing")[1]).group(1)
    assert "/steer?f=monoscope-demo%2Fres1%2F" in page.text
    zeroed = client.get("/inspect", params={"text": PROMPT, "ablate": f"{first},7"})
    assert "zeroed" in zeroed.text and f"#{first}</a>" in zeroed.text
    hostile = client.get("/inspect", params={"text": SCRIPT})
    assert hostile.status_code == 200 and SCRIPT not in hostile.text
    assert client.get("/inspect", params={"text": PROMPT, "ablate": "one,two"}).status_code == 400
    assert (
        "demo feature seven" in client.get("/inspect", params={"text": PROMPT, "ablate": "7"}).text
    )
