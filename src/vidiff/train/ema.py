"""Exponential moving average of model weights."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMA", "ema_decay_at"]


def ema_decay_at(step: int, decay: float, warmup_steps: int) -> float:
    """Decay used for the update after optimizer step `step` (1-based).

    d_t = decay * min(1, step / warmup_steps)   (d_t = decay when warmup_steps == 0)

    Early weights are far from converged, so a full decay from step 1 would keep the average
    near the random initialisation for ~1 / (1 - decay) steps; the warmup lets it follow.
    """
    if warmup_steps <= 0:
        return decay
    return decay * min(1.0, step / warmup_steps)


class EMA:
    """Shadow copy of a module's floating-point parameters: s <- d * s + (1 - d) * p.

    Works on plain parameters and on FSDP2-sharded ones (DTensors: each rank averages its shard).
    Buffers are not averaged; `copy_to` copies the shadow into a module of the same structure.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup_steps: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() if p.dtype in (torch.float16, torch.bfloat16) else p.detach().clone()
            for name, p in model.named_parameters()
            if p.requires_grad and p.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = ema_decay_at(step, self.decay, self.warmup_steps)
        params = dict(model.named_parameters())
        for name, s in self.shadow.items():
            s.lerp_(params[name].detach().to(s.dtype), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, s in self.shadow.items():
            params[name].copy_(s.to(params[name].dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state is missing {len(missing)} tensors, e.g. {missing[:3]}")
        for name, s in self.shadow.items():
            value = state[name]
            if hasattr(s, "device_mesh") and not hasattr(value, "device_mesh"):
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value.to(s.dtype), s.device_mesh, s.placements)
                s.copy_(value)
            else:
                s.copy_(value.to(device=s.device, dtype=s.dtype))
