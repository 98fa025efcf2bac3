"""The unsteered model's reading of a reply: loss on the reply's tokens and feature peaks."""

import torch

from app.core.generation import SamplingParams, complete, pair_rows
from app.core.reply_reading import read_replies, token_logprobs
from app.core.steering import BatchSteerer, FeatureEdit

SITE = "blocks.1.hook_resid_post"


def test_a_reading_is_the_models_loss_and_the_features_peak_on_the_reply(gpt2, gpt2_sae):
    prompt = gpt2.tokenizer("User: hi\nAssistant:")["input_ids"]
    reply = " hello there friend"
    reply_ids = gpt2.tokenizer(reply, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + reply_ids])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    with torch.inference_mode():
        expected_loss = float(gpt2.hf(ids, labels=labels).loss)
        acts = gpt2_sae.encode(gpt2.capture(ids, [SITE])[SITE])[0, len(prompt) :]
    busiest = int(acts.sum(0).argmax())
    [reading, empty] = read_replies(gpt2, {"s": gpt2_sae}, prompt, [reply, ""], [("s", busiest)])
    assert abs(reading.loss - expected_loss) < 1e-4
    assert abs(reading.activations[0] - float(acts[:, busiest].max())) < 1e-4
    assert reading.activations[0] > 0 and empty.loss == 0 and empty.activations == (0.0,)


def test_a_reading_ignores_the_steering_hooks_of_a_generation_in_flight(gpt2, gpt2_sae):
    prompt = gpt2.tokenizer("The bridge")["input_ids"]
    saes = {"s": gpt2_sae}
    [clean] = read_replies(gpt2, saes, prompt, [" was red"], [("s", 3)])
    steerer = BatchSteerer(saes, [[FeatureEdit("s", 3, "add", 500.0)]], [len(prompt)])
    steerer.set_step(torch.arange(8)[None], torch.ones(1, 8, dtype=torch.bool))
    with gpt2.hooked(steerer.site_edits()):  # as the worker holds them between decode steps
        [during] = read_replies(gpt2, saes, prompt, [" was red"], [("s", 3)])
    assert during == clean


def test_logprobs_of_a_greedy_steered_reply_rank_each_of_its_tokens_first(gpt2, gpt2_sae):
    saes = {"s": gpt2_sae}
    prompt = gpt2.tokenizer("The Golden Gate Bridge")["input_ids"]
    edits = [FeatureEdit("s", 3, "add", 80.0)]
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    default, steered = complete(gpt2, saes, pair_rows(prompt, edits, 0), greedy)
    assert default != steered
    own = token_logprobs(gpt2, saes, prompt, steered, edits, None)
    reply_ids = gpt2.tokenizer(steered, add_special_tokens=False)["input_ids"]
    assert "".join(c.token for c in own) == steered and len(own) == len(reply_ids)
    for choice in own:  # greedy: each token was the steered model's first choice
        assert choice.top[0][0] == choice.token and choice.top[0][1] == choice.logprob
        assert len(choice.top) == 5 and choice.logprob <= 0
    # the unsteered model found the steered reply less likely than the steered model did
    assert sum(c.other_logprob for c in own) < sum(c.logprob for c in own)
    plain = token_logprobs(gpt2, saes, prompt, default, None, None)
    assert all(c.logprob == c.other_logprob for c in plain)
    assert token_logprobs(gpt2, saes, prompt, "", edits, None) == []
