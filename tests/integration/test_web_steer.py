"""The steering chat's server: replies, limits, queue, rate limit, cancellation and sharing."""

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.generation import GenerationRow, SamplingParams, chat_prompt_ids
from app.core.steering import FeatureEdit
from app.db.accounts import add_user, create_key
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed, serving, wait_for
from tests.web_world import SCRIPT, build_demo_rows, golden_gate_feature

QUESTION = [{"role": "user", "content": "What is your favourite food?"}]


@pytest.fixture
def app_for(engine, demo_workspace):
    bridge, max_act = golden_gate_feature(demo_workspace)
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace, {bridge: ("Golden Gate Bridge", max_act)})
        _, secret = create_key(session, add_user(session, "ada", "correct horse battery"), "tests")
    url = engine.url.render_as_string(hide_password=False)

    def make(**limits):
        return create_app(Settings(database_url=url, **limits), workspace=demo_workspace)

    make.bridge, make.max_act = bridge, max_act
    make.writer = {"Authorization": f"Bearer {secret}"}
    return make


def _body(features=(), **extra):
    return {
        "features": list(features),
        "messages": QUESTION,
        "max_new_tokens": 24,
        "temperature": 0.0,
    } | extra


def test_steering_with_the_bridge_feature_talks_about_the_bridge(app_for):
    clamp = {"sae": "res1", "index": app_for.bridge, "mode": "clamp", "strength": 10}
    bridge = re.compile(r"golden gate|bridge", re.IGNORECASE)
    hits = {"default": 0, "steered": 0}
    with TestClient(app_for()) as client:
        plain = client.post("/api/v1/steer", json=_body()).json()
        assert plain["default"] == plain["steered"]  # no feature: the same reply twice
        for seed in range(4):
            reply = client.post("/api/v1/steer", json=_body([clamp], temperature=1.0, seed=seed))
            for side in hits:
                hits[side] += bool(bridge.search(reply.json()[side]["text"]))
    assert hits["steered"] >= 3 and hits["default"] <= 1


def test_units_and_the_multiplier_scale_strengths_as_defined(app_for):
    def steered(*features, **extra):
        feats = [{"sae": "res1", "index": app_for.bridge, "mode": "clamp"} | f for f in features]
        reply = client.post("/api/v1/steer", json=_body(feats, **extra))
        assert reply.status_code == 200, reply.text
        return reply.json()

    with TestClient(app_for()) as client:
        four = steered({"strength": 4})
        assert four["steered"] != four["default"]
        assert steered({"strength": 2}, multiplier=2)["steered"] == four["steered"]
        raw = steered({"strength": 4 * app_for.max_act, "units": "raw"})
        assert raw["steered"] == four["steered"]
        off = steered({"strength": 4}, multiplier=0)  # clamped to 0 x max: the feature ablated
        assert off["steered"] == steered({"strength": 0})["steered"]
        # a cap far above anything the feature reaches never binds: the default reply
        capped = steered({"strength": 9, "mode": "cap", "positions": "generated"})
        assert capped["steered"] == capped["default"]


def test_a_sweep_reads_each_strengths_reply_with_the_unsteered_model(app_for, demo_workspace):
    clamp = {"sae": "res1", "index": app_for.bridge, "mode": "clamp", "strength": 1}
    model = demo_workspace.model
    prompt, _ = chat_prompt_ids(model.tokenizer, QUESTION)
    with TestClient(app_for()) as client:
        sweep = client.post("/api/v1/steer/sweep", json=_body([clamp], multipliers=[0, 1, 8]))
        assert sweep.status_code == 200, sweep.text
        sweep = sweep.json()
        at_one = client.post("/api/v1/steer", json=_body([clamp])).json()
        for body, message in (
            (_body([], multipliers=[1]), "needs at least one feature"),
            (_body([clamp], multipliers=[1] * 9), None),
            (_body([clamp], multipliers=[11]), None),
        ):
            refused = client.post("/api/v1/steer/sweep", json=body)
            assert refused.status_code == (400 if message else 422)
            assert message is None or message in refused.json()["detail"]
    assert sweep["features"] == [f"res1/{app_for.bridge}"]
    assert [r["multiplier"] for r in sweep["steered"]] == [0, 1, 8]
    assert sweep["default"]["text"] == at_one["default"]["text"]  # same seed, same rows
    assert sweep["steered"][1]["text"] == at_one["steered"]["text"]
    for reply in [sweep["default"], *sweep["steered"]]:  # the loss is the unsteered model's
        reply_ids = model.tokenizer(reply["text"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + reply_ids])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        with torch.inference_mode():
            assert reply["loss"] == pytest.approx(float(model.hf(ids, labels=labels).loss), 1e-4)
        assert len(reply["activations"]) == 1 and reply["activations"][0] >= 0


