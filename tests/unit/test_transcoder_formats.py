"""Transcoder files: parity with SAELens and sparsify, the Gemma Scope and circuit-tracer layouts,
and one clear error per bad file."""

import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from app.core.errors import MonoscopeError, SaeFormatError
from app.core.sae import load_sae, save_saelens
from app.core.sae.formats import circuit_tracer_layers, save_circuit_tracer_set, save_sparsify
from tests.helpers import random_transcoder

warnings.filterwarnings("ignore", module="sae_lens")
sae_lens = pytest.importorskip("sae_lens")
from sae_lens.saes.sae import SAEMetadata  # noqa: E402
from sae_lens.saes.transcoder import (  # noqa: E402
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)

D_IN, D_OUT, D_SAE = 16, 12, 64
IN, OUT = "blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"
SAELENS_TRANSCODERS = {
    "transcoder": (Transcoder, TranscoderConfig, "standard", False),
    "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig, "standard", True),
    "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig, "jumprelu", False),
    "jumprelu_skip_transcoder": (
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        "jumprelu",
        True,
    ),
}


def _reference(kind: str, seed: int = 0):
    cls, cfg_cls, _, _ = SAELENS_TRANSCODERS[kind]
    cfg = cfg_cls(
        d_in=D_IN,
        d_sae=D_SAE,
        d_out=D_OUT,
        apply_b_dec_to_input=False,
        metadata=SAEMetadata(hook_name=IN, hook_name_out=OUT, model_name="tiny"),
    )
    reference = cls(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
        if hasattr(reference, "threshold"):
            reference.threshold.copy_(torch.rand(reference.threshold.shape, generator=g) * 0.5)
    return reference


@pytest.mark.parametrize("kind", list(SAELENS_TRANSCODERS))
def test_saelens_transcoders_encode_and_transcode_like_saelens(kind, tmp_path):
    reference = _reference(kind)
    reference.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = torch.randn(4, 9, D_IN) * 3
    with torch.no_grad():
        f_ref, out_ref = reference.encode(x), reference(x)
        f, out = ours.encode(x), ours(x)
    assert (f > 0).any() and (f == 0).any(), "parity on all-zero or dense features proves nothing"
    torch.testing.assert_close(f, f_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    _, _, architecture, skip = SAELENS_TRANSCODERS[kind]
    assert ours.is_transcoder and ours.architecture == architecture and ours.has_skip == skip
    assert ours.hook_name == "blocks.2.hook_mlp_in" and ours.hook_name_out == OUT
    assert ours.d_out == D_OUT and ours.W_dec.shape == (D_SAE, D_OUT)


@pytest.mark.parametrize("kind", list(SAELENS_TRANSCODERS))
def test_our_transcoders_load_in_saelens(kind, tmp_path):
    _, _, architecture, skip = SAELENS_TRANSCODERS[kind]
    ours = random_transcoder(
        layer=2, d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, architecture=architecture, skip=skip
    )
    save_saelens(ours, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == SAELENS_TRANSCODERS[kind][0].__name__
    x = torch.randn(5, D_IN) * 2
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)
    assert theirs.cfg.metadata.hook_name == IN  # TransformerLens's name for the MLP's input
    assert theirs.cfg.metadata.hook_name_out == OUT
    assert load_sae(tmp_path).cfg == ours.cfg


def test_a_topk_transcoder_has_no_saelens_form_and_says_so(tmp_path):
    with pytest.raises(MonoscopeError, match="no SAELens equivalent"):
        save_saelens(random_transcoder(architecture="topk"), tmp_path)


def test_a_saelens_transcoder_without_an_output_site_writes_its_mlp(tmp_path):
    reference = _reference("transcoder")
    reference.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["metadata"]["hook_name_out"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert load_sae(tmp_path).hook_name_out == OUT
    cfg["metadata"]["hook_name"] = "blocks.2.hook_resid_pre"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaeFormatError, match="must name the site it writes"):
        load_sae(tmp_path)


def test_a_wrong_skip_shape_is_named(tmp_path):
    _reference("skip_transcoder").save_model(tmp_path)
    weights = load_file(tmp_path / "sae_weights.safetensors")
    weights["W_skip"] = weights["W_skip"].T.contiguous()
    save_file(weights, tmp_path / "sae_weights.safetensors")
    with pytest.raises(SaeFormatError, match=r"'W_skip' has shape \(16, 12\), expected \(12, 16\)"):
        load_sae(tmp_path)


def test_gemma_scope_transcoders_read_the_mlp_input_and_write_its_output(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_5" / "width_16k" / "average_l0_9"
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    params = {
        "W_enc": g.normal(size=(D_IN, D_SAE)).astype(np.float32) * 0.3,
        "W_dec": g.normal(size=(D_SAE, D_IN)).astype(np.float32) * 0.3,
        "b_enc": g.normal(size=(D_SAE,)).astype(np.float32) * 0.1,
        "b_dec": g.normal(size=(D_IN,)).astype(np.float32) * 0.5,
        "threshold": g.uniform(0, 0.5, size=(D_SAE,)).astype(np.float32),
    }
    np.savez(folder / "params.npz", **params)
    p = {k: torch.from_numpy(v) for k, v in params.items()}
    sae = load_sae(folder)
    assert sae.is_transcoder and sae.architecture == "jumprelu"
    assert (sae.hook_name, sae.hook_name_out) == ("blocks.5.hook_mlp_in", "blocks.5.hook_mlp_out")
    x = torch.randn(6, D_IN) * 2
    z = x @ p["W_enc"] + p["b_enc"]
    f = torch.relu(z) * (z > p["threshold"])
    torch.testing.assert_close(sae.encode(x), f)
    torch.testing.assert_close(sae(x), f @ p["W_dec"] + p["b_dec"])


@pytest.mark.parametrize("skip", [False, True])
def test_sparsify_transcoders_transcode_like_sparsify(skip, tmp_path):
    sparsify = pytest.importorskip("sparsify")
    torch.manual_seed(0)
    cfg = sparsify.SparseCoderConfig(num_latents=D_SAE, k=8, transcode=True, skip_connection=skip)
    reference = sparsify.SparseCoder(D_IN, cfg)
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0, 0.3)
    reference.save_to_disk(tmp_path / "layers.3.mlp")
    ours = load_sae(tmp_path / "layers.3.mlp")
    assert (ours.hook_name, ours.hook_name_out) == ("blocks.3.hook_mlp_in", "blocks.3.hook_mlp_out")
    assert ours.is_transcoder and ours.has_skip == skip and ours.cfg.k == 8
    x, y = torch.randn(10, D_IN), torch.randn(10, D_IN)
    with torch.no_grad():
        out = reference(x, y)
        encoded = reference.encode(x)
        dense = torch.zeros(10, D_SAE).scatter_(-1, encoded.top_indices, encoded.top_acts)
        torch.testing.assert_close(ours.encode(x), dense, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours(x), out.sae_out, atol=1e-5, rtol=1e-5)
    # and back: our writer's directory loads in sparsify and computes the same
    written = save_sparsify(ours, tmp_path / "any-name")
    theirs = sparsify.SparseCoder.load_from_disk(written)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, y).sae_out, ours(x), atol=1e-5, rtol=1e-5)
    again = load_sae(written)  # the sites travel in cfg.json, not only in the folder's name
    assert again.cfg == ours.cfg


