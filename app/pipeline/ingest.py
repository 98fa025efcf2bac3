"""`monoscope ingest`: a corpus becomes a token store of fixed-length contexts on disk.

    config = IngestConfig("corpus.jsonl", Path("data/stores/web"), max_tokens=3_000_000)
    store = IngestJob(config, tokenizer).run()
    store = TokenStore.open(Path("data/stores/web"))
    store.ids[i]            # (context_size,) int32, a memmap row
    store.document_at(i, p) # which document the token at (context i, position p) came from
    store.counted_mask(0, 8)  # which positions of contexts 0-7 count (not BOS, not left context)

Documents are joined end to end with the tokenizer's EOS between them (GPT-2's convention) and
cut into contexts that each open with the model's BOS token when it has one and at a document's
first token (core.packing.AlignedPacker): a document cut at a context's end is read again from
its start (or, when long, from half a context back) as the next context's left context, which
jobs show the model but do not count. Document starts and each context's stream offset are
kept, so any token maps back to its document. The store is written to a temporary folder and
renamed when complete, so a crash never leaves a half store behind; the fingerprint (a hash of
the ids and the layout) names the store's contexts in the database.
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
from app.core.packing import AlignedPacker
from app.pipeline.config import IngestConfig
from app.pipeline.corpus import iter_texts

IDS_FILE = "tokens.bin"
STARTS_FILE = "document_starts.npy"
OFFSETS_FILE = "context_offsets.npy"
COUNTED_FILE = "context_counted_from.npy"
META_FILE = "store.json"
TOKENIZE_BATCH = 256


@dataclass
class TokenStore:
    path: Path
    meta: dict
    ids: np.ndarray  # (contexts, context_size) int32 memmap
    document_starts: np.ndarray  # (documents,) int64 positions in the document stream
    offsets: np.ndarray  # (contexts,) int64 stream position of each context's first token
    counted_from: np.ndarray  # (contexts,) int16 first position that is not left context

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
        if meta.get("layout") == "aligned":
            offsets, counted = np.load(path / OFFSETS_FILE), np.load(path / COUNTED_FILE)
        else:  # a packed store from before alignment: contexts cut end to end
            body = meta["context_size"] - (meta["bos"] is not None)
            offsets = np.arange(meta["contexts"], dtype=np.int64) * body
            counted = np.full(meta["contexts"], int(meta["bos"] is not None), np.int16)
        return cls(path, meta, ids, np.load(path / STARTS_FILE), offsets, counted)

    @staticmethod
    def is_store(path: str | Path) -> bool:
        return (Path(path) / META_FILE).is_file()

    @property
    def context_size(self) -> int:
        return int(self.meta["context_size"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def document_at(self, context: int, position: int) -> int:
        """Index of the document a token came from (the BOS belongs to the first token's)."""
        offset = max(position - (self.meta["bos"] is not None), 0)
        at = int(self.offsets[context]) + offset
        return int(np.searchsorted(self.document_starts, at, "right")) - 1

    def counted_mask(self, first: int, last: int) -> np.ndarray:
        """(last - first, context_size) bool: the positions of contexts [first, last) that count
        (neither BOS nor left context re-read from the context before)."""
        positions = np.arange(self.context_size)
        return positions[None, :] >= self.counted_from[first:last, None]


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
    max_left = body // 2
    digest = hashlib.sha256(f"{context_size}:{bos}:aligned:{max_left}".encode())
    packer = AlignedPacker(body, max_left, separated=separator is not None)
    lead = [bos] if bos is not None else []
    starts: list[int] = []  # stream position of each document's separator (or first token)
    offsets: list[int] = []  # stream position of each context's first token after BOS
    counted_from: list[int] = []  # each context's first position that is not left context
    stream = 0
    bar = tqdm(total=max_contexts, unit="ctx", desc="ingest", disable=not progress)
    try:
        with (partial / IDS_FILE).open("wb") as sink:
            for ids in _token_stream(iter_texts(source), tokenizer, separator):
                starts.append(stream)
                stream += len(ids)
                cut = packer.add(ids)
                if max_contexts is not None:
                    cut = cut[: max_contexts - len(offsets)]
                if cut:
                    rows = np.asarray([lead + row for row, _, _ in cut], dtype=np.int32)
                    sink.write(rows.tobytes())
                    digest.update(rows.tobytes())
                    offsets += [offset for _, _, offset in cut]
                    counted_from += [len(lead) + first for _, first, _ in cut]
                    bar.update(len(cut))
                if max_contexts is not None and len(offsets) >= max_contexts:
                    break
        if not offsets:
            raise MonoscopeError(f"corpus {source!r} is shorter than one context of {context_size}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        bar.close()
    contexts, consumed = len(offsets), offsets[-1] + body
    np.save(partial / OFFSETS_FILE, np.asarray(offsets, dtype=np.int64))
    np.save(partial / COUNTED_FILE, np.asarray(counted_from, dtype=np.int16))
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
        "layout": "aligned",
        "max_left_context": max_left,
        "fingerprint": digest.hexdigest()[:16],
    }
    (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return TokenStore.open(out)
