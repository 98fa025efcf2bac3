"""Pages that run the resident model: activations for typed text, per feature and overall."""

import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed
from tests.web_world import SCRIPT, build_demo_rows, golden_gate_feature


@pytest.fixture
def client(engine, demo_workspace):
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace)
    url = engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url), workspace=demo_workspace)
    with TestClient(app) as client:
        yield client


def test_feature_page_offers_the_test_your_text_box_and_it_reads_text(client):
    page = client.get("/monoscope-demo/res1/7")
    assert "Test your own text" in page.text
    typed = f"The Golden Gate Bridge {SCRIPT}"
    result = client.get("/monoscope-demo/res1/7/activations", params={"text": typed})
    assert result.status_code == 200
    assert SCRIPT not in result.text and "&lt;" in result.text  # typed text is escaped too
    cells = [float(c["data-value"]) for c in parsed(result.text).select(".tok[data-value]")]
    assert len(cells) > 5 and all(v >= 0 for v in cells)


def test_typed_text_is_marked_on_the_activation_histogram(engine, demo_workspace):
    """The test box's peak joins the stored max on the histogram (an out-of-band swap of the
    page's chart), and a text the feature ignores leaves no mark."""
    index, gate = golden_gate_feature(demo_workspace)
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace, {index: ("the bridge's name", 2 * gate)})
    url = engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url), workspace=demo_workspace)
    with TestClient(app) as client:
        path = f"/monoscope-demo/res1/{index}"
        page = parsed(client.get(path).text)
        assert [m.get_text() for m in page.select("#activation-chart .mark-label")] == ["max"]

        def typed(text: str):
            doc = parsed(client.get(path + "/activations", params={"text": text}).text)
            peak = max(float(c["data-value"]) for c in doc.select(".tok[data-value]"))
            chart = doc.select_one('#activation-chart[hx-swap-oob="true"]')
            return peak, {m.get_text(): m for m in chart.select(".mark-label")}

        peak, marks = typed("We walked across the Golden Gate Bridge.")
        assert peak > 0 and set(marks) == {"max", "your text"}
        assert "highlighted" in marks["your text"]["class"]
        assert float(marks["your text"]["x"]) < float(marks["max"]["x"])
        peak, marks = typed("The cat sat on the mat.")
        assert peak == 0 and set(marks) == {"max"}


def test_the_decoder_vector_downloads_as_npy_and_json(client, demo_workspace):
    import io

    import numpy as np

    page = parsed(client.get("/monoscope-demo/res1/7").text)
    (npy_link,) = page.select("a[download]")
    npy = client.get(npy_link["href"])
    assert npy.status_code == 200 and "res1-7-decoder.npy" in npy.headers["content-disposition"]
    vector = np.load(io.BytesIO(npy.content))
    expected = demo_workspace.saes["res1"].W_dec[7].detach().float().numpy()
    assert vector.dtype == np.float32 and (vector == expected).all()
    body = client.get("/api/v1/features/monoscope-demo/res1/7/decoder").json()
    assert (
        body["d_in"] == len(body["decoder"]) == 256
        and body["hook_name"] == "blocks.1.hook_resid_post"
    )
    assert np.allclose(body["decoder"], expected, atol=1e-6)
    for path, status, message in (
        ("res1/4096/decoder", 404, "features 0 to 4,095"),
        ("nope/7/decoder", 409, "not loaded"),
        ("res1/7/decoder?format=csv", 422, None),
    ):
        failed = client.get(f"/api/v1/features/monoscope-demo/{path}")
        assert failed.status_code == status and (message is None or message in failed.text)


@pytest.mark.parametrize(
    "text, status, message",
    [("   ", 400, "Type some text"), ("x" * 9000, 400, "limit is 8,000"), ("hi", 404, None)],
)
def test_the_text_box_rejects_bad_input_clearly(client, text, status, message):
    index = 7 if status != 404 else 999_999
    result = client.get(f"/monoscope-demo/res1/{index}/activations", params={"text": text})
    assert result.status_code == status
    assert message is None or message in result.text


def test_which_features_fire_on_a_text(client):
    params = {"text": "User: Tell me about the Golden Gate Bridge.", "pos": 8}
    page = client.get("/search/text", params=params)
    assert page.status_code == 200
    assert "Top features (max, BOS excluded)" in page.text
    doc = parsed(page.text)
    assert doc.select_one("h2:has(> .tok-text)").get_text().startswith("Token 8: ")
    links = [a["href"].rsplit("/", 1)[1] for a in doc.select('a[href*="/monoscope-demo/res1/"]')]
    assert len([i for i in links if i.isdigit()]) >= 10
    assert "demo feature seven" in page.text or "no label" in page.text
    tokens = [a["href"] for a in doc.select("a.tok[href]")]
    assert len(tokens) == 11 and all("pos=" in t for t in tokens)  # each token is a link
    by_sum = client.get("/search/text", params=params | {"reduce": "sum"})
    assert "Top features (sum, BOS excluded)" in by_sum.text
    assert client.get("/search/text", params=params | {"pos": 99}).status_code == 400
    assert client.get("/search/text", params=params | {"sae": "nope"}).status_code == 409


