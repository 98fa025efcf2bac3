"""Steering algebra inside a real model, and batched generation with shared randomness."""

import threading

import pytest
import torch

from app.core.errors import SteeringError
from app.core.feature_ref import FeatureCondition
from app.core.generation import (
    GenerationRow,
    SamplingParams,
    chat_prompt_ids,
    complete,
    generate,
    pair_rows,
    penalise,
)
from app.core.steering import (
    BatchSteerer,
    FeatureEdit,
    SteeringFeature,
    SteeringSpec,
    resolve_steering,
)
from tests.helpers import exact_transcoder, random_sae

SITE = "blocks.1.hook_resid_post"
SAMPLED = SamplingParams(max_new_tokens=12, temperature=1.0)


@pytest.fixture(scope="module")
def saes(gpt2, gpt2_sae):
    return {"res1": gpt2_sae}


def _prompt(gpt2, text="The Golden Gate Bridge"):
    return gpt2.tokenizer(text)["input_ids"]


def _resid_after_steering(gpt2, saes, ids, edits):
    """resid_post at SITE as the next layer sees it, with the steering edits in place."""
    steerer = BatchSteerer(saes, [edits], [ids.shape[1]], gpt2.tokenizer.bos_token_id)
    steerer.set_step(torch.arange(ids.shape[1])[None], torch.ones_like(ids, dtype=torch.bool), ids)
    with gpt2.hooked(steerer.site_edits()):
        return gpt2.capture(ids, ["blocks.2.hook_resid_pre"])["blocks.2.hook_resid_pre"]


def test_two_features_at_one_site_are_each_applied_exactly_once(gpt2, saes):
    ids = torch.tensor([_prompt(gpt2)])
    clean = gpt2.capture(ids, [SITE])[SITE]
    sae = saes["res1"]
    f = sae.encode(clean)
    clamp_idx, add_idx = int(f[0, 1:].sum(0).argmax()), 7
    edits = [FeatureEdit("res1", clamp_idx, "clamp", 5.0), FeatureEdit("res1", add_idx, "add", 3.0)]
    steered = _resid_after_steering(gpt2, saes, ids, edits)
    expected = (5.0 - f[..., clamp_idx, None]) * sae.W_dec[clamp_idx] + 3.0 * sae.W_dec[add_idx]
    expected[:, 0] = 0  # the BOS position is left alone
    torch.testing.assert_close(steered - clean, expected, atol=1e-5, rtol=1e-5)


def test_clamping_a_feature_to_its_current_activation_changes_nothing(gpt2, saes):
    ids = torch.tensor([_prompt(gpt2)[:2]])  # BOS + one token: one steered position
    clean = gpt2.capture(ids, [SITE])[SITE]
    f = saes["res1"].encode(clean)[0, 1]
    index = int(f.argmax())
    edits = [FeatureEdit("res1", index, "clamp", float(f[index]))]
    torch.testing.assert_close(
        _resid_after_steering(gpt2, saes, ids, edits), clean, atol=1e-6, rtol=0
    )
    assert f[index] > 0


def test_cap_lowers_a_feature_to_the_cap_and_never_raises_it(gpt2, saes):
    ids = torch.tensor([_prompt(gpt2)])
    clean = gpt2.capture(ids, [SITE])[SITE]
    sae = saes["res1"]
    f = sae.encode(clean)[0, 1:]
    index = int((f > 0).sum(0).argmax())  # active at some positions and not at others
    cap = float(f[:, index].max()) / 2
    steered = _resid_after_steering(gpt2, saes, ids, [FeatureEdit("res1", index, "cap", cap)])
    over = (f[:, index] - cap).clamp(min=0)
    assert (over > 0).any() and (over == 0).any()
    expected = -over[:, None] * sae.W_dec[index]  # only positions above the cap move
    torch.testing.assert_close((steered - clean)[0, 1:], expected, atol=1e-5, rtol=1e-5)


