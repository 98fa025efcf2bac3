"""Readers for SAELens, Gemma Scope, EleutherAI sparsify and circuit-tracer files; writers for
SAELens and circuit-tracer transcoder sets.

Transcoders come in each family's own spelling: SAELens architectures `transcoder`,
`skip_transcoder`, `jumprelu_transcoder` and `jumprelu_skip_transcoder` (`d_out`, and
`hook_name_out` in the metadata); Gemma Scope `params.npz` under a `...-transcoders` repository;
sparsify `transcode` / `skip_connection`; circuit-tracer sets (a `config.yaml` listing one
safetensors file per layer, with its input and output hooks).

Every problem with a file is one SaeFormatError naming the file and what is wrong with it.
"""

import json
import re
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.core.errors import MonoscopeError, SaeFormatError, SiteError
from app.core.sae.constants import (
    CIRCUIT_TRACER_CFG,
    GEMMA_SCOPE_PARAMS,
    HF_PREFIX,
    SAELENS_CFG,
    SAELENS_FORMAT_VERSION,
    SAELENS_WEIGHTS,
    SPARSIFY_CFG,
    SPARSIFY_WEIGHTS,
)
from app.core.sae.module import (
    ARCHITECTURES,
    NORMALIZATIONS,
    Architecture,
    Normalization,
    Sae,
    SaeConfig,
)
from app.core.sites import Site, parse_site

# Keys each architecture needs beyond W_enc, W_dec and b_dec.
_EXTRA_KEYS = {
    "standard": ("b_enc",),
    "topk": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "b_mag", "r_mag"),
}
_GEMMA_SCOPE_SITES = {"res": "resid_post", "mlp": "mlp_out", "transcoders": "mlp_in"}
# SAELens transcoder architectures: (the encoder they share with an SAE, has a skip connection).
_SAELENS_TRANSCODERS = {
    "transcoder": ("standard", False),
    "skip_transcoder": ("standard", True),
    "jumprelu_transcoder": ("jumprelu", False),
    "jumprelu_skip_transcoder": ("jumprelu", True),
}
# Metadata keys that SaeConfig holds itself or that only mark the file format.
_CONFIG_OWN_KEYS = ("hook_name", "model_name", "sae_lens_version")


