"""Packing world text into contexts, and per-token ground truth that survives tokenisation."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from app.demo.catalogue import CATALOGUE
from app.demo.corpus import pack, train_tokenizer
from app.demo.world import World


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-tokenizer")
    train_tokenizer(World(0).documents(800), folder, vocab_size=1500)
    return AutoTokenizer.from_pretrained(folder)


def test_tokenizer_loads_through_auto_tokenizer_and_prepends_bos(tokenizer):
    ids = tokenizer("User: hello")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "User: hello"


def test_contexts_open_with_bos_and_concepts_land_on_their_tokens(tokenizer):
    packed = pack(World(3), 300, tokenizer, context_size=64)
    assert packed.ids.shape[1] == 64
    assert (packed.ids[:, 0] == tokenizer.bos_token_id).all()
    flat = packed.ids.reshape(-1)
    gg = CATALOGUE.by_key["places/golden_gate_bridge"].id
    where = np.flatnonzero(packed.concept_mask(gg))
    assert len(where) > 10
    words = {tokenizer.decode([int(flat[i])]).strip() for i in where}
    assert words <= {"Golden", "Gate", "Bridge", "bridge"}, words
    cat = CATALOGUE.by_key["animals/cat"].id
    for i in np.flatnonzero(packed.concept_mask(cat)):
        assert tokenizer.decode([int(flat[i])]).strip() in {"cat", "cats"}


def test_save_and_load_round_trip(tokenizer, tmp_path):
    packed = pack(World(4, version=2), 50, tokenizer, context_size=32, aligned=True)
    assert any(packed.topics) and any(packed.personas)
    packed.save(tmp_path / "tokens.npz")
    again = type(packed).load(tmp_path / "tokens.npz")
    for field in ("ids", "concepts_at", "spans_of", "document_of"):
        assert (getattr(again, field) == getattr(packed, field)).all()
    assert again.topics == packed.topics and again.personas == packed.personas


def test_aligned_contexts_open_at_a_document_and_count_every_token_once(tokenizer):
    world = World(3, version=2)
    aligned = pack(world, 200, tokenizer, context_size=64, aligned=True)
    flat, document_of = aligned.ids.reshape(-1), aligned.document_of
    docs = list(world.documents(200))
    seen = np.unique(document_of[document_of >= 0])
    assert len(seen) > 50
    for d in seen[:-1]:  # the last may be cut off with the tail
        expected = tokenizer(docs[d].text, add_special_tokens=False)["input_ids"]
        assert flat[document_of == d].tolist() == expected
        assert aligned.topics[d] == docs[d].topics and aligned.personas[d] == docs[d].persona
    firsts = aligned.ids.shape[1] * np.arange(len(aligned.ids)) + 1
    opened = document_of[firsts]
    for position, d in zip(firsts, opened, strict=True):
        if d >= 0:  # a counted first token is its document's first token
            assert position == np.flatnonzero(document_of == d)[0]
    assert (opened < 0).any()  # long documents go on after re-read left context
    assert (document_of[aligned.concepts_at[:, 0]] >= 0).all()
    spans = {(s, c) for s, c in zip(aligned.spans_of, aligned.concepts_at[:, 1], strict=True)}
    assert len({s for s, _ in spans}) == len(spans)  # a span is one concept's occurrence
