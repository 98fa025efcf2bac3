"""Readers for SAELens, Gemma Scope and EleutherAI sparsify files; a writer for SAELens.

Every problem with a file is one SaeFormatError naming the file and what is wrong with it.
"""

import json
import re
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.core.errors import MonoscopeError, SaeFormatError, SiteError
from app.core.sae.constants import (
    GEMMA_SCOPE_PARAMS,
    HF_PREFIX,
    SAELENS_CFG,
    SAELENS_FORMAT_VERSION,
    SAELENS_WEIGHTS,
    SPARSIFY_CFG,
    SPARSIFY_WEIGHTS,
)
from app.core.sae.module import ARCHITECTURES, NORMALIZATIONS, Normalization, Sae, SaeConfig
from app.core.sites import parse_site

# Keys each architecture needs beyond W_enc, W_dec and b_dec.
_EXTRA_KEYS = {
    "standard": ("b_enc",),
    "topk": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "b_mag", "r_mag"),
}
_GEMMA_SCOPE_SITES = {"res": "resid_post", "mlp": "mlp_out"}
# Metadata keys that SaeConfig holds itself or that only mark the file format.
_CONFIG_OWN_KEYS = ("hook_name", "model_name", "sae_lens_version")


def load_sae(path: str | Path, hook_name: str | None = None) -> Sae:
    """Read an SAE from a SAELens directory, Gemma Scope params.npz or sparsify directory.

    `path` may be `hf://owner/repo/sub/folder` to fetch that folder from the Hugging Face hub.
    `hook_name` overrides the site the file names (and supplies it where the file names none).
    """
    local = _fetch_from_hub(str(path)) if str(path).startswith(HF_PREFIX) else Path(path)
    if not local.exists():
        raise SaeFormatError(f"{local}: no such file or directory")
    if local.is_file() or (local / GEMMA_SCOPE_PARAMS).exists():
        params = local if local.is_file() else local / GEMMA_SCOPE_PARAMS
        sae = _read_gemma_scope(params, hook_name or _gemma_scope_site(str(path), params))
    elif (local / SAELENS_WEIGHTS).exists():
        sae = _read_saelens(local)
    elif (local / SPARSIFY_WEIGHTS).exists():
        sae = _read_sparsify(local)
    else:
        raise SaeFormatError(
            f"{local}: not an SAE; expected a SAELens directory "
            f"({SAELENS_CFG} + {SAELENS_WEIGHTS}),"
            f" a Gemma Scope {GEMMA_SCOPE_PARAMS}, or a sparsify directory "
            f"({SPARSIFY_CFG} + {SPARSIFY_WEIGHTS})"
        )
    for name, tensor in sae.state_dict().items():  # one NaN spreads to every page it touches
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SaeFormatError(f"{local}: {name} holds NaN or infinite values; refusing it")
    if hook_name is not None:
        sae.with_hook_name(hook_name)
    try:
        parse_site(sae.hook_name)
    except SiteError as exc:
        raise SaeFormatError(f"{local}: {exc}") from exc
    return sae


def _fetch_from_hub(spec: str) -> Path:
    from huggingface_hub import snapshot_download

    parts = spec.removeprefix(HF_PREFIX).strip("/").split("/")
    if len(parts) < 2:
        raise SaeFormatError(f"{spec}: expected {HF_PREFIX}owner/repo[/folder]")
    if any(part in ("", ".", "..") for part in parts):
        # The folder is joined onto the local snapshot: '..' would read outside it.
        raise SaeFormatError(f"{spec}: empty, '.' and '..' parts are not allowed")
    repo_id, folder = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        root = snapshot_download(repo_id, allow_patterns=[f"{folder}/*"] if folder else None)
    except Exception as exc:  # the hub client raises many kinds; all mean "could not fetch"
        raise SaeFormatError(f"{spec}: cannot fetch from the Hugging Face hub ({exc})") from exc
    return Path(root) / folder


