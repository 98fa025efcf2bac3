"""SAE files: numerical parity with the reference packages, and one clear error per bad file."""

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from app.core.errors import SaeFormatError
from app.core.sae import load_sae, save_saelens
from tests.helpers import random_sae

warnings.filterwarnings("ignore", module="sae_lens")
sae_lens = pytest.importorskip("sae_lens")
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

D_IN, D_SAE = 16, 64
HOOK = "blocks.1.hook_resid_post"
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
REFERENCE_CLASSES = {
    "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
    "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 5}),
    "topk_rescaled": (
        sae_lens.TopKSAE,
        sae_lens.TopKSAEConfig,
        {"k": 5, "rescale_acts_by_decoder_norm": True},
    ),
    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
    "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig, {}),
}


def _reference_sae(kind: str, normalization: str, seed: int = 0):
    cls, cfg_cls, extra = REFERENCE_CLASSES[kind]
    cfg = cfg_cls(
        d_in=D_IN,
        d_sae=D_SAE,
        normalize_activations=normalization,
        metadata=SAEMetadata(hook_name=HOOK, model_name="tiny"),
        **extra,
    )
    sae = cls(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(torch.rand(sae.threshold.shape, generator=g) * 0.5)
    return sae


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("kind", list(REFERENCE_CLASSES))
def test_saelens_files_encode_and_decode_like_saelens(kind, normalization, tmp_path):
    reference = _reference_sae(kind, normalization)
    reference.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = torch.randn(4, 9, D_IN) * 3
    with torch.no_grad():
        f_ref = reference.encode(x)
        x_hat_ref = reference.decode(f_ref)
        f = ours.encode(x)
        x_hat = ours(x)
    assert (f > 0).any(), "parity on all-zero features would prove nothing"
    torch.testing.assert_close(f, f_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x_hat, x_hat_ref, atol=1e-5, rtol=1e-5)
    assert ours.hook_name == HOOK and ours.architecture == kind.removesuffix("_rescaled")
    assert ours.d_in == D_IN and ours.d_sae == D_SAE and ours.W_dec.shape == (D_SAE, D_IN)


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated"])
def test_our_saelens_files_load_in_saelens(architecture, tmp_path):
    ours = random_sae(
        d_in=D_IN,
        d_sae=D_SAE,
        hook_name=HOOK,
        architecture=architecture,
        model_name="tiny",
        metadata={"context_size": 128},
    )
    save_saelens(ours, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    x = torch.randn(5, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)
    assert theirs.cfg.metadata.hook_name == HOOK and theirs.cfg.metadata.context_size == 128
    again = load_sae(tmp_path)
    assert again.cfg == ours.cfg


def test_pre_v6_flat_topk_config_loads_like_saelens(tmp_path):
    sae = random_sae(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=6)
    save_file(
        {n: p.detach() for n, p in sae.named_parameters()}, tmp_path / "sae_weights.safetensors"
    )
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": D_IN,
                "d_sae": D_SAE,
                "dtype": "torch.float32",
                "device": "cpu",
                "hook_point": "blocks.2.hook_resid_pre",
                "hook_point_layer": 2,
                "model_name": "gpt2",
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 6},
                "normalize_activations": False,
                "apply_b_dec_to_input": True,
            }
        )
    )
    ours = load_sae(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert ours.architecture == "topk" and ours.cfg.k == 6
    assert ours.hook_name == "blocks.2.hook_resid_pre" and ours.cfg.model_name == "gpt2"
    x = torch.randn(7, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-6, rtol=1e-5)
    assert ((ours.encode(x) > 0).sum(-1) <= 6).all()


def _write_gemma_scope(folder, seed=0):
    g = np.random.default_rng(seed)
    params = {
        "W_enc": g.normal(size=(D_IN, D_SAE)).astype(np.float32) * 0.3,
        "W_dec": g.normal(size=(D_SAE, D_IN)).astype(np.float32) * 0.3,
        "b_enc": g.normal(size=(D_SAE,)).astype(np.float32) * 0.1,
        "b_dec": g.normal(size=(D_IN,)).astype(np.float32) * 0.5,
        "threshold": g.uniform(0, 0.5, size=(D_SAE,)).astype(np.float32),
    }
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **params)
    return {k: torch.from_numpy(v) for k, v in params.items()}


def test_gemma_scope_follows_the_documented_jumprelu_formula(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_10"
    p = _write_gemma_scope(folder)
    sae = load_sae(folder)
    assert sae.hook_name == "blocks.3.hook_resid_post" and sae.architecture == "jumprelu"
    x = torch.randn(6, D_IN) * 2
    z = x @ p["W_enc"] + p["b_enc"]  # no b_dec shift on the way in
    expected = torch.relu(z) * (z > p["threshold"])
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.decode(expected), expected @ p["W_dec"] + p["b_dec"])
    assert 0 < (expected > 0).sum() < expected.numel()
    mlp = tmp_path / "gemma-scope-9b-pt-mlp" / "layer_7" / "width_16k" / "average_l0_20"
    _write_gemma_scope(mlp)
    assert load_sae(mlp / "params.npz").hook_name == "blocks.7.hook_mlp_out"