def test_conditions_gate_steering_and_stop_replies_where_a_feature_fires(app_for):
    clamp = {"sae": "res1", "index": app_for.bridge, "mode": "clamp", "strength": 4}
    never = {"sae": "res1", "index": 7, "above": 1e4}  # no activation gets near this
    always = {"sae": "res1", "index": 7, "above": -1}  # activations are never negative

    def reply(features=(), **extra):
        answer = client.post("/api/v1/steer", json=_body(features, **extra))
        assert answer.status_code == 200, answer.text
        return answer.json()

    with TestClient(app_for()) as client:
        plain = reply([clamp])
        assert plain["steered"] != plain["default"]
        assert reply([clamp | {"when": never}])["steered"] == plain["default"]
        assert reply([clamp | {"when": always}])["steered"] == plain["steered"]
        # a condition that holds everywhere stops both replies after their first token
        stopped = reply([clamp], stop_when=[always])
        for side in ("default", "steered"):
            assert stopped[side]["finish_reason"] == "feature"
            first = stopped[side]["text"]
            assert first.strip() and plain[side]["text"].startswith(first)
            assert len(first) < len(plain[side]["text"])
        assert reply([clamp], stop_when=[never]) == plain
        late = {"sae": "res3", "index": 7, "above": 0}
        for body, status, message in (
            (_body([clamp | {"when": late}]), 400, "must be read at or before"),
            (_body([clamp], stop_when=[never | {"sae": "nope"}]), 400, "unknown SAE 'nope'"),
            (_body([clamp], stop_when=[never | {"index": 99999}]), 400, "outside SAE"),
            (_body([clamp], stop_when=[never] * 5), 422, None),
            (_body([clamp | {"when": never | {"above": 2e4}}]), 422, None),
        ):
            refused = client.post("/api/v1/steer", json=body)
            assert refused.status_code == status, refused.text
            assert message is None or message in refused.json()["detail"]
        page = client.get(
            "/steer",
            params={"f": f"res1/{app_for.bridge}:clamp:4:when:res1/7>0.25", "stop": "res1/9>1.5"},
        )
        state = json.loads(parsed(page.text).select_one("script#steer-state").string)
        assert state["features"][0]["when"] == {"sae": "res1", "index": 7, "above": 0.25}
        assert state["settings"]["stop_when"] == [{"sae": "res1", "index": 9, "above": 1.5}]
        assert client.get("/steer", params={"stop": "res1/9<1"}).status_code == 400


def test_a_link_presets_the_sweep_the_readings_the_seed_and_the_message(app_for):
    with TestClient(app_for()) as client:
        params = {
            "sweep": "0, 2,6",
            "frozen": "true",
            "logprobs": "1",
            "seed": 5,
            "message": SCRIPT,
        }
        page = client.get("/steer", params=params)
        assert page.status_code == 200 and SCRIPT not in page.text  # escaped in the JSON
        state = json.loads(parsed(page.text).select_one("script#steer-state").string)
        assert state["settings"] == {
            "frozen": True,
            "logprobs": True,
            "sweep": [0, 2, 6],
            "seed": 5,
        }
        assert state["message"] == SCRIPT
        for bad in ("1,x", "11", ",".join(["1"] * 9)):
            refused = client.get("/steer", params={"sweep": bad})
            assert refused.status_code == 400 and "up to 8 multipliers" in refused.text
        settings = {"sweep": [0, 3], "frozen": True, "logprobs": False, "seed": 2}
        shared = client.post(
            "/steer/share", headers=app_for.writer, json={"settings": settings}
        ).json()
        again = client.get(f"/steer/{shared['id']}")
        saved = json.loads(parsed(again.text).select_one("script#steer-state").string)["settings"]
        assert {k: saved[k] for k in settings} == settings


