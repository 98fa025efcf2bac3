"""`monoscope embed-labels`: a sentence embedding for every label of an SAE, for semantic search.

    result = EmbedLabelsJob(EmbedLabelsConfig("monoscope-demo", "res1"), engine).run()

Labels never embedded, edited since, or embedded by another model are embedded; each batch is
committed as it is done, so a crash loses at most one batch and a rerun skips what is stored.
"""

from dataclasses import dataclass

from sqlalchemy import Engine
from tqdm import tqdm

from app.core.errors import MonoscopeError
from app.core.text_embedding import TextEmbedder
from app.db.embeddings import labels_to_embed, store_label_embeddings
from app.db.engine import job_lock, session_scope
from app.db.queries import find_sae
from app.pipeline.config import EmbedLabelsConfig


@dataclass
class EmbedLabelsResult:
    embedded: int = 0


class EmbedLabelsJob:
    def __init__(
        self, config: EmbedLabelsConfig, engine: Engine, embedder: TextEmbedder | None = None
    ):
        self.config, self.engine, self.embedder = config, engine, embedder

    def run(self) -> EmbedLabelsResult:
        """The embedder is loaded only once there is something to embed (a rerun costs a query)."""
        c, name = self.config, TextEmbedder.name
        with job_lock(self.engine, f"embed-labels:{c.model}/{c.sae}"):
            with session_scope(self.engine) as session:
                sae = find_sae(session, c.model, c.sae)
                if sae is None:
                    raise MonoscopeError(f"no SAE {c.model}/{c.sae} in the database")
                todo = labels_to_embed(session, sae.id, name)
            result = EmbedLabelsResult()
            if not todo:
                return result
            embedder = self.embedder or TextEmbedder.packaged(c.device)
            bar = tqdm(total=len(todo), unit="label", desc="embed labels", disable=not c.progress)
            for start in range(0, len(todo), c.batch_size):
                batch = todo[start : start + c.batch_size]
                ids, texts = [i for i, _ in batch], [t for _, t in batch]
                vectors = embedder.encode(texts)
                with session_scope(self.engine) as session:
                    store_label_embeddings(session, name, ids, texts, vectors)
                result.embedded += len(batch)
                bar.update(len(batch))
            bar.close()
            return result
