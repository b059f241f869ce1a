"""VideoPipeline: conditioning by held-clean frames, guidance, save/load, bad input."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from vidiff.modelio import ModelLoadError
from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.text import BuiltinTextEncoder
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.pipelines import SchedulerConfig, VideoPipeline
from vidiff.video import VideoReadError

PROMPT = "a large red circle moves right on a black background"


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig(base_dim=8, z_dim=8, dim_mult=(1, 2, 4), num_res_blocks=1, temporal_downsample=(True, True),
                                causal_padding="replicate"))
    text = BuiltinTextEncoder.create(dim=32, depth=1)
    dit = VideoDiT(DiTConfig(in_channels=8 + 4 + 8, out_channels=8, patch_size=(1, 2, 2), dim=32, num_heads=2,
                             num_layers=2, ffn_dim=64, text_dim=32, image_condition="concat"))
    # A fresh DiT has a zero output head; give it weights so that the test sees a real network.
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return VideoPipeline(dit, vae, text, SchedulerConfig(num_inference_steps=3, guidance_scale=3.0))


def _first_frame(pipe, image):
    return pipe.encode_frames(pipe.prepare_image(image, 64, 64))


def test_same_seed_same_video_and_other_seed_differs(pipe):
    a = pipe(PROMPT, seed=1, progress=False).frames
    b = pipe(PROMPT, seed=1, progress=False).frames
    c = pipe(PROMPT, seed=2, progress=False).frames
    assert a.shape == (17, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("sampler", ["euler", "unipc", "dpmpp_2m", "heun"])
def test_image_to_video_holds_the_first_latent_frame_exactly(pipe, sampler):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = pipe(PROMPT, image=image, sampler=sampler, return_latents=True, progress=False)
    assert torch.equal(out.latents[:, :, :1], _first_frame(pipe, image))


def test_continuation_holds_all_given_latent_frames(pipe):
    leading = np.random.default_rng(1).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)  # cut to 5 = 1 + 4
    out = pipe(PROMPT, video=leading, return_latents=True, progress=False)
    given = pipe.encode_frames(torch.from_numpy(leading[:5]).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None])
    assert given.shape[2] == 2
    assert torch.equal(out.latents[:, :, :2], given)
    assert not torch.equal(out.latents[:, :, 2:3], torch.zeros_like(out.latents[:, :, 2:3]))


def test_guidance_scale_one_is_the_conditional_model_alone(pipe):
    """With scale 1 CFG must reduce to the conditional prediction (no unconditional branch)."""
    calls = []
    model = pipe.transformer
    orig = model.forward
    model.forward = lambda x, t, c=None: calls.append(x.shape[0]) or orig(x, t, c)
    try:
        pipe(PROMPT, guidance_scale=1.0, progress=False)
        assert set(calls) == {1}
        calls.clear()
        pipe(PROMPT, guidance_scale=3.0, progress=False)
        assert set(calls) == {2}  # cond and uncond batched into one forward
    finally:
        del model.forward


def test_per_frame_guidance_ramp_equal_ends_equals_scalar(pipe):
    a = pipe(PROMPT, guidance_scale=2.5, progress=False, return_latents=True).latents
    b = pipe(PROMPT, guidance_scale=(2.5, 2.5), progress=False, return_latents=True).latents
    assert torch.allclose(a, b, atol=1e-6)


def test_history_guidance_branch_sees_no_history_and_keeps_the_first_frame(pipe):
    """h != 1 adds a third branch whose given frames are noised and whose frame channels are zero;
    the held first latent still comes back bit-identical, and h = 1 is exactly the plain call."""
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    seen = []
    model = pipe.transformer
    orig = model.forward
    model.forward = lambda x, t, c=None: seen.append((x, t, c)) or orig(x, t, c)
    try:
        out = pipe(PROMPT, image=image, history_guidance=2.0, return_latents=True, progress=False)
    finally:
        del model.forward
    x, t, c = seen[0]
    assert x.shape[0] == 3  # text, negative text, text without history
    assert c.frame_mask[0, 0] == 1 and c.frame_mask[1, 0] == 1 and c.frame_mask[2].abs().sum() == 0
    assert c.image_latent[2].abs().sum() == 0
    assert t[0, 0] == 0 and t[2, 0] == t[2, 1] > 0  # the given frame is noised to the others' level
    assert not torch.equal(x[2, :, 0], x[0, :, 0])
    assert torch.equal(out.latents[:, :, :1], _first_frame(pipe, image))
    plain = pipe(PROMPT, image=image, return_latents=True, progress=False).latents
    assert torch.equal(pipe(PROMPT, image=image, history_guidance=1.0, return_latents=True, progress=False).latents, plain)
    assert not torch.allclose(out.latents[:, :, 1:], plain[:, :, 1:])


def test_history_free_input_noises_given_frames_to_the_generated_level():
    from vidiff.diffusion import FlowSchedule

    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(1, 3, 4, 2, 2, generator=g)
    t = torch.tensor([[0.0, 0.0, 0.7, 0.7], [0.0, 0.0, 0.2, 0.2]])
    x_f, t_f = VideoPipeline._history_free_input([0, 1], noise, FlowSchedule())(x, t)
    level = t[:, 2].view(2, 1, 1, 1, 1)
    torch.testing.assert_close(x_f[:, :, :2], (1 - level) * x[:, :, :2] + level * noise[:, :, :2])
    assert torch.equal(x_f[:, :, 2:], x[:, :, 2:])
    assert torch.equal(t_f, t[:, 2:3].expand(2, 4))


def test_batch_of_prompts_matches_shapes(pipe):
    out = pipe([PROMPT, "a small blue square moves up on a gray background"], progress=False)
    assert out.frames.shape == (2, 17, 64, 64, 3)


def test_save_and_load_reproduce_the_video(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    pipe.save_pretrained(tmp_path / "model")  # overwriting an existing folder is atomic too
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    loaded = VideoPipeline.from_pretrained(tmp_path / "model")
    assert np.array_equal(loaded(PROMPT, seed=3, progress=False).frames, pipe(PROMPT, seed=3, progress=False).frames)


def test_a_pipeline_can_share_another_pipelines_vae(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "video")
    pipe.save_pretrained(tmp_path / "baseline")
    shutil.rmtree(tmp_path / "baseline" / "vae")
    index_path = tmp_path / "baseline" / "model_index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "vae": "../video/vae"}))
    shared = VideoPipeline.from_pretrained(tmp_path / "baseline")
    assert np.array_equal(shared(PROMPT, seed=2, progress=False).frames, pipe(PROMPT, seed=2, progress=False).frames)
    index_path.write_text(json.dumps({**index, "vae": "../nowhere/vae"}))
    with pytest.raises(ModelLoadError, match="nowhere"):
        VideoPipeline.from_pretrained(tmp_path / "baseline")


def test_a_misspelt_model_index_key_is_an_error_naming_file_and_key(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    index_path = tmp_path / "model" / "model_index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "num_frame": 33}))
    with pytest.raises(ModelLoadError, match=r"model_index\.json.*num_frame"):
        VideoPipeline.from_pretrained(tmp_path / "model")


def test_notices_for_frames_unknown_words_and_resized_image(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pipe("a large red circle moves rigth on a black background", num_frames=15,
                   image=np.zeros((48, 80, 3), np.uint8), progress=False)
    text = " | ".join(str(w.message) for w in caught)
    assert out.frames.shape[0] == 17 and "num_frames=15" in text
    assert "rigth" in text and "80x48" in text


def test_bad_paths_name_the_path(pipe, tmp_path):
    with pytest.raises(ModelLoadError, match="nowhere"):
        VideoPipeline.from_pretrained(tmp_path / "nowhere")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(VideoReadError, match="broken.png"):
        pipe(PROMPT, image=str(bad), progress=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text('{"_class_name": "VideoPipeline"}')
    with pytest.raises(ModelLoadError, match="transformer"):
        VideoPipeline.from_pretrained(tmp_path / "m")
