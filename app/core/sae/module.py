"""Sparse autoencoders: one module for every architecture Monoscope reads.

    f = sae.encode(x)                      # (..., d_in) -> (..., d_sae)
    x_hat = sae.decode(f)                  # (..., d_sae) -> (..., d_in)
    x_hat = sae(x)                         # encode + decode, undoing any input normalisation

Encode follows each source's formula exactly (SAELens, sparsify, Gemma Scope; the parity tests
in tests/unit/test_sae_formats.py load the same files in those libraries):
    x' = normalise(x) - b_dec * apply_b_dec_to_input;   z = x' W_enc + b_enc
    standard: ReLU(z)      jumprelu: ReLU(z) * 1[z > threshold]
    topk: the k largest z (optionally scaled by |W_dec| first), ReLU'd, zero elsewhere
    groupmax (sparsify): the max of ReLU(z) in each of k equal groups
    gated: 1[x' W_enc + b_gate > 0] * ReLU(x' (W_enc * exp(r_mag)) + b_mag)

A transcoder is the same module reading one site and writing another (`hook_name_out`, width
d_out): it encodes what the MLP receives and decodes to what the MLP adds, never subtracting
b_dec (which lives in the output space) from its input; a skip transcoder adds x W_skip^T.
"""

from dataclasses import asdict, dataclass, field, replace
from typing import Literal, get_args

import torch
from torch import nn

from app.core.batch_invariance import rows_addmm

