"""Demo-world text as model inputs: the tokenizer, packed contexts, and per-token ground truth.

    tokenizer = train_tokenizer(World(0).documents(20_000), "app/demo/model")
    tokens = pack(World(1), 5_000, tokenizer, context_size=128)
    tokens.ids            # (n_contexts, context_size) int32, each context opens with BOS
    tokens.concepts_at    # (n_pairs, 2) int32: (flat token position, concept id)
    tokens.document_of    # (n_contexts * context_size,) which document each counted token is in

Documents are packed end to end, each preceded by `<|endoftext|>` (BOS and EOS at once, as in
GPT-2), and every context starts with BOS. A token carries a concept when its characters overlap a
span that expresses it.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from app.core.packing import AlignedPacker
from app.demo.world import Document, World

BOS = "<|endoftext|>"


def train_tokenizer(
    documents: Iterable[Document], folder: Path, vocab_size: int = 4096, max_length: int = 256
) -> PreTrainedTokenizerFast:
    """Byte-level BPE saved so that `AutoTokenizer.from_pretrained(folder)` loads it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((doc.text for doc in documents), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        pad_token=BOS,
        model_max_length=max_length,
    )
    fast.save_pretrained(folder)
    return fast


@dataclass(frozen=True)
class PackedTokens:
    ids: np.ndarray  # (n_contexts, context_size) int32
    concepts_at: np.ndarray  # (n_pairs, 2) int32: flat position in ids, concept id
    spans_of: np.ndarray  # (n_pairs,) int32: which span occurrence each pair belongs to
    document_of: np.ndarray  # (n_contexts * context_size,) int32: document index, -1 uncounted
    topics: tuple[tuple[str, ...], ...]  # per document index: its topic subjects
    personas: tuple[str, ...]  # per document index: the assistant persona, "" for none

    def concept_mask(self, concept_id: int) -> np.ndarray:
        """(n_contexts * context_size,) bool: where the concept is present."""
        mask = np.zeros(self.ids.size, dtype=bool)
        mask[self.concepts_at[self.concepts_at[:, 1] == concept_id, 0]] = True
        return mask

    @property
    def counted(self) -> np.ndarray:
        """(n_contexts * context_size,) bool: tokens that statistics count (not BOS, separators
        or left context re-read from a document's start)."""
        return self.document_of >= 0

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            ids=self.ids,
            concepts_at=self.concepts_at,
            spans_of=self.spans_of,
            document_of=self.document_of,
            topics=np.array(["|".join(t) for t in self.topics]),
            personas=np.array(self.personas),
        )

    @classmethod
    def load(cls, path: Path) -> "PackedTokens":
        data = np.load(path)
        topics = tuple(tuple(t.split("|")) if t else () for t in data["topics"].tolist())
        return cls(
            data["ids"],
            data["concepts_at"],
            data["spans_of"],
            data["document_of"],
            topics,
            tuple(data["personas"].tolist()),
        )


def _token_concepts(doc: Document, offsets: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(token index, concept id, span index in the document) for every token that overlaps a
    span of the document."""
    if not offsets or not doc.spans:
        return []
    starts = np.array([s for s, _ in offsets])
    ends = np.array([e for _, e in offsets])
    triples = []
    for span, (start, end, concept) in enumerate(doc.spans):
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(starts, end, side="left"))
        triples += [(i, concept, span) for i in range(first, last)]
    return triples


def pack(
    world: World,
    n_documents: int,
    tokenizer: PreTrainedTokenizerBase,
    context_size: int,
    start: int = 0,
    aligned: bool = False,
) -> PackedTokens:
    """Tokenise documents [start, start + n) and cut them into BOS-led contexts: packed end to
    end (for training: every token is new), or `aligned` as ingest cuts them (every context
    opens at a document's first token, a cut document is re-read as uncounted left context)."""
    bos = tokenizer.bos_token_id
    docs = list(world.documents(n_documents, start))
    encodings = tokenizer.backend_tokenizer.encode_batch(
        [doc.text for doc in docs], add_special_tokens=False
    )
    body = context_size - 1
    stream: list[int] = []
    stream_document: list[int] = []
    triples: list[tuple[int, int, int]] = []  # stream position, concept, global span
    rows: list[tuple[list[int], int, int]] = []  # body tokens, first counted, stream position
    packer = AlignedPacker(body, body // 2) if aligned else None
    spans_before = 0
    for index, (doc, enc) in enumerate(zip(docs, encodings, strict=True)):
        base = len(stream) + 1
        ids = [bos, *enc.ids]
        stream += ids
        stream_document += [-1, *[index] * len(enc.ids)]
        triples += [
            (base + i, c, spans_before + s) for i, c, s in _token_concepts(doc, enc.offsets)
        ]
        spans_before += len(doc.spans)
        if packer is not None:
            rows += packer.add(ids)
    if packer is None:
        rows = [
            (stream[i * body : (i + 1) * body], 0, i * body) for i in range(len(stream) // body)
        ]
    ids_out = np.full((len(rows), context_size), bos, dtype=np.int32)
    flat_of_stream = np.full(len(stream), -1, dtype=np.int64)
    for n, (row, counted_from, offset) in enumerate(rows):
        ids_out[n, 1:] = row
        flat_of_stream[offset + counted_from : offset + body] = (
            n * context_size + 1 + np.arange(counted_from, body)
        )
    document_of = np.full(ids_out.size, -1, dtype=np.int32)
    placed = flat_of_stream >= 0
    document_of[flat_of_stream[placed]] = np.asarray(stream_document)[placed]
    at = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    at = at[flat_of_stream[at[:, 0]] >= 0]
    concepts_at = np.stack([flat_of_stream[at[:, 0]], at[:, 1]], axis=1).astype(np.int32)
    return PackedTokens(
        ids_out,
        concepts_at,
        at[:, 2].astype(np.int32),
        document_of,
        tuple(doc.topics for doc in docs),
        tuple(doc.persona for doc in docs),
    )


def ordinary_token_ids(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Every token id but the special ones: what random spans are drawn from, for training the
    model to copy and for measuring whether it does."""
    special = set(tokenizer.all_special_ids)
    return np.array([i for i in range(len(tokenizer)) if i not in special])
