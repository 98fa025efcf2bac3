"""The unsteered model's reading of a reply: loss on the reply's tokens and feature peaks."""

import torch

from app.core.reply_reading import read_replies
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
