"""Classifier-free and history guidance batching and the initial-noise priors' statistics."""

import math

import pytest
import torch

from vidiff.diffusion import (
    FlowSchedule,
    guidance_ramp,
    guided_denoiser,
    history_guided_denoiser,
    independent_noise,
    mixed_noise,
    progressive_noise,
    x0_denoiser,
)
from vidiff.models.conditioning import Conditioning


class CountingModel:
    """pred = x * (1 + t) + cond_offset, one call recorded per forward."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond):
        self.calls.append(x.shape[0])
        c = cond.text if isinstance(cond, Conditioning) else cond
        return x * (1 + t.view(-1, 1, 1, 1, 1)) + c.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


def test_guidance_one_forward_and_formula():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 2, 4, 2, 2, generator=g), torch.rand(3, generator=g)
    cond = Conditioning(text=torch.randn(3, 5, 8, generator=g), text_mask=torch.ones(3, 5, dtype=torch.bool))
    uncond = Conditioning(text=torch.zeros(3, 5, 8), text_mask=torch.ones(3, 5, dtype=torch.bool))
    model = CountingModel()
    out = guided_denoiser(model, cond, uncond, 5.0)(x, t)
    assert model.calls == [6]
    pc, pu = model(x, t, cond), model(x, t, uncond)
    torch.testing.assert_close(out, pu + 5.0 * (pc - pu))
    # scale 1 is the conditional prediction; 0 the unconditional
    torch.testing.assert_close(guided_denoiser(model, cond, uncond, 1.0)(x, t), pc)
    torch.testing.assert_close(guided_denoiser(model, cond, uncond, 0.0)(x, t), pu)


def test_guidance_per_frame_ramp_and_tensor_conditions():
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 4, 2, 2, generator=g), torch.rand(2, 4, generator=g)  # per-frame t
    c, u = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)

    def model(x, t, cond):
        return x * t[:, None, :, None, None] + cond.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    ramp = guidance_ramp(1.0, 3.0, 4)
    torch.testing.assert_close(ramp, torch.tensor([1.0, 5 / 3, 7 / 3, 3.0]))
    out = guided_denoiser(model, c, u, ramp)(x, t)
    pc, pu = model(x, t, c), model(x, t, u)
    for f in range(4):
        torch.testing.assert_close(out[:, :, f], pu[:, :, f] + ramp[f] * (pc[:, :, f] - pu[:, :, f]))
    with pytest.raises(ValueError, match="per-frame guidance scale"):
        guided_denoiser(model, c, u, guidance_ramp(1, 2, 3))(x, t)
    # composes with the x0 wrapper: guidance acts on the prediction before conversion
    den = x0_denoiser(guided_denoiser(model, c, u, ramp), FlowSchedule(), "flow")
    s = t[:, None, :, None, None]
    torch.testing.assert_close(den(x, t), x - s * out)


def test_guidance_rejects_unbatchable_conditions():
    with pytest.raises(TypeError, match="cannot batch"):
        guided_denoiser(lambda x, t, c: x, {"a": 1}, {"a": 2}, 2.0)


def _history_setup(seed):
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 3, 4, 2, 2, generator=g), torch.rand(2, 4, generator=g)
    c, u, f = (torch.randn(2, 5, 6, generator=g) for _ in range(3))
    shift = torch.randn(2, 3, 4, 2, 2, generator=g)

    def model(x, t, cond):
        return x * t[:, None, :, None, None] + cond.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    def free_input(x_t, t_):  # any input change the free branch makes must reach the model
        return x_t + shift, t_ * 0.5

    return x, t, c, u, f, model, free_input


def test_history_guidance_formula_in_one_forward():
    x, t, c, u, f, model, free_input = _history_setup(3)
    calls = []

    def counting(x_, t_, cond):
        calls.append(x_.shape[0])
        return model(x_, t_, cond)

    out = history_guided_denoiser(counting, c, u, f, 2.5, 1.75, free_input)(x, t)
    assert calls == [6]
    pc, pu, pf = model(x, t, c), model(x, t, u), model(*free_input(x, t), f)
    torch.testing.assert_close(out, pu + 2.5 * (pc - pu) + 0.75 * (pc - pf))
    # without the text branch: pred_f + h (pred_c - pred_f), two branches
    calls.clear()
    out = history_guided_denoiser(counting, c, None, f, 2.5, 3.0, free_input)(x, t)
    assert calls == [4]
    torch.testing.assert_close(out, pf + 3.0 * (pc - pf))


def test_history_guidance_one_is_classifier_free_guidance():
    x, t, c, u, f, model, free_input = _history_setup(4)
    ramp = guidance_ramp(1.0, 3.0, 4)
    torch.testing.assert_close(history_guided_denoiser(model, c, u, f, ramp, 1.0, free_input)(x, t),
                               guided_denoiser(model, c, u, ramp)(x, t))


def _frame_corr(e, lag):
    a, b = e[:, :, : e.shape[2] - lag].flatten(), e[:, :, lag:].flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def test_noise_priors_variance_and_frame_correlation():
    shape = (8, 4, 6, 32, 32)  # 196608 elements; 32768 (frame pair) samples per lag-1 estimate
    n_pairs = 8 * 4 * 32 * 32
    tol = 5 / math.sqrt(n_pairs)  # correlation standard error <= 1/sqrt(n) (a bit less for rho > 0)
    e = independent_noise(shape, generator=torch.Generator().manual_seed(0))
    assert abs(e.var().item() - 1) < 5 * math.sqrt(2 / e.numel()) and abs(_frame_corr(e, 1)) < tol
    for a in (0.0, 0.3, 0.9):
        e = mixed_noise(shape, a, generator=torch.Generator().manual_seed(1))
        assert abs(e.var(dim=(0, 1, 3, 4)) - 1).max() < 0.05  # per-frame variance
        for lag in (1, 4):
            assert abs(_frame_corr(e, lag) - a) < tol, (a, lag)
    for r in (0.5, 0.9):
        e = progressive_noise(shape, r, generator=torch.Generator().manual_seed(2))
        assert abs(e.var(dim=(0, 1, 3, 4)) - 1).max() < 0.05
        for lag in (1, 2, 4):
            assert abs(_frame_corr(e, lag) - r**lag) < 2 * tol, (r, lag)


def test_noise_priors_seeded_and_validated():
    s = (1, 2, 3, 4, 4)
    for fn, kw in ((independent_noise, {}), (mixed_noise, {"shared": 0.5}),
                   (progressive_noise, {"correlation": 0.7})):
        a = fn(s, **kw, generator=torch.Generator().manual_seed(3))
        b = fn(s, **kw, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and a.shape == s and a.dtype == torch.float32
    with pytest.raises(ValueError, match="shared fraction"):
        mixed_noise(s, 1.5)
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        independent_noise((2, 3))
