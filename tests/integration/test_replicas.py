"""The inference worker as Ray actors (MONOSCOPE_REPLICAS): two CPU replicas of the demo model
serve the steering chat and every other model call exactly as the in-process worker does."""

import builtins
import copy
import json
import os
import re
import signal
import types
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.generation import GenerationRow, SamplingParams
from app.core.steering import FeatureEdit
from app.db.engine import session_scope
from app.demo import DEMO_MODEL, DEMO_SAES
from app.pipeline.sharding import join_cluster
from app.settings import Settings
from app.web.app import create_app
from tests.conftest import empty_database
from tests.helpers import serving, wait_for
from tests.web_world import build_demo_rows, golden_gate_feature

pytestmark = pytest.mark.slow  # each app starts a Ray cluster and loads the model per replica

QUESTION = [{"role": "user", "content": "What is your favourite food?"}]


@pytest.fixture(scope="module")
def ray_session():
    """A local cluster started here, on the main thread: the apps start in TestClient's thread,
    and a local cluster started there dies with it (Ray's processes die with their parent
    thread)."""
    ray = pytest.importorskip("ray")
    join_cluster("local", 2)
    yield ray
    ray.shutdown()


@pytest.fixture
def app_for(tmp_path, demo_workspace, ray_session):
    """Apps over one SQLite database: replicas serve the model, whatever the database."""
    url = f"sqlite:///{tmp_path / 'monoscope.db'}"
    engine = empty_database(url)
    bridge, max_act = golden_gate_feature(demo_workspace)
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace, {bridge: ("Golden Gate Bridge", max_act)})
    engine.dispose()

    def make(replicas: int, workspace=demo_workspace, **limits):
        settings = Settings(
            database_url=url,
            model=str(DEMO_MODEL),
            saes=[str(p) for p in DEMO_SAES.values()],
            replicas=replicas,
            **limits,
        )
        return create_app(settings, workspace=workspace)

    make.bridge = bridge
    return make


def _body(features=(), **extra):
    return {
        "features": list(features),
        "messages": QUESTION,
        "max_new_tokens": 16,
        "temperature": 1.0,
    } | extra


def test_replicas_give_the_in_process_workers_replies_and_readings(app_for):
    steer = [{"sae": "res1", "index": app_for.bridge, "strength": 3}]
    bodies = [_body(steer, seed=seed) for seed in range(4)]
    text = {"text": "The Golden Gate Bridge was red in the fog."}
    with TestClient(app_for(0)) as client:
        alone = [client.post("/api/v1/steer", json=b).json() for b in bodies]
        read_alone = client.post("/api/v1/activations", json=text).json()
    app = app_for(2)
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda b: client.post("/api/v1/steer", json=b).json(), bodies))
        read = client.post("/api/v1/activations", json=text).json()
        served = app.state.inference.stats()
        pids = app.state.inference.pids()
    assert replies == alone  # the same seed gives the same text on any replica
    assert read == read_alone  # a closure over the web's model ran on a replica's copy
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert all(stats.requests >= 1 for _, stats in served)  # both replicas took requests
    assert sum(stats.calls for _, stats in served) == 1


def test_model_work_runs_in_steps_on_a_replica_with_its_own_weights(app_for, demo_workspace):
    """The web's copy here has its embeddings zeroed: a closure over it that reads the replica's
    files' weights proves the reference, not the weights, crossed to the replica."""
    web_copy = copy.deepcopy(demo_workspace)
    web_copy.model.hf.transformer.wte.weight.zero_()
    app = app_for(1, workspace=web_copy)
    model = web_copy.model

    def steps():
        yield
        return os.getpid(), model.hf.transformer.wte.weight.abs().sum().item()

    stranger = copy.deepcopy(web_copy.saes["res1"])  # not one the replicas hold
    with TestClient(app):
        pid, total = app.state.inference.run_in_steps(steps)
        assert pid in app.state.inference.pids() and pid != os.getpid()
        with pytest.raises(Exception, match="only the server's own SAEs"):
            app.state.inference.run(lambda: stranger.d_sae)
    expected = demo_workspace.model.hf.transformer.wte.weight.abs().sum().item()
    assert total == pytest.approx(expected) and expected > 0


def _occupy(pool, model, bridge: int):
    """Fill the only replica's batch with rows that run 200 steps, until cancelled."""
    ids = model.tokenizer("Once upon a time")["input_ids"]
    params = SamplingParams(200, 1.0)
    edits = [FeatureEdit("res1", bridge, "add", 40.0)]
    rows = [GenerationRow(ids, edits, seed, params) for seed in range(64)]
    return pool.submit(rows, None)


def test_a_full_replica_answers_503_and_a_closed_stream_never_runs(app_for, demo_workspace):
    app = app_for(1, steer_queue=1)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        pool = app.state.inference
        blocker = _occupy(pool, demo_workspace.model, app_for.bridge)
        wait_for(lambda: pool.stats()[0][1].requests == 1, seconds=30)
        with ThreadPoolExecutor(1) as waiter:
            waiting = waiter.submit(http.post, "/api/v1/steer", json=_body(max_new_tokens=4))
            wait_for(lambda: pool.stats()[0][0] == 1, seconds=30)
            full = http.post("/api/v1/steer", json=_body(max_new_tokens=4))
            assert full.status_code == 503 and "busy" in full.json()["detail"]
            streamed = http.post("/api/v1/steer/stream", json=_body(max_new_tokens=4))
            assert streamed.status_code == 503  # refused before any event, as in one process
            blocker.cancel()
            assert waiting.result().status_code == 200

        blocker = _occupy(pool, demo_workspace.model, app_for.bridge)
        wait_for(lambda: pool.stats()[0][0] == 0, seconds=30)
        requests_before = pool.stats()[0][1].requests
        with http.stream("POST", "/api/v1/steer/stream", json=_body()) as stream:
            assert stream.status_code == 200
            wait_for(lambda: pool.stats()[0][0] == 1, seconds=30)
        # The tab is closed while the request waits on the replica: it is dropped unrun.
        blocker.cancel()
        wait_for(lambda: pool.stats()[0][0] == 0 and pool.stats()[0][1].cancelled >= 2, seconds=30)
        assert pool.stats()[0][1].requests == requests_before


def test_a_killed_replica_fails_its_requests_with_503_and_comes_back(app_for):
    app = app_for(1, steer_rate_per_minute=1000)  # it asks again until the replica is back
    long = _body(max_new_tokens=200, seed=3)
    with serving(app) as base, httpx.Client(base_url=base, timeout=120) as http:
        pool = app.state.inference
        (pid,) = pool.pids()
        with http.stream("POST", "/api/v1/steer/stream", json=long) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event: token"))
            os.kill(pid, signal.SIGKILL)
            rest = "\n".join(lines)
        events = re.findall(r"event: (\w+)\r?\ndata: (.*)", rest)
        assert events[-1][0] == "error" and "restarting" in json.loads(events[-1][1])["detail"]
        # Ray restarts the replica; requests reach it again once its model has loaded.
        answer = wait_for(
            lambda: (
                (r := http.post("/api/v1/steer", json=_body(max_new_tokens=4))).status_code != 503
                and r
            ),
            seconds=90,
            poll=0.5,
        )
        assert answer.status_code == 200
        assert pool.pids() != [pid]
    # Ray printed the lost worker's message without replacing print, which numba (UMAP) needs.
    assert isinstance(builtins.print, types.BuiltinFunctionType)
