"""Guidance on model predictions (before conversion to x0, as diffusers does): classifier-free
guidance on the text, and history guidance on frames given as conditioning."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def guidance_ramp(min_scale: float, max_scale: float, frames: int) -> Tensor:
    """Per-frame guidance `linspace(min_scale, max_scale, F)` (Stable Video Diffusion style)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return torch.linspace(min_scale, max_scale, frames)


def _cat_conditions(conds: list):
    """One batch from the branches' conditions (Tensors, all None, or a type with `cat(list)`)."""
    first = conds[0]
    if isinstance(first, Tensor):
        return torch.cat(conds)
    if all(c is None for c in conds):
        return None
    cat = getattr(type(first), "cat", None)
    if cat is None:
        raise TypeError(f"cannot batch conditions of type {type(first).__name__}: need a Tensor or a "
                        "type with a `cat([a, b])` method such as vidiff Conditioning")
    return cat(conds)


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
    batched_cond = _cat_conditions([cond, uncond])

    def guided(x_t: Tensor, t: Tensor, _cond=None) -> Tensor:
        t2 = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        out = model_fn(torch.cat([x_t, x_t]), torch.cat([t2, t2]), batched_cond)
        pred_c, pred_u = out.chunk(2)
        s = _broadcast_scale(scale, x_t, pred_c.dtype)
        return pred_u + s * (pred_c - pred_u)

    return guided


def _broadcast_scale(scale: float | Tensor, x_t: Tensor, dtype: torch.dtype) -> float | Tensor:
    """A scalar stays; a per-frame `[F]` scale becomes `[1, 1, F, 1, 1]` against `x_t`."""
    if isinstance(scale, Tensor) and scale.ndim > 0:
        if scale.ndim != 1 or scale.shape[0] != x_t.shape[2]:
            raise ValueError(f"per-frame guidance scale must be [F] = [{x_t.shape[2]}], got {tuple(scale.shape)}")
        return scale.to(device=x_t.device, dtype=dtype)[None, None, :, None, None]
    return scale


def history_guided_denoiser(model_fn: Callable, cond, uncond, free, scale: float | Tensor, history_scale: float,
                            free_input: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> Callable:
    """Classifier-free guidance on the text plus history guidance on the given frames (Song et
    al. 2025, "History-Guided Video Diffusion"):

        pred = pred_u + s (pred_c - pred_u) + (h - 1) (pred_c - pred_f)

    `pred_c`: text and given frames (`cond`, input `x_t`, `t`); `pred_u`: negative text and the
    same given frames (`uncond`); `pred_f`: text without the given frames: conditioning `free`
    (given-frame channels zeroed) on the input `free_input(x_t, t) -> (x_f, t_f)`, which noises
    the given frames to the level of the generated ones, so the model sees them only as noisy
    frames. `h = 1` is classifier-free guidance alone; `h > 1` pulls the generated frames towards
    what the given ones imply (identity, motion) and away from the text-only prior; `0 < h < 1`
    interpolates towards that prior. With `uncond` None the text term is left out (one branch
    fewer). All branches run in one forward pass.
    """
    branches = [cond, free] if uncond is None else [cond, uncond, free]
    batched_cond = _cat_conditions(branches)

    def guided(x_t: Tensor, t: Tensor, _cond=None) -> Tensor:
        t2 = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        x_f, t_f = free_input(x_t, t2)
        same = len(branches) - 1  # branches that see x_t itself
        out = model_fn(torch.cat([x_t] * same + [x_f]), torch.cat([t2] * same + [t_f]), batched_cond)
        out = out.chunk(len(branches))
        pred_c, pred_f = out[0], out[-1]
        pred = pred_c + (history_scale - 1.0) * (pred_c - pred_f)
        if uncond is not None:
            pred = pred + (_broadcast_scale(scale, x_t, pred_c.dtype) - 1.0) * (pred_c - out[1])
        return pred

    return guided
