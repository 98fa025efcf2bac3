"""The reference for `python -m bench.harvest --sae-dashboard`: SAEDashboard's feature data for an
SAE over the same tokens as Monoscope's harvest, timed.

    python sae_dashboard_harvest.py MODEL_DIR SAE_DIR TOKENS.npy OUT.json [FEATURES]

Runs in its own environment (sae-dashboard pins transformers<4.57 and transformer-lens<3, which
the project does not; bench.harvest builds and caches it), so it imports nothing of Monoscope:
the Hugging Face GPT-2 directory becomes a HookedTransformer (hooked_gpt2.py) and SAELens loads
the SAE from its directory. FEATURES (default: all) limits the features shown, for a quick look;
OUT.json gets the seconds SaeVisRunner.run took and what it ran on.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hooked_gpt2 import hooked_config, rebuilt_tokenizer
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_lens import SAE
from transformer_lens import HookedTransformer
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dir, sae_dir, tokens_file, out = sys.argv[1:5]
    torch.set_grad_enabled(False)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    cfg = hooked_config(hf)
    tokenizer = rebuilt_tokenizer(model_dir, Path(out).with_suffix(".tokenizer"))
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    missing, unexpected = model.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    assert not unexpected and all(k.endswith((".IGNORE", ".mask", "b_U")) for k in missing), missing
    sae = SAE.load_from_disk(sae_dir, device="cpu")
    # SaeVisRunner first folds decoder norms into the encoder, which SAELens refuses for a TopK
    # SAE (it changes which k win). Left unfolded, SAEDashboard reads the SAE's own activations,
    # as Monoscope's harvest does.
    sae.fold_W_dec_norm = lambda: None
    tokens = torch.from_numpy(np.load(tokens_file).astype(np.int64))
    n_features = int(sys.argv[5]) if len(sys.argv) > 5 else sae.cfg.d_sae
    config = SaeVisConfig(
        hook_point=sae.cfg.metadata.hook_name,
        features=list(range(n_features)),
        minibatch_size_features=64,
        minibatch_size_tokens=256,
        device="cpu",
        dtype="float32",
        verbose=False,
    )
    start = time.perf_counter()
    SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
    seconds = time.perf_counter() - start
    Path(out).write_text(
        json.dumps({"seconds": seconds, "tokens": tokens.numel(), "features": n_features})
    )


if __name__ == "__main__":
    main()
