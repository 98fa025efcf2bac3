"""/api/v1/graph and the /graph page on the ReLU GPT-2 with its exact transcoders loaded:
targets, supernodes and the subgraph's scores, saved graphs per user."""

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.graph import attribution_graph, graph_json, prune, read_graph_json, subgraph_scores
from app.core.sae.formats import save_circuit_tracer_set
from app.core.workspace import Workspace
from app.db import accounts
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import N_LAYERS, exact_transcoder, parsed
from tests.web_world import PASSWORD, form_token, sign_in

TEXT = "The fog rolls over the Golden Gate"


@pytest.fixture
def workspace(relu_gpt2):
    saes = {f"tc{layer}": exact_transcoder(relu_gpt2, layer) for layer in range(N_LAYERS)}
    return Workspace(relu_gpt2, saes, {name: "built in the test" for name in saes})


def _client(engine, workspace, **settings):
    url = engine.url.render_as_string(hide_password=False)
    return TestClient(create_app(Settings(database_url=url, **settings), workspace=workspace))


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


def _signed_in_client(engine, workspace, name="ada"):
    with session_scope(engine) as session:
        accounts.add_user(session, name, PASSWORD)
    return _client(engine, workspace)


def test_a_chosen_target_and_a_logit_difference(engine, workspace):
    with _client(engine, workspace) as client:
        top = client.post("/api/v1/graph", json={"text": TEXT}).json()
        first, other = " fog", " over"  # one token each in the test tokenizer
        body = {"text": TEXT, "target": first, "versus": other}
        response = client.post("/api/v1/graph", json=body)
        assert response.status_code == 200, response.text
        outputs = [n for n in response.json()["graph"]["nodes"] if n["feature_type"] == "logit"]
        assert len(outputs) == 1 and outputs[0]["clerp"].startswith('Output "logit(')
        bad = client.post("/api/v1/graph", json={"text": TEXT, "target": "xyz" * 20})
        assert bad.status_code == 400 and "is not one token" in bad.text
        alone = client.post("/api/v1/graph", json={"text": TEXT, "versus": other})
        assert alone.status_code == 400 and "Name the target token" in alone.text
        page = client.get("/graph", params=body | {"pinned": _first_features(top, 1)[0]})
        assert page.status_code == 200
        intervened = client.get(
            "/graph", params=body | {"pinned": _first_features(top, 1)[0], "act": "zero"}
        )
        assert "logit difference" in parsed(intervened.text).select_one(".intervention").text


def _first_features(graph: dict, n: int) -> list[str]:
    return [x["node_id"] for x in graph["graph"]["nodes"] if x["feature_type"].startswith("cross")][
        :n
    ]


def test_grouping_pinned_nodes_into_a_supernode(engine, workspace):
    """The group form redirects to a URL that holds the supernode; the page shows it ringed in
    the drawing, its summed effects and the subgraph's scores, which match the core's."""
    with _client(engine, workspace) as client:
        graph = client.post("/api/v1/graph", json={"text": TEXT}).json()
        ids = _first_features(graph, 4)
        view = {"text": TEXT, "pinned": ",".join(ids)}
        grouped = client.get(
            "/graph",
            params=view | {"new_group": "  fog; bridge ", "member": ids[:2]},
            follow_redirects=False,
        )
        assert grouped.status_code == 303
        location = grouped.headers["location"]
        assert "groups=fog+bridge%3A" in location
        page = parsed(client.get(location).text)
        assert page.select_one(".supernodes strong").text == "fog bridge"
        assert len(page.select("svg.graph .graph-node.grouped.group-0")) == 2
        units = page.select("svg.subgraph .subgraph-unit")
        assert len(units) == 3 and len(page.select("svg.subgraph .supernode")) == 1
        scores = page.select_one(".pinned-subgraph .graph-scores").text
        # The same scores from the core, on the same nodes.
        transcoders = [workspace.saes[f"tc{n}"] for n in range(N_LAYERS)]
        whole = attribution_graph(workspace.model, transcoders, TEXT)
        members = []
        for node_id in ids:
            layer, index, position = map(int, node_id.split("_"))
            members.append(whole.node("feature", layer, position, index))
        expected = subgraph_scores(whole, members)
        assert f"Influence {expected.influence:.3f}" in " ".join(scores.split())
        assert f"inputs inside {expected.inputs_inside:.3f}" in " ".join(scores.split())
        ungroup = page.select_one("a.ungroup")["href"]
        assert "groups" not in ungroup and "pinned=" in ungroup
        nothing = client.get("/graph", params=view | {"new_group": "x"})
        assert nothing.status_code == 400 and "Tick the pinned nodes" in nothing.text
        too_many = ";".join(f"g{n}:{ids[0]}" for n in range(9))
        assert client.get("/graph", params=view | {"groups": too_many}).status_code == 400


