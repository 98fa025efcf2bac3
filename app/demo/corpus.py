"""Demo-world text as model inputs: the tokenizer, packed contexts, and per-token ground truth.

    tokenizer = train_tokenizer(World(0).documents(20_000), "app/demo/model")
    tokens = pack(World(1), 5_000, tokenizer, context_size=128)
    tokens.ids            # (n_contexts, context_size) int32, each context opens with BOS
    tokens.concepts_at    # (n_pairs, 2) int32: (flat token position, concept id)

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

from app.core.packing import pack_stream
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

    def concept_mask(self, concept_id: int) -> np.ndarray:
        """(n_contexts * context_size,) bool: where the concept is present."""
        mask = np.zeros(self.ids.size, dtype=bool)
        mask[self.concepts_at[self.concepts_at[:, 1] == concept_id, 0]] = True
        return mask

    def save(self, path: Path) -> None:
        np.savez_compressed(path, ids=self.ids, concepts_at=self.concepts_at)

    @classmethod
    def load(cls, path: Path) -> "PackedTokens":
        data = np.load(path)
        return cls(data["ids"], data["concepts_at"])


def _token_concepts(doc: Document, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(token index, concept id) for every token that overlaps a span of the document."""
    if not offsets or not doc.spans:
        return []
    starts = np.array([s for s, _ in offsets])
    ends = np.array([e for _, e in offsets])
    pairs = []
    for start, end, concept in doc.spans:
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(starts, end, side="left"))
        pairs += [(i, concept) for i in range(first, last)]
    return pairs


def pack(
    world: World,
    n_documents: int,
    tokenizer: PreTrainedTokenizerBase,
    context_size: int,
    start: int = 0,
) -> PackedTokens:
    """Tokenise documents [start, start + n) and pack them into BOS-led contexts."""
    bos = tokenizer.bos_token_id
    docs = list(world.documents(n_documents, start))
    encodings = tokenizer.backend_tokenizer.encode_batch(
        [doc.text for doc in docs], add_special_tokens=False
    )
    stream: list[int] = []
    stream_concepts: list[tuple[int, int]] = []
    for doc, enc in zip(docs, encodings, strict=True):
        stream.append(bos)
        base = len(stream)
        stream += enc.ids
        stream_concepts += [(base + i, c) for i, c in _token_concepts(doc, enc.offsets)]
    ids = pack_stream(stream, context_size, bos, dtype=np.int32)
    n_contexts, body = len(ids), context_size - 1
    pairs = np.asarray(stream_concepts, dtype=np.int64).reshape(-1, 2)
    pairs = pairs[pairs[:, 0] < n_contexts * body]
    context, offset = np.divmod(pairs[:, 0], body)
    at = np.stack([context * context_size + offset + 1, pairs[:, 1]], axis=1)
    return PackedTokens(ids, at.astype(np.int32))
