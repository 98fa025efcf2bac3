"""The shared SAE metrics, checked on SAEs whose answers are known."""

import pytest
import torch

from app.core.sae import Sae, SaeConfig
from app.core.sae.metrics import evaluate_sae
from tests.helpers import D_MODEL, exact_transcoder, random_sae

SITE = "blocks.1.hook_resid_post"


def contexts(model, n=6, size=24):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(model.tokenizer), (n, size), generator=g)
    ids[:, 0] = model.tokenizer.bos_token_id
    return ids


def exact_sae() -> Sae:
    """ReLU(x) - ReLU(-x) = x: a 2*d_in SAE that reconstructs every input exactly."""
    eye = torch.eye(D_MODEL)
    weights = {
        "W_enc": torch.cat([eye, -eye], dim=1),
        "b_enc": torch.zeros(2 * D_MODEL),
        "W_dec": torch.cat([eye, -eye], dim=0),
        "b_dec": torch.zeros(D_MODEL),
    }
    return Sae(SaeConfig("standard", D_MODEL, 2 * D_MODEL, SITE), weights)


def test_exact_reconstruction_recovers_everything(gpt2):
    m = evaluate_sae(gpt2, gpt2.attach(exact_sae()), contexts(gpt2))
    assert m.variance_explained == pytest.approx(1.0, abs=1e-5)
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl_div == pytest.approx(0.0, abs=1e-5)
    assert m.ce_loss_with_sae == pytest.approx(m.ce_loss_clean, abs=1e-5)
    assert m.tokens == 6 * 23  # BOS positions left out
    assert m.l0 == pytest.approx(D_MODEL, abs=1.0)  # each coordinate is positive or negative


def test_a_zero_decoder_recovers_nothing(gpt2):
    sae = exact_sae()
    sae.W_dec.data.zero_()
    m = evaluate_sae(gpt2, gpt2.attach(sae), contexts(gpt2))
    assert m.ce_loss_recovered == pytest.approx(0.0, abs=1e-5)
    assert m.ce_loss_with_sae == pytest.approx(m.ce_loss_zero_ablation, abs=1e-5)


def test_dead_and_dense_fractions(gpt2):
    sae = random_sae(d_sae=64, hook_name=SITE)
    sae.b_enc.data[:16] = -1e6  # never fire
    sae.b_enc.data[16:24] = 1e6  # always fire
    m = evaluate_sae(gpt2, gpt2.attach(sae), contexts(gpt2))
    assert m.dead_fraction == pytest.approx(16 / 64)
    assert m.dense_10pct_fraction >= 8 / 64


def test_a_transcoder_is_measured_on_what_the_mlp_writes(relu_gpt2):
    exact = exact_transcoder(relu_gpt2, 1)
    m = evaluate_sae(relu_gpt2, exact, contexts(relu_gpt2))
    assert m.variance_explained == pytest.approx(1.0, abs=1e-5)
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl_div == pytest.approx(0.0, abs=1e-5)
    silent = exact_transcoder(relu_gpt2, 1)
    silent.W_dec.data.zero_()
    silent.b_dec.data.zero_()
    m = evaluate_sae(relu_gpt2, silent, contexts(relu_gpt2))
    assert m.ce_loss_recovered == pytest.approx(0.0, abs=1e-5)  # zero ablation of the MLP
    assert m.variance_explained < 0.5
    # A skip term is part of what it writes: W_skip = I on a zero decoder writes the MLP's input.
    silent.register_parameter("W_skip", torch.nn.Parameter(torch.eye(D_MODEL), requires_grad=False))
    ids = contexts(relu_gpt2)
    acts = relu_gpt2.capture(ids, ["blocks.1.hook_mlp_in"])["blocks.1.hook_mlp_in"]
    torch.testing.assert_close(silent(acts), acts)


def test_the_replacement_model_of_exact_transcoders_recovers_everything(relu_gpt2):
    from app.core.sae.metrics import evaluate_replacement
    from tests.helpers import N_LAYERS, random_transcoder

    exact = [exact_transcoder(relu_gpt2, layer) for layer in range(N_LAYERS)]
    m = evaluate_replacement(relu_gpt2, exact, contexts(relu_gpt2))
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl_div == pytest.approx(0.0, abs=1e-5) and m.tokens == 6 * 23
    assert m.variance_explained == pytest.approx([1.0] * N_LAYERS, abs=1e-5)
    lossy = [relu_gpt2.attach(random_transcoder(layer=n, seed=n)) for n in range(N_LAYERS)]
    worse = evaluate_replacement(relu_gpt2, lossy, contexts(relu_gpt2))
    assert worse.kl_div > 1e-3 and all(v < 0.9 for v in worse.variance_explained)
    assert worse.ce_loss_clean == pytest.approx(m.ce_loss_clean)