def test_a_frozen_attention_reply_comes_beside_the_steered_one(app_for):
    clamp = {"sae": "res1", "index": app_for.bridge, "mode": "clamp", "strength": 4}
    with TestClient(app_for(steer_max_features=2)) as client:
        plain = client.post("/api/v1/steer", json=_body()).json()
        unsteered = client.post("/api/v1/steer/frozen", json=_body())
        assert unsteered.status_code == 200, unsteered.text
        assert unsteered.json()["text"] == plain["default"]["text"]  # nothing to freeze against
        steered = client.post("/api/v1/steer", json=_body([clamp])).json()["steered"]
        frozen = client.post("/api/v1/steer/frozen", json=_body([clamp])).json()
        assert frozen["finish_reason"] in ("eos", "stop", "length") and frozen["text"].strip()
        assert frozen["text"] != plain["default"]["text"]  # steering still acts, frozen or not
        assert steered["text"] != plain["default"]["text"]
        refused = client.post("/api/v1/steer/frozen", json=_body([clamp] * 3))
        assert refused.status_code == 400 and "the limit is 2" in refused.json()["detail"]


def test_logprobs_show_each_greedy_token_first_on_its_side_and_where_the_sides_part(app_for):
    clamp = {"sae": "res1", "index": app_for.bridge, "mode": "clamp", "strength": 8}
    with TestClient(app_for()) as client:
        replies = client.post("/api/v1/steer", json=_body([clamp])).json()
        default, steered = replies["default"]["text"], replies["steered"]["text"]
        assert default != steered
        body = _body([clamp], default_reply=default, steered_reply=steered, top=3)
        read = client.post("/api/v1/steer/logprobs", json=body)
        assert read.status_code == 200, read.text
        read = read.json()
        too_long = client.post(
            "/api/v1/steer/logprobs", json=body | {"steered_reply": " bridge" * 400}
        )
        assert too_long.status_code == 400 and "tokens" in too_long.json()["detail"]
    for side, text in (("default", default), ("steered", steered)):
        tokens = read[side]
        assert "".join(t["token"] for t in tokens) == text
        for t in tokens:  # greedy replies: every token was its own side's first choice
            assert len(t["top"]) == 3 and t["top"][0] == [t["token"], t["logprob"]]
    at = read["diverge_at"]
    assert [t["token"] for t in read["default"][:at]] == [t["token"] for t in read["steered"][:at]]
    assert read["default"][at]["token"] != read["steered"][at]["token"]
    # where they part, the steered token is likelier with steering than without
    assert read["steered"][at]["logprob"] > read["steered"][at]["other_logprob"]


def test_the_stream_sends_tokens_for_both_sides_then_done(app_for):
    with (
        TestClient(app_for()) as client,
        client.stream(
            "POST", "/api/v1/steer/stream", json=_body([{"sae": "res1", "index": 7, "strength": 2}])
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = re.findall(r"event: (\w+)\r?\ndata: (.*)", response.read().decode())
    sides = {json.loads(d)["side"] for e, d in events if e == "token"}
    assert sides == {"default", "steered"}
    assert events[-1][0] == "done" and set(json.loads(events[-1][1])) == {"default", "steered"}


@pytest.mark.parametrize(
    "body, status, message",
    [
        (_body([{"sae": "res1", "index": 7, "strength": 1}] * 3), 400, "the limit is 2"),
        (_body([{"sae": "res1", "index": 7, "strength": 11}]), 422, None),
        (_body([{"sae": "res1", "index": 7, "strength": 2e4, "units": "raw"}]), 422, None),
        (_body([{"sae": "res1", "index": 7, "strength": -1, "mode": "cap"}]), 422, None),
        (_body([{"sae": "res1", "index": 7, "strength": 1, "positions": "middle"}]), 422, None),
        (_body([{"sae": "res1", "index": 7, "strength": 1}], multiplier=11), 422, None),
        (_body(max_new_tokens=500), 400, "the limit is 32"),
        (_body(messages=[{"role": "user", "content": "word " * 100}]), 400, "the limit is 64"),
        (_body(messages=[{"role": "user", "content": "word " * 200}]), 400, "limit is 512 (64"),
        (_body([{"sae": "nope", "index": 7, "strength": 1}]), 400, "unknown SAE"),
        (_body([{"sae": "res1", "index": 99999, "strength": 1}]), 400, "outside"),
        (_body(messages=[{"role": "assistant", "content": "hi"}]), 400, "user's turn"),
        (_body(mode="completion", prompt=""), 400, "needs a prompt"),
        (
            _body(max_new_tokens=250, messages=[{"role": "user", "content": "word " * 12}]),
            400,
            "monoscope-demo has 256",
        ),
    ],
)
def test_limits_are_enforced_with_clear_errors(app_for, body, status, message):
    limits = {"steer_max_features": 2, "steer_max_new_tokens": 32, "steer_max_prompt_tokens": 64}
    if body["max_new_tokens"] == 250:
        limits["steer_max_new_tokens"] = 256  # the model's own window is the limit here
    with TestClient(app_for(**limits)) as client:
        for path in ("/api/v1/steer", "/api/v1/steer/stream"):
            response = client.post(path, json=body)
            assert response.status_code == status
            assert message is None or message in response.json()["detail"]


def test_a_client_over_its_rate_gets_429_with_retry_after(app_for):
    with TestClient(app_for(steer_rate_per_minute=2)) as client:
        assert [
            client.post("/api/v1/steer", json=_body(max_new_tokens=2)).status_code for _ in range(2)
        ] == [200, 200]
        refused = client.post("/api/v1/steer", json=_body(max_new_tokens=2))
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many generations" in refused.json()["detail"]


def test_identical_seeds_give_identical_default_replies_under_concurrency(app_for):
    body = _body(
        [{"sae": "res1", "index": app_for.bridge, "strength": 2}],
        temperature=1.0,
        seed=11,
        max_new_tokens=20,
    )
    with TestClient(app_for()) as client, ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: client.post("/api/v1/steer", json=body).json(), range(4)))
        other = client.post("/api/v1/steer", json=body | {"seed": 12}).json()
    assert len({r["default"]["text"] for r in replies}) == 1
    assert len({r["steered"]["text"] for r in replies}) == 1
    assert other["default"]["text"] != replies[0]["default"]["text"]


