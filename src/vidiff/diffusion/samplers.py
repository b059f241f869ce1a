"""Samplers: functions over an x0-denoiser `denoise(x, t) -> x0_hat`.

Shared conventions:
  * `x` `[B, C, F, H, W]` is the starting sample at `times[0]` (e.g. unit Gaussian noise).
  * `times` is a non-increasing grid `[N + 1]` (usually ending at 0, see `time_grids`), or per
    sample `[N + 1, B]`, or per frame `[N + 1, B, F]`. `denoise` receives `[B]` or `[B, F]`.
  * An element whose time does not change in a step (`t_cur == t_next`, e.g. a conditioning
    frame held at t=0) is returned bit-identical; the denoiser's output there is never used.
  * Coefficients are computed in float64 from `schedule.alpha_sigma` and cast to `x.dtype`.
  * `callback(info)` gets a dict with i, x (after the step), t, t_next, x0 (the denoiser output).

Default step counts (what each method is tested at against a closed-form Gaussian model):
DDPM 1000, DDIM 50, Euler 50, Heun 25 (49 evaluations), DPM-Solver++(2M) 25, UniPC 20.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .schedules import broadcast_time

DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "euler": 50, "heun": 25, "dpmpp_2m": 25, "unipc": 20}

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _grid(times, x: Tensor) -> Tensor:
    times = torch.as_tensor(times, dtype=torch.float64, device=x.device)
    B, F = x.shape[0], x.shape[2]
    if x.ndim != 5:
        raise ValueError(f"samplers expect x as [B, C, F, H, W], got shape {tuple(x.shape)}")
    ok_shape = (times.ndim == 1 or (times.ndim == 2 and times.shape[1] == B)
                or (times.ndim == 3 and times.shape[1:] == (B, F)))
    if not ok_shape or times.shape[0] < 2:
        raise ValueError(f"times must be [N+1], [N+1, B={B}] or [N+1, B={B}, F={F}] with N >= 1; "
                         f"got {tuple(times.shape)}")
    if bool((times[1:] > times[:-1]).any()):
        raise ValueError("times must be non-increasing along the steps (from t_max down to 0)")
    if bool((times < 0).any() | (times > 1).any()):
        raise ValueError(f"times must lie in [0, 1]; got [{times.min().item()}, {times.max().item()}]")
    return times


def _model_t(t: Tensor, x: Tensor) -> Tensor:
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    return t.to(x.dtype) if x.dtype.is_floating_point else t


def _coeffs(schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """float64 alpha, sigma broadcast against x."""
    a, s = schedule.alpha_sigma(t)
    return broadcast_time(a, x), broadcast_time(s, x)


def _c(coef: Tensor, x: Tensor) -> Tensor:
    return coef.to(x.dtype) if isinstance(coef, Tensor) else coef


def _moving(t: Tensor, t_next: Tensor, x: Tensor) -> Tensor:
    return broadcast_time(t != t_next, x)


def _steps(n: int, progress: bool):
    return tqdm(range(n), disable=not progress, leave=False)


def _log_snr(a: Tensor, s: Tensor) -> Tensor:
    """lambda = log(alpha / sigma); +inf at sigma = 0."""
    return torch.log(a) - torch.log(s)


def sample_ddim(denoise: Denoiser, x: Tensor, times, schedule, *, eta: float = 0.0,
                generator: torch.Generator | None = None, callback=None, progress: bool = False) -> Tensor:
    """DDIM (Song et al. 2021) for any schedule; default 50 steps.

    eps_hat = (x - alpha x0_hat) / sigma
    x_next  = alpha_n x0_hat + sqrt(sigma_n^2 - c^2) eps_hat + c z,
    c = eta * sigma_n * sqrt(1 - e^{-2h}),  e^{-h} = (alpha sigma_n) / (alpha_n sigma)
    (c^2 is eta^2 times the variance of q(x_next | x, x0)). One `randn(x.shape)` per step when
    eta > 0. For rectified flow with eta = 0 this is exactly the Euler step.
    """
    times = _grid(times, x)
    for i in _steps(times.shape[0] - 1, progress):
        t, t_n = times[i], times[i + 1]
        x0 = denoise(x, _model_t(t, x))
        a, s = _coeffs(schedule, t, x)
        a_n, s_n = _coeffs(schedule, t_n, x)
        ratio = torch.where(s_n == 0, torch.zeros_like(s_n), (a * s_n) / (a_n * s))
        c = eta * s_n * (1 - ratio * ratio).clamp_min(0).sqrt()
        k_eps = (s_n * s_n - c * c).clamp_min(0).sqrt() / s
        x_new = _c(a_n, x) * x0 + _c(k_eps, x) * (x - _c(a, x) * x0)
        if eta > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x_new = x_new + _c(c, x) * z
        x = torch.where(_moving(t, t_n, x), x_new, x)
        if callback is not None:
            callback({"i": i, "x": x, "t": t, "t_next": t_n, "x0": x0})
    return x


def sample_ddpm(denoise: Denoiser, x: Tensor, times, schedule, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False) -> Tensor:
    """Ancestral DDPM (Ho et al. 2020): sample q(x_next | x, x0 = x0_hat) at every step, i.e.
    DDIM with eta = 1. Default 1000 steps (every training step, `vp_times(1000, "trailing")`);
    with few steps it under-disperses because x0_hat's own uncertainty is ignored."""
    return sample_ddim(denoise, x, times, schedule, eta=1.0, generator=generator, callback=callback,
                       progress=progress)


