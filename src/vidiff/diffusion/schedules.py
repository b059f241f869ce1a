"""Noise schedules on continuous time: `x_t = alpha(t) x0 + sigma(t) eps`, t=0 clean, t=1 noise.

Two families:
  * `VPSchedule` — variance preserving (alpha^2 + sigma^2 = 1), defined by a table of
    `alphas_cumprod` over T discrete training steps (DDPM style: linear, scaled-linear, cosine
    betas, optional zero-terminal-SNR rescale).
  * `FlowSchedule` — rectified flow, `alpha = 1 - t`, `sigma = t`.

Both expose `alpha_sigma(t) -> (alpha, sigma)` as float64 tensors shaped like `t`; that method is
the whole interface the rest of `vidiff.diffusion` relies on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

VP_KINDS = ("linear", "scaled_linear", "cosine")


def timestep_shift(t: Tensor | float, shift: float) -> Tensor | float:
    """SD3 / Wan timestep shift: `t' = s t / (1 + (s - 1) t)`.

    Keeps 0 and 1 fixed; `s > 1` moves mass towards noise (needed at high resolution).
    Equivalent to multiplying the noise-to-signal ratio `t / (1 - t)` of a flow path by `s`.
    """
    if shift <= 0:
        raise ValueError(f"timestep_shift: shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def broadcast_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a timestep-like tensor against a video `x` `[B, C, F, H, W]`.

    `[]` stays a scalar, `[B]` becomes `[B, 1, 1, 1, 1]`, per-frame `[B, F]` becomes
    `[B, 1, F, 1, 1]`.
    """
    if t.ndim == 0:
        return t
    if x.ndim != 5:
        raise ValueError(f"expected a video [B, C, F, H, W], got x of shape {tuple(x.shape)}")
    if t.ndim == 1:
        if t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"timestep of shape {tuple(t.shape)} does not match batch {x.shape[0]}")
        return t.view(-1, 1, 1, 1, 1)
    if t.ndim == 2:
        if t.shape[0] not in (1, x.shape[0]) or t.shape[1] not in (1, x.shape[2]):
            raise ValueError(
                f"per-frame timestep of shape {tuple(t.shape)} does not match [B, F] = "
                f"[{x.shape[0]}, {x.shape[2]}]"
            )
        return t[:, None, :, None, None]
    raise ValueError(f"a timestep is [B] or [B, F]; got shape {tuple(t.shape)}")


class FlowSchedule:
    """Rectified flow: `x_t = (1 - t) x0 + t eps`; its velocity `dx_t/dt = eps - x0`."""

    name = "flow"

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64)
        return 1.0 - t, t

    def __repr__(self) -> str:
        return "FlowSchedule()"


