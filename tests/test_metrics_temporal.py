"""Temporal metrics: exact pieces against closed forms, and each metric moving when (and only when)
the defect it is meant to see is present, on synthetic clips and on the real camera clip."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from vidiff.metrics import temporal  # noqa: E402
from vidiff.metrics.flow import backward_warp, dis_flow, occlusion_mask  # noqa: E402


# --------------------------------------------------------------------------- synthetic clips


def smooth_texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 3.0)
    return (t - t.min()) / (t.max() - t.min()) * 200 + 30


def moving_disc(n=16, size=128, step=2.0, jitter=0.0, seed=0, radius=14):
    """A red disc moving right over a textured background; ``jitter`` px added in a random
    direction every frame. Returns the uint8 clip and the true disc centres."""
    back = smooth_texture(size, size, seed)
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames, centres = [], []
    for t in range(n):
        cx, cy = 25 + step * t, size / 2
        if jitter:
            a = rng.uniform(0, 2 * np.pi)
            cx, cy = cx + jitter * np.cos(a), cy + jitter * np.sin(a)
        cover = np.clip(radius + 0.5 - np.hypot(xx - cx, yy - cy), 0, 1)[..., None]
        frames.append((back * (1 - cover) + np.array([230, 20, 20], np.float32) * cover).round())
        centres.append((cx, cy))
    return np.stack(frames).astype(np.uint8), np.array(centres)


def moving_square(n=8, size=128, step=6.0, side=48, seed=0):
    """A textured square translating ``step`` px per frame over a textured still background."""
    back = smooth_texture(size, size, seed)
    fg = smooth_texture(side, side, seed + 1)
    frames = []
    for t in range(n):
        m = np.float32([[1, 0, 10 + step * t], [0, 1, size / 2 - side / 2]])
        cover = cv2.warpAffine(np.ones((side, side), np.float32), m, (size, size))[..., None]
        frames.append(back * (1 - cover) + cv2.warpAffine(fg, m, (size, size)))
    return np.clip(np.stack(frames), 0, 255).round().astype(np.uint8)


def brightness_flicker(frames: np.ndarray, amplitude: int = 20, seed: int = 0) -> np.ndarray:
    offsets = np.random.default_rng(seed).choice([-amplitude, amplitude], size=len(frames))
    return np.clip(frames.astype(np.int16) + offsets[:, None, None, None], 0, 255).astype(np.uint8)


def shuffled(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    return frames[np.random.default_rng(seed).permutation(len(frames))]


def red_centroids(frames: np.ndarray) -> np.ndarray:
    """What a world tracker does: centroid of the colour mask per frame."""
    f = frames.astype(np.int16)
    mask = (f[..., 0] > 180) & (f[..., 1] < 80) & (f[..., 2] < 80)
    out = []
    for m in mask:
        ys, xs = np.nonzero(m)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def mean_acceleration(track: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(track, n=2, axis=0), axis=1).mean())


# --------------------------------------------------------------------------- flow helpers


def test_flow_direction_and_backward_warp_bring_target_onto_source():
    tex = smooth_texture(96, 128, 3)
    source = tex[:, 10:106].round().astype(np.uint8)
    target = tex[:, 7:103].round().astype(np.uint8)  # content moved 3 px to the right
    flow = dis_flow(source, target)
    inner = (slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(flow[inner][..., 0].mean(), 3.0, atol=0.1)
    np.testing.assert_allclose(flow[inner][..., 1].mean(), 0.0, atol=0.1)
    warped = backward_warp(target, flow)
    assert np.abs(warped[inner] - source[inner]).mean() < 1.0
    assert np.abs(target[inner].astype(np.float32) - source[inner]).mean() > 5.0


def test_warping_error_compares_frame_t_with_frame_t_plus_1_warped_back():
    tex = smooth_texture(64, 64, 4).round().astype(np.uint8)
    clip = np.stack([np.roll(tex, 3 * t, axis=1) for t in range(4)])  # rigid 3 px/frame pan
    unwarped = np.mean((clip[1:].astype(np.float64) - clip[:-1]) ** 2) / 255**2
    # I_t(x) = I_{t+1}(x + 3): the right direction explains the frame almost exactly; the wrong
    # one (x - 3) would leave a 6 px misalignment, worse than not warping at all
    assert temporal.warping_error(clip) < 0.1 * unwarped  # measured 0.025; the wrong way ~2.6


def test_small_and_elongated_frames_get_flow_or_a_clear_error():
    # OpenCV's DIS reads uninitialised memory (and can crash) when its automatic pyramid depth
    # falls below the preset's finest level, e.g. 12x50 with the medium preset
    rng = np.random.default_rng(0)
    for h, w in [(12, 50), (16, 1000), (50, 12)]:
        a, b = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        for preset in ("ultrafast", "fast", "medium"):
            flow = dis_flow(a, b, preset)
            assert flow.shape == (h, w, 2) and np.isfinite(flow).all()
    with pytest.raises(ValueError, match="11x11 are too small"):
        temporal.warping_error(np.zeros((2, 11, 11, 3), np.uint8))


def test_occlusion_mask_thresholds_of_lai_et_al():
    shape = (8, 8, 2)
    fw = np.zeros(shape, np.float32)
    fw[..., 0] = 1.0
    bw = -fw
    assert not occlusion_mask(fw, bw).any()  # perfect round trip
    # |fw + bw|^2 = 1 > 0.01 * (1 + 0) + 0.5: occluded everywhere
    assert occlusion_mask(fw, np.zeros(shape, np.float32)).all()
    # |fw + bw|^2 = 0.25 <= 0.01 * (1 + 0.25) + 0.5: still consistent
    half = np.zeros(shape, np.float32)
    half[..., 0] = -0.5
    assert not occlusion_mask(fw, half).any()
    # a step in the forward flow is a motion boundary on its left side only (forward differences)
    step = np.zeros(shape, np.float32)
    step[:, 4:, 0] = 2.0
    mask = occlusion_mask(step, -step)
    assert mask[:, 3].all() and not mask[:, :3].any() and not mask[:, 4:].any()


# --------------------------------------------------------------------------- exact definitions


def test_check_video_rejects_bad_input_with_the_reason():
    with pytest.raises(ValueError, match="uint8"):
        temporal.warping_error(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least 3"):
        temporal.motion_smoothness(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(TypeError, match="numpy"):
        temporal.temporal_flicker([[0]])


def test_flicker_and_frame_consistency_closed_forms():
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    frames[1] = 10
    frames[2] = 10
    # |differences| are 10 then 0 -> mean 5
    assert temporal.mean_abs_difference(frames) == pytest.approx(5.0)
    assert temporal.temporal_flicker(frames) == pytest.approx((255 - 5) / 255)
    # PSNRs: MSE 100 -> 10 log10(255^2 / 100); identical frames -> capped at 100 dB
    expected = (10 * math.log10(255**2 / 100) + 100.0) / 2
    assert temporal.frame_consistency(frames) == pytest.approx(expected)


def test_static_clip_is_perfect_on_every_metric():
    frames = np.repeat(smooth_texture(64, 64, 0).round().astype(np.uint8)[None], 5, axis=0)
    result = temporal.evaluate_video(frames)
    assert result["warping_error"] == 0.0
    assert result["temporal_flicker"] == 1.0
    assert result["motion_smoothness"] == pytest.approx(1.0)
    assert result["frame_consistency"] == pytest.approx(100.0)
    assert result["dynamic_degree"] == 0.0
    json.dumps(result)  # JSON-ready, no numpy scalars or infinities


def test_evaluate_video_agrees_with_the_single_metrics_and_is_deterministic():
    clip = moving_square(n=6, step=6.0, side=64)
    result = temporal.evaluate_video(clip)
    assert result["warping_error"] == temporal.warping_error(clip)  # bit-identical: one thread
    assert result["motion_smoothness"] == temporal.motion_smoothness(clip)
    assert result["dynamic_degree"] == float(temporal.dynamic_degree(clip)) == 1.0
    assert result["motion_magnitude"] == float(np.median(temporal.pair_motion(clip)))
    assert result["temporal_flicker"] == temporal.temporal_flicker(clip)
    assert result["frame_consistency"] == temporal.frame_consistency(clip)
    assert result["num_frames"] == 6


def test_interpolated_midframe_of_uniform_motion_matches_the_real_frame():
    clip = moving_square(n=3, step=4.0)
    mid = temporal.interpolate_midframe(clip[0], clip[2])
    err_interp = np.abs(mid - clip[1]).mean()
    err_blend = np.abs(0.5 * (clip[0].astype(np.float32) + clip[2]) - clip[1]).mean()
    assert err_interp < 0.25 * err_blend


# --------------------------------------------------------------------------- defects


def test_brightness_flicker_raises_flicker_and_warping_error():
    clip, _ = moving_disc()
    flick = brightness_flicker(clip)
    assert temporal.mean_abs_difference(flick) > 3 * temporal.mean_abs_difference(clip)
    assert temporal.warping_error(flick) > 20 * temporal.warping_error(clip)
    assert temporal.motion_smoothness(flick) < temporal.motion_smoothness(clip)


def test_shuffled_frames_raise_warping_error_and_lower_smoothness():
    clip, _ = moving_disc()
    shuf = shuffled(clip)
    assert temporal.warping_error(shuf) > 3 * temporal.warping_error(clip)
    assert temporal.motion_smoothness(shuf) < temporal.motion_smoothness(clip)


def test_trajectory_jitter_is_not_caught_by_warping_error_but_by_the_track():
    """The flow follows a 2 px per-frame jitter, so the warped frame still matches: the jittered
    disc scores like a smooth disc moving at the same mean speed (measured ratio 0.76-1.20 over
    six seeds), while brightness flicker moves warping error ~50x. A centroid track (what the
    world metrics use) sees the jitter at once (mean acceleration 0.06 -> ~5 px/frame^2)."""
    jittery, centres = moving_disc(seed=0, jitter=2.0)
    mean_speed = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).mean())
    smooth, _ = moving_disc(seed=0, step=mean_speed)
    we_smooth, we_jitter = temporal.warping_error(smooth), temporal.warping_error(jittery)
    we_flicker = temporal.warping_error(brightness_flicker(smooth))
    assert we_jitter < 1.5 * we_smooth
    assert we_flicker > 20 * we_jitter
    acc_smooth = mean_acceleration(red_centroids(smooth))
    acc_jitter = mean_acceleration(red_centroids(jittery))
    assert acc_jitter > 10 * max(acc_smooth, 0.05)


def test_dynamic_degree_separates_static_from_moving():
    rng = np.random.default_rng(0)
    still = smooth_texture(128, 128, 1)[None].repeat(8, axis=0)
    noisy_still = np.clip(still + rng.normal(0, 2, still.shape), 0, 255).round().astype(np.uint8)
    fast = moving_square(n=8, step=6.0, side=64)
    slow = moving_square(n=8, step=1.0, side=64)
    assert not temporal.dynamic_degree(noisy_still)
    assert temporal.dynamic_degree(fast)
    assert not temporal.dynamic_degree(slow)
    # the reading of a well-textured translation is the true displacement
    np.testing.assert_allclose(temporal.pair_motion(fast), 6.0, atol=0.3)


def test_real_clip_orders_original_below_flickered_and_shuffled(real_clip):
    from vidiff.video import read_video

    clip = read_video(real_clip, max_frames=12)
    flick, shuf = brightness_flicker(clip), shuffled(clip, seed=1)
    we = temporal.warping_error(clip)
    assert we < temporal.warping_error(flick)
    assert we < temporal.warping_error(shuf)
    mad = temporal.mean_abs_difference(clip)
    assert mad < temporal.mean_abs_difference(flick)
    assert mad < temporal.mean_abs_difference(shuf)
    assert temporal.motion_smoothness(clip) > temporal.motion_smoothness(shuf)


# --------------------------------------------------------------------------- CLI


def _eval_parser() -> argparse.ArgumentParser:
    from vidiff.cli import eval_video

    parser = argparse.ArgumentParser(prog="vidiff eval")
    eval_video.register(parser.add_subparsers(dest="what"))
    return parser


def test_cli_unreadable_input_is_a_one_line_error_naming_it(tmp_path, real_clip):
    from vidiff.cli import CLIError

    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_text("hello")
    args = _eval_parser().parse_args(["video", real_clip, str(bogus)])
    with pytest.raises(CLIError, match="not_a_video.mp4"):
        args.handler(args)
    missing = str(tmp_path / "missing.mp4")
    args = _eval_parser().parse_args(["video", missing])
    with pytest.raises(CLIError, match="missing.mp4"):
        args.handler(args)


def test_cli_main_exit_status_and_stderr(tmp_path, capsys):
    from vidiff import cli

    parser = cli.build_parser()
    if "eval" not in parser._subparsers._group_actions[0].choices:  # noqa: SLF001
        pytest.skip("`vidiff eval` is not wired into the main parser yet")
    missing = str(tmp_path / "missing.mp4")
    assert cli.main(["eval", "video", missing]) != 0
    err = capsys.readouterr().err
    assert missing in err and len(err.strip().splitlines()) == 1


def test_cli_writes_json(tmp_path, real_clip):
    out = tmp_path / "m.json"
    args = _eval_parser().parse_args(["video", real_clip, "--max-frames", "5", "--json", str(out)])
    assert args.handler(args) == 0
    videos = json.loads(out.read_text())["videos"]
    assert [v["path"] for v in videos] == [real_clip]
    for key in ("warping_error", "temporal_flicker", "motion_smoothness", "dynamic_degree", "frame_consistency"):
        assert isinstance(videos[0][key], float)


def test_cli_too_short_or_too_small_video_is_a_clear_error(tmp_path):
    from vidiff.cli import CLIError
    from vidiff.video import write_video

    short = write_video(str(tmp_path / "two_frames.mp4"), np.zeros((2, 32, 32, 3), np.uint8))
    args = _eval_parser().parse_args(["video", short])
    with pytest.raises(CLIError, match="two_frames.mp4.*at least 3"):
        args.handler(args)
    tiny = write_video(str(tmp_path / "tiny.mp4"), np.zeros((4, 8, 8, 3), np.uint8))
    args = _eval_parser().parse_args(["video", tiny])
    with pytest.raises(CLIError, match="tiny.mp4.*too small"):
        args.handler(args)
