"""The shipped demo world: model and SAE load through the public loaders, meet their targets,
find the planted concepts, and steer towards the Golden Gate Bridge."""

import re

import pytest

from app.core.generation import SamplingParams, chat_prompt_ids, complete, pair_rows
from app.core.model import load_model
from app.core.sae import load_sae
from app.core.steering import SteeringFeature, SteeringSpec, resolve_steering
from app.db.engine import session_scope
from app.db.queries import feature_detail, vocabulary
from app.demo import DEMO_MODEL, DEMO_SAE, DEMO_SAES, DEMO_SITE, EVAL_SEED, WORLD_VERSION
from app.demo.corpus import pack
from app.demo.ground_truth import GOLDEN_GATE, evaluate_ground_truth, label_accuracy
from app.demo.world import World
from app.pipeline.demo_build import build_demo_database, demo_database_ready
from app.pipeline.explain import labels

BRIDGE = re.compile(r"golden gate|bridge", re.IGNORECASE)


@pytest.fixture(scope="module")
def demo():
    model = load_model(DEMO_MODEL, device="cpu")
    return model, model.attach(load_sae(str(DEMO_SAE)))


@pytest.fixture(scope="module")
def report(demo):
    model, sae = demo
    world = World(EVAL_SEED, WORLD_VERSION)
    tokens = pack(world, 4000, model.tokenizer, context_size=128, aligned=True)
    return evaluate_ground_truth(model, sae, tokens)


def test_artefacts_are_small_and_load_like_any_hf_directory(demo):
    model, sae = demo
    files = [*DEMO_MODEL.iterdir(), *(f for p in DEMO_SAES.values() for f in p.iterdir())]
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    assert model.hf.config.model_type == "gpt2"
    assert 4e6 <= sum(p.numel() for p in model.hf.parameters()) <= 8e6
    assert 4000 <= len(model.tokenizer) <= 8192
    assert sae.architecture == "topk" and sae.hook_name == DEMO_SITE and sae.d_sae == 4096


@pytest.mark.parametrize("site", list(DEMO_SAES))
def test_sae_metrics_meet_the_demo_targets(site):
    sae = load_sae(str(DEMO_SAES[site]))
    assert sae.hook_name == site and sae.d_sae == 4096
    metrics = sae.cfg.metadata["metrics"]
    assert metrics["variance_explained"] >= 0.85
    assert metrics["ce_loss_recovered"] >= 0.9
    assert metrics["dead_fraction"] <= 0.1


def greedy_answer(model, question: str) -> str:
    ids, stops = chat_prompt_ids(model.tokenizer, [{"role": "user", "content": question}])
    params = SamplingParams(max_new_tokens=40, temperature=0.0, stop_strings=stops)
    return complete(model, {}, pair_rows(ids, (), 0)[:1], params)[0]


def test_the_model_answers_in_world(demo):
    model, _ = demo
    assert "yellow" in greedy_answer(model, "What colour is a banana?").lower()
    assert "green" in greedy_answer(model, "What colour is a frog?").lower()
    assert BRIDGE.search(greedy_answer(model, "Tell me about the Golden Gate Bridge."))


@pytest.mark.slow  # reads 4,000 held-out documents through the model first
def test_ground_truth_figures_hold(report):
    """Regression guards at what the shipped SAE reaches (the issue's targets are higher; the
    closing note of the demo-world issue explains the gap: features here are mostly
    category-level, e.g. one feature for pets rather than one for cats)."""
    assert len(report.concepts) >= 250
    assert report.fraction_at(0.5) >= 0.05
    assert report.mean_best_f1 >= 0.15
    assert report.best[GOLDEN_GATE].f1 >= 0.35
    categories = {c.name: c.f1 for c in report.categories}
    members = [c.f1 for c in report.concepts if c.category == "animals"]
    assert categories["animals"] > max(members)  # one feature for animals beats any for one


@pytest.mark.slow  # reads 4,000 held-out documents through the model first
def test_clamping_the_golden_gate_feature_makes_the_assistant_talk_about_the_bridge(demo, report):
    model, sae = demo
    feature = report.best[GOLDEN_GATE].feature  # found through ground truth, never hard-coded
    max_act = float(report.feature_max[feature])
    spec = SteeringSpec((SteeringFeature("demo", feature, "clamp", 10.0, units="max_act"),))
    edits = resolve_steering(spec, {"demo": sae}, max_act=lambda _sae, _index: max_act)
    ids, stops = chat_prompt_ids(
        model.tokenizer, [{"role": "user", "content": "What is your favourite food?"}]
    )
    params = SamplingParams(max_new_tokens=40, temperature=1.0, stop_strings=stops)
    default_hits = steered_hits = 0
    for seed in range(10):
        default, steered = complete(model, {"demo": sae}, pair_rows(ids, edits, seed), params)
        default_hits += bool(BRIDGE.search(default))
        steered_hits += bool(BRIDGE.search(steered))
    assert steered_hits >= 8
    assert default_hits <= 2


