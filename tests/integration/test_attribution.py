"""Attribution on the demo model: gradient × activation against exact ablations, and the chain
from the late SAE (res3) back to the early one (res1)."""

import numpy as np
import pytest
import torch

from app.core.attribution import ablate, attribute, trace_chain
from app.core.errors import MonoscopeError
from tests.helpers import exact_transcoder

PROMPT = "User: What colour is a banana?\nAssistant: A banana is"
# A two-hop story from the world's templates: the answer needs who the sister is and what she loved.
STORY = "Tom's sister was Mia. Mia loved chess. What did Tom's sister love? Tom's sister loved"


@pytest.fixture(scope="module")
def demo(demo_workspace):
    return demo_workspace.model, demo_workspace.saes["res1"]


def _zeroed_by_hand(model, sae, text: str, feature: int) -> torch.Tensor:
    """Next-token logits with one feature zeroed, written out for this linear, unnormalised
    SAE: x' = x − f_i · W_dec[i] after BOS (which is what decode(f without i) + error is)."""
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])

    def edit(x):
        f = sae.encode(x)[..., feature]
        out = x.clone()
        out[:, 1:] -= f[:, 1:, None] * sae.W_dec[feature]
        return out

    with torch.inference_mode(), model.hooked({sae.hook_name: edit}):
        return model.hf(input_ids=ids).logits[0, -1].float()


def test_exact_effects_equal_a_direct_rerun_with_the_feature_zeroed(demo):
    model, sae = demo
    assert sae.cfg.normalize_activations == "none" and not sae.cfg.rescale_acts_by_decoder_norm
    found = attribute(model, sae, PROMPT, exact=8)
    assert found.target_text == " yellow" and found.prob > 0.5
    for effect in found.by_attribution[:8]:
        logits = _zeroed_by_hand(model, sae, PROMPT, effect.index)
        assert effect.delta_logit == pytest.approx(
            float(logits[found.target]) - found.logit, abs=1e-3
        )
        prob = float(torch.softmax(logits, -1)[found.target])
        assert effect.delta_prob == pytest.approx(prob - found.prob, abs=1e-4)


@pytest.mark.parametrize("text", [PROMPT, "Mia has a dog. The dog is brown. Mia's pet is"])
def test_gradient_times_activation_tracks_the_exact_effects(demo, text):
    model, sae = demo
    found = attribute(model, sae, text, top_k=32, exact=32)
    exact = [e for e in found.by_attribution if e.delta_logit is not None]
    assert len(exact) == 32
    estimate = np.array([e.attribution for e in exact])
    measured = -np.array([e.delta_logit for e in exact])  # zeroing removes the contribution
    assert np.corrcoef(estimate, measured)[0, 1] > 0.8
    assert np.mean(np.sign(estimate) == np.sign(measured)) > 0.8


def test_rankings_cross_reference_and_ablation_batches_agree(demo):
    model, sae = demo
    found = attribute(model, sae, PROMPT, top_k=10, exact=0)
    assert [e.activation_rank for e in found.by_activation] == list(range(1, 11))
    assert [e.attribution_rank for e in found.by_attribution] == list(range(1, 11))
    assert any(e.activation_rank > 10 for e in found.by_attribution)  # quiet but load-bearing
    ids = model.tokenizer(PROMPT)["input_ids"]
    sets = [[e.index] for e in found.by_attribution[:5]] + [[]]
    batched = ablate(model, sae, ids, sets, batch_size=6)
    one_by_one = torch.cat([ablate(model, sae, ids, [s], batch_size=1) for s in sets])
    assert torch.allclose(batched, one_by_one, atol=1e-4)
    assert float(batched[-1, found.target]) == pytest.approx(
        found.logit, abs=1e-4
    )  # nothing zeroed


def test_a_chosen_target_and_bad_input(demo):
    model, sae = demo
    brown = model.tokenizer(" brown")["input_ids"][-1]
    found = attribute(model, sae, PROMPT, target=brown, exact=4)
    assert found.target == brown and found.prob < 0.1
    with pytest.raises(MonoscopeError, match="outside the vocabulary"):
        attribute(model, sae, PROMPT, target=10**7)
    with pytest.raises(MonoscopeError, match="limit is 4"):
        attribute(model, sae, PROMPT, max_tokens=4)


@pytest.fixture(scope="module")
def story_chain(demo_workspace):
    model, early, late = demo_workspace.model, *(demo_workspace.saes[n] for n in ("res1", "res3"))
    found = attribute(model, late, STORY, top_k=5, exact=0)
    assert found.target_text == " chess" and found.prob > 0.5
    features = [e.index for e in found.by_attribution[:4]]
    return (
        model,
        early,
        late,
        found,
        trace_chain(model, early, late, found.token_ids, found.target, features, sources=6),
    )


