"""/api/v1/graph on the ReLU GPT-2 with its exact transcoders loaded."""

import pytest
from fastapi.testclient import TestClient

from app.core.graph import attribution_graph, graph_json, prune, read_graph_json
from app.core.workspace import Workspace
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import N_LAYERS, exact_transcoder

TEXT = "The fog rolls over the Golden Gate"


@pytest.fixture
def workspace(relu_gpt2):
    saes = {f"tc{layer}": exact_transcoder(relu_gpt2, layer) for layer in range(N_LAYERS)}
    return Workspace(relu_gpt2, saes, {name: "built in the test" for name in saes})


def _client(engine, workspace):
    url = engine.url.render_as_string(hide_password=False)
    return TestClient(create_app(Settings(database_url=url), workspace=workspace))


def test_the_graph_api_returns_circuit_tracers_file_and_the_scores(engine, workspace):
    with _client(engine, workspace) as client:
        response = client.post("/api/v1/graph", json={"text": TEXT, "node_threshold": 0.7})
        assert response.status_code == 200, response.text
        body = response.json()
        again = client.post("/api/v1/graph", json={"text": TEXT, "node_threshold": 0.7}).json()
    assert again == body
    assert body["transcoders"] == [f"tc{layer}" for layer in range(N_LAYERS)]
    transcoders = [workspace.saes[name] for name in body["transcoders"]]
    graph = attribution_graph(workspace.model, transcoders, TEXT)
    kept = prune(graph, 0.7)
    expected = graph_json(graph, kept, "graph", "tc0+tc1+tc2", 0.7, TEXT)
    assert body["graph"]["nodes"] == expected["nodes"]
    assert len(body["graph"]["links"]) == len(expected["links"])
    assert body["replacement_score"] == pytest.approx(graph.scores().replacement)
    assert body["features"] == graph.n_features and 0 < body["kept_features"] < graph.n_features
    assert read_graph_json(body["graph"]).metadata["prompt"] == TEXT


@pytest.mark.parametrize(
    "request_body, status, message",
    [
        ({"text": "   "}, 400, "Type a prompt"),
        ({"text": TEXT, "node_threshold": 2}, 422, None),
        ({"text": TEXT, "max_logits": 0}, 422, None),
    ],
)
def test_bad_graph_requests_are_clear(engine, workspace, request_body, status, message):
    with _client(engine, workspace) as client:
        response = client.post("/api/v1/graph", json=request_body)
    assert response.status_code == status
    if message:
        assert message in response.text


def test_a_missing_layer_is_named(engine, workspace):
    del workspace.saes["tc1"]
    with _client(engine, workspace) as client:
        response = client.post("/api/v1/graph", json={"text": TEXT})
    assert response.status_code == 409 and "none is loaded for layer 1" in response.text
