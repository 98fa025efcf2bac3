"""Text sources for jobs, packed into fixed-length, BOS-led contexts of token ids.

    contexts = load_contexts("demo-world:1", tokenizer, context_size=128, n_contexts=1000)
    contexts = load_contexts("notes.jsonl", tokenizer, 128, 1000)   # a `text` field per line

A source is `demo-world[:SEED[:VERSION]]` (the generated world), a .txt file (documents
separated by blank lines), a .jsonl file (one JSON object with a `text` field per line), a
.parquet or .arrow file with a `text` column, a local Hugging Face dataset directory
(save_to_disk output or a snapshot of parquet/jsonl files), or a .npy array of token ids
(n, context_size) written earlier.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from app.core.errors import MonoscopeError
from app.core.packing import pack_stream

DEMO_WORLD = "demo-world"


TEXT_FILES = (".txt", ".jsonl", ".parquet", ".arrow")


def _jsonl_texts(path: Path) -> Iterator[str]:
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


def _arrow_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet file or an Arrow IPC stream (how HF datasets save to disk)."""
    try:
        if path.suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["text"])
        else:
            with pa.memory_map(str(path)) as source:
                try:
                    batches = iter(pa.ipc.open_stream(source))
                except pa.ArrowInvalid:
                    reader = pa.ipc.open_file(source)
                    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                yield from batches
    except (pa.ArrowInvalid, pa.ArrowException, KeyError, OSError) as exc:
        raise MonoscopeError(f"{path}: cannot read a text column: {exc}") from exc


def _table_texts(path: Path) -> Iterator[str]:
    for batch in _arrow_batches(path):
        if "text" not in batch.schema.names:
            raise MonoscopeError(f"{path}: no text column (columns: {batch.schema.names})")
        yield from (str(t) for t in batch.column("text").to_pylist() if t is not None)


def _file_texts(path: Path) -> Iterator[str]:
    if path.suffix == ".jsonl":
        yield from _jsonl_texts(path)
    elif path.suffix in (".parquet", ".arrow"):
        yield from _table_texts(path)
    elif path.suffix == ".txt":
        for block in path.read_text(encoding="utf-8").split("\n\n"):
            if block.strip():
                yield block.strip() + "\n"
    else:
        raise MonoscopeError(
            f"corpus {str(path)!r}: expected .txt, .jsonl, .parquet, .arrow, a dataset "
            "directory or demo-world"
        )


def dataset_files(folder: Path) -> list[Path]:
    """The data files of a local dataset directory (save_to_disk output or a hub snapshot)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in TEXT_FILES and not p.name.startswith("cache-")
    )


def iter_texts(source: str) -> Iterator[str]:
    """Documents of a corpus, in order; bad bytes or a missing text field are one clear error."""
    if source == DEMO_WORLD or source.startswith(DEMO_WORLD + ":"):
        from app.demo.world import World

        seed, _, version = (source.partition(":")[2] or "0").partition(":")
        if not seed.isdigit() or not (version or "1").isdigit():
            raise MonoscopeError(
                f"bad corpus {source!r}: expected demo-world[:SEED[:VERSION]] with numbers"
            )
        index = 0
        world = World(int(seed), int(version or 1))
        while True:
            yield world.document(index).text
            index += 1
    path = Path(source)
    if path.is_dir():
        files = dataset_files(path)
        if not files:
            raise MonoscopeError(f"corpus {source!r}: no .txt/.jsonl/.parquet/.arrow files inside")
    elif path.is_file():
        files = [path]
    else:
        raise MonoscopeError(
            f"corpus {source!r} not found "
            "(a file, a dataset directory, or demo-world[:SEED[:VERSION]])"
        )
    for file in files:
        try:
            yield from _file_texts(file)
        except UnicodeDecodeError as exc:
            raise MonoscopeError(f"corpus {str(file)!r} is not UTF-8 text ({exc.reason})") from exc


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
