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
    packed = pack(World(4), 50, tokenizer, context_size=32)
    packed.save(tmp_path / "tokens.npz")
    again = type(packed).load(tmp_path / "tokens.npz")
    assert (again.ids == packed.ids).all() and (again.concepts_at == packed.concepts_at).all()