def test_chain_follows_the_answer_back_to_the_fact_it_copies(story_chain):
    *_, found, links = story_chain
    assert [link.index for link in links] == [e.index for e in found.by_attribution[:4]]
    fact = found.tokens.index(" loved")  # "Mia loved chess": the sentence that holds the answer
    for link in links:
        assert found.tokens[link.position] == " loved" and link.position == len(found.tokens) - 1
        assert all(s.position < link.position for s in link.earlier)
        assert all(s.position == link.position for s in link.local)
        assert all(s.activation > 0 for s in link.earlier + link.local)
    # The strongest earlier-position driver of the top feature sits on the fact's "loved".
    assert links[0].earlier[0].position == fact


def test_chain_effects_track_exact_zeroing(story_chain):
    sources = [s for link in story_chain[4] for s in link.earlier + link.local]
    estimate = np.array([s.effect for s in sources])
    measured = -np.array([s.exact for s in sources])
    assert len(sources) >= 40
    assert np.corrcoef(estimate, measured)[0, 1] > 0.8
    assert np.mean(np.sign(estimate) == np.sign(measured)) > 0.9


def test_chain_exact_effect_equals_a_direct_rerun(story_chain):
    """Zero one res1 feature at one position (x − f·W_dec there) and read the res3 feature."""
    model, early, late, found, links = story_chain
    link = links[0]
    source = link.earlier[0]
    ids = torch.tensor([found.token_ids])
    read = {}

    def zero(x):
        out = x.clone()
        f = early.encode(x)[0, source.position, source.index]
        out[0, source.position] -= f * early.W_dec[source.index]
        return out

    def record(x):
        read["f"] = late.encode(x)[0, link.position, link.index]

    with torch.inference_mode(), model.hooked({early.hook_name: zero, late.hook_name: record}):
        model.hf(input_ids=ids)
    assert float(read["f"]) - link.activation == pytest.approx(source.exact, abs=1e-4)


def test_a_chain_runs_from_an_earlier_site(demo_workspace):
    model, early, late = demo_workspace.model, *(demo_workspace.saes[n] for n in ("res1", "res3"))
    ids = model.tokenizer(STORY)["input_ids"]
    with pytest.raises(MonoscopeError, match="not before"):
        trace_chain(model, late, early, ids, 0, [1])
    with pytest.raises(MonoscopeError, match="not before"):
        trace_chain(model, early, early, ids, 0, [1])


def _neuron_zeroed(model, layer, neuron, ids, position=None):
    """Forward pass with one ReLU neuron of one MLP zeroed (after BOS, or at one position)."""

    def zero(module, args, output):
        output = output.clone()
        if position is None:
            output[:, 1:, neuron] = 0.0
        else:
            output[:, position, neuron] = 0.0
        return output

    handle = model.adapter.blocks(model.hf)[layer].mlp.act.register_forward_hook(zero)
    try:
        with torch.inference_mode():
            return model.hf(input_ids=ids)
    finally:
        handle.remove()


def test_a_transcoder_features_exact_effect_is_zeroing_its_neuron(relu_gpt2):
    """On the exact transcoder, zeroing feature i (error kept) is zeroing MLP neuron i; and the
    gradient × activation estimate tracks those exact effects."""
    model, transcoder = relu_gpt2, exact_transcoder(relu_gpt2, 1)
    text = "The Golden Gate Bridge is red and the fog"
    found = attribute(model, transcoder, text, top_k=16, exact=16)
    ids = torch.tensor([found.token_ids])
    for effect in found.by_attribution[:4]:
        logits = _neuron_zeroed(model, 1, effect.index, ids).logits[0, -1].float()
        assert effect.delta_logit == pytest.approx(
            float(logits[found.target]) - found.logit, abs=1e-4
        )
    estimate = np.array([e.attribution for e in found.by_attribution])
    measured = -np.array([e.delta_logit for e in found.by_attribution])
    assert np.abs(measured).max() > 0.05
    assert np.corrcoef(estimate, measured)[0, 1] > 0.8


def test_a_chain_between_transcoders_equals_a_direct_rerun(relu_gpt2):
    model = relu_gpt2
    early, late = exact_transcoder(model, 0), exact_transcoder(model, 2)
    found = attribute(model, late, "The Golden Gate Bridge is red and the fog", exact=0)
    features = [e.index for e in found.by_attribution[:2]]
    links = trace_chain(model, early, late, found.token_ids, found.target, features, sources=4)
    ids = torch.tensor([found.token_ids])
    assert all(link.earlier and link.local for link in links)
    for link in links:
        for source in link.earlier[:2] + link.local[:2]:
            read = {}

            def record(x, read=read):
                read["f"] = late.encode(x)

            with model.hooked({late.hook_name: record}):
                _neuron_zeroed(model, 0, source.index, ids, source.position)
            changed = float(read["f"][0, link.position, link.index]) - link.activation
            assert changed == pytest.approx(source.exact, abs=1e-4)
    with pytest.raises(MonoscopeError, match="not before"):
        trace_chain(model, late, early, found.token_ids, found.target, features)
