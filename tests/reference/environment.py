"""circuit-tracer's own environment: built once per requirements file, then reused.

    python = reference_python()        # .../bin/python with circuit-tracer importable
    subprocess.run([python, SCRIPT, ...])

circuit-tracer 0.5.0 pins transformers<=4.57.3 and huggingface-hub<1.0, which the project's
environment does not satisfy, so it lives in a virtual environment under
~/.cache/monoscope (MONOSCOPE_REFERENCE_ENV to put it elsewhere), named by a hash of
requirements.txt; a lock keeps two test workers from building it at once. Building downloads
about 1.6 GB of packages from PyPI (3-4 minutes here).
"""

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
SCRIPT = HERE / "circuit_tracer_graph.py"
TORCH = "torch==2.13.0"  # the CPU wheel on these machines; alone first, as the project installs it


def reference_python() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + TORCH.encode()).hexdigest()[:12]
    root = Path(os.environ.get("MONOSCOPE_REFERENCE_ENV", Path.home() / ".cache" / "monoscope"))
    env = root / f"circuit-tracer-{digest}"
    python = env / "bin" / "python"
    done = env / ".complete"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, TORCH], check=True)
            subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
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