@pytest.fixture
def live_server(app_for):
    """A real server, so closing a connection is a real disconnect."""
    app = app_for(steer_queue=1)
    app.state.bridge = app_for.bridge
    with serving(app) as base:
        yield app, base


def _occupy(worker, model, bridge: int):
    """Keep the server's own worker busy with a big batch until the returned ticket is
    cancelled, so that what the test sends next has to wait in its queue."""
    ids = model.tokenizer("Once upon a time")["input_ids"]
    params = SamplingParams(200, 1.0)
    edits = [FeatureEdit("res1", bridge, "add", 40.0)]  # no end of text: it runs all 200 steps
    rows = [GenerationRow(ids, edits, seed, params) for seed in range(worker.max_batch_rows)]
    started = worker.stats.requests
    ticket = worker.submit(rows, asyncio.new_event_loop())
    wait_for(lambda: worker.stats.requests > started)
    return ticket


def test_a_full_queue_answers_503_and_a_closed_stream_never_runs(live_server, demo_workspace):
    app, base = live_server
    worker = app.state.inference
    with httpx.Client(base_url=base, timeout=60) as http, ThreadPoolExecutor(1) as pool:
        blocker = _occupy(worker, demo_workspace.model, app.state.bridge)
        waiting = pool.submit(http.post, "/api/v1/steer", json=_body(max_new_tokens=4))
        wait_for(lambda: worker.waiting == 1)
        full = http.post("/api/v1/steer", json=_body(max_new_tokens=4))
        assert full.status_code == 503 and "busy" in full.json()["detail"]
        assert int(full.headers["Retry-After"]) > 0
        blocker.cancel()
        assert waiting.result().status_code == 200  # its turn came once the batch stopped

        blocker = _occupy(worker, demo_workspace.model, app.state.bridge)
        requests_before = worker.stats.requests
        with http.stream("POST", "/api/v1/steer/stream", json=_body()) as stream:
            assert stream.status_code == 200
            wait_for(lambda: worker.waiting == 1)
        # The tab is closed while the request waits: the worker drops it without running it.
        blocker.cancel()
        wait_for(lambda: worker.waiting == 0 and worker.stats.cancelled >= 3)
        assert worker.stats.requests == requests_before


