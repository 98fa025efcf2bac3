"""Text sources for jobs, packed into fixed-length, BOS-led contexts of token ids.

    contexts = load_contexts("demo-world:1", tokenizer, context_size=128, n_contexts=1000)
    contexts = load_contexts("notes.jsonl", tokenizer, 128, 1000)   # a `text` field per line

A source is `demo-world[:SEED]` (the generated world), a .txt file (documents separated by blank
lines), a .jsonl file (one JSON object with a `text` field per line), or a .npy array of token ids
(n, context_size) written earlier.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from app.core.errors import MonoscopeError
from app.core.packing import pack_stream

DEMO_WORLD = "demo-world"


def iter_texts(source: str) -> Iterator[str]:
    if source == DEMO_WORLD or source.startswith(DEMO_WORLD + ":"):
        from app.demo.world import World

        seed = source.partition(":")[2] or "0"
        if not seed.isdigit():
            raise MonoscopeError(f"bad corpus {source!r}: the world seed must be a number")
        index = 0
        world = World(int(seed))
        while True:
            yield world.document(index).text
            index += 1
    path = Path(source)
    if not path.is_file():
        raise MonoscopeError(f"corpus {source!r} not found (a file, or demo-world[:SEED])")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise MonoscopeError(
                        f"{path}:{number}: expected a JSON object with a text field"
                    ) from exc
                yield str(text)
    elif path.suffix == ".txt":
        for block in path.read_text(encoding="utf-8").split("\n\n"):
            if block.strip():
                yield block.strip() + "\n"
    else:
        raise MonoscopeError(f"corpus {source!r}: expected .txt, .jsonl, .npy or demo-world")


def load_contexts(
    source: str, tokenizer: PreTrainedTokenizerBase, context_size: int, n_contexts: int
) -> np.ndarray:
    """(n, context_size) int64 token ids; each context opens with BOS when the model has one.

    Documents are joined end to end with the EOS token between them (GPT-2's convention)."""
    if source.endswith(".npy"):
        ids = np.load(source, mmap_mode="r")
        if ids.ndim != 2 or ids.shape[1] != context_size:
            raise MonoscopeError(f"{source}: expected token ids of shape (n, {context_size})")
        return np.asarray(ids[:n_contexts], dtype=np.int64)
    bos = tokenizer.bos_token_id
    separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    body = context_size - (bos is not None)
    needed = n_contexts * body
    stream: list[int] = []
    for text in iter_texts(source):
        if separator is not None:
            stream.append(separator)
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(stream) >= needed:
            break
    ids = pack_stream(stream, context_size, bos, n_contexts)
    if len(ids) == 0:
        raise MonoscopeError(f"corpus {source!r} is shorter than one context")
    return ids