# -- shared checks ----------------------------------------------------------------------------
def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise SaeFormatError(f"{file}: missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SaeFormatError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SaeFormatError(f"{file}: expected a JSON object")
    return data


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        raise SaeFormatError(f"{file}: not a readable safetensors file ({exc})") from exc


def _field(cfg: dict, key: str, file: Path):
    if key not in cfg:
        raise SaeFormatError(f"{file}: missing field {key!r}")
    return cfg[key]


def _positive_int(cfg: dict, key: str, file: Path) -> int:
    value = _field(cfg, key, file)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SaeFormatError(f"{file}: field {key!r} must be a positive integer, got {value!r}")
    return value


def _checked_weights(
    weights: dict[str, torch.Tensor], architecture: str, d_in: int, d_sae: int, file: Path
) -> dict[str, torch.Tensor]:
    """Exactly the tensors the architecture uses, in float32, with their shapes verified."""
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    expected |= {key: (d_sae,) for key in _EXTRA_KEYS[architecture]}
    checked = {}
    for key, shape in expected.items():
        if key not in weights:
            raise SaeFormatError(f"{file}: missing tensor {key!r} (a {architecture} SAE needs it)")
        if tuple(weights[key].shape) != shape:
            raise SaeFormatError(
                f"{file}: tensor {key!r} has shape {tuple(weights[key].shape)}, expected {shape} "
                f"(d_in={d_in}, d_sae={d_sae})"
            )
        checked[key] = weights[key].to(torch.float32).contiguous()
    return checked


# -- SAELens ----------------------------------------------------------------------------------
def _read_saelens(folder: Path) -> Sae:
    cfg_file, weights_file = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    raw = _read_json(cfg_file)
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else None
    # v6 configs nest the training context under "metadata"; older ones are flat.
    context: dict = metadata if metadata is not None and "hook_name" in metadata else raw
    hook_name = context.get("hook_name") or context.get("hook_point")
    if not hook_name:
        raise SaeFormatError(f"{cfg_file}: missing field 'hook_name'")

    architecture = raw.get("architecture", "standard")
    activation = raw.get("activation_fn") or raw.get("activation_fn_str")
    kwargs = raw.get("activation_fn_kwargs") or {}
    k = raw.get("k")
    if activation == "topk" and kwargs.get("k") is not None:
        architecture, k = "topk", kwargs["k"]
    if architecture not in ARCHITECTURES:
        raise SaeFormatError(
            f"{cfg_file}: unknown architecture {architecture!r}; "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    if architecture == "topk" and (not isinstance(k, int) or k <= 0):
        raise SaeFormatError(f"{cfg_file}: a topk SAE needs a positive integer 'k', got {k!r}")

    normalization = raw.get("normalize_activations")
    if isinstance(normalization, bool):  # pre-6 configs stored a flag
        normalization = "expected_average_only_in" if normalization else "none"
    normalization = normalization or "none"
    if normalization not in NORMALIZATIONS:
        raise SaeFormatError(
            f"{cfg_file}: unsupported normalize_activations {normalization!r}; "
            f"supported: {', '.join(NORMALIZATIONS)}"
        )
    if raw.get("reshape_activations", "none") != "none" or str(hook_name).endswith("hook_z"):
        raise SaeFormatError(f"{cfg_file}: attention-head (hook_z) SAEs are not supported")

    d_in, d_sae = _positive_int(raw, "d_in", cfg_file), _positive_int(raw, "d_sae", cfg_file)
    weights = _read_safetensors(weights_file)
    if "threshold" not in weights and "log_threshold" in weights:
        weights["threshold"] = weights["log_threshold"].exp()
    checked = _checked_weights(weights, architecture, d_in, d_sae, weights_file)
    scaling = weights.get("scaling_factor", weights.get("finetuning_scaling_factor"))
    if scaling is not None and not torch.allclose(
        scaling.float(), torch.ones_like(scaling.float())
    ):
        # Older SAELens scaled feature activations before decoding; fold it into the decoder.
        checked["W_dec"] = checked["W_dec"] * scaling.float()[:, None]

    cfg = SaeConfig(
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        hook_name=str(hook_name),
        k=k if architecture == "topk" else None,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        normalize_activations=cast(Normalization, normalization),  # checked above
        rescale_acts_by_decoder_norm=bool(raw.get("rescale_acts_by_decoder_norm", False)),
        model_name=context.get("model_name"),
        dtype=str(raw.get("dtype", "float32")).removeprefix("torch."),
        metadata={key: v for key, v in context.items() if key not in _CONFIG_OWN_KEYS}
        if context is metadata
        else {},
    )
    return Sae(cfg, checked)


def save_saelens(sae: Sae, folder: Path) -> Path:
    """Write a SAELens v6 directory that `sae_lens.SAE.load_from_disk` reads."""
    cfg = sae.cfg
    if cfg.topk_grouping == "groupmax":
        raise MonoscopeError("a groupmax (sparsify) SAE has no SAELens equivalent; cannot save it")
    folder.mkdir(parents=True, exist_ok=True)
    body: dict[str, object] = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": "none",
        "metadata": {
            **cfg.metadata,
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
        },
    }
    if cfg.architecture == "topk":
        body |= {"k": cfg.k, "rescale_acts_by_decoder_norm": cfg.rescale_acts_by_decoder_norm}
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in sae.named_parameters()}
    save_file(tensors, folder / SAELENS_WEIGHTS)
    (folder / SAELENS_CFG).write_text(json.dumps(body, indent=2))
    return folder


