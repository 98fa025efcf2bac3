"""The maths of training an SAE: a trainable TopK (or ReLU + L1) SAE, its loss, and its upkeep.

    sae = TrainableSae.initialise(d_in=256, d_sae=4096, k=32, mean=x.mean(0), seed=0)
    out = sae.loss(x, dead_mask)             # x: (batch, d_in), already scaled
    out.loss.backward(); sae.before_step(); optimizer.step(); sae.after_step()
    frozen = sae.to_sae(hook_name, scale)    # an ordinary Sae, input scaling folded in

A transcoder (`transcoder=True`) is the same module trained to predict a target y from x:
`loss(x, dead, target=y)`, no b_dec shift on the way in (b_dec is in y's space, initialised at y's
mean), and `to_sae` folds both scalings in and names the output site.

The auxiliary loss (Gao et al., "Scaling and evaluating sparse autoencoders") makes the k_aux
most active dead latents reconstruct what the live ones missed, which keeps latents from dying.

An SAE can be trained on PCA-whitened inputs (Saraswatula and Klindt, "Data whitening improves
sparse autoencoder learning", 2025) and folded back into an ordinary SAE on the raw site:

    whitening = Whitening.fit(sample, epsilon=0.1)
    out = sae.loss(whitening.apply(x), dead)  # ... train as above, then
    sae.fold_whitening(whitening)             # the same SAE, reading and writing raw x
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.core.sae.module import Sae, SaeConfig

AUX_COEFFICIENT = 1 / 32


@dataclass
class StepOutput:
    loss: torch.Tensor
    mse: torch.Tensor  # mean over the batch of ||x - x_hat||^2
    fvu: torch.Tensor  # fraction of variance unexplained
    aux: torch.Tensor
    fired: torch.Tensor  # (d_sae,) bool: which latents fired in this batch
    l0: torch.Tensor


@dataclass(frozen=True)
class Whitening:
    """x -> (x - mean) @ matrix, which gives a site's activations the identity covariance up to a
    floor of `epsilon` times the mean eigenvalue (so directions of almost no variance are not
    blown up into noise); `inverse` undoes it."""

    mean: torch.Tensor  # (d,)
    matrix: torch.Tensor  # (d, d), symmetric
    inverse: torch.Tensor  # (d, d)

    @classmethod
    def fit(cls, sample: torch.Tensor, epsilon: float) -> "Whitening":
        x = sample.double()
        mean = x.mean(0)
        eigenvalues, vectors = torch.linalg.eigh(torch.cov((x - mean).T))
        floored = eigenvalues.clamp(min=0) + epsilon * eigenvalues.clamp(min=0).mean()
        matrix = (vectors * floored.rsqrt()) @ vectors.T
        inverse = (vectors * floored.sqrt()) @ vectors.T
        return cls(mean.float(), matrix.float(), inverse.float())

    def to(self, device: torch.device) -> "Whitening":
        return Whitening(self.mean.to(device), self.matrix.to(device), self.inverse.to(device))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.matrix


class TrainableSae(nn.Module):
    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int | None,
        l1_coefficient: float,
        transcoder: bool = False,
        d_out: int | None = None,
    ):
        super().__init__()
        self.k = k
        self.l1_coefficient = l1_coefficient
        self.transcoder = transcoder
        d_out = d_out or d_in
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))

    @classmethod
    def initialise(
        cls,
        d_in: int,
        d_sae: int,
        k: int | None,
        mean: torch.Tensor,
        seed: int,
        l1_coefficient: float = 0.0,
        transcoder: bool = False,
    ) -> "TrainableSae":
        """Unit-norm random decoder rows, encoder = decoder transposed, b_dec at the mean of what
        is reconstructed (the input, or a transcoder's target, whose width is mean's)."""
        d_out = mean.shape[-1]
        sae = cls(d_in, d_sae, k, l1_coefficient, transcoder, d_out)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            W = torch.randn(d_sae, d_out, generator=generator)
            sae.W_dec.copy_(W / W.norm(dim=-1, keepdim=True))
            if d_out == d_in:
                sae.W_enc.copy_(sae.W_dec.T)
            else:  # nothing to tie to: unit random columns
                E = torch.randn(d_in, d_sae, generator=generator)
                sae.W_enc.copy_(E / E.norm(dim=0, keepdim=True))
            sae.b_dec.copy_(mean)
        return sae

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, d_sae) from (batch, d_in)."""
        return torch.addmm(self.b_enc, x if self.transcoder else x - self.b_dec, self.W_enc)

    def _decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """sum_j values[:, j] * W_dec[indices[:, j]]: k rows per token instead of all d_sae.

        embedding_bag rather than indexing: its backward is deterministic on CPU, so a resumed
        run ends bit for bit where an uninterrupted one does."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def loss(
        self, x: torch.Tensor, dead: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> StepOutput:
        """Loss for a batch (batch, d_in); `dead` (d_sae,) marks latents that get the aux loss;
        `target` is what a transcoder predicts (an SAE reconstructs x)."""
        z = self.pre_activations(x)
        y = x if target is None else target
        if self.k is None:
            f = z.relu()
            x_hat = f @ self.W_dec + self.b_dec
            active = f > 0
        else:
            values, indices = z.topk(self.k, dim=-1, sorted=False)
            values = values.relu()
            x_hat = self._decode_sparse(values, indices) + self.b_dec
            active = torch.zeros_like(z, dtype=torch.bool).scatter_(-1, indices, values > 0)
        error = y - x_hat
        mse = error.pow(2).sum(-1).mean()
        variance = (y - y.mean(0)).pow(2).sum(-1).mean()
        loss = mse / variance
        if self.k is None and self.l1_coefficient:
            loss = loss + self.l1_coefficient * (f * self.W_dec.norm(dim=-1)).sum(-1).mean()
        aux = torch.zeros((), device=x.device)
        if dead is not None and self.k is not None and bool(dead.any()):
            k_aux = min(x.shape[-1] // 2, int(dead.sum()))
            dead_z = z.masked_fill(~dead, float("-inf"))
            aux_values, aux_indices = dead_z.topk(k_aux, dim=-1, sorted=False)
            error_hat = self._decode_sparse(aux_values.relu(), aux_indices)
            target = error.detach()
            aux = (target - error_hat).pow(2).sum(-1).mean() / (
                (target - target.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-8)
            )
            loss = loss + AUX_COEFFICIENT * aux
        return StepOutput(
            loss, mse, mse / variance, aux, active.any(0), active.sum(-1).float().mean()
        )

    @torch.no_grad()
    def before_step(self) -> None:
        """Drop the gradient component that would change decoder row norms."""
        if self.W_dec.grad is None:
            return
        rows = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        parallel = (self.W_dec.grad * rows).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(parallel * rows)

    @torch.no_grad()
    def after_step(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True))

    @torch.no_grad()
    def fold_whitening(self, whitening: Whitening) -> None:
        """Make an SAE trained on whitening.apply(x) read raw x, and write raw x unless it is a
        transcoder (whose targets are not whitened): the same latents and the same output, exactly
        (TopK picks by the pre-activations, which do not change). Decoder rows lose unit norm,
        which SAELens' format allows."""
        if self.transcoder:
            self.b_enc.sub_(whitening.mean @ whitening.matrix @ self.W_enc)
            self.W_enc.copy_(whitening.matrix @ self.W_enc)
            return
        self.W_enc.copy_(whitening.matrix @ self.W_enc)
        self.b_dec.copy_(whitening.mean + self.b_dec @ whitening.inverse)
        self.W_dec.copy_(self.W_dec @ whitening.inverse)

    @torch.no_grad()
    def to_sae(
        self,
        hook_name: str,
        scale: float,
        model_name: str | None = None,
        hook_name_out: str | None = None,
        out_scale: float | None = None,
    ) -> Sae:
        """A frozen Sae for model-space inputs: trained on x * scale (and a transcoder on targets
        y * out_scale), so fold the scales in."""
        if self.transcoder and hook_name_out is None:
            raise ValueError("a transcoder needs the site it writes")
        out_scale = scale if out_scale is None or not self.transcoder else out_scale
        cfg = SaeConfig(
            architecture="topk" if self.k is not None else "standard",
            d_in=self.W_enc.shape[0],
            d_sae=self.W_enc.shape[1],
            hook_name=hook_name,
            k=self.k,
            model_name=model_name,
            apply_b_dec_to_input=not self.transcoder,
            hook_name_out=hook_name_out if self.transcoder else None,
            d_out=self.W_dec.shape[1] if self.transcoder else None,
        )
        weights = {
            "W_enc": self.W_enc * scale,
            "b_enc": self.b_enc.clone(),
            "W_dec": self.W_dec / out_scale,
            "b_dec": self.b_dec / out_scale,
        }
        return Sae(cfg, {name: w.detach().cpu().contiguous() for name, w in weights.items()})
