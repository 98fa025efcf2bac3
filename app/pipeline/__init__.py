"""Offline jobs over core and the database, each a config dataclass (app.pipeline.config, whose
field docstrings are the CLI's help) plus a runner with `.run()`:

    IngestJob(IngestConfig(...), tokenizer)       corpus -> token store
    TrainSaeJob(TrainSaeConfig(...))              model + corpus -> SAELens directory
    HarvestJob(HarvestConfig(...), engine)        SAE + token store -> feature dashboards
    ExplainJob(ExplainConfig(...), engine, explainer)          -> labels
    ScoreJob(ScoreConfig(...), engine, model, sae[, judge])    -> label scores
    AddSaeJob(HarvestConfig(...), engine, settings)            harvest, explain, score
"""
