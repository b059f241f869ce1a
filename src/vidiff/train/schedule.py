"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine_lr"]


def warmup_cosine_lr(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup (step < W):   lr = base_lr * (step + 1) / W
    Decay  (W <= step):  p  = (step - W) / max(1, T - W), clamped to [0, 1]
                         lr = base_lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)

    with W = warmup_steps, T = total_steps and r = min_lr_ratio, so the rate reaches base_lr
    at the end of warmup and base_lr * r at the last step. Being a pure function of the step,
    the schedule needs no state of its own to resume exactly.
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"warmup_steps must be >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
