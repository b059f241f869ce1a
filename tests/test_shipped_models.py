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
