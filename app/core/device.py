"""Choosing where and in what precision a model runs."""

import torch

from app.core.errors import MonoscopeError

_HALF = (torch.bfloat16, torch.float16)


def resolve_device(requested: str = "auto") -> torch.device:
    """'auto' means CUDA when present, else CPU; an explicit device must exist."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise MonoscopeError(
            f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MonoscopeError(f"device {requested!r} asked for, but CUDA is not available here")
    return device


def choose_dtype(device: torch.device, checkpoint_dtype: torch.dtype | None) -> torch.dtype:
    """Half precision on GPU when the checkpoint is stored so; fp32 everywhere else."""
    if device.type == "cuda" and checkpoint_dtype in _HALF:
        if checkpoint_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float16
        return checkpoint_dtype
    return torch.float32
