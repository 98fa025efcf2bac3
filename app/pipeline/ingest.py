"""`monoscope ingest`: a corpus becomes a token store of fixed-length contexts on disk.

    config = IngestConfig("corpus.jsonl", Path("data/stores/web"), max_tokens=3_000_000)
    store = IngestJob(config, tokenizer).run()
    store = TokenStore.open(Path("data/stores/web"))
    store.ids[i]            # (context_size,) int32, a memmap row
    store.document_at(i, p) # which document the token at (context i, position p) came from

Documents are joined end to end with the tokenizer's EOS between them (GPT-2's convention) and
cut into contexts that each open with the model's BOS token when it has one. Document starts are
kept as positions in that stream. The store is written to a temporary folder and renamed when
complete, so a crash never leaves a half store behind; the fingerprint (a hash of the ids and the
layout) names the store's contexts in the database.
"""

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from app.core.errors import MonoscopeError
from app.pipeline.config import IngestConfig
from app.pipeline.corpus import iter_texts

IDS_FILE = "tokens.bin"
STARTS_FILE = "document_starts.npy"
META_FILE = "store.json"
TOKENIZE_BATCH = 256


@dataclass
class TokenStore:
    path: Path
    meta: dict
    ids: np.ndarray  # (contexts, context_size) int32 memmap
    document_starts: np.ndarray  # (documents,) int64 positions in the document stream

    @classmethod
    def open(cls, path: Path) -> "TokenStore":
        path = Path(path)
        if not (path / META_FILE).is_file():
            raise MonoscopeError(f"{path} is not a token store (no {META_FILE}; see ingest)")
        meta = json.loads((path / META_FILE).read_text())
        ids = np.memmap(
            path / IDS_FILE,
            dtype=np.int32,
            mode="r",
            shape=(meta["contexts"], meta["context_size"]),
        )
        return cls(path, meta, ids, np.load(path / STARTS_FILE))

    @staticmethod
    def is_store(path: str | Path) -> bool:
        return (Path(path) / META_FILE).is_file()

    @property
    def context_size(self) -> int:
        return int(self.meta["context_size"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def body(self) -> int:
        """Stream tokens per context (the context less its BOS)."""
        return self.context_size - (self.meta["bos"] is not None)

    def document_at(self, context: int, position: int) -> int:
        """Index of the document a token came from (the BOS belongs to the first token's)."""
        offset = max(position - (self.meta["bos"] is not None), 0)
        return int(np.searchsorted(self.document_starts, context * self.body + offset, "right")) - 1


def _token_stream(
    texts: Iterator[str], tokenizer: PreTrainedTokenizerBase, separator: int | None
) -> Iterator[list[int]]:
    """Each document's ids, led by the separator, tokenized in batches for speed."""
    while batch := list(islice(texts, TOKENIZE_BATCH)):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            yield ([separator] if separator is not None else []) + ids


class IngestJob:
    """Tokenize and pack a corpus (see corpus.iter_texts for sources) into a token store."""

    def __init__(self, config: IngestConfig, tokenizer: PreTrainedTokenizerBase):
        self.config, self.tokenizer = config, tokenizer

    def run(self) -> TokenStore:
        c = self.config
        return _ingest(c.source, self.tokenizer, c.out, c.context_size, c.max_tokens, c.progress)


def _ingest(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    context_size: int,
    max_tokens: int | None,
    progress: bool,
) -> TokenStore:
    if context_size < 2:
        raise MonoscopeError("context size must be at least 2")
    out = Path(out)
    bos = tokenizer.bos_token_id
    separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    body = context_size - (bos is not None)
    max_contexts = None if max_tokens is None else max(-(-max_tokens // context_size), 1)

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    digest = hashlib.sha256(f"{context_size}:{bos}".encode())
    starts: list[int] = []
    pending = np.empty(0, dtype=np.int32)
    consumed = contexts = 0  # stream tokens cut into contexts so far; contexts written
    bar = tqdm(total=max_contexts, unit="ctx", desc="ingest", disable=not progress)
    try:
        with (partial / IDS_FILE).open("wb") as sink:
            for ids in _token_stream(iter_texts(source), tokenizer, separator):
                starts.append(consumed + len(pending))
                pending = np.concatenate([pending, np.asarray(ids, dtype=np.int32)])
                n = len(pending) // body
                if max_contexts is not None:
                    n = min(n, max_contexts - contexts)
                if n:
                    rows = pending[: n * body].reshape(n, body)
                    if bos is not None:
                        rows = np.concatenate([np.full((n, 1), bos, np.int32), rows], axis=1)
                    sink.write(rows.tobytes())
                    digest.update(rows.tobytes())
                    pending, consumed, contexts = (
                        pending[n * body :],
                        consumed + n * body,
                        contexts + n,
                    )
                    bar.update(n)
                if max_contexts is not None and contexts >= max_contexts:
                    break
        if contexts == 0:
            raise MonoscopeError(f"corpus {source!r} is shorter than one context of {context_size}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        bar.close()
    starts_array = np.asarray([s for s in starts if s < consumed], dtype=np.int64)
    np.save(partial / STARTS_FILE, starts_array)
    meta = {
        "source": source,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "vocab_size": len(tokenizer),
        "context_size": context_size,
        "bos": bos,
        "separator": separator,
        "contexts": contexts,
        "tokens": contexts * context_size,
        "documents": len(starts_array),
        "fingerprint": digest.hexdigest()[:16],
    }
    (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return TokenStore.open(out)
