"""What a network predicts, and how to turn it into (x0, eps) for any schedule.

With `x_t = alpha x0 + sigma eps` the prediction types are
  "eps":  eps
  "x0":   x0
  "v":    alpha eps - sigma x0             (Salimans & Ho; for VP the usual v-prediction)
  "flow": eps - x0                         (rectified-flow velocity dx_t/dt when alpha = 1 - t)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .schedules import broadcast_time

PREDICTION_TYPES = ("eps", "x0", "v", "flow")


def _check_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def schedule_coefficients(t: Tensor, x: Tensor, schedule) -> tuple[Tensor, Tensor]:
    """`alpha(t), sigma(t)` broadcast against `x` ([B] -> [B,1,1,1,1], [B,F] -> [B,1,F,1,1]),
    computed in float64 and cast to `x.dtype`."""
    t = torch.as_tensor(t, device=x.device)
    alpha, sigma = schedule.alpha_sigma(t.to(torch.float64))
    return broadcast_time(alpha, x).to(x.dtype), broadcast_time(sigma, x).to(x.dtype)


def to_x0_eps(pred: Tensor, x_t: Tensor, t: Tensor, schedule, prediction_type: str) -> tuple[Tensor, Tensor]:
    """Solve `x_t = alpha x0 + sigma eps` together with the prediction for (x0, eps).

      eps:  x0 = (x_t - sigma eps) / alpha
      x0:   eps = (x_t - alpha x0) / sigma
      v:    x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2),  eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)
      flow: x0 = (x_t - sigma u) / (alpha + sigma),           eps = (x_t + alpha u) / (alpha + sigma)
    """
    _check_type(prediction_type)
    a, s = schedule_coefficients(t, x_t, schedule)
    if prediction_type == "eps":
        return (x_t - s * pred) / a, pred
    if prediction_type == "x0":
        return pred, (x_t - a * pred) / s
    if prediction_type == "v":
        d = a * a + s * s
        return (a * x_t - s * pred) / d, (s * x_t + a * pred) / d
    d = a + s
    return (x_t - s * pred) / d, (x_t + a * pred) / d


def from_x0_eps(x0: Tensor, eps: Tensor, t: Tensor, schedule, prediction_type: str) -> Tensor:
    """The prediction target of `prediction_type` for a clean sample and its noise (see module doc)."""
    _check_type(prediction_type)
    if prediction_type == "eps":
        return eps
    if prediction_type == "x0":
        return x0
    if prediction_type == "flow":
        return eps - x0
    a, s = schedule_coefficients(t, x0, schedule)
    return a * eps - s * x0


def x0_denoiser(model: Callable, schedule, prediction_type: str, cond=None) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap `model(x_t, t, cond) -> prediction` into `denoise(x_t, t) -> x0_hat`.

    `t` is `[B]` or per-frame `[B, F]` against `x_t` `[B, C, F, H, W]`. Where `sigma(t) = 0`
    (t = 0, e.g. frames held clean as conditioning) the result is `x_t` itself, bit for bit,
    whatever the model says there.
    """
    _check_type(prediction_type)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        pred = model(x_t, t, cond)
        x0, _ = to_x0_eps(pred, x_t, t, schedule, prediction_type)
        _, s = schedule_coefficients(t, x_t, schedule)
        return torch.where(s == 0, x_t, x0)

    return denoise
