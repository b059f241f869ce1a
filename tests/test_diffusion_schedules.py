"""Schedules, time grids and prediction-type conversions (closed forms and diffusers parity)."""

import pytest
import torch

from vidiff.diffusion import (
    add_noise,
    FlowSchedule,
    VPSchedule,
    broadcast_time,
    flow_times,
    from_x0_eps,
    rescale_zero_terminal_snr,
    timestep_shift,
    to_x0_eps,
    unipc_flow_times,
    vp_betas,
    vp_schedule,
    vp_times,
    x0_denoiser,
)

D = torch.float64
diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("kind,dname", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                        ("cosine", "squaredcos_cap_v2")])
def test_vp_tables_match_diffusers(kind, dname):
    betas = {"beta_start": 0.00085, "beta_end": 0.012} if kind == "scaled_linear" else {}
    ref = diffusers.DDPMScheduler(beta_schedule=dname, **betas).alphas_cumprod.double()
    ours = vp_schedule(kind).alphas_cumprod
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=1e-7)  # diffusers builds betas in float32


def test_zero_terminal_snr_matches_diffusers():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as ref_rescale

    betas = vp_betas("scaled_linear")
    ref = torch.cumprod(1 - ref_rescale(betas.clone()), 0)
    ours = rescale_zero_terminal_snr(torch.cumprod(1 - betas, 0))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert ours[-1] == 0 and ours[0] == pytest.approx(1 - betas[0].item(), abs=1e-15)
    a, s = vp_schedule("scaled_linear", zero_terminal_snr=True).alpha_sigma(torch.tensor([1.0]))
    assert a.item() == 0 and s.item() == 1


@pytest.mark.parametrize("sched", [vp_schedule("linear"), vp_schedule("cosine"),
                                   vp_schedule("scaled_linear", zero_terminal_snr=True)])
def test_vp_continuous_time(sched):
    T = sched.num_train_steps
    i = torch.arange(T)
    # Discrete step i sits exactly at t = (i + 1) / T.
    assert torch.equal(sched.alpha_bar((i + 1).double() / T), sched.alphas_cumprod)
    a, s = sched.alpha_sigma(torch.tensor([0.0]))
    assert a.item() == 1 and s.item() == 0
    t = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=D)
    a, s = sched.alpha_sigma(t)
    torch.testing.assert_close(a * a + s * s, torch.ones_like(t), rtol=0, atol=1e-12)
    fine = sched.alpha_bar(torch.linspace(0, 1, 20001, dtype=D))
    assert (fine[1:] <= fine[:-1]).all()
    # Midpoint between table points: mean of the neighbours' log-SNR (both finite there).
    lam = lambda ab: torch.log(ab) - torch.log1p(-ab)  # noqa: E731
    j = torch.arange(0, T - 2, 37)
    mid = sched.alpha_bar((j + 1.5).double() / T)
    ref = 0.5 * (lam(sched.alphas_cumprod[j]) + lam(sched.alphas_cumprod[j + 1]))
    torch.testing.assert_close(lam(mid), ref, rtol=1e-10, atol=1e-10)
    # First segment (clean point has infinite log-SNR): linear in alpha_bar.
    torch.testing.assert_close(sched.alpha_bar(torch.tensor(0.25 / T, dtype=D)),
                               1 - 0.25 * (1 - sched.alphas_cumprod[0]))
    with pytest.raises(ValueError, match="time must lie in"):
        sched.alpha_bar(torch.tensor([1.5]))


def test_vp_schedule_rejects_bad_tables():
    with pytest.raises(ValueError, match="non-increasing"):
        VPSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="unknown VP schedule kind"):
        vp_schedule("quadratic")


def test_timestep_shift():
    t = torch.linspace(0, 1, 101, dtype=D)
    for s in (0.5, 1.0, 3.0, 5.0):
        u = timestep_shift(t, s)
        assert u[0] == 0 and u[-1] == 1 and (u[1:] > u[:-1]).all()
        torch.testing.assert_close(timestep_shift(u, 1 / s), t)
        # shift multiplies the noise-to-signal ratio t / (1 - t) by s
        torch.testing.assert_close(u[1:-1] / (1 - u[1:-1]), s * t[1:-1] / (1 - t[1:-1]))
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas.double()  # shifted table
    torch.testing.assert_close(timestep_shift(torch.arange(1000, 0, -1, dtype=D) / 1000, 3.0), ref,
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="shift must be > 0"):
        timestep_shift(t, 0.0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 25, 50])
