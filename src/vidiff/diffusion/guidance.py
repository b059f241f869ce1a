"""Classifier-free guidance on model predictions (before conversion to x0, as diffusers does)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def guidance_ramp(min_scale: float, max_scale: float, frames: int) -> Tensor:
    """Per-frame guidance `linspace(min_scale, max_scale, F)` (Stable Video Diffusion style)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return torch.linspace(min_scale, max_scale, frames)


def _cat_conditions(cond, uncond):
    if isinstance(cond, Tensor):
        return torch.cat([cond, uncond])
    if cond is None and uncond is None:
        return None
    cat = getattr(type(cond), "cat", None)
    if cat is None:
        raise TypeError(f"cannot batch conditions of type {type(cond).__name__}: need a Tensor or a "
                        "type with a `cat([a, b])` method such as vidiff Conditioning")
    return cat([cond, uncond])


def guided_denoiser(model_fn: Callable, cond, uncond, scale: float | Tensor) -> Callable:
    """Classifier-free guidance: `pred = pred_u + scale * (pred_c - pred_u)`.

    `model_fn(x_t, t, cond) -> prediction`. Conditional and unconditional inputs run in ONE
    forward pass (concatenated along the batch, conditional first, then split). `cond` and
    `uncond` are Tensors, or objects whose type has `cat(list)` (e.g.
    `vidiff.models.conditioning.Conditioning`). `scale` is a float or a per-frame `[F]` tensor
    (see `guidance_ramp`), broadcast over `[B, C, F, H, W]`.

    Returns `guided(x_t, t, cond=None) -> prediction` with the model's signature (the `cond`
    argument is ignored), ready for `prediction.x0_denoiser`.
    """
    batched_cond = _cat_conditions(cond, uncond)

    def guided(x_t: Tensor, t: Tensor, _cond=None) -> Tensor:
        t2 = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        out = model_fn(torch.cat([x_t, x_t]), torch.cat([t2, t2]), batched_cond)
        pred_c, pred_u = out.chunk(2)
        s = scale
        if isinstance(s, Tensor) and s.ndim > 0:
            if s.ndim != 1 or s.shape[0] != x_t.shape[2]:
                raise ValueError(f"per-frame guidance scale must be [F] = [{x_t.shape[2]}], got {tuple(s.shape)}")
            s = s.to(device=x_t.device, dtype=pred_c.dtype)[None, None, :, None, None]
        return pred_u + s * (pred_c - pred_u)

    return guided
