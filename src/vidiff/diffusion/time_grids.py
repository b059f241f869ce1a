"""Sampling time grids: descending `[N + 1]` float64 tensors from t_max to exactly 0.

They reproduce the step placement of diffusers' schedulers so that results can be compared
one to one (a diffusers integer timestep i of a T-step VP table is `t = (i + 1) / T`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .schedules import timestep_shift

SPACINGS = ("leading", "trailing", "linspace")


def _with_zero(t: np.ndarray) -> Tensor:
    return torch.cat([torch.as_tensor(np.asarray(t, dtype=np.float64)), torch.zeros(1, dtype=torch.float64)])


def flow_times(n: int, shift: float = 1.0, num_train_steps: int = 1000) -> Tensor:
    """FlowMatchEulerDiscreteScheduler's grid: `shift(linspace(1, shift(1/T), n))`, then 0.

    (diffusers takes the smallest training sigma, already shifted, as the end of the linspace
    and shifts the whole linspace again.)
    """
    if n < 1:
        raise ValueError(f"number of steps must be >= 1, got {n}")
    T = num_train_steps
    t_min = float(np.float32(timestep_shift(1.0 / T, shift)))  # diffusers keeps it in float32
    sig = np.linspace(T * 1.0, T * t_min, n) / T
    return _with_zero(timestep_shift(sig, shift))


def unipc_flow_times(n: int, shift: float = 1.0, num_train_steps: int = 1000) -> Tensor:
    """UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift) grid, Wan 2.1's sampler:
    `shift(linspace(1, 1/T, n + 1)[:-1])`, the first value lowered by 1e-6 if it is 1, then 0."""
    if n < 1:
        raise ValueError(f"number of steps must be >= 1, got {n}")
    sig = timestep_shift(np.linspace(1.0, 1.0 / num_train_steps, n + 1)[:-1], shift)
    if abs(sig[0] - 1.0) < 1e-6:
        sig[0] -= 1e-6
    return _with_zero(sig)


def vp_timesteps(n: int, spacing: str = "leading", num_train_steps: int = 1000, steps_offset: int = 0,
                 multistep: bool = False) -> np.ndarray:
    """The integer training steps (descending) diffusers visits, before the final clean step.

    DDIM/DDPM (`multistep=False`):
      leading:  `arange(n) * (T // n)` reversed, + steps_offset
      trailing: `round(arange(T, 0, -T / n)) - 1`
      linspace: `round(linspace(0, T - 1, n))` reversed
    DPM-Solver / UniPC (`multistep=True`): leading uses `T // (n + 1)` and n + 1 points minus the
    last; linspace uses n + 1 points minus the last; trailing is the same.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {SPACINGS}")
    T = num_train_steps
    if not 1 <= n <= T:
        raise ValueError(f"number of steps must be in [1, {T}], got {n}")
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    m = n + 1 if multistep else n
    if spacing == "leading":
        steps = (np.arange(0, m) * (T // m)).round()[::-1].astype(np.int64) + steps_offset
    else:
        steps = np.linspace(0, T - 1, m).round()[::-1].astype(np.int64)
    return steps[:-1].copy() if multistep else steps.copy()


def vp_times(n: int, spacing: str = "leading", num_train_steps: int = 1000, steps_offset: int = 0,
             multistep: bool = False) -> Tensor:
    """`vp_timesteps` mapped to continuous time `t = (i + 1) / T`, then 0 (fully clean)."""
    steps = vp_timesteps(n, spacing, num_train_steps, steps_offset, multistep)
    if steps.max() >= num_train_steps or steps.min() < 0:
        raise ValueError(f"steps_offset={steps_offset} pushes steps outside [0, {num_train_steps - 1}]")
    return _with_zero((steps + 1) / num_train_steps)
