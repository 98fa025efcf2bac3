"""`monoscope map`: lay out an SAE's features on a 2-D map (UMAP of decoder directions) that the
SAE's map page draws.

    result = MapJob(MapConfig("monoscope-demo", "res1"), engine).run()

Runs after harvest, which says which features are alive: dead ones are left off. The decoder is
read from the source the SAE was harvested from (or `source`, or an SAE already loaded). The
layout is computed whole and then written in one transaction, so a crash at any instant leaves
the previous map (or none) and a rerun starts over; on the demo's 4,000 features the layout
itself takes about 5 s once numba has compiled UMAP (about a minute, once per process).
"""

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from app.core.errors import MonoscopeError
from app.core.feature_map import map_layout
from app.core.sae import Sae, load_sae
from app.db.engine import job_lock, session_scope
from app.db.maps import mapped_candidates, store_map
from app.db.queries import find_sae
from app.pipeline.config import MapConfig


@dataclass
class MapResult:
    placed: int
    left_off: int  # dead features
    seconds: float


class MapJob:
    def __init__(self, config: MapConfig, engine: Engine, sae: Sae | None = None):
        self.config, self.engine, self.sae = config, engine, sae

    def run(self) -> MapResult:
        c = self.config
        with job_lock(self.engine, f"map:{c.model}/{c.sae}"):
            with session_scope(self.engine) as session:
                row = find_sae(session, c.model, c.sae)
                if row is None:
                    raise MonoscopeError(f"no SAE {c.model}/{c.sae} in the database; harvest it")
                sae_id, d_sae, source = row.id, row.d_sae, c.source or row.source
                if row.map_layout and not c.redraw:
                    placed = row.map_layout["features"]
                    return MapResult(placed, d_sae - placed, 0.0)
                indices = mapped_candidates(session, sae_id)
            sae = self.sae or load_sae(source)
            if sae.d_sae != d_sae:
                raise MonoscopeError(
                    f"{source} has {sae.d_sae:,} features but {c.model}/{c.sae} was harvested "
                    f"with {d_sae:,}: not the same SAE"
                )
            started = time.perf_counter()
            xy = map_layout(
                sae.W_dec[indices],
                n_neighbors=c.n_neighbors,
                min_dist=c.min_dist,
                seed=c.seed,
                progress=c.progress,
            )
            seconds = time.perf_counter() - started
            with session_scope(self.engine) as session:
                store_map(session, sae_id, indices, xy, c.layout() | {"seconds": round(seconds, 1)})
        return MapResult(len(indices), d_sae - len(indices), seconds)