def _form(a: Tensor, s: Tensor, form: str) -> tuple[Tensor, Tensor]:
    """Scale c and noise level u with y = x / c = x0 + u * (...):
    karras: c = alpha, u = sigma / alpha (EDM's sigma);
    flow:   c = alpha + sigma, u = sigma / (alpha + sigma) (y = (1 - u) x0 + u eps)."""
    if form == "karras":
        return a, s / a
    if form == "flow":
        return a + s, s / (a + s)
    raise ValueError(f"unknown ODE form {form!r}; expected 'flow' or 'karras'")


def _euler_heun(denoise, x, times, schedule, form, heun, callback, progress):
    times = _grid(times, x)
    if form == "karras" and bool((schedule.alpha_sigma(times)[0] == 0).any()):
        raise ValueError("form='karras' needs alpha(t) > 0 on the whole grid (zero terminal SNR "
                         "or t=1 of rectified flow); use form='flow'")
    for i in _steps(times.shape[0] - 1, progress):
        t, t_n = times[i], times[i + 1]
        x0 = denoise(x, _model_t(t, x))
        c, u = _form(*_coeffs(schedule, t, x), form)
        c_n, u_n = _form(*_coeffs(schedule, t_n, x), form)
        y = x / _c(c, x)
        d = (y - x0) / _c(u, x)
        y_n = y + _c(u_n - u, x) * d
        moving = _moving(t, t_n, x)
        if heun and bool((moving & (u_n > 0)).any()):
            x0_2 = denoise(_c(c_n, x) * y_n, _model_t(t_n, x))
            d_2 = (y_n - x0_2) / _c(u_n, x)
            y_n = torch.where(u_n > 0, y + _c(u_n - u, x) * (d + d_2) / 2, y_n)
        x = torch.where(moving, _c(c_n, x) * y_n, x)
        if callback is not None:
            callback({"i": i, "x": x, "t": t, "t_next": t_n, "x0": x0})
    return x


def sample_euler(denoise: Denoiser, x: Tensor, times, schedule, *, form: str = "flow", callback=None,
                 progress: bool = False) -> Tensor:
    """Euler on the probability-flow ODE `dy/du = (y - x0_hat) / u`; default 50 steps.

    `form` picks the variables (see `_form`): "flow" (y = x / (alpha + sigma), u = sigma /
    (alpha + sigma); for rectified flow this is diffusers' FlowMatchEuler step
    `x + (t_n - t) v`) or "karras" (y = x / alpha, u = sigma / alpha, k-diffusion's Euler). A
    first-order step is the same in both (and equals DDIM with eta = 0) up to rounding.
    """
    return _euler_heun(denoise, x, times, schedule, form, False, callback, progress)


def sample_heun(denoise: Denoiser, x: Tensor, times, schedule, *, form: str = "flow", callback=None,
                progress: bool = False) -> Tensor:
    """Heun (EDM, Karras et al. 2022, Alg. 1 without churn): Euler, then the trapezoid of the
    slopes at both ends; plain Euler on a step that ends at u = 0. Default 25 steps (49 model
    evaluations). `form` as in `sample_euler`; here the two forms differ at second order.
    """
    return _euler_heun(denoise, x, times, schedule, form, True, callback, progress)


