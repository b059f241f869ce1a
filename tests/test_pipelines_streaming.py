"""Causal streaming with a key/value cache equals full causal-attention generation."""

import numpy as np
import pytest
import torch

from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.text import BuiltinTextEncoder
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.pipelines import PipelineConfig, SchedulerConfig, VideoPipeline
from vidiff.pipelines.streaming import CausalDiTStream, iter_causal

A = "a large red circle moves right on a black background"


def _causal_pipeline(image_condition="concat", guidance=2.0, patch_t=1):
    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(True,),
                                causal_padding="replicate"))
    text = BuiltinTextEncoder.create(dim=16, depth=1)
    in_ch = 4 + 2 + 4 if image_condition == "concat" else 4
    dit = VideoDiT(DiTConfig(in_channels=in_ch, out_channels=4, patch_size=(patch_t, 2, 2), dim=24, num_heads=2,
                             num_layers=2, ffn_dim=32, text_dim=16, image_condition=image_condition,
                             mask_channels=2, attention="causal"))
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return VideoPipeline(dit, vae, text, SchedulerConfig(num_inference_steps=3, guidance_scale=guidance),
                         PipelineConfig(num_frames=9, height=16, width=16))


def _full_causal_reference(pipe, total, chunk, guidance, seed=0):
    """Chunk after chunk, the model run on [all past latents held clean; the chunk]."""
    gen = torch.Generator().manual_seed(seed)
    text = pipe.encode_prompts([A])
    uncond = pipe.encode_prompts([""]) if guidance != 1.0 else None
    past = None
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        noise = pipe.initial_noise((1, 4, n, 8, 8), "independent", 0.0, gen)
        if past is None:
            lat = pipe.denoise_latents(noise, text, uncond_text=uncond, guidance_scale=guidance, generator=gen)
        else:
            full = torch.cat([torch.zeros_like(past), noise], dim=2)
            out = pipe.denoise_latents(full, text, uncond_text=uncond, guidance_scale=guidance, given=past,
                                       given_index=past.shape[2], generator=gen)
            assert torch.equal(out[:, :, : past.shape[2]], past)
            lat = out[:, :, past.shape[2]:]
        past = lat if past is None else torch.cat([past, lat], dim=2)
    return past


@pytest.mark.parametrize("chunk,guidance,cond", [(1, 2.0, "concat"), (2, 1.0, "none"), (2, 3.0, "concat")])
def test_kv_cache_streaming_equals_full_causal_generation(chunk, guidance, cond):
    pipe = _causal_pipeline(cond, guidance)
    chunks = list(iter_causal(pipe, A, num_frames=17, chunk=chunk, seed=0))  # 9 latents
    streamed = torch.cat([c.latents for c in chunks], dim=2)
    ref = _full_causal_reference(pipe, 9, chunk, guidance)
    assert streamed.shape == ref.shape == (1, 4, 9, 8, 8)
    assert torch.allclose(streamed, ref, atol=2e-5, rtol=0), (streamed - ref).abs().max()
    frames = np.concatenate([c.frames for c in chunks])
    whole = pipe.decode_latents(streamed)
    assert frames.shape == (17, 16, 16, 3)
    assert np.abs(frames.astype(int) - ((whole[0].permute(1, 2, 3, 0) + 1) * 127.5).round().numpy()).max() <= 1


def test_streaming_from_an_image_equals_full_causal_generation_from_it():
    pipe = _causal_pipeline("concat", 2.0)
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    first = pipe.encode_frames(pipe.prepare_image(image, 16, 16))
    chunks = list(iter_causal(pipe, A, num_frames=9, chunk=2, image=image, seed=0))  # 5 latents: 1 + 2 + 2
    streamed = torch.cat([c.latents for c in chunks], dim=2)
    assert torch.equal(streamed[:, :, :1], first)
    gen = torch.Generator().manual_seed(0)
    text, uncond = pipe.encode_prompts([A]), pipe.encode_prompts([""])
    past = first
    for _ in range(2):
        noise = pipe.initial_noise((1, 4, 2, 8, 8), "independent", 0.0, gen)
        full = torch.cat([torch.zeros_like(past), noise], dim=2)
        out = pipe.denoise_latents(full, text, uncond_text=uncond, guidance_scale=2.0, given=past,
                                   given_index=past.shape[2], generator=gen)
        past = torch.cat([past, out[:, :, past.shape[2]:]], dim=2)
    assert torch.allclose(streamed, past, atol=2e-5, rtol=0)


