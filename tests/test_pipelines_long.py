"""Long videos: sliding windows (latent and pixel overlap), fused windows, keyframes +
interpolation, prompt schedules, streaming output, bounded model inputs; seam metric."""

import numpy as np
import pytest
import torch

from vidiff.metrics.seams import boundary_change_ratio, frame_changes
from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.text import BuiltinTextEncoder
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.pipelines import PipelineConfig, SchedulerConfig, VideoPipeline
from vidiff.pipelines.long import (
    fuse_weights,
    periodic_window_noise,
    generate_long,
    iter_windows,
    keyframe_positions,
    latent_to_frames,
    prompt_schedule,
    window_prompt,
    window_starts,
)

A = "a large red circle moves right on a black background"
B = "a large red circle moves left on a black background"


def _tiny_pipeline(image_condition="concat", steps=2, guidance=2.0, prediction="flow"):
    torch.manual_seed(0)
    # factor 2 in time and space (explicit, not VAEConfig.world(), whose shapes may change)
    vae = CausalVAE3D(VAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(True,),
                                causal_padding="replicate"))
    text = BuiltinTextEncoder.create(dim=16, depth=1)
    in_ch = 4 + 2 + 4 if image_condition == "concat" else 4
    dit = VideoDiT(DiTConfig(in_channels=in_ch, out_channels=4, patch_size=(1, 2, 2), dim=24, num_heads=2,
                             num_layers=1, ffn_dim=32, text_dim=16, image_condition=image_condition, mask_channels=2))
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    sch = SchedulerConfig(num_inference_steps=steps, guidance_scale=guidance, prediction_type=prediction)
    return VideoPipeline(dit, vae, text, sch, PipelineConfig(num_frames=9, height=16, width=16))


@pytest.fixture(scope="module")
def pipe():
    return _tiny_pipeline()


class Spy:
    """Record what the denoiser receives on every call (frames seen, text rows)."""

    def __init__(self, model):
        self.model, self.frames, self.texts, self.batches, self.times = model, [], [], [], []

    def __enter__(self):
        orig = self.model.forward

        def forward(x, t, cond=None):
            self.frames.append(x.shape[2])
            self.batches.append(x.shape[0])
            self.times.append(t.clone())
            self.texts.append(None if cond is None or cond.text is None else cond.text[0].clone())
            return orig(x, t, cond)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.forward


# --------------------------------------------------------------------------- planning


def test_window_starts_closed_form():
    assert window_starts(5, 5, 1) == [0]
    assert window_starts(3, 5, 1) == [0]
    assert window_starts(13, 5, 1) == [0, 4, 8]          # exact tiling: 0-4, 4-8, 8-12
    assert window_starts(11, 5, 1) == [0, 4, 6]          # last moved back to end at 10 (overlap 3)
    assert window_starts(17, 5, 2) == [0, 3, 6, 9, 12]
    for total in range(1, 40):
        s = window_starts(total, 5, 2)
        assert s[-1] + min(5, total) == total and all(b - a <= 3 for a, b in zip(s, s[1:]))
    with pytest.raises(ValueError, match="overlap"):
        window_starts(10, 4, 4)


def test_fuse_weights_sum_to_one_and_ramp_in_overlaps():
    starts = window_starts(13, 5, 2)
    w = fuse_weights(starts, 5, 13)
    assert torch.allclose(w.sum(0), torch.ones(13, dtype=torch.float64), atol=0, rtol=1e-15)
    # frame 3 is local 3 of window 0 (tent 2) and local 0 of window 1 (tent 1): 2/3, 1/3
    assert starts[:2] == [0, 3]
    assert w[0, 3].item() == pytest.approx(2 / 3) and w[1, 3].item() == pytest.approx(1 / 3)
    assert (w[:, 0] == torch.tensor([1.0] + [0.0] * (len(starts) - 1), dtype=torch.float64)).all()


