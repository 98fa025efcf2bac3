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


class AlignedPacker:
    """Cuts a stream of documents into contexts that open where a document opens.

    A packed stream cut every `body` tokens starts most contexts mid-document, and the token
    after BOS there is an outlier that fills the top examples (26 of the flagship feature's 32 on
    the first demo world). Here, when a cut falls inside a document, the next context goes back
    to that document's first token and reads it again as left context, or, when more than
    `max_left` tokens of it came before the cut, goes back `max_left` tokens. Left context is
    shown to the model but not counted, so nothing is counted twice; the price is the re-read
    tokens.

        packer = AlignedPacker(body=127, max_left=63)
        for ids in documents:             # each led by its separator, as in a packed stream
            for row, counted_from, offset in packer.add(ids):
                ...  # row: `body` token ids; row[counted_from:] are new; row[0] sits at
                     # stream position `offset`
    """

    def __init__(self, body: int, max_left: int, separated: bool = True):
        if not 0 <= max_left < body:
            raise ValueError("the left context must be shorter than a context")
        self.body, self.max_left, self.separated = body, max_left, separated
        self.buffer: list[int] = []
        self.base = 0  # stream position of buffer[0]
        self.firsts: list[int] = []  # stream positions of documents' first tokens, ascending
        self.cursor: int | None = None  # stream position where the next context starts
        self.counted = 0  # every stream token before this position is in a context already

    def add(self, ids: list[int]) -> list[tuple[list[int], int, int]]:
        """Take one document (led by its separator when the stream is separated) and return the
        contexts it completes. A context is cut only once the token after it is known, so a cut
        on a separator is seen as the clean document boundary it is."""
        start = self.base + len(self.buffer)
        self.buffer += ids
        self.firsts.append(start + 1 if self.separated else start)
        if self.cursor is None:
            self.cursor = self.firsts[0]  # the BOS stands in for the first separator
        out = []
        while self.cursor + self.body < self.base + len(self.buffer):
            at = self.cursor - self.base
            out.append((self.buffer[at : at + self.body], max(self.counted - self.cursor, 0),
                        self.cursor))  # fmt: skip
            end = self.counted = self.cursor + self.body
            if self.separated and end + 1 in self.firsts:
                self.cursor = end + 1  # the cut is on a separator
            else:
                document = max(f for f in self.firsts if f <= end)
                self.cursor = document if end - document <= self.max_left else end - self.max_left
            current = max(f for f in self.firsts if f <= self.cursor)
            self.firsts = [f for f in self.firsts if f >= current]
            self.buffer = self.buffer[self.cursor - self.base :]
            self.base = self.cursor
        return out