def test_vp_times_match_diffusers(spacing, n):
    ddim = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    ddim.set_timesteps(n)
    off = 1 if spacing == "leading" else 0
    t = vp_times(n, spacing, steps_offset=off)
    assert torch.equal(t[:-1], (ddim.timesteps.double() + 1) / 1000) and t[-1] == 0
    for cls in (diffusers.DPMSolverMultistepScheduler, diffusers.UniPCMultistepScheduler):
        sched = cls(timestep_spacing=spacing)
        sched.set_timesteps(n)
        t = vp_times(n, spacing, multistep=True)
        assert torch.equal(t[:-1], (sched.timesteps.double() + 1) / 1000), cls.__name__
        # the Karras sigmas diffusers steps through are our sigma / alpha at these times
        a, s = VPSchedule(sched.alphas_cumprod).alpha_sigma(t)
        torch.testing.assert_close(s / a, sched.sigmas.double(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("n,shift", [(1, 1.0), (10, 1.0), (30, 3.0), (50, 5.0)])
def test_flow_grids_match_diffusers(n, shift):
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    fm.set_timesteps(n)
    torch.testing.assert_close(flow_times(n, shift), fm.sigmas.double(), rtol=0, atol=1e-6)
    up = diffusers.UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift,
                                           prediction_type="flow_prediction")
    up.set_timesteps(n)
    t = unipc_flow_times(n, shift)
    torch.testing.assert_close(t, up.sigmas.double(), rtol=0, atol=1e-6)
    assert t[0] < 1 and t[-1] == 0
    # Wan's model timesteps are these sigmas * 1000, truncated
    assert torch.equal((t[:-1] * 1000).to(torch.float32).long(), up.timesteps)


SCHEDULES = [vp_schedule("linear"), vp_schedule("cosine", zero_terminal_snr=True), FlowSchedule()]


@pytest.mark.parametrize("sched", SCHEDULES, ids=["vp", "vp-zsnr", "flow"])
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "flow"])
def test_prediction_round_trip(sched, kind):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 4, 3, 3, generator=g, dtype=D)
    eps = torch.randn(3, 2, 4, 3, 3, generator=g, dtype=D)
    t = torch.rand(3, 4, generator=g, dtype=D) * 0.98 + 0.01  # per frame
    a, s = sched.alpha_sigma(t)
    x_t = broadcast_time(a, x0) * x0 + broadcast_time(s, x0) * eps
    pred = from_x0_eps(x0, eps, t, sched, kind)
    x0_r, eps_r = to_x0_eps(pred, x_t, t, sched, kind)
    torch.testing.assert_close(x0_r, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(eps_r, eps, rtol=0, atol=1e-9)


def test_v_and_flow_targets_match_diffusers():
    ddpm = diffusers.DDPMScheduler()
    vp = VPSchedule(ddpm.alphas_cumprod)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 4, 3, 2, 2, generator=g), torch.randn(2, 4, 3, 2, 2, generator=g)
    steps = torch.tensor([10, 700])
    ref = ddpm.get_velocity(x0, eps, steps)
    ours = from_x0_eps(x0, eps, (steps + 1) / 1000, vp, "v")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # FlowMatch: diffusers' forward process equals ours, and x0 = x_t - t * u with u = eps - x0
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    fm.set_timesteps(10)
    k = torch.tensor([2, 7])
    ref = fm.scale_noise(x0, fm.timesteps[k], eps)
    t = fm.sigmas[k].double()
    x_t, _ = add_noise(x0, eps, t, FlowSchedule())
    torch.testing.assert_close(x_t, ref)
    x0_r, _ = to_x0_eps(from_x0_eps(x0, eps, t, FlowSchedule(), "flow"), x_t, t, FlowSchedule(), "flow")
    torch.testing.assert_close(x0_r, x0)


@pytest.mark.parametrize("sched,kind", [(FlowSchedule(), "flow"), (vp_schedule("linear"), "eps"),
                                        (vp_schedule("cosine"), "v"), (vp_schedule("linear"), "x0")])
def test_x0_denoiser_reproduces_clean_frames_whatever_the_model_says(sched, kind):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, 3, 3, generator=g)
    t = torch.rand(2, 5, generator=g) * 0.9 + 0.05
    t[:, 0] = 0.0
    t[1, 3] = 0.0
    calls = []

    def garbage(x_t, tt, cond):
        calls.append((tt.shape, cond))
        return torch.randn(x_t.shape, generator=g) * 1e6

    out = x0_denoiser(garbage, sched, kind, cond="c")(x, t)
    held = (t == 0)[:, None, :, None, None].expand_as(x)
    assert torch.equal(out[held], x[held])
    assert not torch.equal(out[~held], x[~held])
    assert calls == [(torch.Size([2, 5]), "c")]


def test_broadcast_time_shapes_and_errors():
    x = torch.zeros(2, 3, 4, 5, 6)
    assert broadcast_time(torch.zeros(2), x).shape == (2, 1, 1, 1, 1)
    assert broadcast_time(torch.zeros(2, 4), x).shape == (2, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="does not match"):
        broadcast_time(torch.zeros(2, 3), x)
    with pytest.raises(ValueError, match="unknown prediction_type"):
        to_x0_eps(x, x, torch.zeros(2), FlowSchedule(), "epsilon")
