"""SAE training maths on synthetic data with a known dictionary."""

import torch

from app.core.sae.training import TrainableSae


def sparse_data(n=4096, d_in=16, n_atoms=48, active=3, seed=0):
    """Tokens that are sums of `active` random unit atoms with positive coefficients."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=g)
    atoms /= atoms.norm(dim=-1, keepdim=True)
    which = torch.rand(n, n_atoms, generator=g).argsort(-1)[:, :active]
    coeff = torch.rand(n, active, generator=g) + 0.5
    return torch.einsum("na,nad->nd", coeff, atoms[which]) + 0.3


def train(sae, x, steps=600, lr=3e-3, dead=None):
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    for step in range(steps):
        batch = x[(step * 256) % len(x) :][:256]
        out = sae.loss(batch, dead)
        out.loss.backward()
        sae.before_step()
        optimizer.step()
        optimizer.zero_grad()
        sae.after_step()
    return sae.loss(x, dead)


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
