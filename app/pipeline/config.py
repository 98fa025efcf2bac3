"""The offline jobs' configs: what each run is asked to do, with a docstring per field that the
CLI shows as its help (app.config_options). Kept apart from the runners so that `monoscope` can
build its options without importing the runners' libraries.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import MonoscopeError
from app.core.sites import Site, parse_site


@dataclass(frozen=True)
class HarvestConfig:
    model: str
    """Hub id or local directory of the model (on the command line, default: the demo model)."""
    sae: str
    """SAE to harvest: SAELens or sparsify directory, Gemma Scope params.npz, hf://..."""
    corpus: str
    """A token store from `monoscope ingest`, or any corpus ingest reads (ingested first)."""
    tokens: int = 1_000_000
    """Tokens to harvest (whole contexts; BOS included in the count)."""
    context_size: int = 128
    """Context length when the corpus still has to be ingested."""
    name: str | None = None
    """Name of the SAE in the database and in URLs (default: its folder name)."""
    batch_size: int = 16
    """Contexts per forward pass."""
    n_top: int = 32
    n_intervals: int = 5
    per_interval: int = 5
    n_logits: int = 10
    n_neighbours: int = 10
    eval_contexts: int = 64
    """Contexts for variance explained and CE loss recovered (0 skips them)."""
    checkpoint_every: int = 25
    """Batches between checkpoints: the pass's chunks (a Ray worker's unit of work)."""
    seed: int = 0
    device: str = "auto"
    replace: bool = False
    """Replace an SAE of the same name already in the database."""
    ray: str | None = None
    """Shard the pass over Ray: 'local' (a cluster of this machine), 'auto' (the cluster
    `ray start` runs here or RAY_ADDRESS names) or a cluster's address (default: one process)."""
    ray_workers: int = 0
    """Ray workers, each with its own model replica (0: one per GPU in the cluster, else 2)."""
    work_dir: Path = Path("data/harvest")
    progress: bool = True

    def fingerprint(self, *parts: str | int) -> str:
        body = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrainSaeConfig:
    model: str
    """Hub id or local directory of the model."""
    hook_name: str
    """Site to train on, e.g. blocks.1.hook_resid_post."""
    corpus: str
    """Training text: demo-world[:SEED[:VERSION]], a .txt/.jsonl file, or a .npy of token ids."""
    out: Path
    """Folder for the SAE: SAELens format (sparsify for a TopK transcoder, which SAELens lacks)."""
    transcoder: bool = False
    """Train a transcoder of the site's layer: read the MLP's input (blocks.L.hook_mlp_in),
    predict the MLP's output (blocks.L.hook_mlp_out); the site names the layer."""
    eval_corpus: str | None = None
    """Held-out text for the final metrics (default: the end of the training corpus)."""
    d_sae: int = 4096
    """Number of latents."""
    k: int | None = 32
    """Active latents per token (TopK); None (0 on the command line) trains a ReLU SAE with an
    L1 penalty."""
    l1_coefficient: float = 0.0
    """L1 coefficient of a ReLU SAE."""
    context_size: int = 128
    """Tokens per context."""
    train_tokens: int = 2_000_000
    """Activations cached for training (each is seen `epochs` times)."""
    epochs: int = 2
    """Passes over the cached activations."""
    batch_size: int = 2048
    """Activations per step."""
    lr: float = 5e-4
    """Adam learning rate (after warm-up, before the final decay)."""
    warmup_steps: int = 100
    decay_fraction: float = 0.2
    """The last part of training, during which the learning rate decays linearly to zero."""
    dead_after_tokens: int = 500_000
    """A latent that has not fired for this many tokens is dead and gets the auxiliary loss."""
    whiten: bool = False
    """Train on PCA-whitened activations and fold the whitening back into the saved weights, so
    that directions of low variance count as much as the few that carry most of it."""
    eval_contexts: int = 200
    seed: int = 0
    """Initialisation and data order."""
    device: str = "auto"
    checkpoint_every: int = 250
    log_every: int = 100
    work_dir: Path = Path("data/train-sae")
    """Activation cache and checkpoints."""

    @property
    def steps(self) -> int:
        return self.epochs * self.train_tokens // self.batch_size

    @property
    def sites(self) -> tuple[str, str | None]:
        """(the site read, the site a transcoder writes or None for an SAE)."""
        if not self.transcoder:
            return self.hook_name, None
        site = parse_site(self.hook_name)
        if site.kind not in ("mlp_in", "mlp_out"):
            raise MonoscopeError(
                f"a transcoder replaces an MLP: pass its layer's blocks.{site.layer}.hook_mlp_in "
                f"or hook_mlp_out, not {site.name}"
            )
        return Site(site.layer, "mlp_in").name, Site(site.layer, "mlp_out").name

    def fingerprint(self, *names: str) -> str:
        body = json.dumps({n: str(getattr(self, n)) for n in names}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class IngestConfig:
    source: str
    """A .txt/.jsonl/.parquet/.arrow file, a local HF dataset directory, or
    demo-world[:SEED[:VERSION]]."""
    out: Path
    """Folder to write the token store to."""
    context_size: int = 128
    """Tokens per context, BOS included."""
    max_tokens: int | None = None
    """Stop after this many tokens (default: the whole corpus)."""
    progress: bool = True


@dataclass(frozen=True)
class ExplainConfig:
    model: str
    """The model's name in the database."""
    sae: str
    """The SAE's name in the database."""
    features: list[int] | None = None
    """Feature indices to label (default: every alive feature)."""
    force: bool = False
    """Label again features this explainer has labelled."""
    progress: bool = True


@dataclass(frozen=True)
class EmbedLabelsConfig:
    model: str
    """The model's name in the database."""
    sae: str
    """The SAE's name in the database."""
    batch_size: int = 512
    """Labels embedded and committed together."""
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True)
class MapConfig:
    model: str
    """The model's name in the database (on the command line, default: the demo model)."""
    sae: str
    """The SAE's name in the database."""
    source: str | None = None
    """Where to read the SAE's decoder (default: the source it was harvested from)."""
    n_neighbors: int = 15
    """UMAP's neighbourhood: larger keeps more of the map's global shape, smaller more detail."""
    min_dist: float = 0.05
    """How tightly UMAP packs close features (0 to 1); small values keep islands apart."""
    seed: int = 0
    """Random seed: the same seed draws the same map."""
    redraw: bool = True
    """Draw the map again when the SAE has one (jobs that resume pass False)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_neighbors < 2:
            raise MonoscopeError(f"--n-neighbors must be at least 2, not {self.n_neighbors}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise MonoscopeError(f"--min-dist must be between 0 and 1, not {self.min_dist}")

    def layout(self) -> dict:
        """How the map is drawn, as stored beside it."""
        return {
            "method": "umap",
            "metric": "cosine",
            "n_neighbors": self.n_neighbors,
            "min_dist": self.min_dist,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ScoreConfig:
    model: str
    """The model's name in the database."""
    sae: str
    """The SAE's name in the database."""
    scorers: tuple[str, ...] = ("keyword",)
    """keyword or embedding (offline), detection or fuzzing (an LLM judge)."""
    features: list[int] | None = None
    """Feature indices whose labels to score (default: every labelled feature)."""
    force: bool = False
    """Score again labels already scored."""
    n_negatives: int = 10
    """Non-activating contexts per feature, half of them hard negatives."""
    pool_size: int = 64
    """Stored contexts run through the model once to draw negatives from."""
    concurrency: int = 8
    """LLM judge requests in flight at once."""
    progress: bool = True
