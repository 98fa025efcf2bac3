"""The demo world: generated text with ground truth, and the model and SAE trained on it.

The weights under `monoscope-demo/` and `saes/` are committed; `monoscope build-demo` and the seed
in their config files reproduce them.
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_MODEL = DEMO_DIR / "monoscope-demo"
DEMO_SITE = "blocks.1.hook_resid_post"
DEMO_SAE = DEMO_DIR / "saes" / "res1"
# A second SAE on the last block's output: downstream of res1, so the inspect page can follow
# a prediction back through features at two sites (the chain view).
DEMO_LATE_SITE = "blocks.3.hook_resid_post"
DEMO_LATE_SAE = DEMO_DIR / "saes" / "res3"
DEMO_SAES = {DEMO_SITE: DEMO_SAE, DEMO_LATE_SITE: DEMO_LATE_SAE}
# One TopK transcoder per layer's MLP (layer_0 ... layer_3, sparsify format): what attribution
# graphs replace the MLPs with (app.core.graph, `monoscope graph`).
DEMO_TRANSCODERS = DEMO_DIR / "transcoders"
WORLD_VERSION = 1  # of the demo world (`World(seed, version)`) the shipped weights were made on
TRAIN_SEED = 0  # world seed of the training text
EVAL_SEED = 2  # held out: neither the model nor the SAE saw it
