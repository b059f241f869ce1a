"""Training objective: noisy inputs with per-frame time, and the masked, weighted MSE."""

from __future__ import annotations

import torch
from torch import Tensor

from .prediction import from_x0_eps, schedule_coefficients


def per_frame_time(t: Tensor, frames: int) -> Tensor:
    """`[B]` -> `[B, F]` (repeated), `[B, F]` unchanged."""
    if t.ndim == 1:
        return t[:, None].expand(-1, frames)
    if t.ndim == 2 and t.shape[1] == frames:
        return t
    raise ValueError(f"timestep must be [B] or [B, {frames}], got shape {tuple(t.shape)}")


def add_noise(x0: Tensor, eps: Tensor, t: Tensor, schedule, frame_mask: Tensor | None = None,
              held_time: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
    """`x_t = alpha(t) x0 + sigma(t) eps` with per-frame time; frames with `frame_mask = 1` are
    held at `held_time` (a number or `[B]`, one per sample): by default clean (t = 0, x_t = x0
    exactly), or slightly noisy for context-noise augmentation.

    Returns `(x_t, t_frames)` with `t_frames` `[B, F]`, the time to give the model.
    """
    if x0.shape != eps.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and eps {tuple(eps.shape)} differ in shape")
    t = per_frame_time(t, x0.shape[2])
    if frame_mask is not None:
        held = torch.as_tensor(held_time, dtype=t.dtype, device=t.device)
        held = held[:, None].expand_as(t) if held.ndim == 1 else held.expand_as(t)
        t = torch.where(frame_mask.to(torch.bool), held, t)
    a, s = schedule_coefficients(t, x0, schedule)
    x_t = torch.where(s == 0, x0, a * x0 + s * eps)
    return x_t, t


def foreground_weights(x0: Tensor, strength: float) -> Tensor:
    """Per-position loss weights `[B, 1, F, H, W]` that favour what stands out of a clip's latents.

    A position's distance from the clip's background is `d = ||x0[b, :, f, h, w] - m_b||_2` over
    channels, with `m_b` the per-channel median over all the clip's positions (objects cover a
    small part of a clip, so the median is its background). With `s_b = median(d)` over the
    clip's positions (the spread of the background itself),

        w = 1 + strength * clamp((d - 2 s_b) / (2 s_b), 0, 1):

    1 within twice the background's spread, 1 + strength from four times it on. A uniform
    background (s_b = 0) gives every position that differs from it the full weight.
    """
    if x0.ndim != 5:
        raise ValueError(f"x0 must be [B, C, F, H, W], got shape {tuple(x0.shape)}")
    if strength < 0:
        raise ValueError(f"foreground weight strength must be >= 0, got {strength}")
    flat = x0.flatten(2)
    background = flat.median(dim=2, keepdim=True).values
    d = (flat - background).norm(dim=1)
    spread = d.median(dim=1, keepdim=True).values.clamp_min(torch.finfo(x0.dtype).tiny)
    ramp = ((d - 2 * spread) / (2 * spread)).clamp(0, 1)
    return (1 + strength * ramp).reshape(x0.shape[0], 1, *x0.shape[2:])


def diffusion_loss(pred: Tensor, x0: Tensor, eps: Tensor, t: Tensor, schedule, prediction_type: str,
                   frame_weights: Tensor | None = None, frame_mask: Tensor | None = None,
                   position_weights: Tensor | None = None) -> Tensor:
    """Weighted MSE against the target of `prediction_type` (see `prediction.from_x0_eps`).

    `loss = sum_e w_e (pred_e - target_e)^2 / sum_e w_e` over all elements e, where an element
    of frame (b, f) at (h, w) has weight `w = frame_weights[b, f] * (1 - frame_mask[b, f]) *
    position_weights[b, 0, f, h, w]` (see `foreground_weights`); so frames held clean (mask 1)
    count for nothing and the result is a weighted mean over counted elements.
    Returns 0 when nothing is counted.
    """
    if pred.shape != x0.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and x0 {tuple(x0.shape)} differ in shape")
    B, _, F = x0.shape[:3]
    target = from_x0_eps(x0, eps, per_frame_time(t, F), schedule, prediction_type)
    w = torch.ones(B, F, dtype=pred.dtype, device=pred.device)
    if frame_weights is not None:
        if frame_weights.shape != (B, F):
            raise ValueError(f"frame_weights must be [B, F] = [{B}, {F}], got {tuple(frame_weights.shape)}")
        w = w * frame_weights.to(pred.dtype)
    if frame_mask is not None:
        if frame_mask.shape != (B, F):
            raise ValueError(f"frame_mask must be [B, F] = [{B}, {F}], got {tuple(frame_mask.shape)}")
        w = torch.where(frame_mask.to(torch.bool), torch.zeros_like(w), w)
    w = w[:, None, :, None, None]
    if position_weights is not None:
        if position_weights.shape != (B, 1, *x0.shape[2:]):
            raise ValueError(f"position_weights must be [B, 1, F, H, W] = {(B, 1, *x0.shape[2:])}, "
                             f"got {tuple(position_weights.shape)}")
        w = w * position_weights.to(pred.dtype)
    se = (pred - target).square()
    # Masked frames are selected out (not multiplied) so that inf/nan there cannot leak in.
    num = torch.where(w > 0, w * se, torch.zeros_like(se)).sum()
    den = (w * se.new_ones(()).expand_as(se)).sum()
    return num / den.clamp_min(torch.finfo(se.dtype).tiny)
