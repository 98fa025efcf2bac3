"""Ingest: every supported corpus format becomes the same token store; bad files fail plainly."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.core.errors import MonoscopeError
from app.pipeline.config import IngestConfig
from app.pipeline.ingest import IngestJob, TokenStore
from tests.helpers import CORPUS

DOCS = CORPUS[:25]


@pytest.fixture(scope="module")
def tokenizer(gpt2):
    return gpt2.tokenizer


def _expected_stream(tokenizer) -> list[int]:
    stream = []
    for doc in DOCS:
        stream += [tokenizer.eos_token_id, *tokenizer(doc, add_special_tokens=False)["input_ids"]]
    return stream


def _write(kind: str, folder):
    if kind == "jsonl":
        path = folder / "corpus.jsonl"
        path.write_text(
            "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS))
        )
    elif kind == "parquet":
        path = folder / "corpus.parquet"
        pq.write_table(pa.table({"text": DOCS, "id": list(range(len(DOCS)))}), path)
    elif kind == "hf-dataset":
        import datasets

        path = folder / "dataset"
        datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "hf-dataset"])
def test_formats_pack_the_same_aligned_contexts_with_document_starts(tokenizer, tmp_path, kind):
    store = IngestJob(
        IngestConfig(
            str(_write(kind, tmp_path)), tmp_path / "store", context_size=16, progress=False
        ),
        tokenizer,
    ).run()
    stream = _expected_stream(tokenizer)
    body = 15
    assert (store.ids[:, 0] == tokenizer.bos_token_id).all()
    starts = store.document_starts
    assert all(stream[s] == tokenizer.eos_token_id for s in starts)
    counted = []
    for row, offset, first in zip(store.ids, store.offsets, store.counted_from, strict=True):
        assert np.array_equal(row[1:], stream[offset : offset + body])
        # a context opens at a document's first token, or re-reads the cut one as left context
        assert (first == 1 and offset - 1 in set(starts)) or first > 1
        counted += range(offset + first - 1, offset + body)
    assert counted == sorted(set(counted))  # no token counted twice
    assert len(counted) >= 0.6 * len(stream)
    assert store.counted_mask(0, 2).shape == (2, 16) and not store.counted_mask(0, 2)[:, 0].any()
    # tokens map back to their document
    second = int(starts[1])
    context = next(i for i, o in enumerate(store.offsets) if o == second + 1)
    assert store.document_at(context, 1) == 1 and store.document_at(0, 0) == 0
    reopened = TokenStore.open(tmp_path / "store")
    assert reopened.fingerprint == store.fingerprint and reopened.meta["documents"] == len(starts)
    assert np.array_equal(reopened.offsets, store.offsets)


def test_token_cap_and_whole_contexts(tokenizer, tmp_path):
    path = _write("jsonl", tmp_path)
    store = IngestJob(
        IngestConfig(str(path), tmp_path / "s", context_size=16, max_tokens=100, progress=False),
        tokenizer,
    ).run()
    assert store.ids.shape == (7, 16)  # ceil(100 / 16) whole contexts


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corpus.txt", b"\xff\xfe\x00binary\x89PNG", "not UTF-8 text"),
        ("corpus.jsonl", b'{"title": "no text"}\n', "text field"),
        ("corpus.bin", b"hello", "expected .txt"),
        ("short.txt", b"hi", "shorter than one context"),
        ("corpus.parquet", b"not parquet at all", "cannot read"),
    ],
)
def test_bad_corpora_are_one_clear_error_and_leave_nothing(
    tokenizer, tmp_path, name, content, message
):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MonoscopeError, match=message):
        IngestJob(
            IngestConfig(str(tmp_path / name), tmp_path / "store", context_size=16, progress=False),
            tokenizer,
        ).run()
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / "store.partial").exists()


def test_a_missing_corpus_says_what_is_accepted(tokenizer, tmp_path):
    with pytest.raises(MonoscopeError, match="not found"):
        IngestJob(
            IngestConfig(
                str(tmp_path / "nope.txt"), tmp_path / "store", context_size=16, progress=False
            ),
            tokenizer,
        ).run()
