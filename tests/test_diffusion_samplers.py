"""Samplers against a closed-form Gaussian model and against diffusers' schedulers.

For data x0 ~ N(mu, Sigma) the optimal denoiser is exact:
  E[x0 | x_t] = mu + Sigma a (a^2 Sigma + s^2 I)^{-1} (x_t - a mu),
and the probability-flow ODE has the closed-form solution (eigenbasis Sigma = U diag(l) U^T)
  x_t = a mu + U sqrt(a^2 l + s^2) w,   w fixed along the path,
so a sampler's output can be checked both in distribution and, for ODE samplers, per sample.
"""

import math

import pytest
import torch

from vidiff.diffusion import (
    DEFAULT_STEPS,
    FlowSchedule,
    VPSchedule,
    flow_times,
    from_x0_eps,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_unipc,
    schedule_coefficients,
    unipc_flow_times,
    vp_schedule,
    vp_times,
    x0_denoiser,
)

D = torch.float64


class Gaussian:
    """4-d Gaussian data laid out as a video [B, C=4, F, 1, 1] (frames independent)."""

    def __init__(self, seed=0, lam=(0.3, 0.6, 1.0, 1.5)):
        g = torch.Generator().manual_seed(seed)
        self.U, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=D))
        self.lam = torch.tensor(lam, dtype=D)
        self.cov = self.U @ torch.diag(self.lam) @ self.U.T
        self.mu = torch.tensor([0.5, -0.3, 0.2, 0.8], dtype=D)

    def _v(self, v):
        return v.view(1, 4, 1, 1, 1)

    def _proj(self, x):
        return (x.movedim(1, -1) @ self.U).movedim(-1, 1)

    def _back(self, z):
        return (z.movedim(1, -1) @ self.U.T).movedim(-1, 1)

    def predict(self, x, t, schedule, kind):
        """Exact E[x0|x_t] and E[eps|x_t], returned as the `kind` prediction."""
        a, s = schedule_coefficients(t, x, schedule)
        lam = self._v(self.lam)
        z = self._proj(x - a * self._v(self.mu))
        den = a * a * lam + s * s
        x0 = self._v(self.mu) + self._back(z * a * lam / den)
        eps = self._back(z * s / den)
        return from_x0_eps(x0, eps, t, schedule, kind)

    def denoiser(self, schedule):
        return lambda x, t: self.predict(x, t, schedule, "x0")

    def model(self, schedule, kind):
        return lambda x, t, cond=None: self.predict(x, t, schedule, kind)

    def start(self, n, t, schedule, frames=1, seed=1, batch=4):
        """`n` exact samples of the marginal at time t, as `batch` videos of n/batch pixels, and
        their ODE coordinates w. Pixels are independent draws: few batch entries keep the
        per-sample time vectors short."""
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(batch, 4, frames, n // batch, 1, generator=g, dtype=D)
        tt = torch.full((batch,), float(t), dtype=D)
        a, s = schedule_coefficients(tt, w, schedule)
        lam = self._v(self.lam)
        return a * self._v(self.mu) + self._back(w * (a * a * lam + s * s).sqrt()), w

    def ode_at(self, w, t, schedule):
        """The exact probability-flow ODE solution at time t for ODE coordinates w."""
        tt = torch.full((w.shape[0],), float(t), dtype=D)
        a, s = schedule_coefficients(tt, w, schedule)
        lam = self._v(self.lam)
        return a * self._v(self.mu) + self._back(w * (a * a * lam + s * s).sqrt())


G = Gaussian()

VP = vp_schedule("linear")
FLOW = FlowSchedule()


def _run(name, schedule, times, x, **kw):
    fns = {"ddpm": sample_ddpm, "ddim": sample_ddim, "euler": sample_euler, "heun": sample_heun,
           "dpmpp_2m": sample_dpmpp_2m, "unipc": sample_unipc}
    return fns[name](G.denoiser(schedule), x, times, schedule, **kw)


# (sampler, schedule, grid at the default step count, extra kwargs, bias allowance)
# First-order ODE methods carry an O(1/N) covariance bias at N = 50 (measured ~6% here); the
# allowance states it. Second-order and stochastic methods get none.
MOMENT_CASES = [
    ("ddpm", VP, lambda n: vp_times(n, "trailing"), {"generator": 3}, 0.0),
    ("ddim", VP, lambda n: vp_times(n, "trailing"), {}, 0.10),
    ("ddim", VP, lambda n: vp_times(n, "trailing"), {"eta": 0.5, "generator": 4}, 0.12),
    ("euler", FLOW, lambda n: flow_times(n, 3.0), {}, 0.10),
    ("heun", FLOW, lambda n: flow_times(n, 3.0), {}, 0.0),
    ("heun", VP, lambda n: vp_times(n, "trailing"), {"form": "karras"}, 0.0),
    ("dpmpp_2m", VP, lambda n: vp_times(n, "linspace", multistep=True), {}, 0.0),
    ("unipc", VP, lambda n: vp_times(n, "linspace", multistep=True), {}, 0.0),
    ("unipc", FLOW, lambda n: unipc_flow_times(n, 3.0), {}, 0.0),
]


@pytest.mark.parametrize("name,schedule,grid,kw,allowance", MOMENT_CASES,
                         ids=[f"{c[0]}-{type(c[1]).__name__}-{i}" for i, c in enumerate(MOMENT_CASES)])
def test_default_steps_reproduce_gaussian_moments(name, schedule, grid, kw, allowance):
    n = 20000
    kw = dict(kw)
    if "generator" in kw:
        kw["generator"] = torch.Generator().manual_seed(kw["generator"])
    times = grid(DEFAULT_STEPS[name])
    assert times.shape[0] == DEFAULT_STEPS[name] + 1 and times[-1] == 0
    x, _ = G.start(n, times[0].item(), schedule)
    out = _run(name, schedule, times, x, **kw)[:, :, 0].movedim(1, -1).reshape(-1, 4)
    # Whiten with the true law: mean 0 and identity covariance expected.
    W = G.U @ torch.diag(G.lam.rsqrt()) @ G.U.T
    v = (out - G.mu) @ W.T
    # Sampling standard errors: mean 1/sqrt(n); variance sqrt(2/n); covariance sqrt(1/n).
    # 5 standard errors each (10 entries tested: a false alarm is < 1e-4 likely).
    se_mean = 1 / math.sqrt(n)
    se_cov = torch.full((4, 4), 1 / math.sqrt(n), dtype=D) + torch.eye(4, dtype=D) * (math.sqrt(2 / n) - 1 / math.sqrt(n))
    assert (v.mean(0).abs() < 5 * se_mean).all(), v.mean(0)
    err = (torch.cov(v.T) - torch.eye(4, dtype=D)).abs()
    assert (err < 5 * se_cov + allowance).all(), err


@pytest.mark.parametrize("name,schedule,order,kw", [
    ("ddim", VP, 1, {}), ("euler", FLOW, 1, {}), ("euler", VP, 1, {"form": "karras"}),
    ("heun", FLOW, 2, {}), ("heun", VP, 2, {"form": "karras"}), ("heun", VP, 2, {"form": "flow"}),
    ("dpmpp_2m", VP, 2, {}), ("dpmpp_2m", FLOW, 2, {}), ("unipc", VP, 2, {}), ("unipc", FLOW, 2, {}),
])
def test_ode_samplers_converge_to_exact_flow_at_their_order(name, schedule, order, kw):
    """Per-sample error against the closed-form ODE solution shrinks like N^-order.

    On a smooth grid between t = 0.95 and 0.05 (no final jump to t = 0, which every method
    takes as x0_hat and whose error depends on the schedule near 0, not on the method).
    """
    errs = []
    for n_steps in (20, 40, 80):
        times = torch.linspace(0.95, 0.05, n_steps + 1, dtype=D)
        x, w = G.start(512, times[0].item(), schedule, seed=7)
        out = _run(name, schedule, times, x, **kw)
        errs.append((out - G.ode_at(w, times[-1].item(), schedule)).abs().mean().item())
    # Rate over the whole range: signed error terms of different orders can cancel at one N
    # (UniPC's corrector is third order, its final predictor step first order).
    rate = math.log2(errs[0] / errs[-1]) / 2
    assert order - 0.5 < rate, (errs, rate)
    if order == 1:
        assert rate < 1.5, (errs, rate)


def _per_frame_times(times, B, held):
    """[N+1, B, F=3] grid: frame `held` stays at t=0, the others follow `times`."""
    tt = times[:, None, None].expand(-1, B, 3).clone()
    tt[:, :, held] = 0.0
    return tt


@pytest.mark.parametrize("name,schedule,kw", [
    ("ddpm", VP, {"generator": 1}), ("ddim", VP, {"eta": 0.7, "generator": 1}), ("ddim", FLOW, {}),
    ("euler", FLOW, {}), ("euler", VP, {"form": "karras"}), ("heun", FLOW, {}),
    ("heun", VP, {"form": "karras"}), ("dpmpp_2m", VP, {}), ("dpmpp_2m", FLOW, {}), ("unipc", VP, {}),
    ("unipc", FLOW, {}),
])
def test_held_frames_bit_identical_and_others_unaffected(name, schedule, kw):
    B, n = 6, 12
    times = unipc_flow_times(n, 3.0) if schedule is FLOW else vp_times(n, "trailing")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 4, 3, 2, 2, generator=g, dtype=D)
    x[:, :, 1] = G.mu.view(1, 4, 1, 1) + torch.randn(B, 4, 2, 2, generator=g, dtype=D)  # a "clean" frame

    def denoise(x, t):  # garbage (nan) wherever t = 0, exact elsewhere
        out = G.denoiser(schedule)(x, t)
        return torch.where((t == 0)[:, None, :, None, None], torch.full_like(out, float("nan")), out)

    def fresh(kw):
        kw = dict(kw)
        if "generator" in kw:
            kw["generator"] = torch.Generator().manual_seed(kw["generator"])
        return kw

    fns = {"ddpm": sample_ddpm, "ddim": sample_ddim, "euler": sample_euler, "heun": sample_heun,
           "dpmpp_2m": sample_dpmpp_2m, "unipc": sample_unipc}
    out = fns[name](denoise, x.clone(), _per_frame_times(times, B, held=1), schedule, **fresh(kw))
    assert torch.equal(out[:, :, 1], x[:, :, 1])
    assert torch.isfinite(out).all()
    if "generator" not in kw:  # deterministic: moving frames equal a run on the plain grid
        ref = fns[name](G.denoiser(schedule), x.clone(), times, schedule, **fresh(kw))
        torch.testing.assert_close(out[:, :, [0, 2]], ref[:, :, [0, 2]], rtol=0, atol=1e-12)