def test_activations_api_reports_tokens_and_features(client):
    body = client.post("/api/v1/activations", json={"text": "The Golden Gate Bridge", "top_k": 3})
    assert body.status_code == 200
    data = body.json()
    assert data["model"] == "monoscope-demo" and data["sae"] == "res1"
    assert data["excluded_positions"] == [0]
    assert len(data["per_token"]) == len(data["tokens"])
    assert 1 <= len(data["overall"]) <= 3
    assert all(f["value"] > 0 for f in data["overall"])
    assert client.post("/api/v1/activations", json={"text": ""}).status_code == 400
    assert client.post("/api/v1/activations", json={"text": "x", "top_k": 0}).status_code == 422


def test_the_heat_strip_can_follow_one_feature(client):
    text = "User: Tell me about the Golden Gate Bridge."
    top = client.post("/api/v1/activations", json={"text": text, "top_k": 1}).json()
    feature = top["overall"][0]["index"]
    page = client.get("/search/text", params={"text": text, "feature": feature})
    assert page.status_code == 200
    doc = parsed(page.text)
    heading = doc.select_one("a.clear-focus").find_parent("h2")
    assert heading.get_text().startswith(f"Tokens heat: feature #{feature}")
    focus = heading.select_one(f'a[href="/monoscope-demo/res1/{feature}"]')
    assert focus is not None and focus.string == f"#{feature}"
    shares = [int(a["title"].rsplit("· ", 1)[1].rstrip("%")) for a in doc.select("a.tok[title]")]
    peak = max(range(len(shares)), key=shares.__getitem__)
    per_token = client.post("/api/v1/activations", json={"text": text, "top_k": 100}).json()
    strongest = max(
        range(len(per_token["tokens"])),
        key=lambda i: next(
            (f["value"] for f in per_token["per_token"][i] if f["index"] == feature), 0
        ),
    )
    assert peak == strongest  # the hottest token is where that feature fires hardest
    bad = client.get("/search/text", params={"text": text, "feature": 10**6})
    assert bad.status_code == 400


def test_texts_past_the_models_window_are_refused_on_every_page_that_runs_the_model(
    client, demo_workspace
):
    window = demo_workspace.model.context_length
    text = " cat" * (window + 40)  # within the character limit, past the model's positions
    assert len(text) < 8_000
    answers = [
        client.post("/api/v1/activations", json={"text": text}),
        client.post("/api/v1/inspect", json={"text": text}),
        client.get("/search/text", params={"text": text}),
        client.get("/monoscope-demo/res1/7/activations", params={"text": text}),
        client.get("/inspect", params={"text": text}),
    ]
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text[:300])
        assert f"reads at most {window:,}" in answer.text


def test_model_calls_wait_in_the_bounded_queue_and_a_full_one_answers_503(client):
    worker = client.app.state.inference
    release = threading.Event()
    blockers = [worker.call(release.wait)]  # the worker runs this one: it holds the model
    deadline = time.monotonic() + 10
    while worker.waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    blockers += [worker.call(release.wait) for _ in range(worker.max_pending)]
    try:
        answer = client.post("/api/v1/activations", json={"text": "The cat sat."})
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert "busy" in answer.json()["detail"]
        page = client.get("/monoscope-demo/res1/7/activations", params={"text": "cat"})
        assert page.status_code == 503 and "busy" in page.text
    finally:
        release.set()
    assert all(f.result(timeout=10) for f in blockers)
    assert client.post("/api/v1/activations", json={"text": "The cat sat."}).status_code == 200


def test_feature_pages_show_similar_features_in_other_saes_at_the_site(engine, demo_workspace):
    """A 64-feature SAE whose decoder rows are res1's #100-#163 (scaled): each page finds its
    twin in the other SAE at cosine 1 with its label, and nothing from res3 (another site)."""
    import torch

    from app.core.workspace import Workspace
    from tests.helpers import random_sae

    res1 = demo_workspace.saes["res1"]
    small = random_sae(res1.d_in, 64, res1.hook_name, "topk", k=8)
    with torch.no_grad():
        small.W_dec.copy_(2 * res1.W_dec[100:164])
    saes = {"res1": res1, "res3": demo_workspace.saes["res3"]}
    workspace = Workspace(
        demo_workspace.model, saes | {"small": demo_workspace.model.attach(small)}
    )
    with session_scope(engine) as session:
        build_demo_rows(session, workspace, {105: ("bridge towers", 3.0)})
        build_demo_rows(session, workspace, {5: ("towers in the small SAE", 3.0)}, sae="small")
        build_demo_rows(session, workspace, sae="res3")
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url), workspace=workspace)) as client:
        for path, twin, label in (
            ("res1/105", "small #5", "towers in the small SAE"),
            ("small/5", "res1 #105", "bridge towers"),
        ):
            page = parsed(client.get(f"/monoscope-demo/{path}").text)
            rows = page.select(".elsewhere li")
            assert len(rows) == 3 and rows[0].a.get_text() == twin
            assert rows[0].select_one(".num").get_text() == "1.00" and label in rows[0].get_text()
            assert not any("res3" in r.get_text() for r in rows)
        assert not parsed(client.get("/monoscope-demo/res3/5").text).select(".elsewhere")
        api = client.get("/api/v1/features/monoscope-demo/res1/105").json()["elsewhere"]
        assert api[0] == {
            "sae": "small",
            "index": 5,
            "cosine": 1.0,
            "label": "towers in the small SAE",
        }
