"""Training tasks: the diffusion objective (caption dropout, held first frame, timesteps), the
VAE objective, overfitting one world clip, and config checks."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidiff.config import ConfigError
from vidiff.modelio import save_model
from vidiff.data.loader import SeededBatchStream
from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.text import BuiltinTextEncoder
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.train import TrainConfig, Trainer
from vidiff.train.diffusion_task import (
    build_diffusion_model,
    training_frame_mask,
    DiffusionModel,
    build_denoiser,
    make_diffusion_loss,
    sample_training_times,
)
from vidiff.train.logging import read_jsonl
from vidiff.train.recipe import DiffusionSection, RunConfig, load_recipe
from vidiff.train.vae_task import make_vae_loss, reconstruction_psnr, world_clip_batch
from vidiff.world import world_batch
CONFIGS = Path(__file__).resolve().parents[1] / "configs"



def _run_config(**diffusion) -> RunConfig:
    return load_recipe(None, ["out_dir=unused", "vae.path=unused"] + [f"diffusion.{k}={v}" for k, v in diffusion.items()])


class _Recorder(nn.Module):
    """Stands in for DiffusionModel: records its inputs and returns `fn(x_t)` (plus a parameter so
    that the loss has a gradient path)."""

    def __init__(self, concat: bool, fn=None):
        super().__init__()
        self.denoiser = nn.Module()
        self.denoiser.config = DiTConfig(in_channels=2 * 3 + 4, out_channels=3, dim=8, num_heads=1, num_layers=0,
                                         ffn_dim=8, text_dim=8, image_condition="concat") if concat else None
        self.w = nn.Parameter(torch.zeros(()))
        self.fn = fn or (lambda x: torch.zeros_like(x))
        self.calls = []

    def forward(self, x_t, t, captions, frame_mask=None, image_latent=None):
        self.calls.append(dict(x_t=x_t.clone(), t=t.clone(), captions=list(captions), frame_mask=frame_mask,
                               image_latent=image_latent))
        return self.fn(x_t) + self.w


def _batch(b=6, f=4):
    g = torch.Generator().manual_seed(0)
    return {"latents": torch.randn(b, 3, f, 4, 4, generator=g), "caption": [f"caption {i}" for i in range(b)]}


def _loss(cfg, model, batch, seed=1):
    return make_diffusion_loss(cfg)(model, batch, torch.Generator().manual_seed(seed))


def test_caption_dropout_replaces_captions_by_empty():
    batch = _batch(b=200, f=2)
    for p, expect in ((0.0, 0), (1.0, 200)):
        model = _Recorder(concat=False)
        _loss(_run_config(caption_dropout=p, i2v_prob=0.0), model, batch)
        captions = model.calls[0]["captions"]
        assert sum(c == "" for c in captions) == expect
        assert all(c in ("", batch["caption"][i]) for i, c in enumerate(captions))
    model = _Recorder(concat=False)
    _loss(_run_config(caption_dropout=0.3, i2v_prob=0.0), model, batch)
    dropped = sum(c == "" for c in model.calls[0]["captions"])
    assert abs(dropped - 60) < 4 * math.sqrt(200 * 0.3 * 0.7)  # binomial(200, 0.3) within 4 sigma


def test_held_first_frame_is_clean_at_t0_and_given_to_concat_models():
    batch = _batch()
    model = _Recorder(concat=True)
    _loss(_run_config(i2v_prob=1.0, caption_dropout=0.0), model, batch)
    call = model.calls[0]
    x0 = batch["latents"]
    assert torch.equal(call["t"][:, 0], torch.zeros(6))
    assert bool((call["t"][:, 1:] > 0).all())
    assert torch.equal(call["x_t"][:, :, 0], x0[:, :, 0])  # bit-exact clean frame
    assert not torch.allclose(call["x_t"][:, :, 1:], x0[:, :, 1:])
    expected_mask = torch.zeros(6, 4)
    expected_mask[:, 0] = 1
    assert torch.equal(call["frame_mask"], expected_mask)
    assert torch.equal(call["image_latent"][:, :, 0], x0[:, :, 0])
    assert torch.equal(call["image_latent"][:, :, 1:], torch.zeros_like(x0[:, :, 1:]))


def test_context_noise_puts_held_frames_at_a_small_level_seen_alike_in_x_and_channels():
    batch = _batch(b=64)
    model = _Recorder(concat=True)
    _loss(_run_config(i2v_prob=1.0, caption_dropout=0.0, context_noise=0.2), model, batch)
    call = model.calls[0]
    x0, t_c = batch["latents"], call["t"][:, 0]
    assert bool((t_c >= 0).all()) and bool((t_c < 0.2).all()) and float(t_c.std()) > 0.03  # U(0, 0.2) per sample
    level = t_c[:, None, None, None]
    held = call["x_t"][:, :, 0]
    assert not torch.equal(held, x0[:, :, 0])
    eps = (held - (1 - level) * x0[:, :, 0]) / level
    assert abs(float(eps.std()) - 1.0) < 0.1  # x_t = (1 - t_c) x0 + t_c eps with eps ~ N(0, 1)
    assert torch.equal(call["image_latent"][:, :, 0], held)
    assert bool((call["t"][:, 1:] > 0).all())
    with pytest.raises(ValueError, match="context_noise"):
        DiffusionSection(context_noise=1.0)
    # the exported sampling level must lie in the range the model was trained on
    assert DiffusionSection(context_noise=0.3, sampling_context_noise=0.3).sampling_context_noise == 0.3
    with pytest.raises(ValueError, match="sampling_context_noise"):
        DiffusionSection(context_noise=0.1, sampling_context_noise=0.2)


def test_midclip_crops_the_batch_holds_its_chunk_start_and_keeps_the_image_loss_on_frame_zero():
    batch = _batch(b=8, f=9)
    x0 = batch["latents"]
    starts, plain = set(), 0
    for seed in range(40):
        model = _Recorder(concat=True)
        _loss(_run_config(midclip_prob=0.5, i2v_prob=0.0, image_loss_weight=1.0), model, batch, seed=seed)
        video, image = model.calls
        f = video["x_t"].shape[2]
        assert torch.equal(image["frame_mask"], torch.zeros(8, 1))
        assert image["x_t"].shape == (8, 3, 1, 4, 4)
        if f == 9:  # not cropped: the plain recipe (t2v for every sample, i2v_prob = 0)
            plain += 1
            assert not bool(video["frame_mask"].any())
            continue
        start = 9 - f
        starts.add(start)
        assert 1 <= start <= 4  # c ~ U{1, ..., (F - 1) // 2}
        held = video["frame_mask"]
        assert torch.equal(held[:, 0], torch.ones(8))  # every sample holds its (chunk) first frame
        assert torch.equal(video["x_t"][:, :, 0], x0[:, :, start])  # bit-exact, from mid-clip
        assert torch.equal(video["image_latent"][:, :, 0], x0[:, :, start])
        # the image loss still denoises the clip's own first latent frame (a one-frame latent)
        t = image["t"][:, 0].view(-1, 1, 1, 1)
        eps = (image["x_t"][:, :, 0] - (1 - t) * x0[:, :, 0]) / t
        assert abs(float(eps.std()) - 1.0) < 0.15
    assert starts == {1, 2, 3, 4} and 8 <= plain <= 32
    # off: no draws, so the random stream of recipes without it is unchanged
    a, b = _Recorder(concat=True), _Recorder(concat=True)
    _loss(_run_config(), a, batch, seed=3)
    _loss(_run_config(midclip_prob=0.0), b, batch, seed=3)
    assert torch.equal(a.calls[0]["x_t"], b.calls[0]["x_t"])
    with pytest.raises(ValueError, match="midclip_prob"):
        DiffusionSection(midclip_prob=1.5)


def test_image_loss_denoises_first_latent_frames_alone_and_adds_weighted_without_touching_the_video_part():
    batch = _batch(b=32)
    x0 = batch["latents"]
    fn = lambda x: 0.5 * x  # noqa: E731
    losses, calls = {}, {}
    for w in (0.0, 1.0, 2.5):
        model = _Recorder(concat=True, fn=fn)
        losses[w] = _loss(_run_config(i2v_prob=1.0, caption_dropout=0.5, image_loss_weight=w), model, batch).item()
        calls[w] = model.calls
    assert len(calls[0.0]) == 1 and len(calls[1.0]) == 2
    for key in ("x_t", "t", "frame_mask", "image_latent"):  # the video's draws come first, unchanged
        assert torch.equal(calls[0.0][0][key], calls[2.5][0][key])
    image = calls[1.0][1]
    assert image["x_t"].shape == (32, 3, 1, 4, 4)
    assert torch.equal(image["frame_mask"], torch.zeros(32, 1))  # nothing held: text-to-image
    assert torch.equal(image["image_latent"], torch.zeros_like(image["x_t"]))
    t = image["t"][:, 0]
    assert bool((t > 0).all())
    eps = (image["x_t"][:, :, 0] - (1 - t.view(-1, 1, 1, 1)) * x0[:, :, 0]) / t.view(-1, 1, 1, 1)
    assert abs(float(eps.std()) - 1.0) < 0.1  # x_t = (1 - t) x0[:, :, :1] + t eps
    assert 0 < sum(c == "" for c in image["captions"]) < 32  # its own caption dropout
    assert image["captions"] != calls[1.0][0]["captions"]
    # The same image draws for both weights, so the loss is affine in the weight (exactly).
    assert losses[2.5] - losses[0.0] == pytest.approx(2.5 * (losses[1.0] - losses[0.0]), rel=1e-6)
    assert losses[1.0] > losses[0.0]
    with pytest.raises(ValueError, match="image_loss_weight"):
        DiffusionSection(image_loss_weight=-1.0)


def test_foreground_weight_weighs_the_video_loss_by_foreground_weights():
    from vidiff.diffusion import foreground_weights

    batch = _batch(b=8)
    x0 = batch["latents"]
    x0[:, :, :, :2, :2] += 6.0  # an "object" in a corner of every frame
    for w in (0.0, 3.0):
        model = _Recorder(concat=False)
        loss = _loss(_run_config(i2v_prob=0.0, caption_dropout=0.0, foreground_weight=w), model, batch).item()
        call = model.calls[0]
        t = call["t"][:, None, :, None, None]
        target = (call["x_t"] - (1 - t) * x0) / t - x0  # flow target eps - x0; the model predicts 0
        weights = foreground_weights(x0, w).expand_as(target)
        assert loss == pytest.approx(float((weights * target.square()).sum() / weights.sum()), rel=1e-5)
    fg = foreground_weights(x0, 3.0)
    assert float(fg[:, :, :, :2, :2].mean()) > 3.5 > 1.5 > float(fg[:, :, :, 2:, 2:].mean())
    with pytest.raises(ValueError, match="foreground_weight"):
        DiffusionSection(foreground_weight=-1.0)


def test_word_loss_adds_the_weighted_word_recovery_loss_of_the_video_captions():
    torch.manual_seed(0)
    batch = _batch(b=4, f=2)
    batch["caption"] = ["a large red circle moves right on a black background"] * 4
    losses = {}
    for w in (0.0, 0.5, 2.0):
        tiny = ["model.text.dim=16", "model.text.depth=1", "model.text.num_heads=2", "model.dit.dim=16",
                "model.dit.num_heads=2", "model.dit.num_layers=1", "model.dit.ffn_dim=32"]
        cfg = load_recipe(None, ["out_dir=unused", "vae.path=unused", f"diffusion.word_loss_weight={w}",
                                 "diffusion.caption_dropout=0.0", "diffusion.i2v_prob=0.0", *tiny])
        torch.manual_seed(0)
        model = build_diffusion_model(cfg, 3)
        assert (model.word_head is not None) == (w > 0)
        losses[w] = _loss(cfg, model, batch).item()
        if w == 2.0:
            tokens, mask = model.text_encoder.encode(batch["caption"])
            ids, _ = model.text_encoder.tokenizer.encode_ids(batch["caption"], cfg.model.text.max_length)
            head_loss = model.word_head(tokens, ids, mask).item()
    assert losses[2.0] - losses[0.0] == pytest.approx(2.0 * head_loss, rel=1e-4)
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * head_loss, rel=1e-4)
    frozen = load_recipe(None, ["out_dir=unused", "vae.path=unused", "diffusion.word_loss_weight=0.1",
                                "model.text.train=false", *tiny])
    with pytest.raises(ConfigError, match="word_loss_weight"):
        build_diffusion_model(frozen, 3)


def test_text_to_video_samples_give_no_frame_and_plain_models_get_no_channels():
    batch = _batch()
    concat = _Recorder(concat=True)
    _loss(_run_config(i2v_prob=0.0), concat, batch)
    assert torch.equal(concat.calls[0]["frame_mask"], torch.zeros(6, 4))
    assert torch.equal(concat.calls[0]["image_latent"], torch.zeros_like(batch["latents"]))
    assert bool((concat.calls[0]["t"] > 0).all())
    plain = _Recorder(concat=False)
    _loss(_run_config(i2v_prob=1.0), plain, batch)
    assert plain.calls[0]["frame_mask"] is None and plain.calls[0]["image_latent"] is None
    assert torch.equal(plain.calls[0]["t"][:, 0], torch.zeros(6))  # still held through per-frame time


def test_training_frame_mask_draws_each_conditioning_task_in_its_share():
    d = DiffusionSection(i2v_prob=0.2, continuation_prob=0.3, interpolation_prob=0.1, max_context_frames=3)
    n, f = 4000, 9
    mask = training_frame_mask(d, n, f, torch.Generator().manual_seed(0))
    assert mask.shape == (n, f) and set(mask.unique().tolist()) <= {0.0, 1.0}
    first = torch.zeros(f); first[0] = 1
    ends = first.clone(); ends[-1] = 1
    prefixes = [torch.cat([torch.ones(k), torch.zeros(f - k)]) for k in (2, 3)]  # k = 1 equals i2v
    counts = {"first": 0, "prefix": 0, "ends": 0, "none": 0}
    for row in mask:
        if torch.equal(row, first):
            counts["first"] += 1
        elif any(torch.equal(row, p) for p in prefixes):
            counts["prefix"] += 1
        elif torch.equal(row, ends):
            counts["ends"] += 1
        else:
            assert not row.any(), f"unexpected held pattern {row.tolist()}"
            counts["none"] += 1
    # i2v plus the k = 1 third of continuation give a first-frame-only mask
    expected = {"first": 0.2 + 0.3 / 3, "prefix": 0.3 * 2 / 3, "ends": 0.1, "none": 0.4}
    for name, p in expected.items():
        assert abs(counts[name] - n * p) < 4 * math.sqrt(n * p * (1 - p)), (name, counts)
    # the generator advances the same way whatever the probabilities (exact resume)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    training_frame_mask(DiffusionSection(i2v_prob=0.0), 7, f, g1)
    training_frame_mask(d, 7, f, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_conditioning_shares_must_fit_in_one():
    with pytest.raises(ValueError, match="must be <= 1"):
        DiffusionSection(i2v_prob=0.5, continuation_prob=0.4, interpolation_prob=0.2)
    with pytest.raises(ValueError, match="max_context_frames"):
        DiffusionSection(max_context_frames=0)


def test_held_frame_prediction_does_not_count_in_the_loss():
    batch = _batch()

    def wild_first_frame(x):
        out = torch.zeros_like(x)
        out[:, :, 0] = 1e4  # an arbitrary, huge prediction on frame 0
        return out

    for i2v_prob, same in ((1.0, True), (0.0, False)):
        cfg = _run_config(i2v_prob=i2v_prob, caption_dropout=0.0)
        base = _loss(cfg, _Recorder(concat=True), batch)
        changed = _loss(cfg, _Recorder(concat=True, fn=wild_first_frame), batch)
        assert (float(base.detach()) == float(changed.detach())) is same


def test_loss_matches_the_objective_written_out():
    """Rectified flow: loss = mean over the non-held frames of (pred - (eps - x0))^2."""
    batch = _batch()
    cfg = _run_config(i2v_prob=0.5, caption_dropout=0.0)
    model = _Recorder(concat=True, fn=lambda x: 0.3 * x)
    loss = _loss(cfg, model, batch)
    call = model.calls[0]
    x0, x_t, t = batch["latents"], call["x_t"], call["t"]
    eps = (x_t - (1 - t[:, None, :, None, None]) * x0) / t[:, None, :, None, None].clamp_min(1e-12)
    keep = call["frame_mask"] == 0
    se = (0.3 * x_t - (eps - x0)).square().mean(dim=(1, 3, 4))  # [B, F]
    assert float(loss.detach()) == pytest.approx(float(se[keep].mean()), rel=1e-4)


def test_training_times_closed_forms():
    d = DiffusionSection(timesteps="uniform", shift=3.0)
    t = sample_training_times(d, 5, 4, torch.Generator().manual_seed(7))
    u = torch.rand(5, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(t, (3 * u / (1 + 2 * u))[:, None].expand(5, 4))
    d = DiffusionSection(timesteps="logit_normal", logit_mean=0.5, logit_std=0.8)
    t = sample_training_times(d, 5, 4, torch.Generator().manual_seed(7))
    n = torch.randn(5, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(t[:, 0], torch.sigmoid(0.5 + 0.8 * n))
    independent = sample_training_times(DiffusionSection(independent_frame_prob=1.0), 5, 4, torch.Generator().manual_seed(1))
    assert bool((independent.std(dim=1) > 0).all())
    shared = sample_training_times(DiffusionSection(independent_frame_prob=0.0), 5, 4, torch.Generator().manual_seed(1))
    assert bool((shared == shared[:, :1]).all())


def test_high_noise_band_replaces_the_picked_clips_times_and_nothing_else():
    base = DiffusionSection(timesteps="uniform", shift=3.0)
    band = DiffusionSection(timesteps="uniform", shift=3.0, high_noise_prob=0.5, high_noise_from=0.9)
    t = sample_training_times(band, 64, 3, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    u = torch.rand(64, generator=g)
    pick = torch.rand(64, generator=g) < 0.5
    v = torch.rand(64, generator=g)
    expected = torch.where(pick, 1 - 0.1 * v, 3 * u / (1 + 2 * u))
    assert torch.allclose(t, expected[:, None].expand(64, 3))
    assert 10 < int(pick.sum()) < 54 and bool((t[pick] > 0.9).all())
    # Off (the default), the stream and the times are those of the recipe without the band.
    assert torch.equal(sample_training_times(base, 64, 3, torch.Generator().manual_seed(3)),
                       sample_training_times(replace(band, high_noise_prob=0.0), 64, 3, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="high_noise_from must be in"):
        DiffusionSection(high_noise_from=1.0)


def test_channels_follow_the_vae_and_a_mismatch_names_the_key():
    cfg = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=somewhere"])
    dit = build_denoiser(cfg, z_dim=6, text_dim=128)
    assert (dit.config.out_channels, dit.config.in_channels, dit.config.text_dim) == (6, 2 * 6 + 4, 128)
    pinned = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=somewhere", "model.dit.out_channels=8"])
    with pytest.raises(ConfigError, match="model.dit.out_channels = 8 but the VAE at somewhere has z_dim 16"):
        build_denoiser(pinned, z_dim=16, text_dim=128)
    pinned = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=somewhere", "model.dit.text_dim=128"])
    with pytest.raises(ConfigError, match="model.dit.text_dim = 128 but the text encoder's width is 64"):
        build_denoiser(pinned, z_dim=8, text_dim=64)
    cfg = load_recipe(f"{CONFIGS}/world_unet.toml", ["vae.path=somewhere", "model.unet.in_channels=8"])
    with pytest.raises(ConfigError, match="model.unet.in_channels = 8"):
        build_denoiser(cfg, z_dim=4, text_dim=128)
    with pytest.raises(ConfigError, match=rf"{CONFIGS}/world_dit.toml \+ command-line overrides: unknown key 'model.dit.depth'"):
        load_recipe(f"{CONFIGS}/world_dit.toml", ["model.dit.depth=3"])
    with pytest.raises(ConfigError, match=rf"{CONFIGS}/world_vae.toml \+ command-line overrides: unknown key 'vae.config.width'"):
        load_recipe(f"{CONFIGS}/world_vae.toml", ["vae.config.width=3"])


def test_shipped_recipes_load_and_fit_their_models():
    for name, kind in (("world_dit", "dit"), ("world_unet", "unet"), ("world_per_frame", "dit")):
        cfg = load_recipe(f"{CONFIGS}/{name}.toml")
        assert cfg.task == "diffusion" and cfg.model.kind == kind
        assert cfg.vae.path == "runs/world_vae/export"
        build_denoiser(cfg, z_dim=VAEConfig.world().z_dim, text_dim=cfg.model.text.dim)
    dit, per_frame = load_recipe(f"{CONFIGS}/world_dit.toml"), load_recipe(f"{CONFIGS}/world_per_frame.toml")
    assert dit.model.dit["attention"] == "full" and per_frame.model.dit["attention"] == "spatial"
    assert {**dit.model.dit, "attention": "spatial"} == per_frame.model.dit
    assert (dit.train, dit.data, dit.diffusion) == (per_frame.train, per_frame.data, per_frame.diffusion)  # same budget
    vae = load_recipe(f"{CONFIGS}/world_vae.toml")
    assert vae.task == "vae" and vae.vae.vae_config() == VAEConfig.world()
    assert load_recipe(f"{CONFIGS}/world_vae.toml", ["vae.config.base_dim=8"]).vae.vae_config() == VAEConfig.world(base_dim=8)


def _overfit_losses(records, k=5):
    losses = [r["loss"] for r in records if "loss" in r]
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def test_tiny_dit_overfits_one_world_clip(tmp_path):
    """One clip (pooled to a 3x5x8x8 'latent'), always the same: the flow-matching target is then a
    function of (x_t, t), so the loss can fall towards 0. Asserted: by a factor of 4 in 150 steps
    (measured: 1.20 -> 0.17)."""
    video, captions, _ = world_batch([3], frames=5, size=32)
    latents = F.avg_pool3d(video, (1, 4, 4))
    torch.manual_seed(0)
    text = BuiltinTextEncoder.create(dim=16, depth=1, num_heads=2)
    dit = VideoDiT(DiTConfig(in_channels=3 + 4 + 3, out_channels=3, patch_size=(1, 2, 2), dim=48, num_heads=2,
                             num_layers=2, ffn_dim=96, text_dim=16, image_condition="concat"))
    model = DiffusionModel(dit, text)
    cfg = _run_config(i2v_prob=0.25, caption_dropout=0.0)
    train = TrainConfig(steps=150, lr=2e-3, warmup_steps=10, ema_decay=0.0, checkpoint_every=1000, log_every=1,
                        precision="fp32", device="cpu", progress=False, plot=False, weight_decay=0.0)
    data = SeededBatchStream(lambda g, p: {"latents": latents.repeat(8, 1, 1, 1, 1), "caption": captions * 8})
    Trainer(model, make_diffusion_loss(cfg), data, train, tmp_path).fit()
    first, last = _overfit_losses(read_jsonl(tmp_path / "log.jsonl"))
    assert last < first / 4, (first, last)


def test_tiny_vae_overfits_one_world_clip(tmp_path):
    """Loss falls by a factor of 2 in 60 steps and the reconstruction PSNR rises by more than 6 dB
    (measured with VAEConfig.world(base_dim=8): 6.0 dB -> 15.2 dB)."""
    cfg = load_recipe(f"{CONFIGS}/world_vae.toml", ["out_dir=unused", "data.frames=5", "data.size=32",
                                                 "vae.config.base_dim=8", "vae.loss.kl_weight=1e-6"])
    make = world_clip_batch(cfg, 1)
    clip = make(torch.Generator().manual_seed(0), 0)
    torch.manual_seed(0)
    vae = CausalVAE3D(cfg.vae.vae_config())
    with torch.no_grad():
        before = reconstruction_psnr(clip["video"], vae.decode(vae.encode(clip["video"]).mode()))
    train = TrainConfig(steps=60, lr=3e-3, warmup_steps=5, ema_decay=0.0, checkpoint_every=1000, log_every=1,
                        precision="fp32", device="cpu", progress=False, plot=False, weight_decay=0.0)
    Trainer(vae, make_vae_loss(cfg), SeededBatchStream(lambda g, p: clip), train, tmp_path).fit()
    first, last = _overfit_losses(read_jsonl(tmp_path / "log.jsonl"))
    assert last < first / 2, (first, last)
    with torch.no_grad():
        recon = vae.decode(vae.encode(clip["video"]).mode())
    assert reconstruction_psnr(clip["video"], recon) > before + 6.0


def test_vae_loss_uses_the_trainer_generator_only():
    cfg = load_recipe(f"{CONFIGS}/world_vae.toml", ["out_dir=unused", "data.frames=5", "data.size=16", "vae.config.base_dim=8"])
    clip = world_clip_batch(cfg, 2)(torch.Generator().manual_seed(0), 0)
    vae = CausalVAE3D(cfg.vae.vae_config())
    loss = make_vae_loss(cfg)
    a = loss(vae, clip, torch.Generator().manual_seed(4)).detach()
    torch.manual_seed(123)  # the global RNG must not matter
    b = loss(vae, clip, torch.Generator().manual_seed(4)).detach()
    c = loss(vae, clip, torch.Generator().manual_seed(5)).detach()
    assert float(a) == float(b) and float(a) != float(c)


def test_psnr_closed_form():
    x = torch.zeros(1, 3, 2, 4, 4)
    assert reconstruction_psnr(x, x + 0.1) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)
    assert reconstruction_psnr(x, x) == float("inf")


def test_world_batches_resume_from_position():
    cfg = load_recipe(f"{CONFIGS}/world_vae.toml", ["out_dir=unused", "data.frames=5", "data.size=16", "data.batch_size=2"])
    from vidiff.train.vae_task import vae_data

    stream = vae_data(cfg)
    it = iter(stream)
    batches = [next(it) for _ in range(3)]
    again = vae_data(cfg)
    again.load_state_dict({"position": 2, "seed": cfg.data.seed})
    assert torch.equal(next(iter(again))["video"], batches[2]["video"])
    other_rank = next(iter(vae_data(cfg, rank=1, world_size=2)))
    assert not torch.equal(other_rank["video"], batches[0]["video"])


def test_latent_cache_holds_normalised_posterior_modes_with_captions(tmp_path):
    from vidiff.data.latent_cache import LatentCacheDataset
    from vidiff.train.diffusion_task import ensure_latent_cache, latent_cache_key
    from vidiff.world import WorldDataset

    cfg = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=unused", "data.frames=5", "data.size=32", "data.cache_clips=3",
                                                 f"data.cache_dir={tmp_path / 'latents'}", "data.cache_batch_size=2"])
    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig.world(base_dim=8))
    vae.set_latent_stats(torch.linspace(-0.5, 0.5, vae.z_dim), torch.linspace(0.5, 2.0, vae.z_dim))
    root = ensure_latent_cache(cfg, vae, tmp_path / "run", progress=False)
    assert root == tmp_path / "latents"
    data = LatentCacheDataset(root, encoder_key=latent_cache_key(cfg, vae))
    world = WorldDataset(frames=5, size=32, seed=cfg.data.seed, num_samples=3)
    (video, captions, _), = list(world.batches(3))
    with torch.no_grad():
        expected = vae.normalize(vae.encode(video).mode())
    assert len(data) == 3
    for i in range(3):
        sample = data.get(i)
        assert sample["caption"] == captions[i]
        assert torch.allclose(sample["latents"], expected[i], atol=1e-5)
    # The key follows the VAE's weights and the clip settings (a changed one means a rebuild).
    other = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=unused", "data.frames=5", "data.size=32", "data.cache_clips=4"])
    assert latent_cache_key(other, vae) != latent_cache_key(cfg, vae)
    with torch.no_grad():
        next(vae.parameters()).add_(1e-3)
    assert latent_cache_key(cfg, vae) != data.encoder_key


def test_changed_recipe_keys():
    from vidiff.train.tasks import changed_keys

    assert changed_keys({"train": {"steps": 2, "lr": 1.0}, "a": [1]}, {"train": {"steps": 4, "lr": 1.0}, "a": [1]}) == ["train.steps"]
    assert changed_keys({"x": {"y": 1}}, {"x": {"z": 1}}) == ["x.y", "x.z"]


_TINY = ["out_dir=unused", "vae.path=unused", "model.dit.dim=32", "model.dit.num_heads=2", "model.dit.num_layers=1",
         "model.dit.ffn_dim=64", "model.text.dim=16", "model.text.depth=1", "model.text.num_heads=2"]


def test_model_init_starts_from_an_exported_pipelines_weights(tmp_path):
    source = build_diffusion_model(load_recipe(None, _TINY), z_dim=4)
    save_model(str(tmp_path / "transformer"), source.denoiser, source.denoiser.config.to_dict(), "VideoDiT")
    source.text_encoder.save_pretrained(str(tmp_path / "text_encoder"))
    started = build_diffusion_model(load_recipe(None, _TINY + [f"model.init={tmp_path}"]), z_dim=4)
    fresh = build_diffusion_model(load_recipe(None, _TINY), z_dim=4)
    theirs, ours, new = source.state_dict(), started.state_dict(), fresh.state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert not all(torch.equal(theirs[k], new[k]) for k in theirs)  # the init did something
    with pytest.raises(ConfigError, match="num_layers"):
        build_diffusion_model(load_recipe(None, _TINY + ["model.dit.num_layers=2", f"model.init={tmp_path}"]), z_dim=4)
    # the attention mask may change where the parameters do not (full -> causal), not otherwise
    causal = build_diffusion_model(load_recipe(None, _TINY + ["model.dit.attention=causal", f"model.init={tmp_path}"]),
                                   z_dim=4)
    assert causal.denoiser.config.attention == "causal" and all(torch.equal(theirs[k], causal.state_dict()[k]) for k in theirs)
    with pytest.raises(ConfigError, match="attention"):
        build_diffusion_model(load_recipe(None, _TINY + ["model.dit.attention=factorized", f"model.init={tmp_path}"]),
                              z_dim=4)
    with pytest.raises(ConfigError, match="not a pipeline folder"):
        build_diffusion_model(load_recipe(None, _TINY + [f"model.init={tmp_path / 'nowhere'}"]), z_dim=4)


def test_model_init_expand_depth_starts_deeper_with_the_same_function(tmp_path):
    from vidiff.models.conditioning import Conditioning

    def export(model, folder):
        save_model(str(folder / "transformer"), model.denoiser, model.denoiser.config.to_dict(), "VideoDiT")
        model.text_encoder.save_pretrained(str(folder / "text_encoder"))

    source = build_diffusion_model(load_recipe(None, _TINY), z_dim=4)
    with torch.no_grad():
        source.denoiser.proj_out.weight.normal_()  # a fresh head predicts 0 whatever the blocks do
    export(source, tmp_path / "one")
    grow = [f"model.init={tmp_path / 'one'}", "model.init_expand_depth=true"]
    grown = build_diffusion_model(load_recipe(None, _TINY + grow + ["model.dit.num_layers=3"]), z_dim=4)
    assert len(grown.denoiser.blocks) == 3
    assert all(torch.equal(a, b) for a, b in zip(grown.text_encoder.state_dict().values(),
                                                 source.text_encoder.state_dict().values()))
    x, t, text = torch.randn(2, 4, 3, 4, 4), torch.rand(2), torch.randn(2, 5, 16)
    with torch.no_grad():
        out = grown.denoiser(x, t, Conditioning(text=text))
        assert out.abs().max() > 0 and torch.equal(out, source.denoiser(x, t, Conditioning(text=text)))
    two = build_diffusion_model(load_recipe(None, _TINY + ["model.dit.num_layers=2"]), z_dim=4)
    export(two, tmp_path / "two")
    with pytest.raises(ConfigError, match="multiple of the source's 2 blocks"):
        build_diffusion_model(load_recipe(None, _TINY + [f"model.init={tmp_path / 'two'}", "model.init_expand_depth=true",
                                                         "model.dit.num_layers=3"]), z_dim=4)
    with pytest.raises(ConfigError, match="needs model.init"):
        load_recipe(None, _TINY + ["model.init_expand_depth=true"])


def test_word_head_does_not_depend_on_the_denoisers_size():
    """Runs that differ only in depth must start from the same word-loss head."""
    heads = [build_diffusion_model(load_recipe(None, _TINY + [f"model.dit.num_layers={n}", "diffusion.word_loss_weight=0.05"]),
                                   z_dim=4).word_head.state_dict() for n in (1, 2)]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