# -- Gemma Scope ------------------------------------------------------------------------------
def _gemma_scope_site(spec: str, params: Path) -> str | None:
    """Infer blocks.{L}.hook_* from a Gemma Scope path such as
    gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz."""
    text = f"{spec}/{params.resolve()}"
    layer = re.search(r"layer_(\d+)", text)
    kind = re.search(r"gemma-scope-[^/]*-(res|mlp|att)\b", text)
    if layer is None or kind is None or kind.group(1) not in _GEMMA_SCOPE_SITES:
        return None
    return f"blocks.{layer.group(1)}.hook_{_GEMMA_SCOPE_SITES[kind.group(1)]}"


def _read_gemma_scope(params: Path, hook_name: str | None) -> Sae:
    if hook_name is None:
        raise SaeFormatError(
            f"{params}: cannot tell which site this Gemma Scope SAE reads; pass its hook name "
            "(e.g. blocks.12.hook_resid_post)"
        )
    try:
        with np.load(params) as data:
            weights = {key: torch.from_numpy(np.asarray(data[key])) for key in data.files}
    except (OSError, ValueError) as exc:
        raise SaeFormatError(f"{params}: not a readable .npz file ({exc})") from exc
    if "W_enc" not in weights or weights["W_enc"].ndim != 2:
        raise SaeFormatError(f"{params}: missing 2-D tensor 'W_enc'")
    d_in, d_sae = weights["W_enc"].shape
    checked = _checked_weights(weights, "jumprelu", d_in, d_sae, params)
    cfg = SaeConfig(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        apply_b_dec_to_input=False,  # Gemma Scope does not shift the input by b_dec
        metadata={"source_format": "gemma_scope"},
    )
    return Sae(cfg, checked)


# -- EleutherAI sparsify ----------------------------------------------------------------------
def _read_sparsify(folder: Path) -> Sae:
    cfg_file, weights_file = folder / SPARSIFY_CFG, folder / SPARSIFY_WEIGHTS
    raw = _read_json(cfg_file)
    if raw.get("transcode") or raw.get("skip_connection"):
        raise SaeFormatError(f"{cfg_file}: transcoders and skip connections are not supported")
    activation = raw.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise SaeFormatError(
            f"{cfg_file}: unknown activation {activation!r}; expected topk or groupmax"
        )
    d_in, k = _positive_int(raw, "d_in", cfg_file), _positive_int(raw, "k", cfg_file)
    d_sae = raw.get("num_latents") or d_in * _positive_int(raw, "expansion_factor", cfg_file)
    if activation == "groupmax" and d_sae % k:
        raise SaeFormatError(
            f"{cfg_file}: groupmax needs num_latents ({d_sae}) divisible by k ({k})"
        )
    try:
        hook_name = parse_site(folder.name).name
    except SiteError:
        hook_name = folder.name  # load_sae reports it unless the caller names the site

    weights = _read_safetensors(weights_file)
    for key in ("encoder.weight", "encoder.bias"):
        if key not in weights:
            raise SaeFormatError(f"{weights_file}: missing tensor {key!r}")
    W_dec = weights.get("W_dec")
    if W_dec is not None and W_dec.shape == (d_in, d_sae) and d_in != d_sae:
        W_dec = W_dec.T  # some exports store the decoder transposed
    renamed = {
        "W_enc": weights["encoder.weight"].T,
        "b_enc": weights["encoder.bias"],
        "b_dec": weights.get("b_dec"),
        "W_dec": W_dec,
    }
    checked = _checked_weights(
        {key: v for key, v in renamed.items() if v is not None}, "topk", d_in, d_sae, weights_file
    )
    cfg = SaeConfig(
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        k=k,
        topk_grouping=activation,
        apply_b_dec_to_input=True,  # sparsify encodes x - b_dec
        metadata={"source_format": "sparsify"},
    )
    return Sae(cfg, checked)
