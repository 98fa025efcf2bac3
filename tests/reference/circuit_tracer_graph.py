"""The reference: circuit-tracer's attribution graph of a GPT-2 checkpoint through a per-layer
transcoder set, its tensors saved for Monoscope's parity test to compare.

    python circuit_tracer_graph.py MODEL_DIR SET_DIR TOKEN_IDS OUT.pt [OPTIONS]

OPTIONS (JSON), when given: "tokens": [ids] for chosen output tokens, or "difference": [a, b]
for the one custom target logit(a) - logit(b) (a CustomTarget along W_U[a] - W_U[b]);
"max_feature_nodes": N to cap the feature nodes.

Runs in its own environment (circuit-tracer pins transformers<=4.57.3 and huggingface-hub<1.0,
which the project does not; tests/integration/test_graph_parity.py builds and caches it), so it
imports nothing of Monoscope: the model is a Hugging Face GPT-2 directory, converted to
TransformerLens as circuit-tracer's TransformerLens backend needs it (no weight processing), and
the set's layer files are read by circuit-tracer's own loader with TransformerLens's hook names,
each re-expressed on the hook TransformerLens has (_on_normalized).
"""

import json
import sys
import time
from pathlib import Path

import torch
import yaml
from circuit_tracer import attribute
from circuit_tracer.attribution.targets import CustomTarget
from circuit_tracer.replacement_model.replacement_model_transformerlens import (
    TransformerLensReplacementModel,
)
from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
from hooked_gpt2 import hooked_config, rebuilt_tokenizer
from safetensors.torch import load_file, save_file
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import AutoModelForCausalLM


def _on_normalized(file: Path, ln_2, out: Path, layer: int) -> str:
    """The transcoder re-expressed on TransformerLens's ln2.hook_normalized, which is the MLP's
    input before the norm's gain w and bias b (the MLP itself reads n * w + b). Exact:
    (n w + b) W_enc + b_enc = n (w W_enc) + (b W_enc + b_enc), and likewise for W_skip, whose
    constant part joins b_dec."""
    tensors = load_file(file)
    w, b = ln_2.weight.detach().float(), ln_2.bias.detach().float()
    W_enc = tensors["W_enc"]  # (d_sae, d_model), as F.linear takes it
    tensors["b_enc"] = tensors["b_enc"] + W_enc @ b
    tensors["W_enc"] = W_enc * w[None, :]
    if "W_skip" in tensors:
        tensors["b_dec"] = tensors["b_dec"] + tensors["W_skip"] @ b
        tensors["W_skip"] = tensors["W_skip"] * w[None, :]
    converted = out.with_name(f"{out.stem}.layer_{layer}.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, converted)
    return str(converted)


def _targets(model, spec: dict):
    if "tokens" in spec:
        return torch.tensor(spec["tokens"])
    if "difference" not in spec:
        return None  # the most probable tokens
    a, b = spec["difference"]
    W_U = model.unembed.W_U  # (d_model, vocab)
    return [CustomTarget("difference", 1.0, (W_U[:, a] - W_U[:, b]).detach())]


def main() -> None:
    model_dir, set_dir, token_ids, out = sys.argv[1:5]
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    hf = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    cfg = hooked_config(hf)
    config = yaml.safe_load((Path(set_dir) / "config.yaml").read_text())
    paths = {
        n: _on_normalized(Path(set_dir) / name, hf.transformer.h[n].ln_2, Path(out), n)
        for n, name in enumerate(config["transcoders"])
    }
    transcoders = load_transcoder_set(
        paths,
        scan=config.get("scan", "monoscope"),
        feature_input_hook="ln2.hook_normalized",
        feature_output_hook="hook_mlp_out",
        device=torch.device("cpu"),
        dtype=torch.float32,
        lazy_encoder=False,
        lazy_decoder=False,
    )
    tokenizer = rebuilt_tokenizer(model_dir, Path(out).with_suffix(".tokenizer"))
    # from_config, with the weights loaded before the MLPs and unembedding are wrapped.
    model = TransformerLensReplacementModel(cfg, tokenizer=tokenizer)
    missing, unexpected = model.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    # b_U: GPT-2's LM head has no bias, and TransformerLens starts it at zero.
    assert not unexpected and all(k.endswith((".IGNORE", ".mask", "b_U")) for k in missing), missing
    model._configure_replacement_model(transcoders)
    ids = torch.tensor(json.loads(token_ids))
    start = time.perf_counter()
    graph = attribute(
        ids,
        model,
        attribution_targets=_targets(model, options),
        max_feature_nodes=options.get("max_feature_nodes"),
        batch_size=64,
        max_n_logits=10,
        desired_logit_prob=0.95,
    )
    seconds = time.perf_counter() - start
    torch.save(
        {
            "adjacency": graph.adjacency_matrix,
            "active_features": graph.active_features,
            "selected_features": graph.selected_features,
            "activation_values": graph.activation_values,
            "logit_ids": graph.logit_token_ids,
            "logit_probabilities": graph.logit_probabilities,
            "input_tokens": graph.input_tokens,
            "seconds": seconds,  # attribute() alone: what bench/graph.py compares
        },
        out,
    )


if __name__ == "__main__":
    main()
