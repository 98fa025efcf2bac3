"""Rebuild the shipped demo model and SAE from their seeds (`monoscope build-demo`), and fill the
demo database from them (`monoscope demo` on first start).

The configurations here are the ones the committed weights were made with.
"""

from dataclasses import replace
from pathlib import Path

from sqlalchemy import Engine

from app.core.model import load_model
from app.core.sae import Sae, load_sae
from app.core.workspace import sae_name
from app.db.engine import session_scope
from app.db.queries import find_sae
from app.demo import DEMO_MODEL, DEMO_SAE, DEMO_SITE, TRAIN_SEED
from app.demo.language_model import LanguageModelConfig, LanguageModelJob
from app.pipeline.explain import offline_explainer, run_explain
from app.pipeline.harvest import HarvestConfig, HarvestJob
from app.pipeline.score import run_score
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


DEMO_DB_SEED = 3  # world seed of the text the demo database shows: held out from training
DEMO_DB_TOKENS = 1_048_576
DEMO_SAE_NAME = sae_name(str(DEMO_SAE))


def demo_harvest_config(work_dir: Path, tokens: int = DEMO_DB_TOKENS) -> HarvestConfig:
    return HarvestConfig(
        model=str(DEMO_MODEL),
        sae=str(DEMO_SAE),
        corpus=f"demo-world:{DEMO_DB_SEED}",
        tokens=tokens,
        work_dir=work_dir,
    )


def demo_database_ready(engine: Engine) -> bool:
    with session_scope(engine) as session:
        return find_sae(session, DEMO_MODEL.name, DEMO_SAE_NAME) is not None


def build_demo_database(
    engine: Engine, work_dir: Path, tokens: int = DEMO_DB_TOKENS, progress: bool = True
) -> None:
    """Harvest the shipped SAE over held-out world text into the database, label every feature
    with the offline explainer and score the labels by simulation. Each step resumes where a
    crash left it."""
    config = demo_harvest_config(work_dir, tokens)
    if not demo_database_ready(engine):
        HarvestJob(replace(config, progress=progress), engine).run()
    run_explain(
        engine, DEMO_MODEL.name, DEMO_SAE_NAME, offline_explainer(engine, DEMO_MODEL.name),
        progress=progress,
    )  # fmt: skip
    model = load_model(DEMO_MODEL, device="cpu")
    sae = model.attach(load_sae(str(DEMO_SAE)))
    run_score(engine, DEMO_MODEL.name, DEMO_SAE_NAME, ["simulation"], model, sae, progress=progress)
