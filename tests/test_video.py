"""Tests for vidiff.video: round trips, resampling against PyAV's own timestamps, geometry, and every
kind of bad input the module promises to reject with a message naming the file."""

import math
import os
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import GifImagePlugin, Image

from vidiff import video as V


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def smooth_clip(frames=16, height=64, width=96) -> np.ndarray:
    """Moving low-frequency colour waves: easy for H.264, so a tight PSNR bound is meaningful."""
    t = np.arange(frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    r = 127 + 100 * np.sin(2 * np.pi * (x / width + t / frames))
    g = 127 + 100 * np.cos(2 * np.pi * (y / height - t / (2 * frames)))
    b = 127 + 60 * np.sin(2 * np.pi * (x + y) / (width + height))
    return np.stack(np.broadcast_arrays(r, g, b), axis=-1).round().astype(np.uint8)


def few_colour_clip(frames=6, height=20, width=30) -> np.ndarray:
    """Moving coloured squares on a two-tone background: 5 colours, every frame different."""
    clip = np.zeros((frames, height, width, 3), np.uint8)
    clip[:, : height // 2] = (10, 20, 30)
    clip[:, height // 2 :] = (200, 200, 200)
    for f in range(frames):
        clip[f, 2:8, 2 + 3 * f : 8 + 3 * f] = (255, 0, 0)
        clip[f, 12:18, 20 - 2 * f : 26 - 2 * f] = (0, 255, 0)
        clip[f, 0, f] = (0, 0, 255)
    return clip


def pyav_times(path: str) -> np.ndarray:
    """Presentation times (s) of every frame, straight from PyAV, as an independent reference."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        return np.array([float(f.pts * f.time_base) - start for f in container.decode(stream)])


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


def test_mp4_round_trip_psnr_and_probe(tmp_path):
    clip = smooth_clip()
    path = tmp_path / "clip.mp4"
    assert V.write_video(path, clip, fps=8.0) == str(path)
    back = V.read_video(path)
    assert back.shape == clip.shape and back.dtype == np.uint8
    assert psnr(back, clip) >= 35.0
    info = V.probe_video(path)
    assert (info.width, info.height, info.codec) == (96, 64, "h264")
    assert info.fps == pytest.approx(8.0)
    assert info.num_frames == 16 and info.num_frames_exact
    assert info.duration_s == pytest.approx(16 / 8.0, abs=1e-3)
    assert listing(tmp_path) == ["clip.mp4"]  # no temporary file left behind


def test_mp4_odd_size_is_padded_with_edge_pixels(tmp_path):
    clip = smooth_clip(frames=8, height=47, width=63)
    path = tmp_path / "odd.mp4"
    V.write_video(path, clip, fps=8)
    back = V.read_video(path)
    assert back.shape == (8, 48, 64, 3)
    assert psnr(back[:, :47, :63], clip) >= 35.0
    # The added row/column repeat the edge, so they match the original last row/column.
    assert psnr(back[:, 47, :63], clip[:, 46]) >= 30.0
    assert psnr(back[:, :47, 63], clip[:, :, 62]) >= 30.0


def test_mp4_accepts_float_tensor_and_fractional_fps(tmp_path):
    clip = smooth_clip(frames=6)
    path = tmp_path / "t.mp4"
    V.write_video(path, V.frames_to_tensor(clip)[None], fps=29.97)
    assert psnr(V.read_video(path), clip) >= 35.0
    assert V.probe_video(path).fps == pytest.approx(29.97, abs=1e-3)


@pytest.mark.parametrize("name", ["frames/", "frames"])
def test_png_folder_round_trip_is_exact(tmp_path, name):
    clip = smooth_clip(frames=5, height=17, width=23)
    target = str(tmp_path / name)
    V.write_video(target, clip)
    folder = tmp_path / "frames"
    assert listing(folder) == [f"frame_{i:05d}.png" for i in range(5)]
    np.testing.assert_array_equal(V.read_frames_png(folder), clip)
    assert listing(tmp_path) == ["frames"]


def test_png_folder_overwrite_replaces_old_frames_but_not_foreign_folders(tmp_path):
    clip = smooth_clip(frames=5, height=8, width=8)
    folder = tmp_path / "out"
    V.write_frames_png(folder, clip)
    V.write_frames_png(folder, clip[:2])
    np.testing.assert_array_equal(V.read_frames_png(folder), clip[:2])
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(V.VideoWriteError, match="notes"):
        V.write_frames_png(other, clip)
    assert listing(other) == ["keep.txt"]
    assert sorted(listing(tmp_path)) == ["notes", "out"]


def test_write_frames_png_accepts_float_video(tmp_path):
    clip = smooth_clip(frames=3, height=6, width=10)
    V.write_frames_png(tmp_path / "f", V.frames_to_tensor(clip))
    np.testing.assert_array_equal(V.read_frames_png(tmp_path / "f"), clip)


@pytest.mark.parametrize("name", ["same.mp4", "same.gif"])
def test_the_same_frames_give_the_same_file(tmp_path, name):
    """Reproducible outputs: with x264's default MB-tree rate control, 4 writes of this clip gave
    4 different files (and decoded pixels)."""
    clip = smooth_clip(frames=32, height=64, width=96)
    files = set()
    for _ in range(4):
        V.write_video(tmp_path / name, clip, fps=8.0)
        files.add((tmp_path / name).read_bytes())
    assert len(files) == 1


def test_gif_round_trip_exact_with_few_colours_and_timing(tmp_path):
    clip = few_colour_clip()
    path = tmp_path / "clip.gif"
    V.write_video(path, clip, fps=8.0)
    np.testing.assert_array_equal(V.read_video(path), clip)
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0  # loop forever
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert len(durations) == len(clip)
    # GIF counts in 1/100 s: per-frame delays differ by rounding, the total is exact.
    assert sum(durations) == pytest.approx(1000 * len(clip) / 8.0, abs=10)
    assert all(abs(d - 125) <= 10 for d in durations)


def test_gif_many_colours_stays_close(tmp_path):
    clip = smooth_clip(frames=4, height=32, width=48)
    path = tmp_path / "many.gif"
    V.write_video(path, clip, fps=4)
    back = V.read_video(path)
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip).mean() < 12  # dithered 256-colour palette


# ------------------------------------------------------------------------------------------------
# Reading options on the real clip
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [10.0, 7.5, 60.0])
def test_fps_resampling_picks_nearest_frames(real_clip, fps):
    full = V.read_video(real_clip)
    times = pyav_times(real_clip)
    info = V.probe_video(real_clip)
    assert len(full) == len(times) == info.num_frames == 36
    resampled = V.read_video(real_clip, fps=fps)
    assert len(resampled) == math.ceil(info.duration_s * fps - 1e-9)
    for k, frame in enumerate(resampled):
        nearest = int(np.argmin(np.abs(times - k / fps)))
        np.testing.assert_array_equal(frame, full[nearest], err_msg=f"output frame {k} at fps={fps}")


def test_fps_resampling_with_start_and_max_frames(real_clip):
    full = V.read_video(real_clip)
    times = pyav_times(real_clip)
    out = V.read_video(real_clip, fps=12.0, start_s=0.4, max_frames=4)
    assert len(out) == 4
    for k, frame in enumerate(out):
        np.testing.assert_array_equal(frame, full[int(np.argmin(np.abs(times - (0.4 + k / 12.0))))])


def test_stride_max_frames_and_start(real_clip):
    full = V.read_video(real_clip)
    times = pyav_times(real_clip)
    np.testing.assert_array_equal(V.read_video(real_clip, stride=5), full[::5])
    np.testing.assert_array_equal(V.read_video(real_clip, max_frames=4), full[:4])
    np.testing.assert_array_equal(V.read_video(real_clip, stride=3, max_frames=2), full[[0, 3]])
    first = int(np.argmax(times >= 0.5))
    np.testing.assert_array_equal(V.read_video(real_clip, start_s=0.5), full[first:])
    streamed = list(V.iter_frames(real_clip, stride=7))
    np.testing.assert_array_equal(np.stack(streamed), full[::7])


def test_fps_and_stride_are_mutually_exclusive(real_clip):
    with pytest.raises(ValueError, match="mutually exclusive"):
        V.read_video(real_clip, fps=10, stride=2)
    with pytest.raises(ValueError, match="stride"):
        V.read_video(real_clip, stride=0)


def test_resize_and_crop(real_clip):
    full = V.read_video(real_clip, max_frames=2)  # 240 x 320
    assert V.read_video(real_clip, max_frames=2, size=60).shape == (2, 60, 80, 3)
    assert V.read_video(real_clip, max_frames=2, size=(64, 48)).shape == (2, 64, 48, 3)
    assert V.read_video(real_clip, max_frames=2, size=(50, 200), crop=False).shape == (2, 50, 200, 3)
    # Same height as the source: the crop alone, which must be the exact centre of the frame.
    np.testing.assert_array_equal(V.read_video(real_clip, max_frames=2, size=(240, 240)), full[:, :, 40:280])
    # Down-scaling antialiases: matches Pillow's bicubic resize of the centre crop (away from the
    # border, where the filter may also read pixels just outside the crop).
    small = V.read_video(real_clip, max_frames=2, size=(60, 60))
    ref = np.asarray(Image.fromarray(full[0][:, 40:280]).resize((60, 60), Image.Resampling.BICUBIC))
    assert np.abs(small[0].astype(int) - ref)[2:-2, 2:-2].max() <= 1


def test_decoding_stops_once_max_frames_is_reached(real_clip, tmp_path):
    """A file corrupted past frame ~20: reading 5 frames never reaches the damage (no warning)."""
    path = corrupt_middle(real_clip, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = V.read_video(path, max_frames=5)
    np.testing.assert_array_equal(out, V.read_video(real_clip, max_frames=5))
    with pytest.warns(UserWarning, match="bad.mp4"):
        V.read_video(path)


# ------------------------------------------------------------------------------------------------
# Conversions and contact sheet
# ------------------------------------------------------------------------------------------------


def test_conversions_are_exact_inverses():
    values = np.arange(256, dtype=np.uint8)
    frames = np.stack([values.reshape(4, 64)] * 3, axis=-1)[None].repeat(2, axis=0)  # [2, 4, 64, 3]
    frames[1] = frames[1, :, ::-1]
    video = V.frames_to_tensor(frames)
    assert video.dtype == torch.float32 and video.shape == (3, 2, 4, 64)
    assert video.min() == -1.0 and video.max() == 1.0
    torch.testing.assert_close(video[0, 0], torch.from_numpy(frames[0, ..., 0]).float() / 127.5 - 1)
    np.testing.assert_array_equal(V.tensor_to_frames(video), frames)
    np.testing.assert_array_equal(V.tensor_to_frames(video[None]), frames)
    np.testing.assert_array_equal(V.tensor_to_frames(video.numpy()), frames)


def test_tensor_to_frames_rounds_and_clamps():
    video = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0, 2 / 255 - 1 + 0.4 / 127.5]).reshape(1, 1, 1, 6)
    video = video.expand(3, 1, 1, 6)
    assert V.tensor_to_frames(video)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 1]
    with pytest.raises(ValueError, match="batch"):
        V.tensor_to_frames(torch.zeros(2, 3, 1, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        V.tensor_to_frames(torch.zeros(4, 1, 4, 4))


def test_contact_sheet_single_video_geometry(tmp_path):
    clip = smooth_clip(frames=5, height=6, width=10)
    sheet = V.contact_sheet(clip, tmp_path / "sheet.png", cols=3, scale=2, pad=2)
    tile_h, tile_w = 12, 20
    assert sheet.shape == (2 * tile_h + 3 * 2, 3 * tile_w + 4 * 2, 3)
    for index, frame in enumerate(clip):
        r, c = divmod(index, 3)
        y, x = 2 + r * (tile_h + 2), 2 + c * (tile_w + 2)
        np.testing.assert_array_equal(sheet[y : y + tile_h, x : x + tile_w], frame.repeat(2, 0).repeat(2, 1))
    assert (sheet[2 + tile_h + 2 :, 2 + 2 * (tile_w + 2) :] == 255).all()  # empty last cell
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sheet.png")), sheet)


def test_contact_sheet_rows_of_videos_with_labels():
    a = smooth_clip(frames=4, height=20, width=30)
    b = 255 - smooth_clip(frames=7, height=20, width=30)
    sheet = V.contact_sheet([a, V.frames_to_tensor(b)], labels=["baseline", "model"], pad=3)
    cols = 7  # longest video
    assert sheet.shape[1] == cols * 30 + (cols + 1) * 3
    strip = (sheet.shape[0] - 2 * 20 - 3 * 3) // 2
    assert strip > 0 and sheet.shape[0] == 2 * (strip + 20) + 3 * 3
    for r, video in enumerate([a, b]):
        y = 3 + r * (strip + 20 + 3)
        assert (sheet[y : y + strip, 3 : 3 + 30] < 128).any()  # label text drawn
        for c, frame in enumerate(video):
            x = 3 + c * (30 + 3)
            np.testing.assert_array_equal(sheet[y + strip : y + strip + 20, x : x + 30], frame)
    # Fewer columns than frames: evenly spaced frames (first and last kept).
    short = V.contact_sheet([b], cols=3, pad=0)
    np.testing.assert_array_equal(short, np.concatenate([b[0], b[3], b[6]], axis=1))


@pytest.mark.parametrize("frames", [1, 17, 64, 65, 129, 1025, 5000])
def test_sheet_frame_indices_evenly_spaced_within_the_tile_budget(frames):
    from vidiff.contact_sheet import sheet_frame_indices

    picks = sheet_frame_indices(frames)
    steps = set(np.diff(picks).tolist()) or {1}
    assert len(steps) == 1 and len(picks) <= 64  # evenly spaced, within the budget
    assert picks[0] == 0 and frames - 1 - picks[-1] < steps.pop()  # the whole video is covered
    if frames <= 64:
        assert picks == list(range(frames))
    with pytest.raises(ValueError, match="num_frames >= 1"):
        sheet_frame_indices(0)


def test_contact_sheet_rejects_mismatched_sizes_and_label_counts():
    with pytest.raises(ValueError, match="video 1"):
        V.contact_sheet([smooth_clip(2, 8, 8), smooth_clip(2, 8, 10)])
    with pytest.raises(ValueError, match="labels"):
        V.contact_sheet(smooth_clip(3, 8, 8), labels=["one"])


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def corrupt_middle(real_clip, tmp_path) -> str:
    data = bytearray(open(real_clip, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path = tmp_path / "bad.mp4"
    path.write_bytes(bytes(data))
    return str(path)


def bad_file(kind: str, real_clip: str, tmp_path) -> tuple[str, str]:
    """Returns (path, expected words in the message)."""
    path = tmp_path / f"{kind}.mp4"
    if kind == "missing":
        return str(path), "no such file"
    if kind == "directory":
        path.mkdir()
        return str(path), "directory"
    if kind == "empty":
        path.write_bytes(b"")
        return str(path), "empty"
    if kind == "text":
        path.write_text("this is not a video\n" * 20)
        return str(path), "not a readable video"
    if kind == "png":
        Image.fromarray(smooth_clip(1, 16, 16)[0]).save(path, format="PNG")
        return str(path), "still image"
    if kind == "truncated":
        data = open(real_clip, "rb").read()
        path.write_bytes(data[: int(0.3 * len(data))])
        return str(path), "not a readable video"
    if kind == "audio_only":
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=16000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in list(stream.encode(frame)) + list(stream.encode(None)):
                container.mux(packet)
        return str(path), "no video stream"
    if kind == "no_decodable_frames":
        # Real container and index, but every byte of coded video zeroed.
        data = bytearray(open(real_clip, "rb").read())
        assert data[28:32] == b"mdat"
        size = int.from_bytes(data[24:28], "big")
        data[32 : 24 + size] = bytes(size - 8)
        path.write_bytes(bytes(data))
        return str(path), "before the first frame"
    raise AssertionError(kind)


HEADER_FAILURES = ["missing", "directory", "empty", "text", "png", "truncated", "audio_only"]


@pytest.mark.parametrize("kind", HEADER_FAILURES + ["no_decodable_frames"])
def test_read_rejects_bad_files(kind, real_clip, tmp_path):
    path, cause = bad_file(kind, real_clip, tmp_path)
    with pytest.raises(V.VideoReadError) as info:
        V.read_video(path)
    message = str(info.value)
    assert os.path.basename(path) in message and cause in message
    if kind in HEADER_FAILURES:
        with pytest.raises(V.VideoReadError, match=f"{kind}.mp4"):
            V.probe_video(path)


def test_mid_file_corruption_returns_prefix_with_warning_or_raises_when_strict(real_clip, tmp_path):
    path = corrupt_middle(real_clip, tmp_path)
    full = V.read_video(real_clip)
    with pytest.warns(UserWarning, match="bad.mp4") as record:
        partial = V.read_video(path)
    assert "decoding failed" in str(record[0].message)
    assert 0 < len(partial) < len(full)
    # Frames decoded before the damage are intact (the last one may hold concealed garbage).
    np.testing.assert_array_equal(partial[:-1], full[: len(partial) - 1])
    with pytest.raises(V.VideoReadError, match="bad.mp4.*decoding failed after frame"):
        V.read_video(path, strict=True)


def test_start_past_the_end_is_an_error(real_clip):
    with pytest.raises(V.VideoReadError, match="realshort.mp4.*start_s"):
        V.read_video(real_clip, start_s=5.0)


def test_read_frames_png_bad_folders(tmp_path):
    with pytest.raises(V.VideoReadError, match="nothere"):
        V.read_frames_png(tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(V.VideoReadError, match="empty.*no .png"):
        V.read_frames_png(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frame_00000.png").write_text("not a png")
    with pytest.raises(V.VideoReadError, match="frame_00000.png"):
        V.read_frames_png(broken)


@pytest.mark.parametrize(
    "frames, cause",
    [
        (np.zeros((4, 8, 8), np.uint8), "F, H, W, 3"),
        (np.zeros((4, 8, 8, 4), np.uint8), "F, H, W, 3"),
        (np.zeros((4, 8, 8, 3), np.int32), "int32"),
        (np.zeros((0, 8, 8, 3), np.uint8), "zero frames"),
        (torch.zeros(3, 0, 8, 8), "zero frames"),
        (torch.zeros(2, 3, 2, 8, 8), "batch"),
        ([[1, 2, 3]], "list"),
    ],
)
@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "outdir"])
def test_write_rejects_invalid_frames(tmp_path, frames, cause, name):
    path = tmp_path / name
    with pytest.raises(V.VideoWriteError) as info:
        V.write_video(path, frames)
    assert name in str(info.value) and cause in str(info.value)
    assert listing(tmp_path) == []


def test_write_rejects_unsupported_suffix_and_directory_target(tmp_path):
    with pytest.raises(V.VideoWriteError, match=r"clip\.avi.*unsupported"):
        V.write_video(tmp_path / "clip.avi", smooth_clip(2, 8, 8))
    (tmp_path / "taken.mp4").mkdir()
    with pytest.raises(V.VideoWriteError, match="taken.mp4.*directory"):
        V.write_video(tmp_path / "taken.mp4", smooth_clip(2, 8, 8))
    assert listing(tmp_path) == ["taken.mp4"]


def test_output_format_names_how_to_write_a_folder_with_a_dot(tmp_path):
    assert [V.output_format(p) for p in ("a.MP4", "a.mov", "a.mkv", "a.gif", "frames", "run.v1/")] == \
        ["h264", "h264", "h264", "gif", "png", "png"]
    with pytest.raises(V.VideoWriteError, match=r"run\.v1: unsupported suffix '\.v1'.*e\.g\. .*run\.v1/\)"):
        V.output_format(tmp_path / "run.v1")
    clip = smooth_clip(3, 8, 8)
    V.write_video(f"{tmp_path / 'run.v1'}/", clip)
    assert np.array_equal(V.read_frames_png(tmp_path / "run.v1"), clip)


def test_failed_write_leaves_previous_file_untouched_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.mp4"
    V.write_video(path, smooth_clip(4, 16, 16))
    before = path.read_bytes()
    calls = {"n": 0}
    real_from_ndarray = av.VideoFrame.from_ndarray

    def failing_from_ndarray(array, format):
        calls["n"] += 1
        if calls["n"] > 2:
            raise av.FFmpegError(-22, "simulated encoder failure")
        return real_from_ndarray(array, format=format)

    monkeypatch.setattr(V.av.VideoFrame, "from_ndarray", failing_from_ndarray)
    with pytest.raises(V.VideoWriteError, match="keep.mp4.*simulated encoder failure"):
        V.write_video(path, smooth_clip(6, 16, 16))
    assert calls["n"] == 3
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["keep.mp4"]


def test_gif_write_failure_leaves_nothing(tmp_path, monkeypatch):
    real_getdata, calls = GifImagePlugin.getdata, {"n": 0}

    def failing_getdata(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_getdata(*args, **kwargs)

    monkeypatch.setattr(GifImagePlugin, "getdata", failing_getdata)
    with pytest.raises(V.VideoWriteError, match="anim.gif.*disk full"):
        V.write_video(tmp_path / "anim.gif", few_colour_clip())
    assert calls["n"] == 3
    assert listing(tmp_path) == []


def gif_frames_with_pillow(path) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Every frame as Pillow composes it, and the rectangle each frame stores."""
    frames, boxes = [], []
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            boxes.append(gif.dispose_extent)
            frames.append(np.asarray(gif.convert("RGB")))
    return np.stack(frames), boxes


def test_gif_stores_changed_rectangles_and_keeps_identical_frames(tmp_path):
    clip = few_colour_clip(frames=5)
    clip = np.concatenate([clip[:2], clip[1:2], clip[1:2], clip[2:]])  # frame 1 shown three times
    path = tmp_path / "still.gif"
    V.write_video(path, clip, fps=10.0)
    by_pillow, boxes = gif_frames_with_pillow(path)
    np.testing.assert_array_equal(V.read_video(path), clip)  # FFmpeg's decoder
    np.testing.assert_array_equal(by_pillow, clip)
    height, width = clip.shape[1:3]
    assert boxes[0] == (0, 0, width, height)
    assert boxes[2] == boxes[3] == (0, 0, 1, 1)  # nothing changed: one pixel stored
    for index in (1, 4):
        changed = np.any(clip[index] != clip[index - 1], axis=-1)
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        assert boxes[index] == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def test_gif_with_many_colours_decodes_to_the_same_frames_everywhere(tmp_path):
    """With a dithered palette the stored rectangles are found on the quantized frames, so both
    decoders must compose the very same frames, and those stay close to the input."""
    clip = smooth_clip(frames=6, height=32, width=48)
    clip[3] = clip[2]
    path = tmp_path / "dithered.gif"
    with V.VideoWriter(path, fps=8.0) as writer:
        writer.write(clip[:4])
        writer.write(clip[4:])  # its own palette
    by_pillow, _ = gif_frames_with_pillow(path)
    by_ffmpeg = V.read_video(path)
    np.testing.assert_array_equal(by_ffmpeg, by_pillow)
    np.testing.assert_array_equal(by_ffmpeg[3], by_ffmpeg[2])
    assert np.abs(by_ffmpeg.astype(int) - clip).mean() < 12


# ------------------------------------------------------------------------------------------------
# VideoWriter: chunk by chunk
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chunks.mp4", "chunks.gif", "chunks"])
def test_video_writer_chunks_equal_one_write(tmp_path, name):
    """Chunks of 5, 1 and 10 frames give the same video as one write_video call (every format is
    encoded as the chunks come; H.264 with running timestamps, GIF with running delays). H.264 at
    crf 0 is lossless in yuv420p, so the decoded frames must match exactly whatever the encoder's
    (thread-timing dependent) choices were."""
    clip = smooth_clip(frames=16, height=32, width=48) if name != "chunks.gif" else few_colour_clip(frames=16)
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    whole.mkdir(), chunked.mkdir()
    V.write_video(whole / name, clip, fps=8.0, crf=0)
    with V.VideoWriter(chunked / name, fps=8.0, crf=0) as writer:
        for a, b in ((0, 5), (5, 6), (6, 16)):
            writer.write(clip[a:b])
            assert writer.frames_written == b
    assert writer.path.rstrip("/") == str(chunked / name)
    if name == "chunks":
        assert np.array_equal(V.read_frames_png(chunked / name), clip)
    else:
        assert np.array_equal(V.read_video(chunked / name), V.read_video(whole / name))
        assert np.array_equal(pyav_times(str(chunked / name)), pyav_times(str(whole / name)))


def test_video_writer_shows_nothing_until_the_block_ends(tmp_path):
    path = tmp_path / "late.mp4"
    with V.VideoWriter(path, fps=8.0) as writer:
        writer.write(smooth_clip(4, 16, 16))
        assert not path.exists()
        assert all(n.startswith(".tmp-") for n in listing(tmp_path))
    assert listing(tmp_path) == ["late.mp4"]
    assert V.read_video(path).shape == (4, 16, 16, 3)


@pytest.mark.parametrize("name", ["grow.gif", "grow"])
def test_video_writer_encodes_each_chunk_when_it_comes(tmp_path, name):
    """GIF frames and PNG files reach the temporary output at every write (nothing is held for the
    end, so memory stays flat however long the video)."""

    def written_bytes() -> int:
        (tmp,) = [tmp_path / n for n in listing(tmp_path) if n.startswith(".tmp-")]
        return sum(p.stat().st_size for p in ([tmp] if tmp.is_file() else tmp.iterdir()))

    clip = few_colour_clip(frames=9)
    sizes = []
    with V.VideoWriter(tmp_path / name, fps=8.0) as writer:
        for a in range(0, 9, 3):
            writer.write(clip[a:a + 3])
            sizes.append(written_bytes())
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    back = V.read_video(tmp_path / name) if name.endswith(".gif") else V.read_frames_png(tmp_path / name)
    np.testing.assert_array_equal(back, clip)


@pytest.mark.parametrize("name", ["keep.mp4", "keep.gif"])
def test_video_writer_error_in_block_keeps_the_old_file(tmp_path, name):
    path = tmp_path / name
    V.write_video(path, few_colour_clip(4, 16, 16))
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with V.VideoWriter(path, fps=8.0) as writer:
            writer.write(few_colour_clip(3, 16, 16))
            raise KeyboardInterrupt  # e.g. Ctrl-C while the next window is sampled
    assert path.read_bytes() == before
    assert listing(tmp_path) == [name]


def assert_forked_child_collects(make_garbage) -> None:
    """Leave `make_garbage()`'s reference cycles uncollected, fork, and collect them in the child:
    the child must exit (PyAV objects holding FFmpeg worker threads would make it wait forever on
    threads that only exist in the parent, as in a DataLoader worker)."""
    import gc
    import time

    gc.collect()  # only this garbage is left for the child (not earlier tests')
    gc.disable()
    try:
        make_garbage()
        pid = os.fork()
        if pid == 0:
            gc.enable()
            gc.collect()
            os._exit(0)
    finally:
        gc.enable()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung collecting PyAV objects left in a garbage cycle")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_aborted_writer_leaves_no_encoder_for_a_forked_child_to_collect(tmp_path):
    def abort() -> None:
        try:
            with V.VideoWriter(tmp_path / "aborted.mp4", fps=8.0) as writer:
                writer.write(smooth_clip(4, 32, 32))
                raise RuntimeError("stop")
        except RuntimeError as err:
            kept = err  # noqa: F841 - frame -> kept -> traceback -> frame: a cycle once we return

    assert_forked_child_collects(abort)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("case", ["failed read", "unfinished iter_frames"])
def test_reads_leave_nothing_for_a_forked_child_to_hang_on(tmp_path, case):
    """A read that raised (its exception kept) or a frame iterator still open at the fork: the child
    frees decoder and colour converter, which must own no worker threads."""
    path = V.write_video(tmp_path / "clip.mp4", smooth_clip(8, 48, 64))

    def read() -> None:
        if case == "failed read":
            try:
                V.read_video(path, start_s=100.0)
            except V.VideoReadError as err:
                kept = err  # noqa: F841 - a cycle through the traceback, as above
        else:
            frames = V.iter_frames(path, size=(24, 32))
            next(frames)
            holder = {"frames": frames}
            holder["self"] = holder

    assert_forked_child_collects(read)


def test_video_writer_rejects_bad_chunks_and_empty_videos(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(V.VideoWriteError, match=r"bad\.mp4: frames of 8x8 after frames of 16x16"):
        with V.VideoWriter(path) as writer:
            writer.write(smooth_clip(2, 16, 16))
            writer.write(smooth_clip(2, 8, 8))
    with pytest.raises(V.VideoWriteError, match=r"bad\.mp4: no frames were written"):
        with V.VideoWriter(path):
            pass
    with pytest.raises(V.VideoWriteError, match=r"bad\.mp4: VideoWriter.write outside"):
        V.VideoWriter(path).write(smooth_clip(2, 8, 8))
    with pytest.raises(V.VideoWriteError, match=r"bad\.avi.*unsupported"):
        V.VideoWriter(tmp_path / "bad.avi")
    assert listing(tmp_path) == []


def test_start_seeks_to_a_later_keyframe_exactly(tmp_path):
    """With a keyframe every 4 frames, start_s really seeks; output must equal a full decode."""
    clip = smooth_clip(frames=40, height=32, width=48)
    path = str(tmp_path / "gop4.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.gop_size = 4
        stream.options = {"crf": "18", "keyint": "4", "min-keyint": "4", "scenecut": "0"}
        for array in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(path) as container:
        keyframes = sum(p.is_keyframe for p in container.demux(video=0) if p.size)
    assert keyframes >= 8
    full = V.read_video(path)
    times = pyav_times(path)
    for start in (1.0, 2.25, 3.05):
        first = int(np.argmax(times >= start - 1e-6))
        np.testing.assert_array_equal(V.read_video(path, start_s=start), full[first:])
        out = V.read_video(path, start_s=start, fps=4.0)
        expected = [int(np.argmin(np.abs(times - (start + k / 4.0)))) for k in range(len(out))]
        np.testing.assert_array_equal(out, full[expected])
        assert len(out) == math.ceil((4.0 - start) * 4.0 - 1e-9)


def test_iter_frames_checks_arguments_at_call_time(tmp_path):
    with pytest.raises(V.VideoReadError, match="ghost.mp4"):
        V.iter_frames(tmp_path / "ghost.mp4")
    with pytest.raises(ValueError, match="max_frames"):
        V.iter_frames(tmp_path / "ghost.mp4", max_frames=0)


def test_text_file_is_not_a_video(tmp_path):
    """FFmpeg's tty demuxer would 'decode' any text file as ANSI-art video."""
    path = tmp_path / "notes.txt"
    path.write_text("a line of text that FFmpeg would happily render as ANSI art\n" * 40)
    with pytest.raises(V.VideoReadError, match="notes.txt.*text file"):
        V.read_video(path)
    with pytest.raises(V.VideoReadError, match="notes.txt"):
        V.probe_video(path)
