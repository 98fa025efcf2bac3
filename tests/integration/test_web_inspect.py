"""/inspect and /api/v1/inspect on the demo model and its two SAEs, labels from the database."""

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.attribution import ablate, trace_chain
from app.db.engine import session_scope
from app.db.labels import refresh_sae
from app.db.models import Explanation, Feature
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed
from tests.web_world import SCRIPT, build_demo_rows

PROMPT = "User: What colour is a banana?\nAssistant: A banana is"
STORY = "Tom's sister was Mia. Mia loved chess. What did Tom's sister love? Tom's sister loved"


@pytest.fixture
def client(engine, demo_workspace):
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace)
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url), workspace=demo_workspace)) as client:
        yield client


def test_the_api_ranks_both_ways_and_ablates_a_set(client, demo_workspace):
    request = {"text": PROMPT, "sae": "res1", "top_k": 10, "exact": 10}
    body = client.post("/api/v1/inspect", json=request).json()
    assert body["target"]["token"] == " yellow" and body["target"]["prob"] > 0.5
    ranked = body["by_attribution"]
    assert [e["attribution_rank"] for e in ranked] == list(range(1, 11))
    assert all(e["delta_logit"] is not None for e in ranked)
    top_two = [ranked[0]["index"], ranked[1]["index"]]
    zeroed = client.post(
        "/api/v1/inspect", json={"text": PROMPT, "sae": "res1", "exact": 0, "ablate": top_two}
    )
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
        ({"text": PROMPT, "sae": "res1", "chain_from": "res3"}, 400, "A chain runs back"),
        ({"text": PROMPT, "chain": 50}, 422, None),
    ],
)
def test_bad_requests_get_clear_errors(client, json, status, message):
    response = client.post("/api/v1/inspect", json=json)
    assert response.status_code == status
    assert message is None or message in response.json()["detail"]


def test_the_page_shows_both_lists_links_and_the_ablation(client):
    page = client.get(
        "/inspect", params={"text": PROMPT, "sae": "res1", "target": " green", "exact": 8}
    )
    assert page.status_code == 200
    assert "Loudest: ranked by activation" in page.text and "Load-bearing" in page.text
    doc = parsed(page.text)
    target = doc.select_one("h2:has(> .tok-text)").get_text().split()
    assert target[:2] == ["Target", "green"]
    load_bearing = doc.select("section:has(> h2) table.inspect-table")[1]
    first = load_bearing.select_one('input[name="zero"]')["value"]
    assert "/steer?f=monoscope-demo%2Fres1%2F" in page.text
    assert "load an SAE at a site before res1" in page.text
    assert "Chain: what drives" not in page.text
    zeroed = client.get("/inspect", params={"text": PROMPT, "sae": "res1", "ablate": f"{first},7"})
    assert "zeroed" in zeroed.text and f"#{first}</a>" in zeroed.text
    hostile = client.get("/inspect", params={"text": SCRIPT})
    assert hostile.status_code == 200 and SCRIPT not in hostile.text
    assert client.get("/inspect", params={"text": PROMPT, "ablate": "one,two"}).status_code == 400
    assert (
        "demo feature seven"
        in client.get("/inspect", params={"text": PROMPT, "sae": "res1", "ablate": "7"}).text
    )


def test_the_chain_runs_from_the_late_sae_back_to_the_early_one(client, engine, demo_workspace):
    body = client.post("/api/v1/inspect", json={"text": STORY, "chain": 3}).json()
    assert body["sae"] == "res3" and body["chain_sae"] == "res1"  # the SAE nearest the output
    assert body["target"]["token"] == " chess"
    model, early, late = demo_workspace.model, *(demo_workspace.saes[n] for n in ("res1", "res3"))
    features = [e["index"] for e in body["by_attribution"][:3]]
    ids = model.tokenizer(STORY)["input_ids"]
    direct = trace_chain(model, early, late, ids, body["target"]["token_id"], features)
    assert [link["index"] for link in body["chain"]] == features
    for link, expected in zip(body["chain"], direct, strict=True):
        assert link["token"] == " loved" and link["position"] == expected.position
        assert [(s["index"], s["position"]) for s in link["earlier"]] == [
            (s.index, s.position) for s in expected.earlier
        ]
        assert link["earlier"][0]["exact"] == pytest.approx(expected.earlier[0].exact, abs=1e-5)
        assert all(s["token"] == body["tokens"][s["position"]] for s in link["local"])
    source = body["chain"][0]["earlier"][0]
    with session_scope(engine) as session:  # a label stored for the source shows up beside it
        row = session.query(Feature).filter_by(index=source["index"]).one()
        session.add(Explanation(feature_id=row.id, text="the earlier <loved>", method="offline"))
        session.flush()
        refresh_sae(session, row.sae_id)
    again = client.post("/api/v1/inspect", json={"text": STORY, "chain": 1}).json()
    assert again["chain"][0]["earlier"][0]["label"] == "the earlier <loved>"
    page = client.get("/inspect", params={"text": STORY, "chain": 2})
    assert "Chain: what drives" in page.text and "the earlier &lt;loved&gt;" in page.text
    assert f'href="/monoscope-demo/res1/{source["index"]}"' in page.text
    assert page.text.count('class="chain-link"') == 2
    none = client.get("/inspect", params={"text": STORY, "chain": 0})
    assert "Chain: what drives" not in none.text and "load an SAE" not in none.text