def test_per_frame_staggered_grid_matches_separate_runs():
    """Frames on different grids (diffusion forcing) evolve exactly as if sampled alone."""
    n, B = 10, 4
    t_a = vp_times(n, "trailing")
    t_b = torch.cat([torch.full((3,), t_a[0].item(), dtype=D), vp_times(n - 3, "trailing")])  # starts late
    tt = torch.stack([t_a, t_b], dim=1)[:, None, :].expand(-1, B, 2).contiguous()
    x, _ = G.start(B * 8, t_a[0].item(), VP, frames=2, batch=B)
    for fn in (sample_ddim, sample_dpmpp_2m, sample_unipc, sample_heun):
        out = fn(G.denoiser(VP), x.clone(), tt, VP)
        ref_a = fn(G.denoiser(VP), x[:, :, :1].clone(), t_a, VP)
        ref_b = fn(G.denoiser(VP), x[:, :, 1:].clone(), t_b[3:], VP)
        torch.testing.assert_close(out[:, :, :1], ref_a, rtol=0, atol=1e-10)
        # the second frame's history starts when it starts to move, so multistep methods restart
        torch.testing.assert_close(out[:, :, 1:], ref_b, rtol=0, atol=1e-10)


def test_first_order_step_is_the_same_in_every_form():
    """DDIM (eta 0), Euler in Karras form and Euler in flow form are one method; also checks
    per-sample grids [N+1, B], the callback and the progress bar path."""
    times = vp_times(15, "trailing")
    x, _ = G.start(64, 1.0, VP, batch=2)
    seen = []
    a = sample_ddim(G.denoiser(VP), x, times, VP, callback=seen.append)
    b = sample_euler(G.denoiser(VP), x, times, VP, form="karras")
    c = sample_euler(G.denoiser(VP), x, times[:, None].expand(-1, 2), VP, form="flow", progress=True)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, a, rtol=0, atol=1e-10)
    assert [d["i"] for d in seen] == list(range(15))
    assert torch.equal(seen[-1]["x"], a) and seen[0]["t"] == times[0] and seen[-1]["t_next"] == 0


