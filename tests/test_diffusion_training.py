"""Training-time timestep samplers, noisy inputs with held-clean frames, and the masked loss."""

import pytest
import torch
from scipy import stats

from vidiff.diffusion import (
    FlowSchedule,
    add_noise,
    diffusion_loss,
    foreground_weights,
    from_x0_eps,
    logit_normal_timesteps,
    timestep_shift,
    uniform_timesteps,
    vp_schedule,
)

P_MIN = 1e-3  # fixed seeds, so a pass is deterministic; this bounds how unlucky a seed can be


def test_uniform_timesteps_distribution_and_shapes():
    g = torch.Generator().manual_seed(0)
    t = uniform_timesteps(20000, generator=g)
    assert t.shape == (20000,)
    assert stats.kstest(t.numpy(), "uniform").pvalue > P_MIN
    tf = uniform_timesteps(500, frames=8, generator=g)
    assert tf.shape == (500, 8)
    # frames are drawn independently
    r = torch.corrcoef(tf.T)
    assert (r - torch.eye(8)).abs().max() < 5 / 500**0.5


def test_logit_normal_timesteps_distribution():
    g = torch.Generator().manual_seed(1)
    t = logit_normal_timesteps(20000, mean=0.5, std=0.8, generator=g).double()
    z = torch.log(t) - torch.log1p(-t)
    assert stats.kstest(z.numpy(), "norm", args=(0.5, 0.8)).pvalue > P_MIN
    with pytest.raises(ValueError, match="std must be > 0"):
        logit_normal_timesteps(4, std=0.0)


@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_shifted_timesteps(shift):
    # Same draws, then the shift: t' = s t / (1 + (s - 1) t).
    a = uniform_timesteps(1000, shift=shift, generator=torch.Generator().manual_seed(2))
    b = uniform_timesteps(1000, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, timestep_shift(b, shift))
    # distribution: P(t' <= shift(u)) = u, i.e. unshifting gives U(0, 1)
    t = logit_normal_timesteps(20000, frames=1, shift=shift, generator=torch.Generator().manual_seed(3))
    back = timestep_shift(t.double(), 1 / shift).flatten()
    z = torch.log(back) - torch.log1p(-back)
    assert stats.kstest(z.numpy(), "norm").pvalue > P_MIN


def test_timestep_samplers_are_seeded():
    for fn in (uniform_timesteps, logit_normal_timesteps):
        a = fn(16, frames=3, generator=torch.Generator().manual_seed(7))
        b = fn(16, frames=3, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)


SCHEDS = [(vp_schedule("linear"), "eps"), (vp_schedule("cosine"), "v"), (FlowSchedule(), "flow"),
          (FlowSchedule(), "x0")]


@pytest.mark.parametrize("sched,kind", SCHEDS)
def test_add_noise_holds_masked_frames_clean(sched, kind):
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(3, 4, 5, 2, 2, generator=g), torch.randn(3, 4, 5, 2, 2, generator=g)
    t = torch.rand(3, generator=g) * 0.9 + 0.05
    mask = torch.zeros(3, 5)
    mask[:, 0] = 1
    mask[2, 4] = 1
    x_t, tf = add_noise(x0, eps, t, sched, frame_mask=mask)
    assert tf.shape == (3, 5) and (tf[mask.bool()] == 0).all()
    torch.testing.assert_close(tf[~mask.bool()], t[:, None].expand(3, 5)[~mask.bool()])
    held = mask.bool()[:, None, :, None, None].expand_as(x0)
    assert torch.equal(x_t[held], x0[held])
    a, s = sched.alpha_sigma(tf.double())
    ref = a.float()[:, None, :, None, None] * x0 + s.float()[:, None, :, None, None] * eps
    torch.testing.assert_close(x_t, ref)


@pytest.mark.parametrize("sched,kind", SCHEDS)
def test_loss_is_mse_to_the_target_and_ignores_masked_frames(sched, kind):
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 3, 4, 2, 2, generator=g)
    t = torch.rand(2, 4, generator=g) * 0.9 + 0.05
    target = from_x0_eps(x0, eps, t, sched, kind)
    pred = target + torch.randn(target.shape, generator=g)
    # unweighted, unmasked: plain MSE
    torch.testing.assert_close(diffusion_loss(pred, x0, eps, t, sched, kind), (pred - target).square().mean())
    mask = torch.tensor([[1.0, 0, 0, 0], [1, 0, 1, 0]])
    base = diffusion_loss(pred, x0, eps, t, sched, kind, frame_mask=mask)
    keep = ~mask.bool()[:, None, :, None, None].expand_as(pred)
    torch.testing.assert_close(base, (pred - target).square()[keep].mean())
    # change masked frames arbitrarily (even to inf): same loss
    pred2 = pred.clone()
    pred2[~keep] = float("inf")
    x0b = x0.clone()
    x0b[~keep] = 123.0
    assert torch.equal(diffusion_loss(pred2, x0b, eps, t, sched, kind, frame_mask=mask), base)
    # everything masked: zero, not nan
    assert diffusion_loss(pred, x0, eps, t, sched, kind, frame_mask=torch.ones(2, 4)) == 0


