"""Captured activations at every site, for each family, against independent references."""

import json
from dataclasses import replace

import pytest
import torch

from app.core.errors import MonoscopeError, SaeFormatError, SiteError, UnsupportedModelError
from app.core.model import load_model
from tests.helpers import FAMILIES, N_LAYERS, build_model, random_sae, random_transcoder

ATOL = 1e-5


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    folder = build_model(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, load_model(folder, device="cpu")


def _all_sites(n_layers):
    kinds = ("resid_pre", "attn_out", "mlp_in", "mlp_out", "resid_post")
    return [f"blocks.{layer}.hook_{kind}" for layer in range(n_layers) for kind in kinds]


def _mlp_input_reference(family, block, resid_pre, attn_out):
    """What the MLP module receives, recomputed from the block's own norms."""
    if family == "gpt2":
        return block.ln_2(resid_pre + attn_out)
    if family == "gpt_neox":  # parallel residual: the MLP reads the block input
        return block.post_attention_layernorm(resid_pre)
    if family == "gemma2":
        return block.pre_feedforward_layernorm(resid_pre + attn_out)
    return block.post_attention_layernorm(resid_pre + attn_out)


def _mlp_reference(family, block, resid_pre, attn_out):
    """The MLP's contribution recomputed from the block's own sub-modules."""
    out = block.mlp(_mlp_input_reference(family, block, resid_pre, attn_out))
    return block.post_feedforward_layernorm(out) if family == "gemma2" else out


@torch.inference_mode()
def test_sites_match_hidden_states_and_submodules(family_model):
    family, model = family_model
    ids = model.tokenizer(
        ["The Golden Gate Bridge is red.", "def f(x): return x"], padding=True, return_tensors="pt"
    )
    acts = model.capture(ids["input_ids"], _all_sites(N_LAYERS), ids["attention_mask"])
    reference = model.hf(**ids, output_hidden_states=True).hidden_states
    blocks = model.adapter.blocks(model.hf)
    for layer in range(N_LAYERS):
        pre, post = acts[f"blocks.{layer}.hook_resid_pre"], acts[f"blocks.{layer}.hook_resid_post"]
        attn, mlp = acts[f"blocks.{layer}.hook_attn_out"], acts[f"blocks.{layer}.hook_mlp_out"]
        torch.testing.assert_close(pre, reference[layer], atol=ATOL, rtol=0)
        if layer < N_LAYERS - 1:
            torch.testing.assert_close(post, reference[layer + 1], atol=ATOL, rtol=0)
        else:  # HF applies the final norm to the last hidden state
            torch.testing.assert_close(model.final_norm()(post), reference[-1], atol=ATOL, rtol=0)
        torch.testing.assert_close(pre + attn + mlp, post, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(
            mlp, _mlp_reference(family, blocks[layer], pre, attn), atol=ATOL, rtol=1e-5
        )
        torch.testing.assert_close(
            acts[f"blocks.{layer}.hook_mlp_in"],
            _mlp_input_reference(family, blocks[layer], pre, attn),
            atol=ATOL,
            rtol=1e-5,
        )
        assert attn.abs().max() > 0 and mlp.abs().max() > 0


def test_capture_stops_after_the_last_needed_site(gpt2):
    calls = []
    handle = gpt2.adapter.blocks(gpt2.hf)[2].register_forward_hook(lambda *a: calls.append(1))
    head = gpt2.hf.lm_head.register_forward_hook(lambda *a: calls.append("head"))
    try:
        acts = gpt2.capture(torch.tensor([[0, 5, 6]]), ["blocks.1.hook_resid_post"])
    finally:
        handle.remove()
        head.remove()
    assert calls == [] and set(acts) == {"blocks.1.hook_resid_post"}


def test_sparsify_site_names_map_to_transformerlens(gpt2):
    ids = torch.tensor([[0, 5, 6, 7]])
    acts = gpt2.capture(ids, ["layers.1", "layers.1.mlp"])
    assert set(acts) == {"blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"}


def test_edit_hook_changes_the_forward_pass_and_is_removed(gpt2):
    ids = torch.tensor([[0, 5, 6, 7]])
    with torch.inference_mode():
        clean = gpt2.hf(ids).logits
        with gpt2.hooked({"blocks.0.hook_resid_pre": lambda x: x * 0}):
            edited = gpt2.hf(ids).logits
        again = gpt2.hf(ids).logits
    assert not torch.allclose(clean, edited)
    torch.testing.assert_close(clean, again)


def test_site_outside_the_model_is_a_clear_error(gpt2):
    with pytest.raises(SiteError, match=r"layers 0\.\.2"):
        gpt2.capture(torch.tensor([[1, 2]]), ["blocks.7.hook_resid_post"])
    with pytest.raises(SiteError, match="supported forms"):
        gpt2.site("blocks.1.hook_q")


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "opt"}))
    with pytest.raises(UnsupportedModelError, match=r"gpt2.*gpt_neox.*llama"):
        load_model(tmp_path, device="cpu")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(MonoscopeError, match="cannot load model"):
        load_model(tmp_path / "nowhere", device="cpu")


def test_attach_checks_width_and_site(gpt2):
    with pytest.raises(SaeFormatError, match=r"d_in is 48 but .* has width 32"):
        gpt2.attach(random_sae(d_in=48), source="wide.sae")
    with pytest.raises(SaeFormatError, match="outside"):
        gpt2.attach(random_sae(hook_name="blocks.9.hook_resid_post"))
    attached = gpt2.attach(random_sae())
    assert attached.device == gpt2.device and attached.dtype == gpt2.dtype


def test_an_edit_at_the_mlp_input_reaches_only_the_mlp(gpt2):
    ids = torch.tensor([[0, 5, 6, 7]])
    sites = ["blocks.1.hook_attn_out", "blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"]
    clean = gpt2.capture(ids, sites)
    with gpt2.hooked({"blocks.1.hook_mlp_in": lambda x: x * 0}):
        edited = gpt2.capture(ids, sites)
    torch.testing.assert_close(edited["blocks.1.hook_attn_out"], clean["blocks.1.hook_attn_out"])
    block = gpt2.adapter.blocks(gpt2.hf)[1]
    with torch.inference_mode():
        zero_in = block.mlp(torch.zeros_like(clean["blocks.1.hook_mlp_in"]))
    torch.testing.assert_close(edited["blocks.1.hook_mlp_out"], zero_in)
    assert not torch.allclose(edited["blocks.1.hook_mlp_out"], clean["blocks.1.hook_mlp_out"])


def test_attach_checks_a_transcoders_output_site_and_width(gpt2):
    attached = gpt2.attach(random_transcoder(layer=2))
    assert attached.hook_name_out == "blocks.2.hook_mlp_out"
    with pytest.raises(SaeFormatError, match=r"d_out is 24 but .* has width 32"):
        gpt2.attach(random_transcoder(d_out=24), source="narrow")
    backwards = random_transcoder(layer=1)
    backwards.cfg = replace(backwards.cfg, hook_name_out="blocks.0.hook_mlp_out")
    with pytest.raises(SaeFormatError, match="must write after it reads"):
        gpt2.attach(backwards)
