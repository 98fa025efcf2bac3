"""The same model and SAE on CUDA agree with CPU; runs wherever a GPU is present."""

import pytest
import torch

from app.core.generation import SamplingParams, complete, pair_rows
from app.core.model import load_model
from app.core.steering import FeatureEdit
from tests.helpers import random_sae

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_capture_and_encode_match_cpu(gpt2_dir, gpt2):
    cuda = load_model(gpt2_dir, device="cuda", dtype=torch.float32)
    ids = torch.tensor([gpt2.tokenizer("The Golden Gate Bridge")["input_ids"]])
    site = "blocks.1.hook_resid_post"
    on_gpu = cuda.capture(ids, [site])[site]
    torch.testing.assert_close(on_gpu.cpu(), gpt2.capture(ids, [site])[site], atol=1e-4, rtol=1e-4)
    sae_cpu = gpt2.attach(random_sae(architecture="topk"))
    sae_gpu = cuda.attach(random_sae(architecture="topk"))
    assert sae_gpu.device.type == "cuda"
    torch.testing.assert_close(
        sae_gpu.encode(on_gpu).cpu(), sae_cpu.encode(on_gpu.cpu()), atol=1e-4, rtol=1e-4
    )


def test_cuda_half_precision_steering_pair(gpt2_dir):
    model = load_model(gpt2_dir, device="cuda", dtype=torch.float16)
    saes = {"res1": model.attach(random_sae())}
    assert saes["res1"].dtype == torch.float16
    prompt = model.tokenizer("The Golden Gate Bridge")["input_ids"]
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    zero = [FeatureEdit("res1", 3, "add", 0.0)]
    default, steered = complete(model, saes, pair_rows(prompt, zero, 3), params)
    assert default == steered
    clamp = [FeatureEdit("res1", 3, "clamp", 60.0)]
    default, steered = complete(model, saes, pair_rows(prompt, clamp, 3), params)
    assert default != steered