def test_cache_is_bounded_and_positions_keep_counting():
    torch.manual_seed(1)
    # one layer: its keys/values depend on each frame alone, so after eviction the cache must
    # equal a fresh cache of the kept frames at the same positions (the bookkeeping is exact)
    model = VideoDiT(DiTConfig(in_channels=4, out_channels=4, patch_size=(1, 2, 2), dim=24, num_heads=2,
                               num_layers=1, ffn_dim=32, text_dim=16, attention="causal"))
    torch.nn.init.normal_(model.proj_out.weight, 0, 0.05)
    stream = CausalDiTStream(model, max_cache_frames=3)
    xs = torch.randn(6, 1, 4, 1, 8, 8)
    for i in range(6):
        stream.commit(xs[i])
        assert stream.cache.layers[0].keys.shape[2] == min(i + 1, 3) * 16 and stream.cache.position == i + 1
    fresh = CausalDiTStream(model)
    fresh.cache.position = 3
    for i in range(3, 6):
        fresh.commit(xs[i])
    t = torch.full((1,), 0.5)
    x = torch.randn(1, 4, 2, 8, 8)
    assert torch.allclose(stream.stream(x, t), fresh.stream(x, t), atol=1e-6)
    # RoPE is relative: the same frames at positions 0..2 (queries at 3, 4) predict the same ...
    shifted = CausalDiTStream(model)
    for i in range(3, 6):
        shifted.commit(xs[i])
    assert torch.allclose(stream.stream(x, t), shifted.stream(x, t), atol=1e-5)
    # ... but a gap between the cached frames and the queries changes the prediction
    shifted.cache.position += 4
    assert not torch.allclose(stream.stream(x, t), shifted.stream(x, t), atol=1e-4)


def test_streaming_needs_a_causal_model():
    pipe = _causal_pipeline()
    pipe.transformer.config.attention = "full"
    with pytest.raises(ValueError, match="causal"):
        CausalDiTStream(pipe.transformer)


def test_cli_causal_mode_streams_what_iter_causal_makes_with_a_bounded_cache(tmp_path, capsys):
    import json

    from vidiff.cli import main
    from vidiff.video import read_frames_png

    pipe = _causal_pipeline("concat", 2.0)
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    args = ["generate", A, "--model", str(model), "--frames", "25", "--long-mode", "causal", "--chunk", "2"]
    assert main([*args, "--out", f"{tmp_path / 'frames'}/"]) == 0
    # the clip is 9 frames = 5 latents: the cache keeps the 5 - 2 latents before each chunk
    expected = np.concatenate([c.frames for c in iter_causal(pipe, prompts=[A], num_frames=25, chunk=2,
                                                             max_cache_frames=3, seed=0)])
    assert np.array_equal(read_frames_png(tmp_path / "frames"), expected)
    record = json.loads((tmp_path / "frames.json").read_text())["long"]
    assert record["mode"] == "causal" and record["boundaries"] == [3, 7, 11, 15, 19, 23]

    capsys.readouterr()
    assert main([*args, "--history-guidance", "2", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "does not use --history-guidance" in capsys.readouterr().err
    assert main([*args, "--overlap", "2", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "does not use --overlap" in capsys.readouterr().err
    full = _causal_pipeline("concat", 2.0)
    full.transformer.config.attention = "full"
    full.save_pretrained(tmp_path / "full")
    assert main(["generate", A, "--model", str(tmp_path / "full"), "--long-mode", "causal",
                 "--out", str(tmp_path / "x.mp4")]) == 2
    assert "attention='full'" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
