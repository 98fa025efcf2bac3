import pytest
import torch

from app.core.errors import MonoscopeError
from app.core.inspect import inspect
from tests.helpers import random_sae


@pytest.fixture(scope="module")
def saes(gpt2, gpt2_sae):
    return {
        "res1": gpt2_sae,
        "mlp2": gpt2.attach(random_sae(hook_name="blocks.2.hook_mlp_out", architecture="topk")),
    }


def test_inspect_ranks_features_per_token_and_overall(gpt2, saes):
    text = "The Golden Gate Bridge is in San Francisco."
    result = inspect(gpt2, saes, text, top_k=5)
    ids = torch.tensor([result.token_ids])
    assert result.token_ids[0] == gpt2.tokenizer.bos_token_id and result.excluded_positions == [0]
    assert "".join(result.tokens[1:]) == text
    acts = gpt2.capture(ids, ["blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"])
    for name, site in (("res1", "blocks.1.hook_resid_post"), ("mlp2", "blocks.2.hook_mlp_out")):
        features = saes[name].encode(acts[site][0])
        found = result.saes[name]
        assert len(found.per_token) == len(result.token_ids)
        for position, hits in enumerate(found.per_token):
            expected = features[position].topk(5)
            assert [h.index for h in hits] == expected.indices[expected.values > 0].tolist()
        overall = features[1:].amax(0).topk(5)  # BOS excluded
        assert [h.index for h in found.overall] == overall.indices.tolist()
        assert found.overall[0].value == pytest.approx(float(overall.values[0]), rel=1e-5)


def test_sum_reduction_and_bos_inclusion(gpt2, saes):
    summed = inspect(gpt2, saes, "Le chat", top_k=3, reduce="sum", exclude_bos=False)
    acts = summed.saes["res1"].activations
    assert summed.excluded_positions == []
    assert summed.saes["res1"].overall[0].value == pytest.approx(float(acts.sum(0).max()), rel=1e-5)


def test_inspect_rejects_bad_requests(gpt2, saes):
    with pytest.raises(MonoscopeError, match="unknown reduction"):
        inspect(gpt2, saes, "hi", reduce="mean")
    with pytest.raises(MonoscopeError, match="limit is 4"):
        inspect(gpt2, saes, "a b c d e f g", max_tokens=4)
    with pytest.raises(MonoscopeError, match="no SAE"):
        inspect(gpt2, {}, "hi")