def load_sae(path: str | Path, hook_name: str | None = None) -> Sae:
    """Read an SAE or transcoder from a SAELens directory, Gemma Scope params.npz, sparsify
    directory, or one layer's file of a circuit-tracer set.

    `path` may be `hf://owner/repo/sub/folder` to fetch that folder from the Hugging Face hub.
    `hook_name` overrides the site the file names (and supplies it where the file names none).
    """
    local = _fetch_from_hub(str(path)) if str(path).startswith(HF_PREFIX) else Path(path)
    if not local.exists():
        raise SaeFormatError(f"{local}: no such file or directory")
    if local.is_file() and (local.parent / CIRCUIT_TRACER_CFG).exists():
        sae = _read_circuit_tracer_layer(local)
    elif local.is_file() or (local / GEMMA_SCOPE_PARAMS).exists():
        params = local if local.is_file() else local / GEMMA_SCOPE_PARAMS
        sae = _read_gemma_scope(params, hook_name or _gemma_scope_site(str(path), params))
    elif (local / SAELENS_WEIGHTS).exists():
        sae = _read_saelens(local)
    elif (local / SPARSIFY_WEIGHTS).exists():
        sae = _read_sparsify(local)
    elif (local / CIRCUIT_TRACER_CFG).exists():
        layers = ", ".join(path.name for path in circuit_tracer_layers(local)[:3])
        raise SaeFormatError(
            f"{local}: a circuit-tracer set holds one transcoder per layer; pass one layer's "
            f"file ({layers}, ...)"
        )
    else:
        raise SaeFormatError(
            f"{local}: not an SAE; expected a SAELens directory "
            f"({SAELENS_CFG} + {SAELENS_WEIGHTS}),"
            f" a Gemma Scope {GEMMA_SCOPE_PARAMS}, a sparsify directory "
            f"({SPARSIFY_CFG} + {SPARSIFY_WEIGHTS}), or a circuit-tracer layer file"
        )
    for name, tensor in sae.state_dict().items():  # one NaN spreads to every page it touches
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SaeFormatError(f"{local}: {name} holds NaN or infinite values; refusing it")
    if hook_name is not None:
        sae.with_hook_name(hook_name)
    try:  # one name per site from here on: every consumer compares them
        canonical = parse_site(sae.hook_name).name
        out = parse_site(sae.hook_name_out).name if sae.is_transcoder else None
    except SiteError as exc:
        raise SaeFormatError(f"{local}: {exc}") from exc
    sae.cfg = replace(sae.cfg, hook_name=canonical, hook_name_out=out)
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
    weights: dict[str, torch.Tensor],
    architecture: str,
    d_in: int,
    d_sae: int,
    file: Path,
    d_out: int | None = None,
    skip: bool = False,
) -> dict[str, torch.Tensor]:
    """Exactly the tensors the architecture uses, in float32, with their shapes verified.
    A transcoder's decoder writes d_out wide; a skip transcoder also has W_skip (d_out, d_in)."""
    d_out = d_out or d_in
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out), "b_dec": (d_out,)}
    expected |= {key: (d_sae,) for key in _EXTRA_KEYS[architecture]}
    if skip:
        expected["W_skip"] = (d_out, d_in)
    checked = {}
    for key, shape in expected.items():
        if key not in weights:
            raise SaeFormatError(f"{file}: missing tensor {key!r} (a {architecture} SAE needs it)")
        if tuple(weights[key].shape) != shape:
            raise SaeFormatError(
                f"{file}: tensor {key!r} has shape {tuple(weights[key].shape)}, expected {shape} "
                f"(d_in={d_in}, d_sae={d_sae}, d_out={d_out})"
            )
        checked[key] = weights[key].to(torch.float32).contiguous()
    return checked


def _output_site(hook_name: str, hook_name_out: object, file: Path) -> str:
    """A transcoder's output site: the one its file names, else (the convention of every
    published MLP transcoder) the MLP output of the layer whose MLP input it reads."""
    if hook_name_out:
        return str(hook_name_out)
    try:
        site = parse_site(hook_name)
    except SiteError as exc:
        raise SaeFormatError(f"{file}: {exc}") from exc
    if site.kind != "mlp_in":
        raise SaeFormatError(
            f"{file}: a transcoder reading {hook_name} must name the site it writes (hook_name_out)"
        )
    return Site(site.layer, "mlp_out").name


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
    transcoder = _SAELENS_TRANSCODERS.get(architecture)
    if transcoder is not None:
        return _read_saelens_transcoder(raw, context, folder, str(hook_name), *transcoder)
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


def _read_saelens_transcoder(
    raw: dict, context: dict, folder: Path, hook_name: str, architecture: str, skip: bool
) -> Sae:
    cfg_file, weights_file = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    if raw.get("normalize_activations", "none") not in ("none", None, False):
        raise SaeFormatError(
            f"{cfg_file}: transcoders with input normalisation "
            f"({raw['normalize_activations']!r}) are not supported"
        )
    d_in, d_sae = _positive_int(raw, "d_in", cfg_file), _positive_int(raw, "d_sae", cfg_file)
    d_out = _positive_int(raw, "d_out", cfg_file) if "d_out" in raw else d_in
    weights = _read_safetensors(weights_file)
    if "threshold" not in weights and "log_threshold" in weights:
        weights["threshold"] = weights["log_threshold"].exp()
    checked = _checked_weights(weights, architecture, d_in, d_sae, weights_file, d_out, skip)
    hook_name_out = _output_site(
        hook_name, context.get("hook_name_out") or raw.get("hook_name_out"), cfg_file
    )
    cfg = SaeConfig(
        architecture=cast(Architecture, architecture),
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        apply_b_dec_to_input=False,  # SAELens refuses it for transcoders
        model_name=context.get("model_name"),
        dtype=str(raw.get("dtype", "float32")).removeprefix("torch."),
        metadata={k: v for k, v in context.items() if k not in (*_CONFIG_OWN_KEYS, "hook_name_out")}
        if context is not raw
        else {},
        hook_name_out=hook_name_out,
        d_out=d_out,
    )
    return Sae(cfg, checked)


