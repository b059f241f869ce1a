"""The world models that ship in the package load, share one VAE and generate."""

import os
import warnings

import numpy as np
import torch

from vidiff.cli.generate import shipped_model_dir
from vidiff.pipelines import VideoPipeline

VIDEO_MODEL = shipped_model_dir()
BASELINE = os.path.join(os.path.dirname(VIDEO_MODEL), "world-per-frame")
PROMPT = "a large red circle moves right on a black background"


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoPipeline.from_pretrained(path)


def test_shipped_models_fit_in_50_mb():
    root = os.path.dirname(VIDEO_MODEL)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)
    assert total <= 50 * 2**20, f"shipped models take {total / 2**20:.1f} MB"


def test_video_model_and_baseline_share_the_vae_and_generate():
    video, baseline = _load(VIDEO_MODEL), _load(BASELINE)
    assert video.transformer.config.attention == "full" and baseline.transformer.config.attention == "spatial"
    ours, theirs = video.vae.state_dict(), baseline.vae.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for pipe in (video, baseline):
        frames = pipe(PROMPT, num_inference_steps=4, seed=0, progress=False).frames
        assert frames.shape == (17, 64, 64, 3) and frames.dtype == np.uint8
        assert frames.std() > 1.0  # not a blank video


def test_demo_makes_a_clip_and_a_schedule_that_goes_round_a_square(tmp_path):
    """`make demo`'s second video: one clip per prompt, right, down, left, up. The red circle's
    centre must move that way in each 16-frame segment (it fails if a prompt is not followed or
    the object leaves the picture)."""
    import json

    from vidiff.cli import main
    from vidiff.cli.demo import DEMO_SCHEDULE
    from vidiff.video import read_video

    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert read_video(tmp_path / "video.mp4").shape[0] == 17
    frames = read_video(tmp_path / "schedule.mp4").astype(float)
    assert frames.shape[0] == 65
    record = json.loads((tmp_path / "schedule.mp4.json").read_text())
    assert [s["prompt"] for s in record["long"]["prompt_segments"]] == list(DEMO_SCHEDULE)
    red = (frames[..., 0] > 120) & (frames[..., 1] < 90) & (frames[..., 2] < 90)
    assert red.sum(axis=(1, 2)).min() > 50  # the circle stays in view
    ys, xs = np.indices(red.shape[1:])
    centre = np.stack([[xs[m].mean(), ys[m].mean()] for m in red])  # [F, (x, y)]
    moves = [centre[16 * (k + 1)] - centre[16 * k] for k in range(4)]
    (rx, ry), (dx, dy), (lx, ly), (ux, uy) = moves
    assert rx > 8 and abs(ry) < rx / 2, moves
    assert dy > 8 and abs(dx) < dy / 2, moves
    assert lx < -8 and abs(ly) < -lx / 2, moves
    assert uy < -8 and abs(ux) < -uy / 2, moves
