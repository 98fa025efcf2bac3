"""Rebuild the shipped demo model and SAE from their seeds (`monoscope build-demo`), and fill the
demo database from them (`monoscope demo` on first start).

The configurations here are the ones the committed weights were made with.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Engine

from app.core.model import load_model
from app.core.sae import Sae, load_sae
from app.core.text_embedding import TextEmbedder
from app.core.workspace import sae_name
from app.db.engine import session_scope
from app.db.queries import find_sae
from app.demo import (
    DEMO_MODEL,
    DEMO_SAE,
    DEMO_SAES,
    DEMO_TRANSCODERS,
    TRAIN_SEED,
    WORLD_VERSION,
)
from app.demo.language_model import LanguageModelConfig, LanguageModelJob
from app.pipeline.config import EmbedLabelsConfig, ExplainConfig, MapConfig, ScoreConfig
from app.pipeline.embed_labels import EmbedLabelsJob
from app.pipeline.explain import ExplainJob, offline_explainer
from app.pipeline.feature_map import MapJob
from app.pipeline.harvest import HarvestConfig, HarvestJob
from app.pipeline.score import ScoreJob
from app.pipeline.train_sae import TrainSaeConfig, TrainSaeJob


def language_model_config(work_dir: Path) -> LanguageModelConfig:
    return LanguageModelConfig(
        out=DEMO_MODEL, seed=TRAIN_SEED, world_version=WORLD_VERSION, work_dir=work_dir
    )


def sae_config(work_dir: Path, site: str) -> TrainSaeConfig:
    return TrainSaeConfig(
        model=str(DEMO_MODEL),
        hook_name=site,
        corpus=f"demo-world:{TRAIN_SEED}:{WORLD_VERSION}",
        eval_corpus=f"demo-world:{TRAIN_SEED + 1}:{WORLD_VERSION}",
        out=DEMO_SAES[site],
        d_sae=4096,
        k=16,
        train_tokens=2_000_000,
        epochs=2,
        eval_contexts=1000,
        device="cpu",
        work_dir=work_dir / DEMO_SAES[site].name,
    )


def transcoder_config(work_dir: Path, layer: int) -> TrainSaeConfig:
    """Layer `layer`'s MLP transcoder: half the SAEs' width (the MLP is 1,024 wide), the same k,
    half their tokens (a quarter of the CPU time each, four of them)."""
    return TrainSaeConfig(
        model=str(DEMO_MODEL),
        hook_name=f"blocks.{layer}.hook_mlp_in",
        transcoder=True,
        corpus=f"demo-world:{TRAIN_SEED}:{WORLD_VERSION}",
        eval_corpus=f"demo-world:{TRAIN_SEED + 1}:{WORLD_VERSION}",
        out=DEMO_TRANSCODERS / f"layer_{layer}",
        d_sae=2048,
        k=16,
        train_tokens=1_000_000,
        epochs=2,
        eval_contexts=1000,
        seed=layer,
        device="cpu",
        work_dir=work_dir / "transcoders" / f"layer_{layer}",
    )


def build_transcoders(work_dir: Path) -> list[Sae]:
    """One transcoder per layer of the demo model, layer 0 first (each resumes on its own)."""
    n_layers = json.loads((DEMO_MODEL / "config.json").read_text())["n_layer"]
    return [TrainSaeJob(transcoder_config(work_dir, layer)).run() for layer in range(n_layers)]


def build_language_model(work_dir: Path) -> dict:
    return LanguageModelJob(language_model_config(work_dir)).run()


def build_saes(work_dir: Path) -> list[Sae]:
    """Every shipped SAE, one site after another (each resumes from its own checkpoints)."""
    return [TrainSaeJob(sae_config(work_dir, site)).run() for site in DEMO_SAES]


DEMO_DB_SEED = 3  # world seed of the text the demo database shows: held out from training
DEMO_DB_TOKENS = 1_048_576
DEMO_SAE_NAME = sae_name(str(DEMO_SAE))


def demo_harvest_config(
    work_dir: Path, tokens: int = DEMO_DB_TOKENS, sae: Path = DEMO_SAE
) -> HarvestConfig:
    return HarvestConfig(
        model=str(DEMO_MODEL),
        sae=str(sae),
        corpus=f"demo-world:{DEMO_DB_SEED}:{WORLD_VERSION}",
        tokens=tokens,
        work_dir=work_dir,  # one ingested corpus for both SAEs; spills are per SAE
    )


def _harvested(engine: Engine, sae: Path) -> bool:
    with session_scope(engine) as session:
        return find_sae(session, DEMO_MODEL.name, sae_name(str(sae))) is not None


def demo_database_ready(engine: Engine) -> bool:
    return all(_harvested(engine, sae) for sae in DEMO_SAES.values())


def build_demo_database(
    engine: Engine,
    work_dir: Path,
    tokens: int = DEMO_DB_TOKENS,
    progress: bool = True,
    saes: Sequence[Path] = tuple(DEMO_SAES.values()),
    stage: Callable[[str], None] = lambda _: None,
) -> None:
    """Harvest each shipped SAE over held-out world text into the database, label every feature
    with the offline explainer, embed the labels for semantic search, score them by keyword
    match and draw the feature map. Each step resumes where a crash left it; `stage` hears what
    is under way (the first-start page shows it)."""
    stage("loading the demo model")
    model = load_model(DEMO_MODEL, device="cpu")
    embedder = TextEmbedder.packaged()
    for n, path in enumerate(saes, 1):
        name, of = sae_name(str(path)), f"SAE {n} of {len(saes)}"
        if not _harvested(engine, path):
            stage(f"harvesting {name} ({of}): top examples over {tokens:,} held-out tokens")
            config = demo_harvest_config(work_dir, tokens, path)
            HarvestJob(replace(config, progress=progress), engine).run()
        stage(f"labelling the features of {name} ({of})")
        explainer = offline_explainer(engine, DEMO_MODEL.name)
        ExplainJob(ExplainConfig(DEMO_MODEL.name, name, progress=progress), engine, explainer).run()
        stage(f"embedding the labels of {name} for semantic search ({of})")
        EmbedLabelsJob(
            EmbedLabelsConfig(DEMO_MODEL.name, name, progress=progress), engine, embedder
        ).run()
        stage(f"scoring the labels of {name} ({of})")
        sae = model.attach(load_sae(str(path)))
        ScoreJob(
            ScoreConfig(DEMO_MODEL.name, name, ("keyword",), progress=progress),
            engine,
            model,
            sae,
        ).run()
        stage(f"drawing the feature map of {name} ({of})")
        MapJob(MapConfig(DEMO_MODEL.name, name, redraw=False, progress=progress), engine, sae).run()
