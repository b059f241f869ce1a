"""Training-time timestep samplers: draw t in [0, 1] per sample `[B]` or per frame `[B, F]`."""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import timestep_shift


def _shape(batch: int, frames: int | None) -> tuple[int, ...]:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if frames is None:
        return (batch,)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return (batch, frames)


def uniform_timesteps(batch: int, *, frames: int | None = None, shift: float = 1.0,
                      generator: torch.Generator | None = None, device=None) -> Tensor:
    """`t ~ U(0, 1)`, then `timestep_shift(t, shift)`. `[B]`, or `[B, F]` (independent per
    frame) when `frames` is given."""
    t = torch.rand(_shape(batch, frames), generator=generator, device=device)
    return timestep_shift(t, shift) if shift != 1.0 else t


def logit_normal_timesteps(batch: int, *, mean: float = 0.0, std: float = 1.0, frames: int | None = None,
                           shift: float = 1.0, generator: torch.Generator | None = None, device=None) -> Tensor:
    """`t = sigmoid(mean + std * n)`, `n ~ N(0, 1)` (SD3's logit-normal), then the shift."""
    if std <= 0:
        raise ValueError(f"logit-normal std must be > 0, got {std}")
    n = torch.randn(_shape(batch, frames), generator=generator, device=device)
    t = torch.sigmoid(mean + std * n)
    return timestep_shift(t, shift) if shift != 1.0 else t
