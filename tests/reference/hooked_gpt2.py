"""A Hugging Face GPT-2 directory as TransformerLens needs it, for the reference scripts that run
in environments of their own (circuit-tracer, SAEDashboard): they import nothing of Monoscope.

    cfg = hooked_config(hf)                       # HookedTransformerConfig of the checkpoint
    tokenizer = rebuilt_tokenizer(model_dir, out)  # loadable by transformers 4
"""

import json
from pathlib import Path

import torch
from transformer_lens import HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast


def hooked_config(hf) -> HookedTransformerConfig:
    """The checkpoint's own sizes; no weight processing (folded norms would change the sites)."""
    c = hf.config
    return HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_ctx=c.n_positions,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd,
        d_vocab=c.vocab_size,
        act_fn=c.activation_function,
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        device="cpu",
        dtype=torch.float32,
    )


def rebuilt_tokenizer(model_dir: str | Path, out_dir: Path):
    """The tokenizer, which only names tokens here (the ids come tokenized). transformers 4 cannot
    read a transformers 5 tokenizer_config, and TransformerLens reloads the tokenizer by its path:
    so it is rebuilt from tokenizer.json and saved in transformers 4's layout in `out_dir`."""
    special = json.loads((Path(model_dir) / "tokenizer_config.json").read_text())
    rebuilt = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(model_dir) / "tokenizer.json"),
        **{k: special[k] for k in ("bos_token", "eos_token", "pad_token") if special.get(k)},
    )
    rebuilt.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)