def test_sparsify_transcoder_in_a_folder_without_a_site_is_refused(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    cfg = sparsify.SparseCoderConfig(num_latents=D_SAE, k=8, transcode=True)
    sparsify.SparseCoder(D_IN, cfg).save_to_disk(tmp_path / "my_transcoder")
    with pytest.raises(SaeFormatError, match="names the module it replaces"):
        load_sae(tmp_path / "my_transcoder")


def test_circuit_tracer_sets_follow_its_relu_transcoder_formula(tmp_path):
    """circuit-tracer's SingleLayerTranscoder: relu(F.linear(x, W_enc, b_enc)) @ W_dec + b_dec
    + x @ W_skip.T, W_enc stored (d_sae, d_model); its layer is its place in config.yaml."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "W_enc": torch.randn(D_SAE, D_IN, generator=g) * 0.3,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.3,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
        "W_skip": torch.randn(D_IN, D_IN, generator=g) * 0.1,
    }
    for layer in range(2):
        save_file(tensors, tmp_path / f"layer_{layer}.safetensors")
    config = {
        "model_name": "tiny",
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "transcoders": [f"hf://owner/repo/layer_{n}.safetensors" for n in range(2)],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert circuit_tracer_layers(tmp_path) == [
        tmp_path / "layer_0.safetensors",
        tmp_path / "layer_1.safetensors",
    ]
    sae = load_sae(tmp_path / "layer_1.safetensors")
    assert (sae.hook_name, sae.hook_name_out) == ("blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out")
    x = torch.randn(7, D_IN)
    f = torch.relu(torch.nn.functional.linear(x, tensors["W_enc"], tensors["b_enc"]))
    torch.testing.assert_close(sae.encode(x), f)
    expected = f @ tensors["W_dec"] + tensors["b_dec"] + x @ tensors["W_skip"].T
    torch.testing.assert_close(sae(x), expected, atol=1e-5, rtol=1e-5)


def test_circuit_tracer_sets_round_trip(tmp_path):
    layers = [
        random_transcoder(layer=n, d_in=D_IN, d_sae=D_SAE, skip=True, seed=n) for n in range(3)
    ]
    folder = save_circuit_tracer_set(layers, tmp_path / "set", model_name="tiny")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model_kind"] == "transcoder_set" and len(config["transcoders"]) == 3
    for n, path in enumerate(circuit_tracer_layers(folder)):
        again = load_sae(path)
        assert (
            again.hook_name == layers[n].hook_name
            and again.hook_name_out == layers[n].hook_name_out
        )
        for name, tensor in layers[n].state_dict().items():
            assert torch.equal(again.state_dict()[name], tensor), name
    with pytest.raises(MonoscopeError, match="ReLU transcoders only"):
        save_circuit_tracer_set(
            [random_transcoder(layer=0, architecture="jumprelu")], tmp_path / "j", "tiny"
        )


def test_circuit_tracer_errors_name_the_file(tmp_path):
    save_file({"W_enc": torch.zeros(4, 2)}, tmp_path / "stray.safetensors")
    (tmp_path / "config.yaml").write_text("model_kind: cross_layer_transcoder\n")
    with pytest.raises(SaeFormatError, match="per-layer sets"):
        load_sae(tmp_path / "stray.safetensors")
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "feature_input_hook": "mlp.hook_in",
                "feature_output_hook": "hook_mlp_out",
                "transcoders": ["a.safetensors"],
            }
        )
    )
    with pytest.raises(SaeFormatError, match="not listed"):
        load_sae(tmp_path / "stray.safetensors")
    (tmp_path / "config.yaml").write_text(": not yaml : [")
    with pytest.raises(SaeFormatError, match="not a readable YAML file"):
        load_sae(tmp_path / "stray.safetensors")


def test_a_circuit_tracer_set_folder_asks_for_one_layer(tmp_path):
    layers = [random_transcoder(layer=n, d_in=D_IN, d_sae=D_SAE, seed=n) for n in range(2)]
    folder = save_circuit_tracer_set(layers, tmp_path / "set", model_name="tiny")
    with pytest.raises(SaeFormatError, match=r"pass one layer's file \(layer_0\.safetensors"):
        load_sae(folder)
