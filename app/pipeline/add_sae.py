"""`monoscope add-sae`: bring your own SAE in one job: harvest it into the database, label its
features and score the labels.

    result = AddSaeJob(HarvestConfig(model="gpt2", sae="saes/res6", corpus="web"), engine,
                       settings).run()

The explainer is the LLM one when MONOSCOPE_EXPLAINER_BASE_URL is set, else the offline one; the
labels are embedded for semantic search and scored by keyword match, and the feature map is
drawn. Each step resumes and skips what is done, so running the job again after a crash
continues it.
"""

from dataclasses import dataclass

from sqlalchemy import Engine

from app.pipeline.config import (
    EmbedLabelsConfig,
    ExplainConfig,
    HarvestConfig,
    MapConfig,
    ScoreConfig,
)
from app.pipeline.embed_labels import EmbedLabelsJob, EmbedLabelsResult
from app.pipeline.explain import ExplainJob, ExplainResult, explainer_for
from app.pipeline.feature_map import MapJob, MapResult
from app.pipeline.harvest import HarvestJob, HarvestResult
from app.pipeline.score import ScoreJob, ScoreResult, load_harvested
from app.settings import Settings


@dataclass
class AddSaeResult:
    harvest: HarvestResult
    explain: ExplainResult
    embed: EmbedLabelsResult
    score: ScoreResult
    map: MapResult


class AddSaeJob:
    def __init__(self, config: HarvestConfig, engine: Engine, settings: Settings):
        self.config, self.engine, self.settings = config, engine, settings

    def run(self) -> AddSaeResult:
        harvested = HarvestJob(self.config, self.engine).run()
        model, sae = harvested.model, harvested.sae
        explainer = explainer_for(self.engine, self.settings, model)
        explained = ExplainJob(
            ExplainConfig(model, sae, progress=self.config.progress), self.engine, explainer
        ).run()
        embedded = EmbedLabelsJob(
            EmbedLabelsConfig(model, sae, progress=self.config.progress), self.engine
        ).run()
        resident, resident_sae = load_harvested(self.engine, model, sae, self.settings.device)
        scored = ScoreJob(
            ScoreConfig(model, sae, ("keyword",), progress=self.config.progress),
            self.engine,
            resident,
            resident_sae,
        ).run()
        drawn = MapJob(
            MapConfig(model, sae, redraw=False, progress=self.config.progress),
            self.engine,
            resident_sae,
        ).run()
        return AddSaeResult(harvested, explained, embedded, scored, drawn)