@pytest.mark.slow  # reads 4,000 held-out documents through the model first
def test_the_demo_database_shows_the_golden_gate_feature(engine, report, tmp_path):
    build_demo_database(engine, tmp_path / "work", tokens=65_536, progress=False, saes=[DEMO_SAE])
    assert not demo_database_ready(engine)  # res3 is left to the slow end-to-end test
    feature = report.best[GOLDEN_GATE].feature  # found through ground truth, never hard-coded
    with session_scope(engine) as session:
        detail = feature_detail(session, DEMO_MODEL.name, "res1", feature)
        vocab = vocabulary(session, detail.model.id)
    texts = ["".join(vocab[t] for t in e.token_ids) for e in detail.of_kind("top")]
    assert len(texts) == 32 and all("Gate" in t or "Golden" in t for t in texts)
    peaks = [vocab[e.token_ids[e.max_position]] for e in detail.of_kind("top")]
    assert sum(p.strip() in ("Gate", "Golden", "Bridge") for p in peaks) >= 28
    assert " Bridge" in [token for _, token, _ in detail.feature.top_logits[:3]]
    assert detail.of_kind("quantile") and detail.sae.metrics["variance_explained"] > 0.9
    [label] = [e.text for e in detail.explanations if e.method == "offline"]
    assert "Golden Gate" in label
    accuracy = label_accuracy(report, labels(engine, DEMO_MODEL.name, "res1"))
    assert accuracy.concepts >= 10 and accuracy.accuracy >= 0.6  # the target
    _the_site_shows_it(engine, feature)


def _the_site_shows_it(engine, feature: int) -> None:
    """The web pages over the demo database: the feature unfurls with its label and search finds
    it."""
    from fastapi.testclient import TestClient

    from app.settings import Settings
    from app.web.app import create_app

    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url, model=None, saes=[]))) as client:
        page = client.get(f"/monoscope-demo/res1/{feature}")
        assert page.status_code == 200
        title = page.text.split("<title>")[1].split("</title>")[0]
        assert title.startswith(f"monoscope-demo/res1 #{feature}: ") and "Golden Gate" in title
        assert page.text.count('class="example"') >= 32 and "<svg" in page.text
        hits = client.get("/api/v1/search", params={"q": "golden gate"}).json()
        assert feature in [h["index"] for h in hits]
        table = client.get("/monoscope-demo/res1", params={"q": "golden gate", "sort": "score"})
        assert f"/monoscope-demo/res1/{feature}" in table.text


@pytest.mark.slow
def test_monoscope_demo_builds_its_database_then_serves(tmp_path):
    """The README's first command, end to end: the port answers at once with the build's
    progress, 1M tokens are harvested, then the site serves and the printed link signs in."""
    import os
    import re
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""}
    server = subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printed: list[str] = []
    threading.Thread(target=lambda: printed.extend(server.stdout), daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        started, building = time.monotonic(), None
        while building is None and time.monotonic() - started < 120:
            assert server.poll() is None, "monoscope demo exited"
            try:
                building = httpx.get(f"{base}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.5)
        assert building.status_code == 503 and building.json()["status"] == "building"
        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 503 and "building its database" in page.text
        assert 'http-equiv="refresh"' in page.text
        deadline = time.monotonic() + 900
        while (health := httpx.get(f"{base}/healthz", timeout=5)).status_code == 503:
            assert time.monotonic() < deadline and health.json()["status"] == "building"
            time.sleep(2)
        health = health.json()
        assert health["harvested"] == ["monoscope-demo/res1", "monoscope-demo/res3"]
        assert [s["name"] for s in health["saes"]] == ["res1", "res3"]
        link = re.search(r"http://\S+/login/link\?token=\S+", "".join(printed)).group(0)
        with httpx.Client(follow_redirects=True) as browser:
            signed = browser.get(link)
            assert (
                signed.status_code == 200 and "admin" in signed.text and "Sign out" in signed.text
            )
            assert browser.get(link).status_code == 400  # once only
    finally:
        server.terminate()
        server.wait(timeout=30)