Architecture = Literal["standard", "topk", "jumprelu", "gated"]
Normalization = Literal["none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
_LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class SaeConfig:
    """Everything needed to rebuild an SAE's forward pass, plus where it was trained."""

    architecture: Architecture
    d_in: int
    d_sae: int
    hook_name: str
    k: int | None = None
    topk_grouping: Literal["topk", "groupmax"] = "topk"
    apply_b_dec_to_input: bool = True
    normalize_activations: Normalization = "none"
    rescale_acts_by_decoder_norm: bool = False
    model_name: str | None = None
    dtype: str = "float32"
    metadata: dict = field(default_factory=dict)
    # Transcoders only: the site the decoder writes and its width (None: the SAE's own site).
    hook_name_out: str | None = None
    d_out: int | None = None

    def __post_init__(self):
        if self.hook_name_out is not None and self.apply_b_dec_to_input:
            raise ValueError("a transcoder's b_dec is in its output space; it cannot shift input")
        if self.hook_name_out is not None and self.normalize_activations not in (
            "none",
            "expected_average_only_in",
        ):
            raise ValueError("a transcoder's input normalisation has no inverse at its output")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NormState:
    """Per-token statistics from input normalisation, needed to map back to model space."""

    scale: torch.Tensor  # (..., 1): model space = sae space * scale + shift
    shift: torch.Tensor | float = 0.0


def _affine(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x W + b for x of shape (..., d_in), in one fused call (on fixed row tiles while a shared
    batch decodes: app.core.batch_invariance)."""
    return rows_addmm(b, x, W)


class Sae(nn.Module):
    """An SAE whose encode/decode match its source implementation numerically."""

    # Registered from the weight file in __init__; an architecture uses the subset it needs.
    W_enc: nn.Parameter  # (d_in, d_sae)
    W_dec: nn.Parameter  # (d_sae, d_in)
    b_enc: nn.Parameter  # (d_sae,)
    b_dec: nn.Parameter  # (d_in,)
    b_gate: nn.Parameter  # (d_sae,) gated
    b_mag: nn.Parameter  # (d_sae,) gated
    r_mag: nn.Parameter  # (d_sae,) gated
    threshold: nn.Parameter  # (d_sae,) jumprelu
    W_skip: nn.Parameter  # (d_out, d_in) skip transcoders

    def __init__(self, cfg: SaeConfig, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        for name, tensor in weights.items():
            self.register_parameter(name, nn.Parameter(tensor, requires_grad=False))

    # -- attributes other parts rely on ------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def hook_name(self) -> str:
        return self.cfg.hook_name

    @property
    def hook_name_out(self) -> str:
        """The site decode writes: the SAE's own, or a transcoder's output site."""
        return self.cfg.hook_name_out or self.cfg.hook_name

    @property
    def d_out(self) -> int:
        return self.cfg.d_out or self.cfg.d_in

    @property
    def is_transcoder(self) -> bool:
        return self.cfg.hook_name_out is not None

    @property
    def has_skip(self) -> bool:
        return "W_skip" in self._parameters

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    def with_hook_name(self, hook_name: str) -> "Sae":
        self.cfg = replace(self.cfg, hook_name=hook_name)
        return self

    # -- normalisation -----------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, NormState | None]:
        """Map model activations into the space the SAE was trained on."""
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = (self.d_in**0.5) / x.norm(dim=-1, keepdim=True)
            return x * coeff, NormState(scale=1.0 / coeff)
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + _LAYER_NORM_EPS), NormState(scale=std, shift=mu)
        # "expected_average_only_in" is folded into the weights by the trainer; nothing to do.
        return x, None

    @staticmethod
    def denormalize(y: torch.Tensor, norm: NormState | None, shift: bool = True) -> torch.Tensor:
        """Inverse of normalize; shift=False maps a difference of vectors (no offset)."""
        if norm is None:
            return y
        y = y * norm.scale
        return y + norm.shift if shift else y

    # -- encode / decode ---------------------------------------------------------------------
    def _sae_in(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return x_normalized - self.b_dec if self.cfg.apply_b_dec_to_input else x_normalized

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (..., d_sae) for model activations (..., d_in)."""
        x = x.to(self.dtype)
        sae_in = self._sae_in(self.normalize(x)[0])
        arch = self.cfg.architecture
        # Bias fused into the matmul and activations applied in place: at d_sae in the tens of
        # thousands each extra pass over the output costs as much as a third of the matmul.
        if arch == "gated":
            magnitude = _affine(sae_in, self.W_enc * self.r_mag.exp(), self.b_mag).relu_()
            gate = _affine(sae_in, self.W_enc, self.b_gate)
            return magnitude.masked_fill_(gate <= 0, 0.0)
        z = _affine(sae_in, self.W_enc, self.b_enc)
        if arch == "standard":
            return z.relu_()
        if arch == "jumprelu":  # ReLU(z) * 1[z > t] keeps exactly the z above max(t, 0)
            return z.masked_fill_(z <= self.threshold.clamp(min=0), 0.0)
        return self._sparsify_topk(z)

    def _sparsify_topk(self, z: torch.Tensor) -> torch.Tensor:
        k = self.cfg.k
        assert k is not None
        if self.cfg.topk_grouping == "groupmax":
            values, within = z.relu_().unflatten(-1, (k, -1)).max(dim=-1)
            indices = within + torch.arange(0, self.d_sae, self.d_sae // k, device=z.device)
        else:
            if self.cfg.rescale_acts_by_decoder_norm:
                z = z.mul_(self.W_dec.norm(dim=-1))
            values, indices = z.topk(k, dim=-1, sorted=False)
            values = values.relu_()
        # z is ours and no longer needed: reuse its memory rather than allocate another d_sae wide.
        return z.zero_().scatter_(-1, indices, values)

    def _decoder_norms(self) -> torch.Tensor:
        """(d_sae,) decoder row norms to divide by: a zero row (a legal, dead direction) counts
        as 1, so its zero activation and zero direction stay zero instead of 0/0 = NaN."""
        norms = self.W_dec.norm(dim=-1)
        return norms.masked_fill(norms == 0, 1.0)

    def _acts_times_decoder(self, f: torch.Tensor) -> torch.Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            f = f / self._decoder_norms()
        return rows_addmm(None, f.to(self.dtype), self.W_dec)

    def decode(self, f: torch.Tensor, norm: NormState | None = None) -> torch.Tensor:
        """Reconstruction (..., d_out) in model space, without a transcoder's skip term.

        SAEs that normalise each input token (constant_norm_rescale, layer_norm) need that
        token's NormState to map back; use forward() or pass normalize(x)[1].
        """
        if norm is None and self.cfg.normalize_activations in (
            "constant_norm_rescale",
            "layer_norm",
        ):
            raise ValueError(
                f"decode of a {self.cfg.normalize_activations} SAE needs the input's NormState"
            )
        return self.denormalize(self._acts_times_decoder(f) + self.b_dec, norm)

    def reconstruct(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """What the SAE writes at its output site, given its input x and features f = encode(x):
        the reconstruction of x, or a transcoder's prediction of its output site."""
        x = x.to(self.dtype)
        out = self.decode(f, self.normalize(x)[1])
        return out + rows_addmm(None, x, self.W_skip.T) if self.has_skip else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x, self.encode(x))

    def decoder_directions(self, indices: torch.Tensor) -> torch.Tensor:
        """What adding 1 to each feature's activation adds in SAE space, (n, d_in)."""
        rows = self.W_dec[indices]
        if self.cfg.rescale_acts_by_decoder_norm:
            rows = rows / self._decoder_norms()[indices, None]
        return rows

    def feature_activations(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Activations of a few features, (..., n); cheap unless the features compete (topk)."""
        if self.cfg.architecture == "topk":
            return self.encode(x)[..., indices]
        sae_in = self._sae_in(self.normalize(x.to(self.dtype))[0])
        if self.cfg.architecture == "gated":
            W_enc = self.W_enc[:, indices]
            gate = rows_addmm(self.b_gate[indices], sae_in, W_enc) > 0
            magnitude = torch.relu(
                rows_addmm(self.b_mag[indices], sae_in, W_enc * self.r_mag[indices].exp())
            )
            return magnitude * gate.to(magnitude.dtype)
        z = rows_addmm(self.b_enc[indices], sae_in, self.W_enc[:, indices])
        if self.cfg.architecture == "jumprelu":
            return torch.relu(z) * (z > self.threshold[indices]).to(z.dtype)
        return torch.relu(z)
