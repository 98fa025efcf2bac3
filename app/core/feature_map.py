"""A 2-D map of an SAE's features: UMAP of their decoder directions, as Neuronpedia draws one.

    xy = map_layout(sae.W_dec[alive], n_neighbors=15, seed=0)   # (n, 2) float32 in [0, 1]

Features whose decoder rows point the same way write the same thing into the model, so they land
together: a topic's features form an island, and a split feature sits beside its parent's
siblings. Rows are compared by cosine (their norms are a training artefact of the SAE, not part
of what the feature means). A seed makes the layout reproducible bit for bit.
"""

import numpy as np
import torch


def map_layout(
    decoder: torch.Tensor,
    n_neighbors: int = 15,
    min_dist: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """(n, d_in) decoder rows → (n, 2) positions, scaled so the longer side spans [0, 1].

    The parameters are UMAP's (app.pipeline.config.MapConfig says what each does). Maps of
    fewer than three features are placed on a line: UMAP needs a neighbourhood.
    """
    rows = decoder.detach().to("cpu", torch.float32)
    n = rows.shape[0]
    if n < 3:
        return np.array([[0.5 * i, 0.5] for i in range(n)], np.float32).reshape(n, 2)
    unit = torch.nn.functional.normalize(rows, dim=1).numpy()
    import umap  # numba compiles on import: only jobs that draw maps pay for it

    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, n - 1),
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        n_jobs=1,  # a random_state makes UMAP run on one thread anyway; saying so spares a warning
        init="spectral" if n > n_neighbors + 1 else "random",
        verbose=progress,
        tqdm_kwds={"disable": not progress, "desc": "map layout"},
    )
    xy = np.asarray(reducer.fit_transform(unit), np.float64)
    return unit_square(xy)


def unit_square(xy: np.ndarray) -> np.ndarray:
    """Shift to the origin and scale by the longer side, keeping the aspect ratio (n, 2)."""
    low = xy.min(axis=0)
    span = float((xy.max(axis=0) - low).max())
    return ((xy - low) / (span if span > 0 else 1.0)).astype(np.float32)