def test_bad_grids_rejected():
    x = torch.zeros(2, 4, 3, 1, 1)
    with pytest.raises(ValueError, match="non-increasing"):
        sample_ddim(G.denoiser(VP), x, torch.tensor([0.5, 0.7, 0.0]), VP)
    with pytest.raises(ValueError, match=r"\[N\+1, B=2, F=3\]"):
        sample_ddim(G.denoiser(VP), x, torch.zeros(3, 2, 5), VP)
    with pytest.raises(ValueError, match="karras"):
        sample_heun(G.denoiser(FLOW), x.double(), flow_times(4), FLOW, form="karras")


# ----------------------------------------------------------------------------- diffusers parity

diffusers = pytest.importorskip("diffusers")


def _vp_from(sched):
    return VPSchedule(sched.alphas_cumprod.double())


def _diffusers_loop(sched, model, x, t_of_step, step_kw=lambda k: {}):
    for k, ts in enumerate(sched.timesteps):
        t = torch.full((x.shape[0],), t_of_step(k, ts), dtype=D)
        x = sched.step(model(x, t), ts, x, **step_kw(k)).prev_sample
    return x


# diffusers' DDIM steps from t to t - T // n, so only grids with that stride are comparable.
@pytest.mark.parametrize("n,spacing,kind,eta", [(12, "leading", "eps", 0.0), (10, "trailing", "v", 0.0),
                                                (12, "leading", "eps", 0.8), (20, "trailing", "v", 1.0)])