def test_presets_and_shared_sessions_round_trip(app_for):
    bridge = app_for.bridge
    with TestClient(app_for()) as client:
        page = client.get("/steer", params={"f": f"monoscope-demo/res1/{bridge}:clamp:4"})
        assert page.status_code == 200
        state = json.loads(parsed(page.text).select_one("script#steer-state").string)
        [preset] = state["features"]
        assert preset["max_act"] > 0 and {k: v for k, v in preset.items() if k != "max_act"} == {
            "sae": "res1",
            "index": bridge,
            "mode": "clamp",
            "strength": 4.0,
            "units": "max_act",
            "positions": "all",
            "when": None,
            "label": "Golden Gate Bridge",
        }
        page = client.get("/steer", params={"f": f"res1/{bridge}:cap:1.5:raw:generated"})
        [preset] = json.loads(parsed(page.text).select_one("script#steer-state").string)["features"]
        assert (preset["mode"], preset["strength"], preset["units"], preset["positions"]) == (
            "cap",
            1.5,
            "raw",
            "generated",
        )
        for bad in (
            "monoscope-demo/res1/7:twist:1",
            "monoscope-demo/res1/7:clamp:99",
            "monoscope-demo/res1/7:cap:-1",
            "monoscope-demo/res1/7:clamp:1:raw:middle",
            "other/res1/7:clamp:1",
            "monoscope-demo/res1/999999:clamp:1",
        ):
            assert client.get("/steer", params={"f": bad}).status_code == 400
        transcript = [{"role": "user", "content": SCRIPT}, {"role": "assistant", "content": "ok"}]
        shared = client.post(
            "/steer/share",
            headers=app_for.writer,
            json={
                "features": [{"sae": "res1", "index": bridge, "mode": "clamp", "strength": 4}],
                "settings": {"temperature": 0.5, "seed": 3},
                "default": transcript,
                "steered": transcript,
            },
        ).json()
        assert re.fullmatch(r"[A-Za-z0-9_-]{8}", shared["id"])
        again = client.get(f"/steer/{shared['id']}")
        assert again.status_code == 200 and SCRIPT not in again.text  # escaped in the JSON
        state = json.loads(parsed(again.text).select_one("script#steer-state").string)
        assert state["steered"] == transcript and state["settings"]["seed"] == 3
        assert state["features"][0]["label"] == "Golden Gate Bridge"
        assert client.get("/steer/nothing-here").status_code == 404
        picked = client.get("/steer/pick", params={"q": "golden gate"})
        assert str(bridge) in [b["data-index"] for b in parsed(picked.text).select("[data-index]")]


def test_each_side_keeps_its_own_history_and_completion_mode_continues_text(app_for):
    earlier = [{"role": "user", "content": "Hi!"}]
    default_side = [*earlier, {"role": "assistant", "content": "Hello. I like pizza."}, *QUESTION]
    steered_side = [*earlier, {"role": "assistant", "content": "The Bridge is red."}, *QUESTION]
    with TestClient(app_for()) as client:
        both = client.post(
            "/api/v1/steer", json=_body(messages=steered_side, default_messages=default_side)
        ).json()
        alone = client.post("/api/v1/steer", json=_body(messages=default_side)).json()
        steered_alone = client.post("/api/v1/steer", json=_body(messages=steered_side)).json()
        completion = client.post(
            "/api/v1/steer", json=_body(mode="completion", prompt="Once upon a time", messages=[])
        ).json()
    assert both["default"] == alone["default"]  # each column follows its own conversation
    assert both["steered"] == steered_alone["steered"]
    assert completion["default"]["text"] and completion["default"] == completion["steered"]


def test_oversized_chats_are_refused_before_tokenizing_and_count_against_the_limit(
    app_for, monkeypatch
):
    from app.web.routes import steer

    tokenized = []
    real = steer.chat_prompt_ids
    monkeypatch.setattr(steer, "chat_prompt_ids", lambda *a: tokenized.append(1) or real(*a))
    huge = [{"role": "user", "content": "word " * 3_000}] * 60  # ~0.9 MB of messages
    with TestClient(app_for(steer_rate_per_minute=3)) as client:
        codes = []
        for _ in range(4):
            answer = client.post("/api/v1/steer", json=_body(messages=huge))
            codes.append(answer.status_code)
            if answer.status_code == 400:
                assert "characters; the limit is 8,192 (1,024 tokens)" in answer.json()["detail"]
        assert codes == [400, 400, 400, 429]  # refused requests are counted too
        assert not tokenized
        assert client.get("/healthz").status_code == 200


def test_the_picker_marks_features_that_share_a_label(engine, demo_workspace):
    """Two loaded features labelled alike: both are offered, with density and score, and the
    second says whose label it repeats."""
    with session_scope(engine) as session:
        build_demo_rows(
            session,
            demo_workspace,
            {11: ("Golden Gate Bridge", 3.0), 12: ("golden gate  bridge", 2.0)},
        )
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url), workspace=demo_workspace)) as client:
        doc = parsed(client.get("/steer/pick", params={"q": "golden gate"}).text)
    picks = {b["data-index"]: b for b in doc.select("button.pick")}
    assert {"11", "12"} <= set(picks)
    assert "density" in picks["11"].select_one(".pick-meta").get_text()
    assert not picks["11"].select(".twin")
    assert picks["12"].select_one(".twin").get_text() == "same label as #11"
