"""SAE maths on synthetic tensors: each architecture against its formula written out."""

import pytest
import torch

from tests.helpers import random_sae


def test_topk_keeps_exactly_the_k_largest_preactivations():
    sae = random_sae(architecture="topk", k=4)
    x = torch.randn(20, sae.d_in)
    z = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    f = sae.encode(x)
    top = z.topk(4, dim=-1)
    expected = torch.zeros_like(z).scatter_(-1, top.indices, top.values.relu())
    torch.testing.assert_close(f, expected)


def test_jumprelu_gates_on_the_preactivation_not_on_relu():
    sae = random_sae(architecture="jumprelu")
    with torch.no_grad():
        sae.threshold.fill_(-1.0)  # negative threshold: ReLU still zeroes negative z
    x = torch.randn(10, sae.d_in)
    z = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    torch.testing.assert_close(sae.encode(x), torch.relu(z))


def test_groupmax_takes_one_winner_per_group():
    sae = random_sae(architecture="topk", k=8, topk_grouping="groupmax")
    f = sae.encode(torch.randn(6, sae.d_in) * 3)
    groups = f.unflatten(-1, (8, -1))
    assert ((groups > 0).sum(-1) <= 1).all()


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "gated", "topk"])
@pytest.mark.parametrize("normalization", ["none", "layer_norm", "constant_norm_rescale"])
def test_feature_activations_equal_encode_columns(architecture, normalization):
    sae = random_sae(architecture=architecture, normalize_activations=normalization)
    x = torch.randn(3, 5, sae.d_in) * 2
    indices = torch.tensor([0, 7, 31, 100])
    torch.testing.assert_close(sae.feature_activations(x, indices), sae.encode(x)[..., indices])


def test_decode_of_a_per_token_normalised_sae_needs_the_norm_state():
    sae = random_sae(normalize_activations="constant_norm_rescale")
    x = torch.randn(4, sae.d_in)
    with pytest.raises(ValueError, match="NormState"):
        sae.decode(sae.encode(x))
    x_n, norm = sae.normalize(x)
    torch.testing.assert_close(x_n.norm(dim=-1), torch.full((4,), sae.d_in**0.5))
    torch.testing.assert_close(sae.denormalize(x_n, norm), x)


def test_rescaled_topk_decoder_directions_are_unit_norm():
    sae = random_sae(architecture="topk", rescale_acts_by_decoder_norm=True)
    directions = sae.decoder_directions(torch.arange(10))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(10))
    f = torch.zeros(sae.d_sae)
    f[3] = 2.0
    torch.testing.assert_close(sae.decode(f) - sae.b_dec, 2.0 * directions[3])