def test_ddim_matches_diffusers(n, spacing, kind, eta):
    sched = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                                    timestep_spacing=spacing,
                                    prediction_type={"eps": "epsilon", "v": "v_prediction"}[kind])
    sched.set_timesteps(n)
    vp = _vp_from(sched)
    times = vp_times(n, spacing)
    assert torch.equal(times[:-1], (sched.timesteps.double() + 1) / 1000)
    x, _ = G.start(64, times[0].item(), vp, seed=3, batch=1)
    model = G.model(vp, kind)
    g = torch.Generator().manual_seed(11)
    g_replay = torch.Generator().manual_seed(11)
    noises = [torch.randn(x.shape, generator=g_replay, dtype=D) for _ in range(n)]
    ref = _diffusers_loop(sched, lambda x, t: model(x, t), x.clone(), lambda k, ts: (ts.item() + 1) / 1000,
                          (lambda k: {"eta": eta, "variance_noise": noises[k]}) if eta > 0 else (lambda k: {}))
    out = sample_ddim(x0_denoiser(model, vp, kind), x.clone(), times, vp, eta=eta, generator=g)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n,spacing", [(10, "linspace"), (20, "trailing"), (16, "leading")])
def test_dpmpp_2m_matches_diffusers(n, spacing):
    sched = diffusers.DPMSolverMultistepScheduler(beta_schedule="linear", algorithm_type="dpmsolver++",
                                                  solver_order=2, timestep_spacing=spacing)
    sched.set_timesteps(n)
    vp = _vp_from(sched)
    times = vp_times(n, spacing, multistep=True)
    assert torch.equal(times[:-1], (sched.timesteps.double() + 1) / 1000)
    x, _ = G.start(64, times[0].item(), vp, seed=4, batch=1)
    model = G.model(vp, "eps")
    ref = _diffusers_loop(sched, model, x.clone(), lambda k, ts: (ts.item() + 1) / 1000)
    out = sample_dpmpp_2m(x0_denoiser(model, vp, "eps"), x.clone(), times, vp)
    torch.testing.assert_close(out, ref.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n,shift", [(10, 1.0), (28, 3.0)])
def test_flow_euler_matches_diffusers(n, shift):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(n)
    times = flow_times(n, shift)
    torch.testing.assert_close(times, sched.sigmas.double(), rtol=0, atol=1e-6)
    x, _ = G.start(64, times[0].item(), FLOW, seed=5, batch=1)
    model = G.model(FLOW, "flow")
    ref = _diffusers_loop(sched, model, x.clone(), lambda k, ts: sched.sigmas[k].item())
    out = sample_euler(x0_denoiser(model, FLOW, "flow"), x.clone(), sched.sigmas.double(), FLOW)
    torch.testing.assert_close(out, ref.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n,spacing,kind", [(10, "linspace", "eps"), (20, "trailing", "v"),
                                            (25, "linspace", "eps")])
