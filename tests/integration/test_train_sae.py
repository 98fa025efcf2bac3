"""The SAE training job end to end on a tiny model: output format, metrics, and exact resume."""

import json

import pytest
import torch

from app.core.errors import MonoscopeError
from app.core.sae import load_sae
from app.pipeline.train_sae import TrainSaeConfig, TrainSaeJob
from tests.helpers import CORPUS, assert_same_weights, killed_at_step

pytestmark = pytest.mark.slow  # trains SAEs

SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n\n".join(CORPUS * 6))
    return path


def config(gpt2_dir, corpus, tmp_path, **changes) -> TrainSaeConfig:
    base = dict(
        model=str(gpt2_dir),
        hook_name=SITE,
        corpus=str(corpus),
        out=tmp_path / "sae",
        d_sae=64,
        k=4,
        context_size=32,
        train_tokens=3100,
        epochs=2,
        batch_size=256,
        lr=3e-3,
        warmup_steps=3,
        eval_contexts=8,
        device="cpu",
        checkpoint_every=5,
        log_every=5,
        work_dir=tmp_path / "work",
    )
    return TrainSaeConfig(**(base | changes))


def test_trained_sae_loads_everywhere_with_its_metrics(gpt2_dir, corpus, tmp_path):
    sae = TrainSaeJob(config(gpt2_dir, corpus, tmp_path)).run()
    loaded = load_sae(str(tmp_path / "sae"))
    assert loaded.architecture == "topk" and loaded.cfg.k == 4 and loaded.hook_name == SITE
    metrics = loaded.cfg.metadata["metrics"]
    assert metrics["variance_explained"] > 0.3
    assert 0 <= metrics["dead_fraction"] <= 1 and metrics["l0"] <= 4
    x = torch.randn(5, sae.d_in)
    assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-6)
    sae_lens = pytest.importorskip("sae_lens")
    reference = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    assert torch.allclose(reference.encode(x), sae.encode(x), atol=1e-5)
    saved = json.loads((tmp_path / "sae" / "training_config.json").read_text())
    assert saved["hook_name"] == SITE and saved["steps"] == 24


def test_a_crashed_run_resumes_to_the_same_weights(gpt2_dir, corpus, tmp_path, monkeypatch):
    TrainSaeJob(config(gpt2_dir, corpus, tmp_path / "straight")).run()

    with killed_at_step(monkeypatch, TrainSaeJob, 13):
        TrainSaeJob(config(gpt2_dir, corpus, tmp_path / "crash")).run()
    TrainSaeJob(config(gpt2_dir, corpus, tmp_path / "crash")).run()  # resumes from step 10

    assert_same_weights(
        tmp_path / "straight" / "sae" / "sae_weights.safetensors",
        tmp_path / "crash" / "sae" / "sae_weights.safetensors",
    )


def test_bad_inputs_fail_plainly(gpt2_dir, corpus, tmp_path):
    with pytest.raises(MonoscopeError, match="not found"):
        TrainSaeJob(config(gpt2_dir, tmp_path / "missing.txt", tmp_path)).run()
    with pytest.raises(MonoscopeError, match="layer"):
        TrainSaeJob(config(gpt2_dir, corpus, tmp_path, hook_name="blocks.9.hook_resid_post")).run()
    with pytest.raises(MonoscopeError, match="need"):
        TrainSaeJob(config(gpt2_dir, corpus, tmp_path, train_tokens=10**7)).run()
