"""Aligned contexts: each opens at a document's first token or re-reads the cut document as left
context, and every token of the stream is counted exactly once."""

import random

import pytest

from app.core.packing import AlignedPacker

SEP = 0


def _documents(seed: int, n: int = 300) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, 5, 9, 20, 40, 90]) for _ in range(n)]
    return [[SEP] + [1000 * (i + 1) + j for j in range(length)] for i, length in enumerate(lengths)]


@pytest.mark.parametrize(("seed", "body", "max_left"), [(0, 16, 8), (1, 31, 15), (2, 8, 3)])
def test_contexts_open_at_documents_and_count_each_token_once(seed, body, max_left):
    docs = _documents(seed)
    stream = [t for d in docs for t in d]
    firsts, position = set(), 0
    for d in docs:
        firsts.add(position + 1)
        position += len(d)
    packer = AlignedPacker(body, max_left)
    rows = [row for d in docs for row in packer.add(d)]
    assert len(rows) > 50
    counted: list[int] = []
    for row, counted_from, offset in rows:
        assert row == stream[offset : offset + body]
        if counted_from == 0:  # a fresh context: it opens with a document
            assert offset in firsts or stream[offset - 1] == SEP
        else:  # left context: the cut document from its start, or at most max_left back
            assert counted_from <= max_left
            document_start = max(f for f in firsts if f <= offset + counted_from - 1)
            assert offset == document_start or counted_from == max_left
        counted += range(offset + counted_from, offset + body)
    assert counted == sorted(set(counted))  # nothing counted twice, in stream order
    skipped = set(range(counted[0], counted[-1] + 1)) - set(counted)
    assert all(stream[p] == SEP for p in skipped)  # only separators a clean cut stepped over


def test_most_contexts_open_clean_on_short_documents():
    docs = [[SEP, *range(1, 1 + n)] for n in random.Random(3).choices(range(5, 40), k=500)]
    packer = AlignedPacker(127, 63)
    rows = [row for d in docs for row in packer.add(d)]
    assert len(rows) > 50
    assert all(row[0] == 1 for row, _, _ in rows)  # every context starts a document


def test_left_context_must_leave_room():
    with pytest.raises(ValueError, match="shorter than a context"):
        AlignedPacker(8, 8)
