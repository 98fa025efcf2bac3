"""The demo language-model job: reproducible from its seed; an interrupted run resumes exactly."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.demo.language_model import LanguageModelConfig, LanguageModelJob
from tests.helpers import assert_same_weights, killed_at_step

pytestmark = pytest.mark.slow  # trains a language model


def tiny(tmp_path, name):
    return LanguageModelConfig(
        out=tmp_path / name / "model",
        tokenizer_documents=300,
        vocab_size=600,
        train_documents=200,
        val_documents=20,
        context_size=64,
        n_layer=1,
        d_model=32,
        n_head=2,
        steps=6,
        batch_size=2,
        warmup_steps=2,
        checkpoint_every=3,
        work_dir=tmp_path / name / "work",
    )


def test_same_seed_same_weights_and_resume_is_exact(tmp_path, monkeypatch):
    report = LanguageModelJob(tiny(tmp_path, "straight")).run()
    assert report["val_loss"] > 0 and len(report["samples"]) == 4
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "model")
    assert model.config.model_type == "gpt2" and model.dtype == torch.float16

    with killed_at_step(monkeypatch, LanguageModelJob, 4):
        LanguageModelJob(tiny(tmp_path, "resumed")).run()
    LanguageModelJob(tiny(tmp_path, "resumed")).run()

    assert_same_weights(
        tmp_path / "straight" / "model" / "model.safetensors",
        tmp_path / "resumed" / "model" / "model.safetensors",
    )


def test_untied_embeddings_train_their_own_output_head(tmp_path):
    config = replace(tiny(tmp_path, "untied"), steps=2, tie_embeddings=False)
    LanguageModelJob(config).run()
    model = AutoModelForCausalLM.from_pretrained(config.out)
    assert not model.config.tie_word_embeddings
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
