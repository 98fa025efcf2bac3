"""Training checkpoints that a killed job resumes from: written atomically, restored in place.

    save_checkpoint(path, step, model=model, optimizer=optimizer, last_fired=tensor)
    step = load_checkpoint(path, model=model, optimizer=optimizer, last_fired=tensor)  # 0: none

Modules and optimizers are saved by state_dict and loaded back into the given objects; tensors
are saved as they are and copied back in place.
"""

from pathlib import Path

import torch


def save_checkpoint(path: Path, step: int, **parts) -> None:
    state = {
        name: p if isinstance(p, torch.Tensor) else p.state_dict() for name, p in parts.items()
    }
    partial = path.with_suffix(".partial")
    torch.save({**state, "step": step}, partial)
    partial.replace(path)  # a kill during the write leaves the previous checkpoint intact


def load_checkpoint(path: Path, map_location: torch.device | None = None, **parts) -> int:
    """The step to resume from (0 when there is no checkpoint); restores every part."""
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True, map_location=map_location)
    for name, part in parts.items():
        if isinstance(part, torch.Tensor):
            part.copy_(state[name])
        else:
            part.load_state_dict(state[name])
    return int(state["step"])
