"""Reference packages' own environments: built once per requirements file, then reused.

    python = reference_python()                    # .../bin/python with circuit-tracer importable
    subprocess.run([python, SCRIPT, ...])
    python = reference_python(SAE_DASHBOARD)       # sae-dashboard's, for bench.harvest

circuit-tracer 0.5.0 pins transformers<=4.57.3 and huggingface-hub<1.0, and sae-dashboard 0.8.0
transformers<4.57 and transformer-lens<3, none of which the project's environment satisfies, so
each lives in a virtual environment under ~/.cache/monoscope (MONOSCOPE_REFERENCE_ENV to put it
elsewhere), named by a hash of its requirements file; a lock keeps two test workers from
building one at once. Building circuit-tracer's downloads about 1.6 GB of packages from PyPI
(3-4 minutes here).
"""

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CIRCUIT_TRACER = HERE / "circuit-tracer.txt"
SCRIPT = HERE / "circuit_tracer_graph.py"
SAE_DASHBOARD = HERE / "sae-dashboard.txt"
SAE_DASHBOARD_SCRIPT = HERE / "sae_dashboard_harvest.py"
TORCH = "torch==2.13.0"  # the CPU wheel on these machines; alone first, as the project installs it


def reference_python(requirements: Path = CIRCUIT_TRACER) -> Path:
    """The environment's Python, built first if it is not yet. A file that pins every package
    (sae-dashboard's says so on its second line) is installed with --no-deps."""
    digest = hashlib.sha256(requirements.read_bytes() + TORCH.encode()).hexdigest()[:12]
    root = Path(os.environ.get("MONOSCOPE_REFERENCE_ENV", Path.home() / ".cache" / "monoscope"))
    env = root / f"{requirements.stem}-{digest}"
    python = env / "bin" / "python"
    done = env / ".complete"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, TORCH], check=True)
            complete = "--no-deps" in requirements.read_text().split("\n", 2)[1]
            subprocess.run(
                [*pip, *(["--no-deps"] if complete else []), "-r", str(requirements)], check=True
            )
            done.touch()
    return python


def aligned(ours, theirs: dict):
    """Both adjacency matrices over the nodes both graphs have, in one order: the shared
    features (matched by layer, position and index), then every error, embedding and logit node;
    with the features only one side found and their activations. A ReLU feature whose
    pre-activation is within rounding of zero can be active on one side only."""
    import torch

    selected = theirs["active_features"][theirs["selected_features"]]
    activations = theirs["activation_values"][theirs["selected_features"]]
    mine = {tuple(f): n for n, f in enumerate(ours.features.tolist())}
    reference = {tuple(f): n for n, f in enumerate(selected.tolist())}
    only = {
        key: float(ours.activations[mine[key]] if key in mine else activations[reference[key]])
        for key in mine.keys() ^ reference.keys()
    }
    shared = sorted(mine.keys() & reference.keys())

    def order(index: dict, n_features: int, total: int) -> torch.Tensor:
        return torch.tensor([index[k] for k in shared] + list(range(n_features, total)))

    a = order(mine, ours.n_features, ours.adjacency.shape[0])
    b = order(reference, len(selected), theirs["adjacency"].shape[0])
    return (
        ours.adjacency[a][:, a],
        theirs["adjacency"][b][:, b],
        ours.activations[[mine[k] for k in shared]],
        activations[[reference[k] for k in shared]],
        only,
    )