def _flow_loss_inputs(seed: int):
    """Random x0, eps, t [B] and prediction for B = 2 clips of [3, 4, 2, 2]; the generator goes on."""
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 3, 4, 2, 2, generator=g)
    t = torch.rand(2, generator=g)
    return g, x0, eps, t, torch.randn(x0.shape, generator=g)


def test_loss_frame_weights_are_a_weighted_mean():
    sched, kind = FlowSchedule(), "flow"
    g, x0, eps, t, pred = _flow_loss_inputs(6)
    w = torch.tensor([[1.0, 2.0, 0.5, 0.0], [3.0, 1.0, 1.0, 1.0]])
    per_frame = (pred - (eps - x0)).square().mean(dim=(1, 3, 4))  # [B, F]
    ref = (w * per_frame).sum() / w.sum()
    torch.testing.assert_close(diffusion_loss(pred, x0, eps, t, sched, kind, frame_weights=w), ref)
    # scaling all weights changes nothing; weights combine with the mask
    torch.testing.assert_close(diffusion_loss(pred, x0, eps, t, sched, kind, frame_weights=7 * w), ref)
    mask = torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 1]])
    wm = w * (1 - mask)
    torch.testing.assert_close(diffusion_loss(pred, x0, eps, t, sched, kind, frame_weights=w, frame_mask=mask),
                               (wm * per_frame).sum() / wm.sum())
    with pytest.raises(ValueError, match="frame_weights must be"):
        diffusion_loss(pred, x0, eps, t, sched, kind, frame_weights=torch.ones(2, 3))


def test_foreground_weights_closed_form():
    # a uniform background (spread 0) with a 2x2 object in frame 1: full weight there, 1 elsewhere
    x0 = torch.full((2, 3, 4, 4, 4), 0.5)
    x0[0, :, 1, 1:3, 1:3] = -2.0
    w = foreground_weights(x0, 3.0)
    expected = torch.ones(2, 1, 4, 4, 4)
    expected[0, :, 1, 1:3, 1:3] = 4.0
    torch.testing.assert_close(w, expected)
    # a background with spread: d = |x - median| per position (one channel), s = median(d)
    x = torch.tensor([0.0, 0.1, -0.1, 0.1, -0.1, 0.3, 0.5, 0.0]).reshape(1, 1, 1, 2, 4)
    d = (x - x.flatten().median()).abs()
    s = d.flatten().median()
    ref = 1 + 2.0 * ((d - 2 * s) / (2 * s)).clamp(0, 1)
    w = foreground_weights(x, 2.0)
    torch.testing.assert_close(w, ref)
    assert w[0, 0, 0, 1, 1] == 2.0 and w[0, 0, 0, 1, 2] == 3.0
    torch.testing.assert_close(foreground_weights(x, 0.0), torch.ones_like(x))
    with pytest.raises(ValueError, match=">= 0"):
        foreground_weights(x, -1.0)


def test_loss_position_weights_are_a_weighted_mean():
    sched, kind = FlowSchedule(), "flow"
    g, x0, eps, t, pred = _flow_loss_inputs(7)
    pw = torch.rand(2, 1, 4, 2, 2, generator=g) + 0.5
    mask = torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 1]])
    w = pw * (1 - mask)[:, None, :, None, None]
    se = (pred - (eps - x0)).square()
    ref = (w * se).sum() / (w.expand_as(se)).sum()
    torch.testing.assert_close(diffusion_loss(pred, x0, eps, t, sched, kind, frame_mask=mask, position_weights=pw), ref)
    with pytest.raises(ValueError, match="position_weights must be"):
        diffusion_loss(pred, x0, eps, t, sched, kind, position_weights=torch.ones(2, 1, 4, 2))


def test_loss_gradient_flows_only_through_counted_frames():
    sched = vp_schedule("linear")
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(1, 2, 3, 2, 2, generator=g), torch.randn(1, 2, 3, 2, 2, generator=g)
    pred = torch.randn(x0.shape, generator=g, requires_grad=True)
    diffusion_loss(pred, x0, eps, torch.tensor([0.5]), sched, "eps", frame_mask=torch.tensor([[1.0, 0, 0]])).backward()
    assert (pred.grad[:, :, 0] == 0).all() and (pred.grad[:, :, 1:] != 0).all()