def test_unipc_vp_matches_diffusers(n, spacing, kind):
    sched = diffusers.UniPCMultistepScheduler(beta_schedule="linear", timestep_spacing=spacing,
                                              prediction_type={"eps": "epsilon", "v": "v_prediction"}[kind])
    sched.set_timesteps(n)
    sched.sigmas = sched.sigmas.double()  # diffusers keeps float32 sigmas; float64 removes its rounding
    vp = _vp_from(sched)
    times = vp_times(n, spacing, multistep=True)
    assert torch.equal(times[:-1], (sched.timesteps.double() + 1) / 1000)
    x, _ = G.start(64, times[0].item(), vp, seed=6, batch=1)
    model = G.model(vp, kind)
    ref = _diffusers_loop(sched, model, x.clone(), lambda k, ts: (ts.item() + 1) / 1000)
    out = sample_unipc(x0_denoiser(model, vp, kind), x.clone(), times, vp)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n,shift", [(10, 3.0), (50, 5.0), (2, 3.0), (3, 1.0)])
def test_unipc_flow_sigmas_matches_diffusers(n, shift):
    """Wan 2.1's scheduler: UniPC with use_flow_sigmas, flow_prediction, flow_shift."""
    sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                              flow_shift=shift)
    sched.set_timesteps(n)
    times = unipc_flow_times(n, shift)
    torch.testing.assert_close(times, sched.sigmas.double(), rtol=0, atol=1e-6)
    sched.sigmas = sched.sigmas.double()
    x, _ = G.start(64, times[0].item(), FLOW, seed=8, batch=1)
    model = G.model(FLOW, "flow")
    ref = _diffusers_loop(sched, model, x.clone(), lambda k, ts: sched.sigmas[k].item())
    # diffusers rounds the grid to float32 (alpha = 1e-6 at the top moves by ~3%): use its values
    out = sample_unipc(x0_denoiser(model, FLOW, "flow"), x.clone(), sched.sigmas, FLOW)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
