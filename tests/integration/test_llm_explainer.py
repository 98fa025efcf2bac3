"""The production LLM client and explainer against a real local OpenAI-compatible server."""

import asyncio

import numpy as np
import pytest

from app.autointerp.evidence import Example, FeatureEvidence
from app.autointerp.llm import ChatClient, LLMExplainer
from app.autointerp.prompts import parse_explanation
from tests.llm_server import ScriptedLLM, malformed, ok, slow, status

REPLY = "The feature fires on the bridge's name.\n[EXPLANATION]: the Golden Gate Bridge"


def _evidence(index: int = 0) -> FeatureEvidence:
    example = Example(
        (" the", " Golden", " Gate", " Bridge"), np.array([0, 2.0, 5.0, 1.0], np.float32), "top"
    )
    return FeatureEvidence(index, 5.0, 0.01, (example,) * 3, (" Bridge",), (" the",))


def _explain(llm: ScriptedLLM, n: int = 1, **client_options) -> list:
    options = {"backoff": 0.01, "max_retries": 3, "timeout": 5.0} | client_options
    client = ChatClient(llm.url, "scripted-model", api_key="test-key", **options)
    explainer = LLMExplainer(client, concurrency=2, price_prompt=1.0, price_completion=2.0)
    return asyncio.run(explainer.explain_batch([_evidence(i) for i in range(n)]))


def test_a_label_with_its_token_use_and_cost():
    with ScriptedLLM([ok(REPLY)]) as llm:
        [outcome] = _explain(llm)
    assert outcome.text == "the Golden Gate Bridge" and outcome.error is None
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (120, 15)
    assert outcome.cost_usd == pytest.approx((120 * 1.0 + 15 * 2.0) / 1e6)
    body, headers = llm.requests[0], llm.headers[0]
    assert body["model"] == "scripted-model" and headers["authorization"] == "Bearer test-key"
    prompt = body["messages"][1]["content"]
    assert "the<< Golden Gate>> Bridge" in prompt and "('Gate', 10)" in prompt
    assert "[EXPLANATION]:" in body["messages"][0]["content"]


@pytest.mark.parametrize("transient", [status(429, retry_after=0), status(500), status(503)])
def test_rate_limits_and_server_errors_are_retried(transient):
    with ScriptedLLM([transient, transient, ok(REPLY)]) as llm:
        [outcome] = _explain(llm)
    assert outcome.text == "the Golden Gate Bridge" and len(llm.requests) == 3


@pytest.mark.parametrize(
    ("answers", "reason", "requests"),
    [
        ([status(402)], "HTTP 402", 1),  # no credit: not retried
        ([status(401)], "HTTP 401", 1),
        ([malformed()], "malformed reply: <html>gateway says hi</html>", 1),
        ([ok("I cannot help with that.")], "unparseable reply: I cannot help", 1),
        ([status(429, retry_after=0)], "gave up after 4 attempts; last: HTTP 429", 4),
        ([slow(2.0)], "gave up after 4 attempts; last: timeout after 0.2 s", 4),
    ],
)
def test_failures_carry_their_reason(answers, reason, requests):
    with ScriptedLLM(answers) as llm:
        [outcome] = _explain(llm, timeout=0.2)
    assert outcome.text is None and outcome.error.startswith(reason)
    assert len(llm.requests) == requests


def test_an_unreachable_endpoint_is_a_failure_not_a_crash():
    llm = ScriptedLLM([])
    llm.url = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    [outcome] = _explain(llm, max_retries=1)
    assert outcome.text is None and "connection error" in outcome.error


def test_concurrency_is_bounded():
    with ScriptedLLM([ok(REPLY, delay=0.2)]) as llm:
        outcomes = _explain(llm, n=6)
    assert all(o.text for o in outcomes) and len(llm.requests) == 6
    assert llm.max_in_flight == 2


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("[EXPLANATION]: bridges", "bridges"),
        ("thinking...\n[explanation]:  'French words for food'  ", "French words for food"),
        ("[EXPLANATION]: first\nmore\n[EXPLANATION]: second", "second"),
        ("[EXPLANATION]:   ", None),
        ("", None),
    ],
)
def test_the_last_explanation_line_is_parsed(reply, label):
    assert parse_explanation(reply) == label