def sample_dpmpp_2m(denoise: Denoiser, x: Tensor, times, schedule, *, callback=None,
                    progress: bool = False) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), as diffusers' DPMSolverMultistepScheduler
    (dpmsolver++, midpoint, final sigma 0); default 25 steps.

    lambda = log(alpha / sigma), h = lambda_n - lambda, r = h_prev / h,
    D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev   (first order, D = x0_hat, on the first step, on
                                                 a step ending at sigma = 0, or without history)
    x_next = (sigma_n / sigma) x + alpha_n (1 - e^{-h}) D
    """
    times = _grid(times, x)
    x0_prev = h_prev = None
    for i in _steps(times.shape[0] - 1, progress):
        t, t_n = times[i], times[i + 1]
        x0 = denoise(x, _model_t(t, x))
        a, s = _coeffs(schedule, t, x)
        a_n, s_n = _coeffs(schedule, t_n, x)
        h = _log_snr(a_n, s_n) - _log_snr(a, s)
        ratio = torch.where(s_n == 0, torch.zeros_like(s_n), (a * s_n) / (a_n * s))  # e^{-h}
        D = x0
        if x0_prev is not None:
            r = h_prev / h
            second = torch.isfinite(r) & (r > 0) & (s_n > 0)
            k = torch.where(second, 0.5 / r, torch.zeros_like(r))
            D = torch.where(second, x0 + _c(k, x) * (x0 - x0_prev), x0)
        x_new = _c(s_n / s, x) * x + _c(a_n * (1 - ratio), x) * D
        x = torch.where(_moving(t, t_n, x), x_new, x)
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback({"i": i, "x": x, "t": t, "t_next": t_n, "x0": x0})
    return x


def _unipc_b(h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """bh2 quantities for step size h: phi1 = e^{-h} - 1, B = phi1, b1, b2 (the right-hand side
    of UniPC's order conditions, divided by B)."""
    hh = -h
    phi1 = torch.expm1(hh)
    g1 = phi1 / hh - 1
    g2 = g1 / hh - 0.5
    return phi1, phi1, g1 / phi1, 2 * g2 / phi1


def sample_unipc(denoise: Denoiser, x: Tensor, times, schedule, *, callback=None,
                 progress: bool = False) -> Tensor:
    """UniPC (Zhao et al. 2023), data prediction, bh2, order 2, as diffusers'
    UniPCMultistepScheduler with its defaults (lower_order_final, corrector on every step but
    after the last); default 20 steps. Wan 2.1: flow schedule with `unipc_flow_times(n, shift)`.

    Predictor k -> k+1 (x0 = m_k; phi1 = B = e^{-h} - 1; h = lambda_{k+1} - lambda_k):
      x_{k+1} = (sigma_{k+1}/sigma_k) x_k - alpha_{k+1} phi1 m_k - alpha_{k+1} B (1/2) D1,
      D1 = (m_{k-1} - m_k) / r1, r1 = (lambda_{k-1} - lambda_k) / h   (order 2 only)
    Corrector at k (uses the new m_k; h, r1 of the step k-1 -> k):
      x_k = (sigma_k/sigma_{k-1}) x_{k-1} - alpha_k phi1 m_{k-1}
            - alpha_k B (rho_0 D1 + rho_1 (m_k - m_{k-1})),
      order 1: rho_1 = 1/2, no D1; order 2: [[1, 1], [r1, 1]] rho = [b1, b2].
    Orders: 1 on the first and the last step, 2 in between.
    """
    times = _grid(times, x)
    N = times.shape[0] - 1
    hist = []  # (x_k after correction, m_k, lambda_k, alpha_k, sigma_k, t_k, order used from k)
    for k in _steps(N, progress):
        t, t_n = times[k], times[k + 1]
        m = denoise(x, _model_t(t, x))
        a, s = _coeffs(schedule, t, x)
        lam = _log_snr(a, s)
        if hist:
            x_p, m_p, lam_p, a_p, s_p, t_p, order_p = hist[-1]
            h = lam - lam_p
            phi1, B, b1, b2 = _unipc_b(h)
            x_c = _c(s / s_p, x) * x_p - _c(a * phi1, x) * m_p
            corr = 0.5 * (m - m_p)
            if order_p == 2:
                lam_pp, m_pp = hist[-2][2], hist[-2][1]
                r1 = (lam_pp - lam_p) / h
                ok = torch.isfinite(r1) & (r1 != 0) & (r1 != 1)
                rho0 = (b1 - b2) / (1 - r1)
                rho1 = b1 - rho0
                corr2 = _c(rho0 / r1, x) * (m_pp - m_p) + _c(rho1, x) * (m - m_p)
                corr = torch.where(ok, corr2, corr)
            x_c = x_c - _c(a * B, x) * corr
            x = torch.where(_moving(t_p, t, x) & (s > 0), x_c, x)
        order = 1 if k == 0 or k == N - 1 else 2
        a_n, s_n = _coeffs(schedule, t_n, x)
        h = _log_snr(a_n, s_n) - lam
        ratio = torch.where(s_n == 0, torch.zeros_like(s_n), (a * s_n) / (a_n * s))  # e^{-h}
        x_new = _c(s_n / s, x) * x + _c(a_n * (1 - ratio), x) * m
        if order == 2:
            _, m_p, lam_p = hist[-1][:3]
            phi1, B, _, _ = _unipc_b(h)
            r1 = (lam_p - lam) / h
            ok = torch.isfinite(r1) & (r1 != 0) & (s_n > 0)
            x_new = torch.where(ok, x_new - _c(a_n * B * 0.5 / r1, x) * (m_p - m), x_new)
        hist = (hist + [(x, m, lam, a, s, t, order)])[-2:]
        x = torch.where(_moving(t, t_n, x), x_new, x)
        if callback is not None:
            callback({"i": k, "x": x, "t": t, "t_next": t_n, "x0": m})
    return x
