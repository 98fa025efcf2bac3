"""Fixed-length contexts cut from one stream of token ids.

ids = pack_stream(stream, context_size=128, bos=tokenizer.bos_token_id)   # (n, 128)
"""

from collections.abc import Sequence

import numpy as np


def pack_stream(
    stream: Sequence[int],
    context_size: int,
    bos: int | None,
    n_contexts: int | None = None,
    dtype: type = np.int64,
) -> np.ndarray:
    """(n, context_size) contexts; each opens with BOS when the model has one.

    A context holds context_size - 1 stream tokens after its BOS; the incomplete tail is dropped,
    and at most n_contexts are cut."""
    body = context_size - (bos is not None)
    n = len(stream) // body if n_contexts is None else min(n_contexts, len(stream) // body)
    flat: np.ndarray = np.asarray(stream[: n * body], dtype=dtype).reshape(n, body)
    if bos is None:
        return flat
    return np.concatenate([np.full((n, 1), bos, dtype=dtype), flat], axis=1)