@pytest.mark.parametrize("total,overlap", [(25, 1), (13, 2), (17, 3), (9, 4)])
def test_periodic_window_noise_gives_every_fused_window_the_same_noise(total, overlap):
    window = 5
    base = torch.randn(1, 2, window, 3, 3, generator=torch.Generator().manual_seed(0))
    starts = window_starts(total, window, overlap)
    stride = window - overlap
    x = periodic_window_noise(base, stride, total)
    assert x.shape == (1, 2, total, 3, 3)
    assert all(torch.equal(x[:, :, t], base[:, :, t % stride]) for t in range(total))
    first = x[:, :, :window]
    for s in starts:
        if s % stride == 0:  # all but a last window moved back to end at the last frame
            assert torch.equal(x[:, :, s : s + window], first)
    with pytest.raises(ValueError, match="stride"):
        periodic_window_noise(base, 6, total)
    with pytest.raises(ValueError, match="stride"):
        periodic_window_noise(base, 0, total)


def test_keyframe_positions_and_frame_mapping():
    assert keyframe_positions(17, 5) == [0, 4, 8, 12, 16]
    assert keyframe_positions(5, 5) == [0, 4]
    p = keyframe_positions(14, 5)  # 13 steps in ceil(13/4) = 4 gaps
    assert p[0] == 0 and p[-1] == 13 and len(p) == 5 and max(b - a for a, b in zip(p, p[1:])) <= 4
    assert latent_to_frames(0, 5, 4) == (0, 17) and latent_to_frames(5, 9, 4) == (17, 33)


def test_prompt_schedule_segments_and_window_prompt():
    segs = prompt_schedule([(A, 30), (B, None)], 41)
    assert [(s.prompt, s.start, s.end) for s in segs] == [(A, 0, 30), (B, 30, 41)]
    even = prompt_schedule([A, B], 129)
    assert [(s.start, s.end) for s in even] == [(0, 64), (64, 129)]
    assert window_prompt(segs, 17, 33) == A and window_prompt(segs, 33, 41) == B
    with pytest.raises(ValueError, match="later entries"):
        prompt_schedule([(A, 50), (B, 10)], 41)
    with pytest.raises(ValueError, match="only the last"):
        prompt_schedule([(A, None), (B, 10)], 41)


@pytest.mark.parametrize("sampler", ["euler", "heun", "unipc", "dpmpp_2m"])
def test_denoise_latents_holds_frames_at_any_indices(pipe, sampler):
    """The pipeline's generalised conditioning: given frames at indices 0 and 4 (interpolation)
    come back bit-identical and reach a concat model as frame_mask / image_latent there."""
    gen = torch.Generator().manual_seed(0)
    given = torch.randn(1, 4, 2, 8, 8, generator=gen)
    noise = torch.randn(1, 4, 5, 8, 8, generator=gen)
    masks = []
    orig = pipe.transformer.forward
    pipe.transformer.forward = lambda x, t, c=None: masks.append((c.frame_mask.clone(), c.image_latent.clone())) \
        or orig(x, t, c)
    try:
        out = pipe.denoise_latents(noise, pipe.encode_prompts([A]), uncond_text=pipe.encode_prompts([""]),
                                   guidance_scale=2.0, given=given, given_index=[0, 4], sampler=sampler)
    finally:
        del pipe.transformer.forward
    assert torch.equal(out[:, :, [0, 4]], given)
    assert not torch.equal(out[:, :, 2], noise[:, :, 2])
    mask, latent = masks[0]
    assert mask.tolist() == [[1, 0, 0, 0, 1]] * 2  # cond and uncond rows
    assert torch.equal(latent[:1, :, [0, 4]], given) and not latent[:, :, 1:4].any()
    with pytest.raises(ValueError, match="indices"):
        pipe.denoise_latents(noise, pipe.encode_prompts([A]), given=given, given_index=[0, 5])