def _saelens_architecture(sae: Sae) -> str:
    if not sae.is_transcoder:
        return sae.architecture
    for name, (base, skip) in _SAELENS_TRANSCODERS.items():
        if (base, skip) == (sae.architecture, sae.has_skip):
            return name
    raise MonoscopeError(
        f"a {sae.architecture} transcoder has no SAELens equivalent; keep it in sparsify format"
    )


def _transformer_lens_name(hook_name: str) -> str:
    try:
        return parse_site(hook_name).transformer_lens_name
    except SiteError:
        return hook_name  # written as it came; load_sae names the problem when it is read


def save_saelens(sae: Sae, folder: Path) -> Path:
    """Write a SAELens v6 directory that `sae_lens.SAE.load_from_disk` reads."""
    cfg = sae.cfg
    if cfg.topk_grouping == "groupmax":
        raise MonoscopeError("a groupmax (sparsify) SAE has no SAELens equivalent; cannot save it")
    architecture = _saelens_architecture(sae)
    folder.mkdir(parents=True, exist_ok=True)
    body: dict[str, object] = {
        "architecture": architecture,
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
            "hook_name": _transformer_lens_name(cfg.hook_name),
        },
    }
    if cfg.architecture == "topk":
        body |= {"k": cfg.k, "rescale_acts_by_decoder_norm": cfg.rescale_acts_by_decoder_norm}
    if sae.is_transcoder:
        body["d_out"] = sae.d_out
        out = _transformer_lens_name(sae.hook_name_out)
        body["metadata"] |= {"hook_name_out": out}  # type: ignore[operator]
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
    kind = re.search(r"gemma-scope-[^/]*-(res|mlp|att|transcoders)\b", text)
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
    d_out = weights["W_dec"].shape[-1] if "W_dec" in weights else d_in
    transcoder = _kind_of(hook_name) == "mlp_in"  # gemma-scope-*-transcoders
    checked = _checked_weights(weights, "jumprelu", d_in, d_sae, params, d_out)
    cfg = SaeConfig(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        apply_b_dec_to_input=False,  # Gemma Scope does not shift the input by b_dec
        metadata={"source_format": "gemma_scope"},
        hook_name_out=_output_site(hook_name, None, params) if transcoder else None,
        d_out=d_out if transcoder else None,
    )
    return Sae(cfg, checked)


def _kind_of(hook_name: str) -> str | None:
    try:
        return parse_site(hook_name).kind
    except SiteError:
        return None


# -- EleutherAI sparsify ----------------------------------------------------------------------
def _read_sparsify(folder: Path) -> Sae:
    cfg_file, weights_file = folder / SPARSIFY_CFG, folder / SPARSIFY_WEIGHTS
    raw = _read_json(cfg_file)
    transcode, skip = bool(raw.get("transcode")), bool(raw.get("skip_connection"))
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
    hook_name, hook_name_out = folder.name, None  # load_sae reports a name it cannot read
    with suppress(SiteError):
        site = parse_site(folder.name)
        hook_name = site.name
        if transcode:  # sparsify hooks the named module: its input in, its output out
            read = "mlp_in" if site.kind == "mlp_out" else "resid_pre"
            hook_name, hook_name_out = Site(site.layer, read).name, site.name  # type: ignore[arg-type]
    if "hook_name" in raw:  # what save_sparsify adds (sparsify ignores keys it does not know)
        hook_name, hook_name_out = str(raw["hook_name"]), raw.get("hook_name_out")
    if transcode and hook_name_out is None:
        raise SaeFormatError(
            f"{folder}: a sparsify transcoder's folder names the module it replaces "
            "(layers.{L}.mlp or layers.{L}); cannot tell its sites"
        )
    if skip and not transcode:
        raise SaeFormatError(f"{cfg_file}: a skip connection without transcode is not supported")

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
        "W_skip": weights.get("W_skip"),
    }
    checked = _checked_weights(
        {key: v for key, v in renamed.items() if v is not None},
        "topk",
        d_in,
        d_sae,
        weights_file,
        skip=skip,
    )
    cfg = SaeConfig(
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        k=k,
        topk_grouping=activation,
        apply_b_dec_to_input=not transcode,  # sparsify encodes x - b_dec, a transcoder x
        model_name=raw.get("model_name"),
        metadata={"source_format": "sparsify"} | (raw.get("metadata") or {}),
        hook_name_out=hook_name_out,
        d_out=d_in if transcode else None,
    )
    return Sae(cfg, checked)


