"""Decoding whose every row comes out bit for bit as it would alone, whoever shares the batch.

    make_batch_invariant(hf_model)       # once, at load: linears and attention learn the mode
    with fixed_row_tiles():              # around a decode step of a shared batch
        model.hf(...)
    rows_addmm(bias, x, W)               # what SAE and steering maths use for their matmuls

Continuous batching puts other people's chats beside yours, and that must never change your
reply. Measured on the demo model (CPU, 2 threads), it did: a row's next-token logits moved by
up to 4e-5 with the batch around it, and sampling at temperature 0.9 turned that into another
token now and then (a TopK clamp amplifies it: a feature at the k-th place drops out). Causes:

- BLAS picks its kernel by the number of rows M. nn.Linear's GEMM gave one result for M = 1,
  another for 2..10 and a third from 11 rows (d 256; 2..15 / 16..139 / 200+ at d 1024); within
  one M, a row's result does not depend on its position or on the other rows. So in a shared
  decode step every matmul runs on tiles of exactly TILE_ROWS rows (the last one zero-padded):
  a row's arithmetic is the same in every batch. Prefill needs none of this, since each
  request is prefilled on its own (app.core.generation), as it would be alone.
- Left padding lengthens the key axis, and SDPA's reductions round differently over a longer
  one (3.8e-6 on the logits). Row-exact attention runs every row over its own keys only.

The price (python -m bench.batch_invariance, demo model, 2 CPU cores): 0.73 of plain batched
throughput for one chat, 0.79 for 4, 0.92 for 16; `steer_batch_invariant=false` trades the
guarantee back for that speed.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.pytorch_utils import Conv1D

TILE_ROWS = 16
ROW_EXACT = "monoscope_row_exact"
_tiles: ContextVar[bool] = ContextVar("monoscope_fixed_row_tiles", default=False)


@contextmanager
def fixed_row_tiles() -> Iterator[None]:
    """Inside, rows_addmm and the model's linears compute on fixed tiles of TILE_ROWS rows."""
    token = _tiles.set(True)
    try:
        yield
    finally:
        _tiles.reset(token)


def rows_addmm(
    bias: torch.Tensor | None,  # (n,) or None
    x: torch.Tensor,  # (..., k)
    weight: torch.Tensor,  # (k, n)
) -> torch.Tensor:
    """x @ weight (+ bias), (..., n); on fixed row tiles inside fixed_row_tiles()."""
    flat = x.reshape(-1, x.shape[-1])

    def run(rows: torch.Tensor) -> torch.Tensor:
        return rows @ weight if bias is None else torch.addmm(bias, rows, weight)

    if not _tiles.get():
        out = run(flat)
    else:
        n = flat.shape[0]
        padded = -(-n // TILE_ROWS) * TILE_ROWS
        if padded != n:
            flat = torch.cat([flat, flat.new_zeros(padded - n, flat.shape[1])])
        out = torch.cat([run(flat[i : i + TILE_ROWS]) for i in range(0, padded, TILE_ROWS)])[:n]
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _linear_forward(module: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    plain = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not _tiles.get():
            return plain(x)
        return rows_addmm(module.bias, x, module.weight.t())

    return forward


def _conv1d_forward(module: Conv1D) -> Callable[[torch.Tensor], torch.Tensor]:
    plain = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        return rows_addmm(module.bias, x, module.weight) if _tiles.get() else plain(x)

    return forward


def _plain_causal(mask: torch.Tensor) -> bool:
    """True when (rows, heads, q, kv) `mask` is what SDPA computes with no mask (is_causal)."""
    q, kv = mask.shape[-2:]
    causal = torch.ones(q, kv, dtype=torch.bool, device=mask.device).tril(kv - q)
    return bool((mask == causal).all())


def row_exact_attention(
    module: nn.Module,
    query: torch.Tensor,  # (batch, heads, q, head_dim)
    key: torch.Tensor,  # (batch, kv_heads, kv, head_dim)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # (batch, 1, q, kv) bool, True = attend
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA one padding group at a time, each row over its own keys: (batch, q, heads, dim).
    Left padding is always a run at the start of a row, so its first key is where the last
    query's mask turns on; rows sharing it are computed together, the mask dropped where it is
    plain causal (as SDPA would for a row alone)."""
    if attention_mask is None or attention_mask.dtype != torch.bool:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    q_len, kv_len = query.shape[2], key.shape[2]
    starts = attention_mask[:, 0, -1, :].int().argmax(dim=-1)
    out = query.new_zeros(query.shape[0], q_len, query.shape[1], query.shape[3])
    for start in starts.unique().tolist():
        rows = (starts == start).nonzero().squeeze(-1)
        first_query = max(0, start - (kv_len - q_len))  # earlier queries are padding
        mask = attention_mask[rows][:, :, first_query:, start:]
        part, _ = sdpa_attention_forward(
            module,
            query[rows, :, first_query:],
            key[rows, :, start:],
            value[rows, :, start:],
            None if _plain_causal(mask) else mask,
            **kwargs,
        )
        out[rows, first_query:] = part
    return out, None


AttentionInterface.register(ROW_EXACT, row_exact_attention)
AttentionMaskInterface.register(ROW_EXACT, sdpa_mask)


def make_batch_invariant(hf_model: PreTrainedModel) -> None:
    """Let the model's linears follow fixed_row_tiles() and, where it runs on SDPA, attend row by
    row. Outside fixed_row_tiles() its linears compute exactly as before."""
    # Each instance's forward is replaced on purpose: the classes stay transformers' own.
    for module in hf_model.modules():
        if isinstance(module, nn.Linear):
            module.forward = _linear_forward(module)  # type: ignore[method-assign,assignment]
        elif isinstance(module, Conv1D):
            module.forward = _conv1d_forward(module)  # type: ignore[method-assign]
    if getattr(hf_model.config, "_attn_implementation", None) == "sdpa":
        hf_model.set_attn_implementation(ROW_EXACT)
