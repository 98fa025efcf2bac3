"""SAEs: the architecture module and the file formats it is read from and written to.

sae = load_sae("path/to/sae")       # SAELens dir, Gemma Scope params.npz, sparsify dir
sae = load_sae("hf://google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")
f = sae.encode(x); x_hat = sae.decode(f)
save_saelens(sae, Path("out"))       # SAELens format, loads in sae_lens
"""

from app.core.sae.formats import load_sae, save_saelens
from app.core.sae.module import NormState, Sae, SaeConfig

__all__ = ["NormState", "Sae", "SaeConfig", "load_sae", "save_saelens"]