def test_clamp_keeps_the_error_term_under_input_normalisation(gpt2):
    sae = gpt2.attach(random_sae(hook_name=SITE, normalize_activations="layer_norm"))
    saes = {"ln": sae}
    ids = torch.tensor([_prompt(gpt2)])
    clean = gpt2.capture(ids, [SITE])[SITE]
    steered = _resid_after_steering(gpt2, saes, ids, [FeatureEdit("ln", 3, "clamp", 4.0)])
    x_hat_clean, norm = sae(clean), sae.normalize(clean)[1]
    f = sae.encode(clean)
    f[..., 3] = 4.0
    x_hat_edited = sae.decode(f, norm)
    expected = clean + (x_hat_edited - x_hat_clean)  # reconstruction changes, error term kept
    torch.testing.assert_close(steered[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)


def test_strength_zero_gives_the_default_text_token_for_token(gpt2, saes):
    edits = resolve_steering(SteeringSpec((SteeringFeature("res1", 3, "add", 0.0),)), saes)
    for seed in range(4):
        default, steered = complete(gpt2, saes, pair_rows(_prompt(gpt2), edits, seed), SAMPLED)
        assert default == steered and default


def test_large_add_changes_the_output(gpt2, saes):
    edits = resolve_steering(SteeringSpec((SteeringFeature("res1", 3, "add", 80.0),)), saes)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    default, steered = complete(gpt2, saes, pair_rows(_prompt(gpt2), edits, 0), params)
    assert default != steered


def test_positions_prompt_and_generated_split_the_sequence(gpt2, saes):
    prompt = _prompt(gpt2)
    rows = [
        GenerationRow(prompt, [FeatureEdit("res1", 3, "add", 80.0, positions="generated")], 1),
        GenerationRow(prompt, None, 1),
    ]
    steps = list(generate(gpt2, saes, rows, SamplingParams(max_new_tokens=4, temperature=0)))
    # the first token is predicted from prompt positions only, so "generated" cannot change it
    assert steps[0].token_ids[0] == steps[0].token_ids[1]
    steerer = BatchSteerer(saes, [[FeatureEdit("res1", 3, "add", 1.0, positions="prompt")]], [3])
    x = torch.zeros(1, 5, gpt2.d_model)
    steerer.set_step(torch.arange(5)[None], torch.ones(1, 5, dtype=torch.bool))
    delta = steerer.site_edits()[SITE](x)
    assert delta[0, :3].abs().sum() > 0 and delta[0, 3:].abs().sum() == 0


def test_same_seed_same_text_alone_or_batched_with_padding(gpt2, saes):
    short, long = _prompt(gpt2, "Le chat"), _prompt(gpt2, "User: What is your favourite animal?")
    for params in (SamplingParams(max_new_tokens=10, temperature=0), SAMPLED):
        alone = [
            complete(gpt2, saes, [GenerationRow(p, None, 5)], params)[0] for p in (short, long)
        ]
        together = complete(
            gpt2, saes, [GenerationRow(short, None, 5), GenerationRow(long, None, 5)], params
        )
        assert together == alone


def test_different_seeds_sample_differently(gpt2, saes):
    texts = {
        complete(gpt2, saes, [GenerationRow(_prompt(gpt2), None, s)], SAMPLED)[0] for s in range(5)
    }
    assert len(texts) > 1


def test_stop_strings_end_a_row_and_are_not_emitted(gpt2, saes):
    params = SamplingParams(max_new_tokens=12, temperature=0)
    full = complete(gpt2, saes, [GenerationRow(_prompt(gpt2), None, 0)], params)[0]
    stop = full[3:5]
    steps = list(
        generate(
            gpt2,
            saes,
            [GenerationRow(_prompt(gpt2), None, 0)],
            SamplingParams(max_new_tokens=12, temperature=0, stop_strings=(stop,)),
        )
    )
    text = "".join(s.texts[0] for s in steps)
    assert text == full[: full.find(stop)] and steps[-1].finish_reasons[0] == "stop"


def test_chat_prompts_use_the_template_or_the_plain_format(gpt2):
    messages = [{"role": "user", "content": "Hi"}]
    ids, stops = chat_prompt_ids(gpt2.tokenizer, messages)
    assert gpt2.tokenizer.decode(ids, skip_special_tokens=True) == "User: Hi\nAssistant:"
    assert stops == ("\nUser:",)
    gpt2.tokenizer.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    try:
        ids, stops = chat_prompt_ids(gpt2.tokenizer, messages)
        assert gpt2.tokenizer.decode(ids) == "<user>Hi<assistant>" and stops == ()
    finally:
        gpt2.tokenizer.chat_template = None
    with pytest.raises(Exception, match="unknown chat role"):
        chat_prompt_ids(gpt2.tokenizer, [{"role": "robot", "content": "x"}])


def test_resolve_steering_checks_and_scales(saes):
    spec = SteeringSpec((SteeringFeature("res1", 4, "clamp", 10, units="max_act"),))
    (edit,) = resolve_steering(spec, saes, max_act=lambda sae, i: 2.5)
    assert edit.value == 25.0 and edit.mode == "clamp"
    with pytest.raises(SteeringError, match="no recorded max activation"):
        resolve_steering(spec, saes)
    with pytest.raises(SteeringError, match="unknown SAE 'nope'; loaded: res1"):
        resolve_steering(SteeringSpec((SteeringFeature("nope", 1, "add", 1),)), saes)
    with pytest.raises(SteeringError, match="outside SAE 'res1'"):
        resolve_steering(SteeringSpec((SteeringFeature("res1", 10**6, "add", 1),)), saes)


def test_cancelling_a_row_stops_the_generation_and_removes_the_hooks(gpt2, saes):
    cancelled = threading.Event()
    params = SamplingParams(max_new_tokens=200, temperature=1.0)
    row = GenerationRow(_prompt(gpt2), None, 0, cancelled=cancelled)
    steps = []
    for step in generate(gpt2, saes, [row], params):
        steps.append(step)
        if len(steps) == 3:
            cancelled.set()  # the client went away
    assert len(steps) == 3
    hooks = [m._forward_hooks for m in gpt2.hf.modules()] + [
        m._forward_pre_hooks for m in gpt2.hf.modules()
    ]
    assert not any(hooks), "steering hooks must be removed after a cancelled generation"


def _tokens(gpt2, saes, rows, params):
    """Each row's generated token ids."""
    out: list[list[int]] = [[] for _ in rows]
    for step in generate(gpt2, saes, rows, params):
        for i, token in enumerate(step.token_ids[: len(rows)]):
            if token is not None:
                out[i].append(token)
    return out


def test_presence_penalty_stops_a_greedy_reply_repeating_itself(gpt2, saes):
    greedy = SamplingParams(max_new_tokens=24, temperature=0)
    (plain,) = _tokens(gpt2, saes, [GenerationRow(_prompt(gpt2), None, 0)], greedy)
    assert len(set(plain)) < len(plain)  # the tiny model loops when nothing stops it
    penalised = SamplingParams(max_new_tokens=24, temperature=0, presence_penalty=1e4)
    (fresh,) = _tokens(gpt2, saes, [GenerationRow(_prompt(gpt2), None, 0)], penalised)
    assert len(set(fresh)) == len(fresh) == 24
    assert fresh[0] == plain[0]  # nothing is generated yet when the first token is chosen


def test_frequency_penalty_grows_with_each_use_and_leaves_batch_neighbours_alone(gpt2, saes):
    logits, counts = torch.zeros(5), torch.tensor([0.0, 1.0, 3.0, 0.0, 2.0])
    penalised = penalise(logits, counts, SamplingParams(frequency_penalty=0.5, presence_penalty=1))
    assert penalised.tolist() == [0.0, -1.5, -2.5, 0.0, -2.0]
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    rows = [
        GenerationRow(_prompt(gpt2), None, 0, SamplingParams(16, 0, frequency_penalty=3.0)),
        GenerationRow(_prompt(gpt2), None, 0),
    ]
    together = _tokens(gpt2, saes, rows, greedy)
    (alone,) = _tokens(gpt2, saes, [rows[1]], greedy)
    assert together[1] == alone and together[0] != alone


def _sometimes_active(sae, clean, skip: int = 1) -> tuple[int, float]:
    """A feature active at some positions and not others, and a level halfway up its range."""
    f = sae.encode(clean)[0, skip:]
    active = (f > 0).float().mean(0)
    index = int((active - 0.5).abs().argmin())
    return index, float(f[:, index].max()) / 2


def test_a_conditional_edit_applies_exactly_where_its_condition_holds(gpt2, saes):
    ids = torch.tensor([_prompt(gpt2, "The Golden Gate Bridge is red and the fog rolls in")])
    clean = gpt2.capture(ids, [SITE])[SITE]
    sae = saes["res1"]
    watched, level = _sometimes_active(sae, clean)
    when = FeatureCondition("res1", watched, level)
    edit = FeatureEdit("res1", 7, "add", 3.0, when=when)
    steered = _resid_after_steering(gpt2, saes, ids, [edit])
    holds = sae.encode(clean)[0, :, watched] > level  # read from the unedited activations
    holds[0] = False  # BOS is never steered
    assert holds.any() and not holds.all()
    expected = holds[:, None].float() * 3.0 * sae.W_dec[7]
    torch.testing.assert_close((steered - clean)[0], expected, atol=1e-5, rtol=1e-5)


def test_a_condition_read_at_an_earlier_site_gates_a_later_edit(gpt2, saes):
    early = gpt2.attach(random_sae(hook_name="blocks.0.hook_resid_post", seed=3))
    both = {"res0": early, **saes}
    ids = torch.tensor([_prompt(gpt2, "The Golden Gate Bridge is red and the fog rolls in")])
    acts = gpt2.capture(ids, ["blocks.0.hook_resid_post", SITE])
    watched, level = _sometimes_active(early, acts["blocks.0.hook_resid_post"])
    spec = SteeringSpec(
        (SteeringFeature("res1", 7, "add", 3.0, when=FeatureCondition("res0", watched, level)),)
    )
    edits = resolve_steering(spec, both)
    steered = _resid_after_steering(gpt2, both, ids, list(edits))
    holds = early.encode(acts["blocks.0.hook_resid_post"])[0, :, watched] > level
    holds[0] = False
    moved = (steered - acts[SITE])[0].abs().sum(-1) > 1e-4
    assert holds.any() and torch.equal(moved, holds)
    backwards = SteeringSpec(
        (SteeringFeature("res0", 7, "add", 3.0, when=FeatureCondition("res1", 1, 0.0)),)
    )
    with pytest.raises(SteeringError, match="must be read at or before the site it gates"):
        resolve_steering(backwards, both)
    with pytest.raises(SteeringError, match="unknown SAE 'nope' in condition nope/1>0"):
        resolve_steering(
            SteeringSpec(
                (SteeringFeature("res1", 7, "add", 1, when=FeatureCondition("nope", 1, 0)),)
            ),
            both,
        )


def test_a_stop_condition_ends_the_row_on_the_token_that_crossed_it(gpt2, saes):
    prompt = _prompt(gpt2)
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    (full,) = _tokens(gpt2, saes, [GenerationRow(prompt, None, 0)], greedy)
    ids = torch.tensor([prompt + full])
    f = saes["res1"].encode(gpt2.capture(ids, [SITE])[SITE])[0, len(prompt) :]
    watched, level = _sometimes_active(saes["res1"], gpt2.capture(ids, [SITE])[SITE], len(prompt))
    first = int((f[:, watched] > level).nonzero()[0])  # the first generated token to cross it
    stop = FeatureCondition("res1", watched, level)
    rows = [GenerationRow(prompt, None, 0, stop_when=[stop]), GenerationRow(prompt, None, 0)]
    steps = list(generate(gpt2, saes, rows, greedy))
    stopped, free = _tokens(gpt2, saes, rows, greedy)
    assert stopped == full[: first + 1] and free == full  # the other row runs on unaffected
    reasons = [r for s in steps for r in s.finish_reasons[:1] if r]
    assert reasons[0] == "feature"
    text = "".join(s.texts[0] for s in steps)
    # all of the kept tokens' text, but for a multi-byte character they leave unfinished
    assert text == gpt2.tokenizer.decode(full[: first + 1]).removesuffix("\ufffd")
    with pytest.raises(SteeringError, match="outside SAE 'res1'"):
        list(
            generate(
                gpt2,
                saes,
                [GenerationRow(prompt, stop_when=[FeatureCondition("res1", 10**6, 0)])],
                greedy,
            )
        )


def test_clamping_a_transcoder_feature_clamps_that_mlp_neuron(relu_gpt2):
    """The exact transcoder's features are the MLP's neurons: clamping feature i, read at the MLP's
    input and written at its output, must give the logits of clamping neuron i inside the MLP."""
    model = relu_gpt2
    saes = {"tc1": exact_transcoder(model, 1)}
    ids = torch.tensor([model.tokenizer("The Golden Gate Bridge is red")["input_ids"]])
    neurons = model.capture(ids, ["blocks.1.hook_mlp_in"])["blocks.1.hook_mlp_in"]
    neuron = int(saes["tc1"].encode(neurons)[0, 1:].sum(0).argmax())
    value = 3.0

    def clamp_neuron(module, args, output):
        output = output.clone()
        output[:, 1:, neuron] = value  # BOS left alone, as steering leaves it
        return output

    act = model.adapter.blocks(model.hf)[1].mlp.act
    handle = act.register_forward_hook(clamp_neuron)
    try:
        with torch.inference_mode():
            expected = model.hf(ids).logits
    finally:
        handle.remove()
    steerer = BatchSteerer(
        saes,
        [[FeatureEdit("tc1", neuron, "clamp", value)]],
        [ids.shape[1]],
        model.tokenizer.bos_token_id,
    )
    steerer.set_step(torch.arange(ids.shape[1])[None], torch.ones_like(ids, dtype=torch.bool), ids)
    with torch.inference_mode(), model.hooked(steerer.site_edits()):
        steered = model.hf(ids).logits
    with torch.inference_mode():
        clean = model.hf(ids).logits
    assert not torch.allclose(expected, clean, atol=1e-3)
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=1e-4)
