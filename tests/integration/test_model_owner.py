"""One owner for the model: mixed concurrent traffic neither fails nor changes any answer.

Forward hooks belong to the whole model. When inspect and activations ran from request threads
beside the inference worker's steering, each side's hooks fired inside the other's forward
passes: chats died mid-stream and inspections failed with shape errors or came back altered.
"""

import threading
import time

import httpx
import pytest

from app.core.serving import InferenceWorker
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import serving
from tests.web_world import build_demo_rows

MIXED_SECONDS = 30.0

TWO_HOP = "Tom's sister was Mia. Mia loved chess. What did Tom's sister love? Tom's sister loved"
STEER = {
    "features": [{"sae": "res1", "index": 7, "mode": "clamp", "strength": 5}],
    "messages": [{"role": "user", "content": "Tell me about the food you like and your plans."}],
    "max_new_tokens": 24,
    "temperature": 0,
    "seed": 3,
}
STEER_ADD = STEER | {
    "features": [{"sae": "res3", "index": 11, "mode": "add", "strength": 3}],
    "messages": [{"role": "user", "content": "What did the cat do in the park?"}],
}
REQUESTS = {
    "steer": ("POST", "/api/v1/steer", {"json": STEER}),
    "steer-add": ("POST", "/api/v1/steer", {"json": STEER_ADD}),
    "inspect": (
        "POST",
        "/api/v1/inspect",
        {
            "json": {
                "text": TWO_HOP,
                "exact": 8,
                "chain": 2,
                "ablate": [7, 11],
            }
        },
    ),
    "activations": (
        "POST",
        "/api/v1/activations",
        {
            "json": {
                "text": "We walked across the Golden Gate Bridge in the fog.",
                "top_k": 5,
            }
        },
    ),
    "test-your-text": (
        "GET",
        "/monoscope-demo/res1/7/activations",
        {"params": {"text": "The cat sat on the warm mat."}},
    ),
}


@pytest.fixture
def server(engine, demo_workspace):
    with session_scope(engine) as session:
        build_demo_rows(session, demo_workspace)
        build_demo_rows(session, demo_workspace, sae="res3")
    url = engine.url.render_as_string(hide_password=False)
    app = create_app(
        Settings(database_url=url, steer_rate_per_minute=100_000, steer_queue=64),
        workspace=demo_workspace,
    )
    with serving(app) as base:
        yield app, base


def _answer(client: httpx.Client, name: str):
    method, path, kwargs = REQUESTS[name]
    response = client.request(method, path, **kwargs)
    return response.status_code, response.text


@pytest.mark.slow
def test_mixed_concurrent_traffic_fails_nothing_and_answers_as_alone(server):
    app, base = server
    with httpx.Client(base_url=base, timeout=120) as client:
        alone = {name: _answer(client, name) for name in REQUESTS}
    assert all(status == 200 for status, _ in alone.values()), alone
    assert '"text":""' not in alone["steer"][1]  # the chats really generate

    different: list[tuple[str, int, str]] = []
    counts = dict.fromkeys(REQUESTS, 0)
    deadline = time.monotonic() + MIXED_SECONDS

    def client_loop(names: list[str]) -> None:
        """Its requests in turn for MIXED_SECONDS, and each at least twice."""
        with httpx.Client(base_url=base, timeout=120) as client:
            turn = 0
            while time.monotonic() < deadline or turn < 2 * len(names):
                name = names[turn % len(names)]
                turn += 1
                answer = _answer(client, name)
                counts[name] += 1
                if answer != alone[name]:
                    different.append((name, *answer))

    mixes = [
        ["steer", "inspect"],
        ["steer-add", "activations"],
        ["inspect", "test-your-text"],
        ["activations", "steer"],
        ["test-your-text", "steer-add"],
        ["inspect"],
    ]
    threads = [threading.Thread(target=client_loop, args=(mix,)) for mix in mixes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not different, different[:3]
    worker: InferenceWorker = app.state.inference
    assert worker.stats.calls >= counts["inspect"] + counts["activations"]


def test_calls_run_between_decode_steps_without_the_generation_hooks(gpt2, gpt2_sae):
    """A call queued during a steered generation sees the unsteered model, and the generation
    is not disturbed by the call's own hooks."""
    import asyncio

    import torch

    from app.core.generation import GenerationRow, SamplingParams, complete
    from app.core.steering import FeatureEdit

    saes = {"res1": gpt2_sae}
    ids = gpt2.tokenizer("The Golden Gate Bridge")["input_ids"]
    steer = [FeatureEdit("res1", 3, "add", 40.0)]
    rows = [GenerationRow(ids, steer, 1, SamplingParams(40, 1.0))]
    expected = complete(gpt2, saes, rows, SamplingParams(1))
    clean = gpt2.capture(torch.tensor([ids]), ["blocks.2.hook_resid_post"])

    worker = InferenceWorker(gpt2, saes)

    def capture_clean():
        return gpt2.capture(torch.tensor([ids]), ["blocks.2.hook_resid_post"])

    async def run():
        ticket = worker.submit(rows, asyncio.get_running_loop())
        seen, texts = [], [""]
        async for part in ticket.stream():
            texts = [t + n for t, n in zip(texts, part.texts, strict=True)]
            if len(seen) < 3:  # while the steering hooks are installed
                seen.append(worker.call(capture_clean))
        return texts, [await asyncio.wrap_future(f) for f in seen]

    try:
        texts, captured = asyncio.run(run())
    finally:
        worker.close()
    assert texts == expected
    for acts in captured:
        assert torch.equal(acts["blocks.2.hook_resid_post"], clean["blocks.2.hook_resid_post"])
    assert worker.stats.calls == 3