def test_denoise_latents_builds_no_graph_when_the_caller_has_grad_on(pipe):
    """Callers outside `__call__` (streaming, probes) must not keep every step's activations."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 3, 8, 8, generator=gen)
    grad_modes = []
    orig = pipe.transformer.forward
    pipe.transformer.forward = lambda x, t, c=None: grad_modes.append(torch.is_grad_enabled()) or orig(x, t, c)
    try:
        with torch.enable_grad():
            out = pipe.denoise_latents(noise, pipe.encode_prompts([A]), given=noise[:, :, :1], given_index=[0])
    finally:
        del pipe.transformer.forward
    assert grad_modes and not any(grad_modes)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("sampler", ["euler", "heun", "unipc", "dpmpp_2m"])
def test_context_noise_shows_one_fixed_noisy_context_and_returns_the_clean_one(pipe, sampler):
    gen = torch.Generator().manual_seed(1)
    given = torch.randn(1, 4, 2, 8, 8, generator=gen)
    noise = torch.randn(1, 4, 5, 8, 8, generator=gen)
    seen = []
    orig = pipe.transformer.forward
    pipe.transformer.forward = lambda x, t, c=None: seen.append((x.clone(), t.clone(), c.image_latent.clone())) \
        or orig(x, t, c)
    try:
        out = pipe.denoise_latents(noise, pipe.encode_prompts([A]), given=given, given_index=[0, 1],
                                   context_noise=0.25, sampler=sampler, generator=torch.Generator().manual_seed(2))
    finally:
        del pipe.transformer.forward
    assert torch.equal(out[:, :, :2], given)
    x0, t0, latent0 = seen[0]
    eps = (x0[:, :, :2] - 0.75 * given) / 0.25  # flow: x = (1 - t_c) x + t_c eps
    assert abs(float(eps.std()) - 1.0) < 0.2 and not torch.equal(x0[:, :, :2], given)
    assert torch.equal(latent0[:, :, :2], x0[:, :, :2])  # the channels carry the same noisy context
    for x, t, _ in seen:  # the same context at the same level through every step
        assert torch.equal(x[:, :, :2], x0[:, :, :2]) and bool((t[:, :2] == 0.25).all())
    with pytest.raises(ValueError, match="context_noise"):
        pipe.denoise_latents(noise, pipe.encode_prompts([A]), given=given, given_index=[0, 1], context_noise=1.0)


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_context_noise_reaches_generated_overlaps_only(pipe, space):
    image = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with Spy(pipe.transformer) as spy:
        chunks = list(iter_windows(pipe, A, image=image, num_frames=25, window=5, overlap=1, context_noise=0.2,
                                   overlap_space=space, seed=0))
    held = [t[0, 0].item() for t in spy.times]
    steps = len(held) // len(chunks)
    assert held[:steps] == [0.0] * steps  # the user's first frame stays clean
    assert held[steps:] == pytest.approx([0.2] * (len(held) - steps))
    if space == "latent":  # the returned overlap is the clean one
        for prev, cur in zip(chunks, chunks[1:]):
            assert torch.equal(cur.latents[:, :, :1], prev.latents[:, :, -1:])


def test_context_noise_defaults_to_the_pipelines_scheduler(pipe):
    def held_times(**kw):
        with Spy(pipe.transformer) as spy:
            list(iter_windows(pipe, A, num_frames=17, window=5, overlap=1, seed=0, **kw))
        return sorted({round(t[0, 0].item(), 6) for t in spy.times[len(spy.times) // 2:]})

    assert pipe.scheduler.context_noise == 0.0
    assert held_times() == [0.0]
    saved = pipe.scheduler.context_noise
    pipe.scheduler.context_noise = 0.15
    try:
        assert held_times() == [0.15]
        assert held_times(context_noise=0.0) == [0.0]  # an explicit level overrides the model's
        # keyframe gaps (the second half of the calls) hold their keyframes clean unless told
        assert held_times(mode="keyframes") == [0.0]
        assert held_times(mode="keyframes", context_noise=0.15) == [0.15]
    finally:
        pipe.scheduler.context_noise = saved
    with pytest.raises(ValueError, match="context_noise"):
        list(iter_windows(pipe, A, num_frames=17, window=5, context_noise=1.0))


def test_scheduler_context_noise_round_trips_and_is_checked():
    sch = SchedulerConfig(context_noise=0.2)
    assert SchedulerConfig.from_dict(sch.to_dict()).context_noise == 0.2
    assert SchedulerConfig.from_dict({"sampler": "euler"}).context_noise == 0.0  # older exports
    with pytest.raises(ValueError, match="context_noise"):
        SchedulerConfig(context_noise=-0.1)


# --------------------------------------------------------------------------- sliding windows


def test_clean_hold_overlap_equals_previous_window_exactly(pipe):
    # 33 frames at r=2 -> 17 latents; window 5, overlap 2 -> starts 0,3,6,9,12
    chunks = list(iter_windows(pipe, A, num_frames=33, window=5, overlap=2, seed=1))
    assert [c.info.latent_start for c in chunks] == [0, 3, 6, 9, 12]
    for prev, cur in zip(chunks, chunks[1:]):
        held = cur.info.held
        assert held == 2
        assert torch.equal(cur.latents[:, :, :held], prev.latents[:, :, -held:])
        assert not torch.equal(cur.latents[:, :, held:held + 1], prev.latents[:, :, -1:])
    assert sum(c.frames.shape[0] for c in chunks) == 33
    assert [c.start for c in chunks] == [0, 9, 15, 21, 27]  # latent 5 -> frames 9, 10, ...


def test_history_guidance_keeps_the_overlap_exact_and_guides_the_rest(pipe):
    kw = dict(num_frames=33, window=5, overlap=2, seed=1)
    plain = list(iter_windows(pipe, A, **kw))
    with Spy(pipe.transformer) as spy:
        guided = list(iter_windows(pipe, A, history_guidance=3.0, **kw))
    steps = len(spy.batches) // len(guided)
    batch = spy.batches[0]  # text and negative text (guidance > 1) or text alone
    assert spy.batches == [batch] * steps + [batch + 1] * (len(spy.batches) - steps)  # + the history-free branch
    assert torch.equal(guided[0].latents, plain[0].latents)  # nothing held in the first window
    for prev, cur, ref in zip(guided, guided[1:], plain[1:]):
        assert torch.equal(cur.latents[:, :, :2], prev.latents[:, :, -2:])
        assert not torch.allclose(cur.latents[:, :, 2:], ref.latents[:, :, 2:])


@pytest.mark.parametrize("window_noise", ["repeat", "fresh"])
def test_window_noise_repeats_the_first_windows_noise_or_draws_anew(pipe, window_noise):
    starts = []
    orig = pipe.transformer.forward

    def forward(x, t, cond=None):
        if float(t.reshape(t.shape[0], -1)[0, -1]) == 1.0:  # a window's first step: x is its noise
            starts.append(x[:1].clone())
        return orig(x, t, cond)

    pipe.transformer.forward = forward
    try:
        chunks = list(iter_windows(pipe, A, num_frames=33, window=5, overlap=1, seed=5, window_noise=window_noise))
    finally:
        del pipe.transformer.forward
    assert [c.info.latent_start for c in chunks] == [0, 4, 8, 12] and len(starts) == 4
    c = pipe.transformer.config.out_channels  # the noisy latents (concat models append mask and latent channels)
    first = starts[0][:, :c, 1:]
    for later in starts[1:]:  # frame 0 of a later window is its held overlap, not noise
        assert torch.equal(later[:, :c, 1:], first) == (window_noise == "repeat")
        assert not torch.equal(later[:, :c, :1], starts[0][:, :c, :1])
    with pytest.raises(ValueError, match="window_noise"):
        generate_long(pipe, A, num_frames=33, window=5, window_noise="shared")


@pytest.mark.parametrize("window_noise", ["repeat", "fresh"])
def test_fused_windows_start_from_the_first_windows_noise_or_fresh_noise(pipe, window_noise):
    """Fuse mode: at the first step every window sees the first window's noise (repeat), or other
    noise (fresh); the frames two windows share are one value either way."""
    first_step = []
    orig = pipe.transformer.forward

    def forward(x, t, cond=None):
        if float(t.reshape(t.shape[0], -1)[0, -1]) == 1.0:
            first_step.append(x[:1].clone())
        return orig(x, t, cond)

    pipe.transformer.forward = forward
    try:
        generate_long(pipe, A, num_frames=33, window=5, overlap=2, mode="fuse", seed=5, window_noise=window_noise)
    finally:
        del pipe.transformer.forward
    starts = window_starts(17, 5, 2)
    assert len(first_step) == len(starts) == 5
    c = pipe.transformer.config.out_channels
    first = first_step[0][:, :c]
    for prev, later in zip(first_step, first_step[1:]):  # frames 0-1 of a window are the previous one's 3-4
        assert torch.equal(later[:, :c, :2], prev[:, :c, 3:])
        assert torch.equal(later[:, :c], first) == (window_noise == "repeat")


def test_last_window_with_larger_overlap_still_held_exactly(pipe):
    chunks = list(iter_windows(pipe, A, num_frames=21, window=5, overlap=1, seed=2))  # 11 latents
    assert [(c.info.latent_start, c.info.held) for c in chunks] == [(0, 0), (4, 1), (6, 3)]
    assert torch.equal(chunks[2].latents[:, :, :3], chunks[1].latents[:, :, -3:])


@pytest.mark.parametrize("mode", ["window", "fuse", "keyframes"])
def test_streamed_windows_concatenated_equal_the_whole_video(pipe, mode):
    kw = dict(num_frames=25, window=5, overlap=2, mode=mode, seed=3)
    streamed = np.concatenate([c.frames for c in iter_windows(pipe, A, **kw)])
    whole = generate_long(pipe, A, **kw)
    assert whole.frames.shape == (25, 16, 16, 3) and streamed.shape == whole.frames.shape
    assert np.array_equal(streamed, whole.frames)


def test_model_never_sees_more_than_the_window(pipe):
    for mode in ("window", "fuse", "keyframes"):
        with Spy(pipe.transformer) as spy:
            out = generate_long(pipe, A, num_frames=65, window=4, overlap=1, mode=mode, seed=0)
        assert out.frames.shape[0] == 65
        assert max(spy.frames) <= 4 and 4 in spy.frames, (mode, sorted(set(spy.frames)))


def test_image_is_held_as_first_latent_of_the_long_video(pipe):
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    first = pipe.encode_frames(pipe.prepare_image(image, 16, 16))
    for mode in ("window", "fuse", "keyframes"):
        out = generate_long(pipe, A, image=image, num_frames=25, window=5, mode=mode, return_latents=True)
        assert torch.equal(out.latents[:, :, :1], first), mode


def test_pixel_overlap_reencodes_the_previous_windows_tail(pipe):
    chunks = list(iter_windows(pipe, A, num_frames=25, window=5, overlap=2, overlap_space="pixel", seed=4))
    assert sum(c.frames.shape[0] for c in chunks) == 25
    for prev, cur in zip(chunks, chunks[1:]):
        held = cur.info.held
        tail = pipe.decode_latents(prev.latents)[:, :, -(1 + 2 * (held - 1)):]
        assert torch.equal(cur.latents[:, :, :held], pipe.encode_frames(tail))
    whole = generate_long(pipe, A, num_frames=25, window=5, overlap=2, overlap_space="pixel", seed=4)
    assert np.array_equal(whole.frames, np.concatenate([c.frames for c in chunks]))


@pytest.mark.parametrize("patch", [1, 2])
def test_streaming_decoder_pieces_equal_one_decode(patch):
    from vidiff.pipelines.long import StreamingDecoder

    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(True,),
                                causal_padding="replicate", patch_size=patch))
    pipe = VideoPipeline(None, vae, None)
    z = torch.randn(1, 4, 7, 4, 4)
    with StreamingDecoder(pipe) as dec:
        pieces = [dec.decode(z[:, :, a:b]) for a, b in ((0, 1), (1, 4), (4, 5), (5, 7))]
    whole = pipe.decode_latents(z)
    assert torch.cat(pieces, dim=2).shape == whole.shape == (1, 3, 13, 8 * patch, 8 * patch)
    assert torch.allclose(torch.cat(pieces, dim=2), whole, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- fuse mode


class ConstantX0(torch.nn.Module):
    """An x0-predicting 'model' whose prediction is a constant per call: `values[call % K]`."""

    def __init__(self, config, values):
        super().__init__()
        self.config, self.values, self.calls = config, values, 0

    def forward(self, x, t, cond=None):
        v = self.values[self.calls % len(self.values)]
        self.calls += 1
        return torch.full_like(x, v)


def test_fuse_constant_model_yields_the_constant_and_weights_are_applied():
    pipe = _tiny_pipeline(guidance=1.0, prediction="x0", steps=3)
    cfg = pipe.transformer.config
    pipe.transformer = ConstantX0(cfg, [0.7])
    out = generate_long(pipe, A, num_frames=33, window=5, overlap=2, mode="fuse", return_latents=True)
    assert torch.allclose(out.latents, torch.full_like(out.latents, 0.7), atol=1e-6)
    # window k predicts k: the result at frame f must be sum_k w_k(f) k (in order of the calls)
    starts = window_starts(17, 5, 2)
    pipe.transformer = ConstantX0(cfg, [float(k) for k in range(len(starts))])
    out = generate_long(pipe, A, num_frames=33, window=5, overlap=2, mode="fuse", return_latents=True)
    w = fuse_weights(starts, 5, 17)
    want = (w * torch.arange(len(starts), dtype=torch.float64)[:, None]).sum(0).float()
    assert torch.allclose(out.latents[0, 0, :, 0, 0], want, atol=1e-5)


# --------------------------------------------------------------------------- keyframes


def test_keyframe_interpolation_holds_both_ends_exactly(pipe):
    out = generate_long(pipe, A, num_frames=33, window=5, mode="keyframes", return_latents=True, seed=5)
    assert out.keyframes == [0, 4, 8, 12, 16]
    chunks = list(iter_windows(pipe, A, num_frames=33, window=5, mode="keyframes", seed=5))
    assert len(chunks) == 4
    for c in chunks:
        s, e = c.info.latent_start, c.info.latent_end
        assert torch.equal(c.latents[:, :, 0], out.latents[:, :, s])
        assert torch.equal(c.latents[:, :, -1], out.latents[:, :, e - 1])
    for prev, cur in zip(chunks, chunks[1:]):
        assert torch.equal(prev.latents[:, :, -1], cur.latents[:, :, 0])  # a keyframe, shared exactly


def test_keyframe_pass_uses_keyframe_extras():
    pipe = _tiny_pipeline()
    pipe.config.extras = {"fps": 8.0}
    seen = []
    orig = pipe.transformer.forward
    pipe.transformer.forward = lambda x, t, c=None: seen.append(float(c.extras["fps"][0])) or orig(x, t, c)
    try:
        generate_long(pipe, A, num_frames=17, window=3, mode="keyframes", keyframe_extras={"fps": 2.0})
    finally:
        del pipe.transformer.forward
    steps = pipe.scheduler.num_inference_steps
    # keyframes 0, 2, 4, 6, 8 in windows of 3 with overlap 1 -> 2 keyframe windows, then 4 gaps
    assert seen == [2.0] * (2 * steps) + [8.0] * (4 * steps)
    assert pipe.config.extras == {"fps": 8.0}


# --------------------------------------------------------------------------- prompt schedules


def test_prompt_schedule_switches_text_at_the_right_window():
    pipe = _tiny_pipeline(guidance=3.0)
    C = "a large red circle stays still on a black background"
    ta, tb, tc = (pipe.encode_prompts([p])[0][0] for p in (A, B, C))
    steps = pipe.scheduler.num_inference_steps
    # 41 frames at r=2 -> 21 latents; window 5 overlap 1 -> starts 0,4,8,12,16; the windows add
    # frames [0,9) [9,17) [17,25) [25,33) [33,41): middles 4, 12, 20, 28, 36. Segments A [0,19),
    # B [19,30), C [30,41) give A A B B C by the middle frame (first frame: A A A B C; last: A A B C C)
    with Spy(pipe.transformer) as spy:
        chunks = list(iter_windows(pipe, prompts=[(A, 19), (B, 11), (C, None)], num_frames=41, window=5, overlap=1))
    assert [c.info.prompt for c in chunks] == [A, A, B, B, C]
    want = [ta] * (2 * steps) + [tb] * (2 * steps) + [tc] * steps
    assert len(spy.texts) == len(want)
    for got, w in zip(spy.texts, want):
        assert torch.equal(got[: w.shape[0]], w)


# --------------------------------------------------------------------------- seams


def test_boundary_change_ratio_closed_form():
    frames = np.zeros((10, 4, 4, 3), np.uint8)
    level = np.cumsum([0, 2, 2, 2, 6, 2, 2, 2, 2, 4])  # changes d = 2,2,2,6,2,2,2,2,4
    frames += level[:, None, None, None].astype(np.uint8)
    assert np.allclose(frame_changes(frames), [2, 2, 2, 6, 2, 2, 2, 2, 4])
    out = boundary_change_ratio(frames, [4, 9])  # boundary changes d_3 = 6 and d_8 = 4
    assert out["ratio"] == pytest.approx(5 / 2) and out["max_ratio"] == pytest.approx(3.0)
    assert boundary_change_ratio(frames, [])["ratio"] is None
    with pytest.raises(ValueError, match="boundaries"):
        boundary_change_ratio(frames, [10])


# --------------------------------------------------------------------------- CLI hook


def test_cli_long_choices_mirror_the_pipeline():
    from vidiff.cli import generate_long as cli
    from vidiff.pipelines import long

    assert set(cli.LONG_MODES) == {*long.LONG_MODES, "causal"} and set(cli.WINDOW_NOISES) == set(long.WINDOW_NOISES)


def test_cli_long_arguments_split_prompts_evenly_and_report_bad_values(pipe):
    import argparse

    from vidiff.cli import CLIError
    from vidiff.cli.generate_long import add_long_arguments, long_num_frames, run_long, wants_long

    parser = argparse.ArgumentParser()
    parser.add_argument("prompt")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--seed", type=int, default=0)
    add_long_arguments(parser)
    args = parser.parse_args([A, "--frames", "33", "--then", B, "--window", "5", "--overlap", "2"])
    assert wants_long(args, pipe) and not wants_long(parser.parse_args([A, "--frames", "9"]), pipe)
    assert long_num_frames(args, pipe) == 33
    assert long_num_frames(parser.parse_args([A, "--then", B]), pipe) == 1 + 2 * (pipe.config.num_frames - 1)
    chunks = list(run_long(args, pipe))
    # what the CLI streams to the file is generate_long's video, window by window
    whole = generate_long(pipe, prompts=[A, B], num_frames=33, window=5, overlap=2)
    assert [c.start for c in chunks] == [0, *whole.boundaries]
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), whole.frames)
    # 17 latents, starts 0,3,6,9,12 add frames [0,9) [9,15) [15,21) [21,27) [27,33); switch at 16
    assert [c.info.prompt for c in chunks] == [A, A, B, B, B]
    with pytest.raises(CLIError, match="overlap"):
        list(run_long(parser.parse_args([A, "--frames", "33", "--window", "5", "--overlap", "5"]), pipe))


def test_cli_writes_long_videos_window_by_window_and_keeps_the_old_file_on_error(pipe, tmp_path):
    from vidiff.cli import main
    from vidiff.video import probe_video

    model = tmp_path / "model"
    pipe.save_pretrained(model)
    out = tmp_path / "long.mp4"
    args = ["generate", A, "--model", str(model), "--frames", "33", "--then", B, "--window", "5", "--out", str(out)]
    assert main(args) == 0
    assert probe_video(out).num_frames == 33
    listing = ["long.mp4", "long.mp4.json", "long_sheet.png", "model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    before, record = out.read_bytes(), (tmp_path / "long.mp4.json").read_bytes()
    assert main([*args, "--overlap", "5"]) == 2  # fails when the first window is planned
    assert out.read_bytes() == before and (tmp_path / "long.mp4.json").read_bytes() == record
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_generation_record_holds_the_windows_and_eval_measures_seams_there(pipe, tmp_path, capsys):
    import json

    from vidiff.cli import main
    from vidiff.video import read_video

    model = tmp_path / "model"
    pipe.save_pretrained(model)
    out, report = tmp_path / "long.mp4", tmp_path / "metrics.json"
    assert main(["generate", A, "--model", str(model), "--frames", "33", "--then", B, "--window", "5",
                 "--seed", "3", "--out", str(out)]) == 0
    record = json.loads((tmp_path / "long.mp4.json").read_text())
    whole = generate_long(pipe, prompts=[A, B], num_frames=33, window=5, seed=3)
    assert record["long"]["boundaries"] == whole.boundaries == [9, 17, 25]
    assert [(w["first_frame"], w["end_frame"], w["prompt"]) for w in record["long"]["windows"]] == \
        [(w.first_frame, w.end_frame, w.prompt) for w in whole.windows]
    assert record["long"]["prompt_segments"][1] == {"prompt": B, "start": 16, "end": 33}
    assert (record["frames"], record["arguments"]["seed"], record["arguments"]["then"]) == (33, 3, [B])
    assert record["arguments"]["model"] == str(model) and record["scheduler"]["num_inference_steps"] == 2

    assert main(["eval", "video", str(out), "--seams", "--json", str(report)]) == 0
    seams = json.loads(report.read_text())["videos"][0]["seams"]
    expected = boundary_change_ratio(read_video(out), [9, 17, 25])
    assert seams["boundaries"] == [9, 17, 25] and seams["ratio"] == pytest.approx(expected["ratio"])
    assert seams["boundary_change"] == pytest.approx(np.mean(expected["boundary_changes"]))
    assert main(["eval", "video", str(out), "--boundaries", "9,17", "--max-frames", "12", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["videos"][0]["seams"]["boundaries"] == [9]

    short = tmp_path / "short.mp4"
    assert main(["generate", A, "--model", str(model), "--out", str(short)]) == 0
    assert json.loads((tmp_path / "short.mp4.json").read_text())["long"] is None
    capsys.readouterr()
    assert main(["eval", "video", str(short), "--seams"]) == 2
    assert "short.mp4.json: " in capsys.readouterr().err


def test_cli_writes_lossless_png_frames_beside_their_contact_sheet(pipe, tmp_path, capsys):
    from vidiff.cli import main
    from vidiff.video import read_frames_png

    model = tmp_path / "model"
    pipe.save_pretrained(model)
    assert main(["generate", A, "--model", str(model), "--frames", "33", "--then", B, "--window", "5",
                 "--out", str(tmp_path / "frames") + "/"]) == 0
    whole = generate_long(pipe, prompts=[A, B], num_frames=33, window=5)
    assert np.array_equal(read_frames_png(tmp_path / "frames"), whole.frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "frames.json", "frames_sheet.png", "model"]
    assert main(["generate", A, "--model", str(model), "--out", str(tmp_path / "clip.avi")]) == 2
    assert "--out " in capsys.readouterr().err


def test_default_overlap_is_one_and_half_the_window_for_fused_windows(pipe):
    from vidiff.pipelines.long import default_overlap

    assert [default_overlap(w, "window") for w in (2, 5, 9)] == [1, 1, 1]
    assert [default_overlap(w, "fuse") for w in (2, 3, 5, 9)] == [1, 1, 2, 4]
    assert default_overlap(9, "keyframes") == 1
    for mode, starts in (("window", [0, 4, 8, 12]), ("fuse", [0, 3, 6, 9, 12])):
        chunks = list(iter_windows(pipe, A, num_frames=33, window=5, mode=mode, seed=0))
        assert [c.info.latent_start for c in chunks] == starts, mode
