import torch
from transformers import PreTrainedTokenizerFast

from app.core.generation import TextStream, sample_next


def test_inverse_cdf_sampling_is_a_function_of_the_uniform():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    picks = [sample_next(logits, torch.tensor([u, u]), 1.0, 1.0).tolist() for u in (0.1, 0.6, 0.95)]
    assert picks == [[0, 0], [1, 1], [2, 2]]


def test_top_p_sampling_is_also_a_function_of_the_uniform():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    picks = [sample_next(logits, torch.tensor([u]), 1.0, 0.9).item() for u in (0.1, 0.6, 0.95)]
    assert picks == [1, 2, 0]


def test_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert sample_next(logits, torch.tensor([0.99]), 1.0, top_p=0.6).item() == 1  # 0.2 cut off
    assert sample_next(logits, torch.tensor([0.99]), 0.0, 1.0).item() == 0


def _sorted_nucleus_pick(logits, uniforms, top_p):
    """Top-p sampling as its definition reads: sort the whole vocabulary, keep the likeliest
    tokens until top_p of the mass, draw by inverse CDF over them."""
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    probs = probs * (probs.cumsum(dim=-1) - probs < top_p)
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:]).clamp(max=cdf.shape[-1] - 1)
    return order.gather(-1, picked).squeeze(-1)


def test_top_p_draws_the_tokens_a_full_sort_would_whether_the_nucleus_is_small_or_wide():
    g = torch.Generator().manual_seed(0)
    peaked = torch.randn(8, 8192, generator=g) * 6  # a nucleus of a few tokens
    flat = torch.randn(8, 8192, generator=g) * 0.1  # nearly all 8192: past every top-k step
    mixed = torch.cat([peaked[:4], flat[:4]])  # one wide row makes the whole batch look further
    for logits in (peaked, flat, mixed):
        for top_p in (0.5, 0.9, 0.99):
            uniforms = torch.rand(8, generator=g)
            assert torch.equal(
                sample_next(logits, uniforms, 1.0, top_p),
                _sorted_nucleus_pick(logits, uniforms, top_p),
            )


def test_sampling_frequencies_follow_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20000, 3)
    counts = torch.bincount(sample_next(logits, torch.rand(20000), 1.0, 1.0), minlength=3) / 20000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.02, rtol=0)


def _char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {b: i for i, b in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_text_stream_holds_back_partial_characters_and_stop_prefixes():
    tok = _char_tokenizer()
    ids = tok("hé\nUser: no")["input_ids"]
    stream = TextStream(tok, ["\nUser:"])
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == "hé" and stream.stopped
    assert pieces[1] == "" and pieces[2] == "é"  # é is two bytes: emitted once whole
    held = TextStream(tok, ["\nUser:"])
    assert "".join(held.push(i) for i in tok("ok\nUs")["input_ids"]) == "ok"
    assert held.flush() == "\nUs"
