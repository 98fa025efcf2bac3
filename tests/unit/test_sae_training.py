"""SAE training maths on synthetic data with a known dictionary."""

import pytest
import torch

from app.core.sae.training import TrainableSae, Whitening


def sparse_data(n=4096, d_in=16, n_atoms=48, active=3, seed=0):
    """Tokens that are sums of `active` random unit atoms with positive coefficients."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=g)
    atoms /= atoms.norm(dim=-1, keepdim=True)
    which = torch.rand(n, n_atoms, generator=g).argsort(-1)[:, :active]
    coeff = torch.rand(n, active, generator=g) + 0.5
    return torch.einsum("na,nad->nd", coeff, atoms[which]) + 0.3


def paired_data(n=4096, d_in=16, d_out=12, n_atoms=48, active=3, seed=0):
    """An MLP with a sparse code: x is a sum of input atoms, y the same sum of output atoms."""
    g = torch.Generator().manual_seed(seed)
    atoms_in = torch.nn.functional.normalize(torch.randn(n_atoms, d_in, generator=g), dim=-1)
    atoms_out = torch.randn(n_atoms, d_out, generator=g)
    which = torch.rand(n, n_atoms, generator=g).argsort(-1)[:, :active]
    coeff = torch.rand(n, active, generator=g) + 0.5
    x = torch.einsum("na,nad->nd", coeff, atoms_in[which])
    y = torch.einsum("na,nad->nd", coeff, atoms_out[which]) + 0.2
    return x, y


def train(sae, x, steps=600, lr=3e-3, dead=None, target=None):
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    for step in range(steps):
        batch = x[(step * 256) % len(x) :][:256]
        aim = None if target is None else target[(step * 256) % len(x) :][:256]
        out = sae.loss(batch, dead, target=aim)
        out.loss.backward()
        sae.before_step()
        optimizer.step()
        optimizer.zero_grad()
        sae.after_step()
    return sae.loss(x, dead, target=target)


def test_topk_learns_a_sparse_dictionary_and_keeps_unit_decoder_rows():
    x = sparse_data()
    sae = TrainableSae.initialise(16, 96, k=4, mean=x.mean(0), seed=0)
    before = sae.loss(x).fvu.item()
    after = train(sae, x)
    assert after.fvu.item() < 0.1 < before
    assert after.l0.item() <= 4
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(96), atol=1e-5)


def test_relu_with_l1_is_sparser_with_a_larger_penalty():
    x = sparse_data()
    l0 = []
    for l1 in (1e-4, 3e-2):
        sae = TrainableSae.initialise(16, 96, k=None, mean=x.mean(0), seed=0, l1_coefficient=l1)
        l0.append(train(sae, x, steps=300).l0.item())
    assert l0[1] < l0[0]


def test_parallel_gradient_is_removed_before_the_step():
    x = sparse_data(n=256)
    sae = TrainableSae.initialise(16, 32, k=4, mean=x.mean(0), seed=1)
    sae.loss(x).loss.backward()
    sae.before_step()
    assert (sae.W_dec.grad * sae.W_dec).sum(-1).abs().max() < 1e-6


def test_aux_loss_trains_dead_latents():
    x = sparse_data(n=512)
    sae = TrainableSae.initialise(16, 64, k=4, mean=x.mean(0), seed=2)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[32:] = True
    out = sae.loss(x, dead)
    assert out.aux.item() > 0
    out.loss.backward()
    assert sae.W_enc.grad[:, 32:].abs().sum() > 0  # dead latents receive gradient through aux


def test_frozen_sae_folds_the_input_scale():
    x = sparse_data(n=256)
    scale = 3.0
    sae = TrainableSae.initialise(16, 64, k=4, mean=(x * scale).mean(0), seed=3)
    train(sae, x * scale, steps=50)
    frozen = sae.to_sae("blocks.0.hook_resid_post", scale)
    z = sae.pre_activations(x * scale)
    values, indices = z.topk(4, dim=-1)
    expected = torch.zeros_like(z).scatter(-1, indices, values.relu())
    assert torch.allclose(frozen.encode(x), expected, atol=1e-4)
    x_hat_scaled = expected @ sae.W_dec + sae.b_dec
    assert torch.allclose(frozen.forward(x), x_hat_scaled / scale, atol=1e-4)


def test_a_transcoder_learns_a_sparse_map_and_folds_both_scales():
    x, y = paired_data()
    sae = TrainableSae.initialise(16, 96, k=3, mean=y.mean(0), seed=4, transcoder=True)
    out = train(sae, x, steps=1500, target=y)
    # The best linear map from x to y leaves 0.67 of y's variance (48 atoms share 16 dims); the
    # sparse code is what lets the transcoder do better (0.31 here).
    solution = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1)], 1), y).solution
    linear = (y - torch.cat([x, torch.ones(len(x), 1)], 1) @ solution).pow(2).sum(-1).mean()
    linear_fvu = (linear / (y - y.mean(0)).pow(2).sum(-1).mean()).item()
    assert out.fvu.item() < 0.6 * linear_fvu
    scale, out_scale = 2.0, 0.5
    frozen = sae.to_sae(
        "blocks.0.hook_mlp_in", scale, hook_name_out="blocks.0.hook_mlp_out", out_scale=out_scale
    )
    assert frozen.is_transcoder and frozen.d_out == 12 and not frozen.cfg.apply_b_dec_to_input
    with torch.no_grad():
        z = sae.pre_activations(x)  # trained on x; the frozen one reads x / scale
        values, indices = z.topk(3, dim=-1)
        codes = torch.zeros_like(z).scatter(-1, indices, values.relu())
        torch.testing.assert_close(frozen.encode(x / scale), codes, atol=1e-4, rtol=1e-4)
        predicted = codes @ sae.W_dec + sae.b_dec  # in target units * out_scale
        torch.testing.assert_close(frozen(x / scale), predicted / out_scale, atol=1e-4, rtol=1e-4)


def test_whitening_gives_identity_covariance_above_its_floor():
    x = sparse_data() * torch.linspace(0.1, 10, 16)  # variances 10,000x apart
    whitening = Whitening.fit(x, epsilon=0.0)
    white = whitening.apply(x)
    assert torch.allclose(torch.cov(white.T), torch.eye(16), atol=1e-3)
    assert torch.allclose((white @ whitening.inverse) + whitening.mean, x, atol=1e-4)
    floored = Whitening.fit(x, epsilon=0.1).apply(x)
    assert torch.cov(floored.T).diagonal().max() < 1  # the floor damps the faintest directions


@pytest.mark.parametrize("transcoder", [False, True])
def test_folding_the_whitening_keeps_latents_and_output(transcoder):
    """Trained on whitened x, folded to read raw x: the same latents and the same output (the
    reconstruction of raw x, or a transcoder's target, which is never whitened)."""
    x, y = paired_data()
    x = x * torch.linspace(0.1, 10, 16) + 3.0
    whitening = Whitening.fit(x, epsilon=0.1)
    white = whitening.apply(x)
    mean = y.mean(0) if transcoder else white.mean(0)
    sae = TrainableSae.initialise(16, 96, k=4, mean=mean, seed=0, transcoder=transcoder)
    train(sae, white, steps=100, target=y if transcoder else None)
    frozen_white = sae.to_sae("blocks.0.hook_mlp_in", 1.0, hook_name_out="blocks.0.hook_mlp_out")
    sae.fold_whitening(whitening)
    frozen = sae.to_sae("blocks.0.hook_mlp_in", 1.0, hook_name_out="blocks.0.hook_mlp_out")
    torch.testing.assert_close(frozen.encode(x), frozen_white.encode(white), atol=1e-4, rtol=1e-4)
    expected = frozen_white(white)
    if not transcoder:  # the SAE wrote whitened x: unwhiten it
        expected = expected @ whitening.inverse + whitening.mean
    torch.testing.assert_close(frozen(x), expected, atol=1e-4, rtol=1e-4)