def test_gemma_scope_without_a_site_in_its_path_needs_one(tmp_path):
    _write_gemma_scope(tmp_path / "x")
    with pytest.raises(SaeFormatError, match="pass its hook name"):
        load_sae(tmp_path / "x")
    assert load_sae(tmp_path / "x", hook_name="blocks.1.hook_resid_post").hook_name == HOOK


@pytest.mark.parametrize("activation", ["topk", "groupmax"])
@pytest.mark.parametrize(
    "folder_name,site",
    [
        ("layers.2", "blocks.2.hook_resid_post"),
        ("layers.2.mlp", "blocks.2.hook_mlp_out"),
    ],
)
def test_sparsify_files_encode_and_decode_like_sparsify(activation, folder_name, site, tmp_path):
    sparsify = pytest.importorskip("sparsify")
    torch.manual_seed(0)
    cfg = sparsify.SparseCoderConfig(activation=activation, num_latents=D_SAE, k=8)
    reference = sparsify.SparseCoder(D_IN, cfg)
    with torch.no_grad():
        reference.encoder.bias.normal_(0, 0.1)
        reference.b_dec.normal_(0, 0.5)
    reference.save_to_disk(tmp_path / folder_name)
    ours = load_sae(tmp_path / folder_name)
    assert ours.hook_name == site and ours.cfg.k == 8 and ours.cfg.topk_grouping == activation
    x = torch.randn(10, D_IN)
    with torch.no_grad():
        out = reference.encode(x)
        dense = torch.zeros(10, D_SAE).scatter_(-1, out.top_indices, out.top_acts)
        torch.testing.assert_close(ours.encode(x), dense, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            ours.decode(dense),
            reference.decode(out.top_acts, out.top_indices),
            atol=1e-5,
            rtol=1e-5,
        )


# -- malformed files: one message naming the file and the problem --------------------------------
def _saved(tmp_path, **cfg):
    sae = random_sae(d_in=D_IN, d_sae=D_SAE, **cfg)
    save_saelens(sae, tmp_path)
    return tmp_path


def test_missing_tensor(tmp_path):
    folder = _saved(tmp_path)
    weights = {n: p.detach() for n, p in random_sae(d_in=D_IN, d_sae=D_SAE).named_parameters()}
    del weights["b_enc"]
    save_file(weights, folder / "sae_weights.safetensors")
    with pytest.raises(SaeFormatError, match=r"sae_weights.safetensors: missing tensor 'b_enc'"):
        load_sae(folder)


def test_wrong_shape(tmp_path):
    folder = _saved(tmp_path)
    weights = {n: p.detach() for n, p in random_sae(d_in=D_IN, d_sae=D_SAE).named_parameters()}
    weights["W_dec"] = weights["W_dec"].T.contiguous()
    save_file(weights, folder / "sae_weights.safetensors")
    with pytest.raises(SaeFormatError, match=r"'W_dec' has shape \(16, 64\), expected \(64, 16\)"):
        load_sae(folder)


def test_unknown_architecture_and_bad_json(tmp_path):
    folder = _saved(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps(cfg | {"architecture": "mystery"}))
    with pytest.raises(SaeFormatError, match=r"cfg.json: unknown architecture 'mystery'"):
        load_sae(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(SaeFormatError, match=r"cfg.json: not valid JSON"):
        load_sae(folder)


def test_corrupt_weights_and_missing_paths(tmp_path):
    folder = _saved(tmp_path)
    (folder / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SaeFormatError, match="not a readable safetensors file"):
        load_sae(folder)
    with pytest.raises(SaeFormatError, match="no such file"):
        load_sae(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaeFormatError, match="not an SAE"):
        load_sae(tmp_path / "empty")


def test_bad_site_in_config(tmp_path):
    folder = _saved(tmp_path, hook_name="blocks.1.hook_z")
    with pytest.raises(SaeFormatError, match="hook_z"):
        load_sae(folder)
    folder = _saved(tmp_path / "b", hook_name="model.layers.1")
    with pytest.raises(SaeFormatError, match=r"unknown hook site 'model\.layers\.1'"):
        load_sae(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_sae_with_non_finite_weights_is_refused_with_one_line(tmp_path, bad):
    sae = random_sae(hook_name="blocks.1.hook_resid_post")
    with torch.no_grad():
        sae.W_dec[3, 5] = bad
    save_saelens(sae, tmp_path)
    with pytest.raises(SaeFormatError, match="W_dec holds NaN or infinite values"):
        load_sae(tmp_path)