def save_sparsify(sae: Sae, folder: Path) -> Path:
    """Write a sparsify directory that `SparseCoder.load_from_disk` reads: the format for TopK
    transcoders, which SAELens has no architecture for. Sparsify names the site by the folder
    (`layers.{L}.mlp`); so that any folder name works, cfg.json also carries Monoscope's
    `hook_name`, `hook_name_out`, `model_name` and `metadata`, which sparsify ignores."""
    cfg = sae.cfg
    if cfg.architecture != "topk" or cfg.rescale_acts_by_decoder_norm:
        raise MonoscopeError(f"sparsify stores TopK SAEs only; this one is {cfg.architecture}")
    if sae.is_transcoder and sae.d_out != sae.d_in:
        raise MonoscopeError("sparsify transcoders write as wide as they read")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "encoder.weight": sae.W_enc.T,
        "encoder.bias": sae.b_enc,
        "W_dec": sae.W_dec,
        "b_dec": sae.b_dec,
    }
    if sae.has_skip:
        tensors["W_skip"] = sae.W_skip
    weights = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(weights, folder / SPARSIFY_WEIGHTS)
    body = {
        "activation": cfg.topk_grouping,
        "expansion_factor": max(1, cfg.d_sae // cfg.d_in),
        "normalize_decoder": True,
        "num_latents": cfg.d_sae,
        "k": cfg.k,
        "multi_topk": False,
        "skip_connection": sae.has_skip,
        "transcode": sae.is_transcoder,
        "d_in": cfg.d_in,
        "hook_name": sae.hook_name,
        "hook_name_out": sae.hook_name_out if sae.is_transcoder else None,
        "model_name": cfg.model_name,
        "metadata": cfg.metadata,
    }
    (folder / SPARSIFY_CFG).write_text(json.dumps(body, indent=2))
    return folder


# -- circuit-tracer ---------------------------------------------------------------------------
def _circuit_tracer_set(config_file: Path) -> dict:
    try:
        config = yaml.safe_load(config_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SaeFormatError(f"{config_file}: not a readable YAML file ({exc})") from exc
    kind = config.get("model_kind", "transcoder_set") if isinstance(config, dict) else None
    if kind != "transcoder_set":
        raise SaeFormatError(
            f"{config_file}: only circuit-tracer per-layer sets (model_kind: transcoder_set) "
            "are supported"
        )
    for key in ("feature_input_hook", "feature_output_hook", "transcoders"):
        _field(config, key, config_file)
    if not isinstance(config["transcoders"], list):
        raise SaeFormatError(f"{config_file}: 'transcoders' must list one file per layer")
    return config


def _read_circuit_tracer_layer(file: Path) -> Sae:
    """One layer of a circuit-tracer set: `config.yaml` beside it lists the set's files in layer
    order and names the hooks every layer uses (relative: `mlp.hook_in`, `hook_mlp_out`)."""
    config_file = file.parent / CIRCUIT_TRACER_CFG
    config = _circuit_tracer_set(config_file)
    names = [Path(str(entry).split("?")[0]).name for entry in config["transcoders"]]
    if file.name not in names:
        raise SaeFormatError(f"{file}: not listed in {config_file}'s transcoders")
    layer = names.index(file.name)
    weights = _read_safetensors(file)
    for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if key not in weights:
            raise SaeFormatError(f"{file}: missing tensor {key!r}")
    if "log_thresholds" in weights or "threshold" in weights:
        raise SaeFormatError(f"{file}: only circuit-tracer's ReLU transcoders are supported")
    d_sae, d_in = weights["W_enc"].shape
    d_out = weights["b_dec"].shape[0]
    weights["W_enc"] = weights["W_enc"].T  # stored (d_sae, d_in) for F.linear
    hook_name = f"blocks.{layer}.{config['feature_input_hook']}"
    hook_name_out = f"blocks.{layer}.{config['feature_output_hook']}"
    if str(config["feature_output_hook"]) == "mlp.hook_out":  # nnsight's name for the same
        hook_name_out = f"blocks.{layer}.hook_mlp_out"
    skip = "W_skip" in weights
    checked = _checked_weights(weights, "standard", d_in, d_sae, file, d_out, skip)
    for name in (hook_name, hook_name_out):
        try:
            parse_site(name)
        except SiteError as exc:
            raise SaeFormatError(f"{config_file}: {exc}") from exc
    cfg = SaeConfig(
        architecture="standard",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=parse_site(hook_name).name,
        apply_b_dec_to_input=False,
        model_name=config.get("model_name"),
        metadata={"source_format": "circuit_tracer", "layer": layer},
        hook_name_out=parse_site(hook_name_out).name,
        d_out=d_out,
    )
    return Sae(cfg, checked)


def circuit_tracer_layers(folder: Path) -> list[Path]:
    """The per-layer files of a circuit-tracer set, in layer order."""
    config = _circuit_tracer_set(folder / CIRCUIT_TRACER_CFG)
    return [folder / Path(str(entry).split("?")[0]).name for entry in config["transcoders"]]


def load_transcoder_set(folder: str | Path) -> list[Sae]:
    """One transcoder per layer, layer 0 first: a circuit-tracer set (config.yaml), or a folder
    of per-layer transcoders in any readable format named `layer_{L}` (what
    `monoscope build-demo` ships)."""
    return [load_sae(path) for path in transcoder_set_paths(folder)]


def transcoder_set_paths(folder: str | Path) -> list[Path]:
    """Where each layer's transcoder of a set lies, layer 0 first (see load_transcoder_set)."""
    folder = Path(folder)
    if (folder / CIRCUIT_TRACER_CFG).exists():
        return list(circuit_tracer_layers(folder))
    layers = sorted(
        (int(m.group(1)), path)
        for path in folder.glob("layer_*")
        if (m := re.fullmatch(r"layer_(\d+)", path.name))
    )
    if not layers:
        raise SaeFormatError(
            f"{folder}: not a transcoder set; expected a circuit-tracer config.yaml or "
            "per-layer folders layer_0, layer_1, ..."
        )
    if [layer for layer, _ in layers] != list(range(len(layers))):
        raise SaeFormatError(f"{folder}: layer folders must run 0..N-1 without gaps")
    return [path for _, path in layers]


def save_circuit_tracer_set(transcoders: list[Sae], folder: Path, model_name: str) -> Path:
    """Write per-layer ReLU transcoders (one per layer, layer 0 first) as the set that
    circuit-tracer's `load_transcoder_set` reads: config.yaml plus layer_{L}.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for layer, sae in enumerate(transcoders):
        if not sae.is_transcoder or sae.architecture != "standard":
            raise MonoscopeError("circuit-tracer sets hold ReLU transcoders only")
        sites = (parse_site(sae.hook_name), parse_site(sae.hook_name_out))
        if sites != (Site(layer, "mlp_in"), Site(layer, "mlp_out")):
            raise MonoscopeError(
                f"transcoder {layer} reads {sae.hook_name} and writes {sae.hook_name_out}; a set "
                f"needs blocks.{layer}.hook_mlp_in -> blocks.{layer}.hook_mlp_out"
            )
        tensors = {"W_enc": sae.W_enc.T, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
        if sae.has_skip:
            tensors["W_skip"] = sae.W_skip
        name = f"layer_{layer}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, folder / name)
        files.append(name)
    config = {
        "model_name": model_name,
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
        "scan": folder.name,
        "transcoders": files,
    }
    (folder / CIRCUIT_TRACER_CFG).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder
