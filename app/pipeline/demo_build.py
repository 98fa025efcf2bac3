"""Rebuild the shipped demo model and SAE from their seeds: `monoscope build-demo`.

The configurations here are the ones the committed weights were made with.
"""

from pathlib import Path

from app.core.sae import Sae
from app.demo import DEMO_MODEL, DEMO_SAE, DEMO_SITE, TRAIN_SEED
from app.demo.language_model import LanguageModelConfig, LanguageModelJob
from app.pipeline.train_sae import TrainSaeConfig, TrainSaeJob


def language_model_config(work_dir: Path) -> LanguageModelConfig:
    return LanguageModelConfig(out=DEMO_MODEL, seed=TRAIN_SEED, work_dir=work_dir)


def sae_config(work_dir: Path) -> TrainSaeConfig:
    return TrainSaeConfig(
        model=str(DEMO_MODEL),
        hook_name=DEMO_SITE,
        corpus=f"demo-world:{TRAIN_SEED}",
        eval_corpus=f"demo-world:{TRAIN_SEED + 1}",
        out=DEMO_SAE,
        d_sae=4096,
        k=16,
        train_tokens=2_000_000,
        epochs=2,
        eval_contexts=1000,
        device="cpu",
        work_dir=work_dir / "sae",
    )


def build_language_model(work_dir: Path) -> dict:
    return LanguageModelJob(language_model_config(work_dir)).run()


def build_sae(work_dir: Path) -> Sae:
    return TrainSaeJob(sae_config(work_dir)).run()
