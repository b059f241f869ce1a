"""Initial-noise priors for video `[B, C, F, H, W]`: unit variance per element, chosen
correlation between frames."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5:
        raise ValueError(f"noise shape must be [B, C, F, H, W], got {shape}")
    return shape


def independent_noise(shape, *, generator: torch.Generator | None = None, dtype=torch.float32,
                      device=None) -> Tensor:
    """i.i.d. N(0, 1) per element."""
    return torch.randn(_check_shape(shape), generator=generator, dtype=dtype, device=device)


def mixed_noise(shape, shared: float, *, generator: torch.Generator | None = None, dtype=torch.float32,
                device=None) -> Tensor:
    """`e_f = sqrt(a) s + sqrt(1 - a) n_f` with one `s` shared by all frames, `a = shared`.

    `a` is the fraction of variance that is shared: every element stays N(0, 1) and the
    correlation between any two frames is `a` (0: independent, 1: identical frames).
    """
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"mixed noise: shared fraction must be in [0, 1], got {shared}")
    B, C, F, H, W = _check_shape(shape)
    s = torch.randn((B, C, 1, H, W), generator=generator, dtype=dtype, device=device)
    n = torch.randn((B, C, F, H, W), generator=generator, dtype=dtype, device=device)
    return math.sqrt(shared) * s + math.sqrt(1.0 - shared) * n


def progressive_noise(shape, correlation: float, *, generator: torch.Generator | None = None,
                      dtype=torch.float32, device=None) -> Tensor:
    """AR(1) over frames: `e_0 = n_0`, `e_f = r e_{f-1} + sqrt(1 - r^2) n_f`, `r = correlation`.

    Stationary: every element N(0, 1); correlation between frames k apart is `r^k`.
    """
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"progressive noise: correlation must be in [-1, 1], got {correlation}")
    B, C, F, H, W = _check_shape(shape)
    n = torch.randn((B, C, F, H, W), generator=generator, dtype=dtype, device=device)
    c = math.sqrt(1.0 - correlation * correlation)
    frames = [n[:, :, 0]]
    for f in range(1, F):
        frames.append(correlation * frames[-1] + c * n[:, :, f])
    return torch.stack(frames, dim=2)
