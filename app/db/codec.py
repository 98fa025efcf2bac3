"""Byte layouts of the packed columns: token ids as little-endian int32, activations as float16."""

import numpy as np

IDS = np.dtype("<i4")
ACTIVATIONS = np.dtype("<f2")


def pack_ids(ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(ids, dtype=IDS).tobytes()


def unpack_ids(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=IDS)


def pack_activations(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=ACTIVATIONS).tobytes()


def unpack_activations(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=ACTIVATIONS).astype(np.float32)