def test_saved_graphs_per_user(engine, workspace):
    with _signed_in_client(engine, workspace) as client:
        with session_scope(engine) as session:
            accounts.add_user(session, "bob", PASSWORD)
        graph = client.post("/api/v1/graph", json={"text": TEXT}).json()
        ids = _first_features(graph, 2)
        anonymous = client.get("/graph", params={"text": TEXT}).text
        assert "Sign in to save graphs" in anonymous
        assert sign_in(client).status_code == 303
        page = client.get("/graph", params={"text": TEXT, "pinned": ",".join(ids)}).text
        form = {
            "csrf_token": form_token(page),
            "text": TEXT,
            "node_threshold": "0.7",
            "pinned": ",".join(ids),
            "groups": f"pair:{ids[0]},{ids[1]}",
            "title": "  the fog <b>pair</b> ",
        }
        saved = client.post("/graph/save", data=form, follow_redirects=False)
        assert saved.status_code == 303
        short = saved.headers["location"]
        opened = client.get(short, follow_redirects=False)
        assert opened.status_code == 303 and "groups=pair%3A" in opened.headers["location"]
        listing = parsed(client.get("/graph").text).select(".saved-graphs tbody tr")
        assert len(listing) == 1 and listing[0].select_one("a").text == "the fog <b>pair</b>"
        mine = client.get("/api/v1/graphs", params={"author": "ada"}).json()
        assert [g["title"] for g in mine] == ["the fog <b>pair</b>"]
        assert mine[0]["view"]["node_threshold"] == 0.7 and mine[0]["url"] == short
        assert client.get("/api/v1/graphs", params={"author": "bob"}).json() == []
        slug = short.rsplit("/", 1)[1]
        token = form_token(client.get("/graph").text)
        # bob may not delete ada's graph
        client.post("/logout", data={"csrf_token": token})
        bob = {"name": "bob", "password": PASSWORD, "next": "/"}
        client.post("/login", data=bob | {"csrf_token": form_token(client.get("/login").text)})
        bob_token = form_token(client.get("/graph").text)
        refused = client.post(f"/graph/saved/{slug}/delete", data={"csrf_token": bob_token})
        assert refused.status_code == 403 and "only ada may delete" in refused.text
        client.post("/logout", data={"csrf_token": bob_token})
        assert sign_in(client).status_code == 303
        token = form_token(client.get("/graph").text)
        deleted = client.post(
            f"/graph/saved/{slug}/delete", data={"csrf_token": token}, follow_redirects=False
        )
        assert deleted.status_code == 303
        assert client.get(short).status_code == 404


def test_the_server_caps_the_feature_nodes(engine, workspace):
    with _client(engine, workspace, graph_max_features=12) as client:
        capped = client.post("/api/v1/graph", json={"text": TEXT}).json()
        fewer = client.post("/api/v1/graph", json={"text": TEXT, "max_feature_nodes": 5}).json()
        more = client.post("/api/v1/graph", json={"text": TEXT, "max_feature_nodes": 99}).json()
        page = client.get("/graph", params={"text": TEXT}).text
    assert capped["features"] > capped["feature_nodes"] == 12 == more["feature_nodes"]
    assert fewer["feature_nodes"] == 5
    assert "the 12 most influential are nodes" in " ".join(parsed(page).text.split())


def test_a_transcoder_set_serves_graphs_apart_from_the_saes(engine, relu_gpt2, tmp_path):
    """The server's transcoder set (MONOSCOPE_TRANSCODERS; the demo serves its own) answers
    graphs while the SAEs that inspect, contrast and the picker read stay as they were."""
    layers = [exact_transcoder(relu_gpt2, layer) for layer in range(N_LAYERS)]
    folder = save_circuit_tracer_set(layers, tmp_path / "set", model_name="tiny")
    workspace = Workspace(relu_gpt2)
    workspace.load_transcoders(str(folder))
    assert workspace.saes == {} and len(workspace.transcoders) == N_LAYERS
    with _client(engine, workspace) as client:
        body = client.post("/api/v1/graph", json={"text": TEXT}).json()
    names = [name for name, _ in workspace.transcoders]
    assert body["transcoders"] == names and len(set(names)) == N_LAYERS
    expected = attribution_graph(relu_gpt2, [t for _, t in workspace.transcoders], TEXT)
    assert body["features"] == expected.n_features > 0


def test_the_demo_serves_its_transcoders_for_graphs():
    from app.cli import _workspace
    from app.demo import DEMO_MODEL

    workspace = _workspace(Settings(model=None, saes=[]))
    assert workspace.model.name == DEMO_MODEL.name
    assert [name for name, _ in workspace.transcoders] == [f"layer_{n}" for n in range(4)]
    assert not any(sae.is_transcoder for sae in workspace.saes.values())


def test_unharvested_features_say_what_they_promote(engine, workspace):
    """No stored label: the table and the hover give the tokens a feature's output promotes
    most, from the weights (the top one checked against W_dec · diag(gain) · W_U^T)."""
    with _client(engine, workspace) as client:
        page = parsed(client.get("/graph", params={"text": TEXT}).text)
    row = page.select_one(".graph-features tbody tr")
    layer, index = (int(cell.text) for cell in row.select("td.num")[:2])
    promoted = row.select("td")[-1].text
    assert promoted.startswith("promotes ")
    model = workspace.model
    direction = workspace.saes[f"tc{layer}"].decoder_directions(torch.tensor([index]))[0]
    effects = (model.unembedding().float() * model.final_norm_scale()) @ direction.float()
    top = model.tokenizer.decode([int(effects.argmax())])
    assert promoted.removeprefix("promotes ").startswith(repr(top))
    titles = [t.text for t in page.select("svg.graph .graph-node.feature title")]
    assert any("promotes" in t for t in titles)