class VPSchedule:
    """Variance-preserving schedule from a table `alphas_cumprod[i]`, i = 0..T-1.

    Discrete training step i sits at continuous time `t_i = (i + 1) / T`, so that `t = 0` is
    exactly clean (alpha_bar = 1, an extra table point) and the last step sits at `t = 1`.
    A diffusers integer timestep i therefore corresponds to `t = (i + 1) / T` exactly.

    Between table points `alpha_bar(t)` is interpolated linearly in log-SNR,
    `lambda = log(alpha_bar / (1 - alpha_bar))`; on a segment where an end has infinite log-SNR
    (the clean point t=0, or a zero-terminal-SNR last step) it is interpolated linearly in
    alpha_bar instead. Then `alpha = sqrt(alpha_bar)`, `sigma = sqrt(1 - alpha_bar)`.
    """

    def __init__(self, alphas_cumprod: Tensor, name: str = "custom"):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D table of >= 2 values, got {tuple(ac.shape)}")
        if not bool(((ac >= 0) & (ac <= 1)).all()):
            raise ValueError("alphas_cumprod must lie in [0, 1]")
        if not bool((ac[1:] <= ac[:-1]).all()):
            raise ValueError("alphas_cumprod must be non-increasing")
        self.alphas_cumprod = ac
        self.name = name
        # Extended table: index j <-> t = j / T, with j = 0 the clean point.
        self._abar = torch.cat([ac.new_ones(1), ac])
        with torch.no_grad():
            self._lam = torch.log(self._abar) - torch.log1p(-self._abar)

    @property
    def num_train_steps(self) -> int:
        return self.alphas_cumprod.numel()

    def alpha_bar(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"time must lie in [0, 1]; got values in [{t.min().item()}, {t.max().item()}]")
        T = self.num_train_steps
        abar, lam = self._abar.to(t.device), self._lam.to(t.device)
        pos = t * T
        # (i + 1) / T * T can land a hair off the integer; snap so table points are exact.
        pos = torch.where((pos - pos.round()).abs() < 1e-9, pos.round(), pos)
        j = pos.floor().clamp(0, T - 1).long()
        frac = pos - j
        a0, a1 = abar[j], abar[j + 1]
        l0, l1 = lam[j], lam[j + 1]
        finite = torch.isfinite(l0) & torch.isfinite(l1)
        by_lam = torch.sigmoid(l0 + frac * (l1 - l0))
        by_abar = a0 + frac * (a1 - a0)
        out = torch.where(finite, by_lam, by_abar)
        # Exactly on a table point, return the table value (no rounding through log/sigmoid).
        return torch.where(frac == 0, a0, torch.where(frac == 1, a1, out))

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        abar = self.alpha_bar(t)
        return abar.sqrt(), (1.0 - abar).sqrt()

    def __repr__(self) -> str:
        return f"VPSchedule(name={self.name!r}, T={self.num_train_steps})"


def vp_betas(kind: str, num_train_steps: int = 1000, beta_start: float | None = None,
             beta_end: float | None = None, max_beta: float = 0.999) -> Tensor:
    """DDPM beta tables (float64):

    linear:        `beta_i = linspace(beta_start, beta_end, T)`            (default 1e-4, 0.02)
    scaled_linear: `beta_i = linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (default 8.5e-4, 0.012)
    cosine:        `beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta)`,
                   `f(u) = cos((u + 0.008) / 1.008 * pi / 2)^2`   (Nichol & Dhariwal 2021)
    """
    if num_train_steps < 2:
        raise ValueError(f"num_train_steps must be >= 2, got {num_train_steps}")
    T = num_train_steps
    if kind == "linear":
        b0 = 1e-4 if beta_start is None else beta_start
        b1 = 0.02 if beta_end is None else beta_end
        return torch.linspace(b0, b1, T, dtype=torch.float64)
    if kind == "scaled_linear":
        b0 = 0.00085 if beta_start is None else beta_start
        b1 = 0.012 if beta_end is None else beta_end
        return torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2
    if kind == "cosine":
        def f(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)],
                            dtype=torch.float64)
    raise ValueError(f"unknown VP schedule kind {kind!r}; expected one of {VP_KINDS}")


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Lin et al. 2024: shift and scale `sqrt(alpha_bar)` so the last step has SNR exactly 0.

    `r = (sqrt(abar) - sqrt(abar_last)) * sqrt(abar_0) / (sqrt(abar_0) - sqrt(abar_last))`,
    new `abar = r^2`. The first value is unchanged, the last becomes 0.
    """
    s = torch.as_tensor(alphas_cumprod, dtype=torch.float64).sqrt()
    first, last = s[0].clone(), s[-1].clone()
    s = (s - last) * first / (first - last)
    return s**2


def vp_schedule(kind: str = "linear", num_train_steps: int = 1000, *, beta_start: float | None = None,
                beta_end: float | None = None, zero_terminal_snr: bool = False) -> VPSchedule:
    """A `VPSchedule` from a named beta table (see `vp_betas`), optionally zero-terminal-SNR.

    With `zero_terminal_snr=True`, `alpha(1) = 0`: use "v" or "x0" prediction there, "eps"
    cannot recover x0 at t=1.
    """
    ac = torch.cumprod(1.0 - vp_betas(kind, num_train_steps, beta_start, beta_end), dim=0)
    if zero_terminal_snr:
        ac = rescale_zero_terminal_snr(ac)
    return VPSchedule(ac, name=kind + ("+zsnr" if zero_terminal_snr else ""))
