"""SAE quality metrics, computed one way everywhere (trainer, CLI, dashboards).

    metrics = evaluate_sae(model, sae, contexts)      # contexts: (n, pos) token ids
    metrics.variance_explained, metrics.ce_loss_recovered, metrics.dead_fraction

Definitions as SAELens evaluates them: FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; CE loss
recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean) with the reconstruction spliced in at the
hook; KL(clean || spliced). The BOS position is left alone (neither spliced nor counted): its
residual is an outlier that SAEs are not trained on.

A transcoder is measured at its output site: x is what the MLP wrote, x_hat the transcoder's
prediction from what the MLP read in the same pass, and the zero ablation zeroes the MLP's output
(so CE loss recovered is the replacement's share of what the MLP is worth).
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from app.core.model import LoadedModel
from app.core.sae.module import Sae


@dataclass(frozen=True)
class SaeMetrics:
    tokens: int
    l0: float
    variance_explained: float
    ce_loss_clean: float
    ce_loss_with_sae: float
    ce_loss_zero_ablation: float
    ce_loss_recovered: float
    kl_div: float
    dead_fraction: float
    dense_1pct_fraction: float  # firing on more than 1% of tokens
    dense_10pct_fraction: float

    def to_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _next_token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(batch, pos - 1) cross-entropy of predicting ids[:, 1:]."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none"
    ).view(ids.shape[0], -1)


def _kl_sum(clean: torch.Tensor, other: torch.Tensor) -> float:
    """Σ over predicted positions of KL(clean || other) of the next-token distributions."""
    log_p = clean[:, :-1].float().log_softmax(-1)
    log_q = other[:, :-1].float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum().item()


@torch.inference_mode()
def evaluate_sae(
    model: LoadedModel, sae: Sae, contexts: torch.Tensor, batch_size: int = 16
) -> SaeMetrics:
    """Metrics of one SAE at its site over contexts (n, pos) that open with BOS."""
    site = sae.hook_name_out
    n_tokens = 0
    sum_x = torch.zeros(sae.d_out, dtype=torch.float64)
    sum_sq = sum_err = l0 = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.float64)
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    kl = 0.0
    n_predictions = 0
    for i in range(0, len(contexts), batch_size):
        ids = contexts[i : i + batch_size].to(model.device)
        seen: dict[str, torch.Tensor] = {}

        def record(x: torch.Tensor, seen=seen) -> None:
            seen["x"] = x.detach()

        def read_input(x: torch.Tensor, seen=seen) -> None:
            seen["in"] = x.detach()

        def splice(x: torch.Tensor, seen=seen) -> torch.Tensor:
            source = seen.pop("in", x)[:, 1:]  # a transcoder read its input earlier in this pass
            f = sae.encode(source)
            seen["f"] = f
            seen["x_hat"] = sae.reconstruct(source, f).to(x.dtype)
            return torch.cat([x[:, :1], seen["x_hat"]], dim=1)

        splices = {site: splice} | ({sae.hook_name: read_input} if sae.is_transcoder else {})

        def zero(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], dim=1)

        with model.hooked({site: record}):
            clean = model.hf(ids, use_cache=False).logits
        with model.hooked(splices):
            spliced = model.hf(ids, use_cache=False).logits
        with model.hooked({site: zero}):
            ablated = model.hf(ids, use_cache=False).logits
        for name, logits in (("clean", clean), ("sae", spliced), ("zero", ablated)):
            ce[name] += _next_token_losses(logits, ids).sum().item()
        kl += _kl_sum(clean, spliced)
        n_predictions += ids[:, 1:].numel()

        x = seen["x"][:, 1:].flatten(0, 1).double().cpu()
        x_hat = seen["x_hat"].flatten(0, 1).double().cpu()
        active = (seen["f"] > 0).flatten(0, 1).cpu()
        n_tokens += x.shape[0]
        sum_x += x.sum(0)
        sum_sq += x.pow(2).sum().item()
        sum_err += (x - x_hat).pow(2).sum().item()
        l0 += active.sum().item()
        fired += active.sum(0).double()

    total_variance = sum_sq - sum_x.pow(2).sum().item() / n_tokens
    clean_ce, sae_ce, zero_ce = (ce[k] / n_predictions for k in ("clean", "sae", "zero"))
    density = fired / n_tokens
    return SaeMetrics(
        tokens=n_tokens,
        l0=l0 / n_tokens,
        variance_explained=1.0 - sum_err / total_variance,
        ce_loss_clean=clean_ce,
        ce_loss_with_sae=sae_ce,
        ce_loss_zero_ablation=zero_ce,
        ce_loss_recovered=(zero_ce - sae_ce) / (zero_ce - clean_ce),
        kl_div=kl / n_predictions,
        dead_fraction=(fired == 0).double().mean().item(),
        dense_1pct_fraction=(density > 0.01).double().mean().item(),
        dense_10pct_fraction=(density > 0.1).double().mean().item(),
    )


@dataclass(frozen=True)
class ReplacementMetrics:
    """The replacement model: every MLP replaced by its transcoder at once, no error terms."""

    tokens: int
    ce_loss_clean: float
    ce_loss_replaced: float
    ce_loss_mlps_zeroed: float
    ce_loss_recovered: float  # (zeroed - replaced) / (zeroed - clean)
    kl_div: float  # KL(clean || replaced) per predicted token
    variance_explained: list[float]  # per layer, of the MLP output inside the replaced pass

    def to_dict(self) -> dict:
        return {
            k: [round(x, 6) for x in v]
            if isinstance(v, list)
            else round(v, 6)
            if isinstance(v, float)
            else v
            for k, v in asdict(self).items()
        }


@torch.inference_mode()
def evaluate_replacement(
    model: LoadedModel, transcoders: list[Sae], contexts: torch.Tensor, batch_size: int = 16
) -> ReplacementMetrics:
    """CE loss recovered by the whole replacement model (what an attribution graph explains),
    against zeroing every MLP; BOS positions keep their MLP outputs, as evaluate_sae keeps them.
    Each layer's variance explained compares its transcoder's output with what the real MLP
    writes from the same (already replaced upstream) input."""
    ce = {"clean": 0.0, "replaced": 0.0, "zeroed": 0.0}
    kl, n_tokens = 0.0, 0  # predictions made, and MLP outputs replaced, per layer
    sum_err = [0.0] * len(transcoders)
    sum_sq = [0.0] * len(transcoders)
    sum_x = [torch.zeros(t.d_out, dtype=torch.float64) for t in transcoders]
    seen: dict[int, torch.Tensor] = {}  # each layer's MLP input in the replaced pass

    def reader(layer: int):
        def read(x: torch.Tensor) -> None:
            seen[layer] = x

        return read

    def replacer(layer: int):
        transcoder = transcoders[layer]

        def replace(y: torch.Tensor) -> torch.Tensor:
            x = seen[layer][:, 1:]
            out = transcoder(x).to(y.dtype)
            real = y[:, 1:].flatten(0, 1).double().cpu()
            sum_x[layer] += real.sum(0)
            sum_sq[layer] += real.pow(2).sum().item()
            sum_err[layer] += (real - out.flatten(0, 1).double().cpu()).pow(2).sum().item()
            return torch.cat([y[:, :1], out], dim=1)

        return replace

    def zero(y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[:, :1], torch.zeros_like(y[:, 1:])], dim=1)

    replaced_edits: dict = {}
    zeroed_edits: dict = {}
    for layer, transcoder in enumerate(transcoders):
        replaced_edits[transcoder.hook_name] = reader(layer)
        replaced_edits[transcoder.hook_name_out] = replacer(layer)
        zeroed_edits[transcoder.hook_name_out] = zero

    for i in range(0, len(contexts), batch_size):
        ids = contexts[i : i + batch_size].to(model.device)
        clean = model.hf(ids, use_cache=False).logits
        with model.hooked(replaced_edits):
            replaced = model.hf(ids, use_cache=False).logits
        with model.hooked(zeroed_edits):
            zeroed = model.hf(ids, use_cache=False).logits
        for name, logits in (("clean", clean), ("replaced", replaced), ("zeroed", zeroed)):
            ce[name] += _next_token_losses(logits, ids).sum().item()
        kl += _kl_sum(clean, replaced)
        n_tokens += ids[:, 1:].numel()
    clean_ce, replaced_ce, zeroed_ce = (ce[k] / n_tokens for k in ("clean", "replaced", "zeroed"))
    explained = [
        1.0 - sum_err[n] / (sum_sq[n] - sum_x[n].pow(2).sum().item() / n_tokens)
        for n in range(len(transcoders))
    ]
    return ReplacementMetrics(
        tokens=n_tokens,
        ce_loss_clean=clean_ce,
        ce_loss_replaced=replaced_ce,
        ce_loss_mlps_zeroed=zeroed_ce,
        ce_loss_recovered=(zeroed_ce - replaced_ce) / (zeroed_ce - clean_ce),
        kl_div=kl / n_tokens,
        variance_explained=explained,
    )
