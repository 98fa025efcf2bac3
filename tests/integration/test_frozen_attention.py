"""Steering with attention frozen to the unsteered run's patterns, in real models."""

import pytest
import torch

from app.core.feature_ref import FeatureCondition
from app.core.frozen_attention import frozen_attention_reply, frozen_patterns
from app.core.generation import GenerationRow, SamplingParams, complete
from app.core.model import load_model
from app.core.steering import BatchSteerer, FeatureEdit
from tests.helpers import build_model, random_sae

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)
EARLY = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def saes(gpt2):
    return {"res0": gpt2.attach(random_sae(hook_name=EARLY, seed=4))}


def _prompt(model, text="The Golden Gate Bridge in the fog"):
    return model.tokenizer(text)["input_ids"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_with_nothing_steered_freezing_changes_no_token(family, tmp_path):
    """Replayed patterns equal the ones the model computes, layer for layer, so the reply is the
    ordinary one: grouped-query heads (llama) and soft-capped, windowed attention (gemma2) too."""
    model = load_model(build_model(tmp_path, family), device="cpu")
    before = model.hf.config._attn_implementation
    prompt = _prompt(model)
    for params, seed in ((GREEDY, 0), (SamplingParams(max_new_tokens=12), 3)):
        row = GenerationRow(prompt, None, seed)
        frozen, _ = frozen_attention_reply(model, {}, row, params)
        assert frozen == complete(model, {}, [row], params)[0] and frozen
    assert model.hf.config._attn_implementation == before  # restored for everyone else


def test_replayed_patterns_are_the_unsteered_ones_while_values_follow_the_steering(gpt2_dir):
    # A model of its own: asking transformers for attentions installs output-recording hooks
    # that stay on the model, and the shared one must stay hook-free for other tests.
    gpt2 = load_model(gpt2_dir, device="cpu")
    saes = {"res0": gpt2.attach(random_sae(hook_name=EARLY, seed=4))}
    ids = torch.tensor([_prompt(gpt2)])
    edits = [FeatureEdit("res0", 5, "add", 40.0)]
    steerer = BatchSteerer(saes, [edits], [ids.shape[1]], gpt2.tokenizer.bos_token_id)
    steerer.set_step(torch.arange(ids.shape[1])[None], torch.ones_like(ids, dtype=torch.bool), ids)

    def run(steered: bool):
        with gpt2.hooked(steerer.site_edits() if steered else {}):
            return gpt2.hf(input_ids=ids, output_attentions=True)

    with torch.inference_mode(), frozen_patterns(gpt2) as freeze:
        with freeze.recording():
            unsteered = run(steered=False)
        ordinary = run(steered=True)
        with freeze.replaying():
            frozen = run(steered=True)
    recorded = unsteered.attentions
    # the edit is after layer 0's attention: later layers attend elsewhere unless frozen
    assert torch.equal(ordinary.attentions[0], recorded[0])
    assert not torch.allclose(ordinary.attentions[1], recorded[1], atol=1e-3)
    assert all(torch.equal(f, r) for f, r in zip(frozen.attentions, recorded, strict=True))
    # and the steering still reaches the output through the residual stream and the values
    assert not torch.allclose(frozen.logits, unsteered.logits, atol=1e-3)
    assert not torch.allclose(frozen.logits, ordinary.logits, atol=1e-3)


def test_a_frozen_reply_is_steered_and_stops_like_a_generated_one(gpt2, saes):
    prompt = _prompt(gpt2)
    edits = [FeatureEdit("res0", 5, "add", 40.0)]
    default, steered = complete(
        gpt2, saes, [GenerationRow(prompt, None, 0), GenerationRow(prompt, edits, 0)], GREEDY
    )
    frozen, reason = frozen_attention_reply(gpt2, saes, GenerationRow(prompt, edits, 0), GREEDY)
    assert reason == "length" and frozen != default and steered != default
    always = FeatureCondition("res0", 5, -1.0)
    row = GenerationRow(prompt, edits, 0, stop_when=[always])
    first, reason = frozen_attention_reply(gpt2, saes, row, GREEDY)
    assert reason == "feature" and frozen.startswith(first) and len(first) < len(frozen)
    stop = frozen[4:6]
    cut, reason = frozen_attention_reply(
        gpt2, saes, GenerationRow(prompt, edits, 0), SamplingParams(12, 0, stop_strings=(stop,))
    )
    assert reason == "stop" and cut == frozen[: frozen.find(stop)]
