"""File and key names of the SAE formats Monoscope reads and writes."""

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
GEMMA_SCOPE_PARAMS = "params.npz"
SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
CIRCUIT_TRACER_CFG = "config.yaml"  # a per-layer transcoder set: its hooks and layer files
HF_PREFIX = "hf://"

# The sae_lens version whose config layout we write; readers key on it to choose v6 parsing.
SAELENS_FORMAT_VERSION = "6.0.0"
