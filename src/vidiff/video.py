"""Video I/O at the edge of vidiff: read and write mp4 / gif / PNG folders and images, and the
uint8 <-> float tensor conversions.

Everything outside this module sees video as ``float32 [B, C, F, H, W]`` in ``[-1, 1]``; only here
does video exist as ``uint8 [F, H, W, 3]`` RGB arrays.

Decisions worth knowing:

* Reading uses PyAV, so any container FFmpeg can demux works. A file that is really a still image
  (PNG, JPEG... even renamed ``.mp4``) is rejected: FFmpeg would happily "decode" it as one frame.
* Frame times come from presentation timestamps measured from the stream's start time, so
  resampling to a target ``fps`` is exact for variable-frame-rate files too.
* A decoding error in the middle of a file (truncated download, corrupted bytes) returns the frames
  decoded before the error with a ``warnings.warn`` naming the file; with ``strict=True`` it raises
  instead. An error before the first frame always raises.
* Colour conversion between RGB and YUV uses FFmpeg's defaults on both sides (BT.601), so files
  written here read back consistently; the display rotation flag of phone videos is not applied.
* Decoding and colour conversion run on the calling thread (no FFmpeg worker threads), so no
  PyAV object left over from a read can hang a process forked later (a DataLoader worker). Small
  clips read faster so, 720p about 1.5x slower (``benchmarks/bench_video_io.py``).
* Writes are atomic (``vidiff.modelio.atomic_file`` / ``atomic_directory``): a temporary file
  (or folder) in the destination's directory, then a rename. After a failure no partial output
  is left behind.
* Contact sheets live in ``vidiff.contact_sheet`` (``vidiff.video.contact_sheet`` still works).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch
from PIL import GifImagePlugin, Image

from vidiff.modelio import atomic_directory, atomic_file

__all__ = [
    "VideoInfo",
    "VideoReadError",
    "VideoWriteError",
    "VideoWriter",
    "contact_sheet",
    "fit_image",
    "output_format",
    "frames_to_tensor",
    "image_to_array",
    "iter_frames",
    "probe_video",
    "read_frames_png",
    "read_image",
    "read_video",
    "tensor_to_frames",
    "write_frames_png",
    "write_video",
]

# Seconds PyAV waits on a blocking open/read before giving up (matters for pipes and network
# mounts; a local file never gets near it).
_IO_TIMEOUT_S = (30.0, 30.0)


def _is_still_image_format(format_name: str) -> bool:
    # FFmpeg reads single images with `image2` or a `<codec>_pipe` demuxer (png_pipe, jpeg_pipe...);
    # they are not videos even when named `clip.mp4`.
    return format_name == "image2" or format_name.endswith("_pipe")


_TEXT_CODECS = {"ansi", "bintext", "xbin", "idf"}

_H264_SUFFIXES = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}

_PNG_FRAME_NAME = "frame_{:05d}.png"

# x264's MB-tree rate control makes different bytes (and pixels) from the same frames on every
# call here, even on one thread; without it the same frames always give the same file. It costs
# size at a given crf, for a little more quality: +2.5% on a real 320x240 clip, +30-45% on
# shapes-world clips (a few KB), both at +0.05-0.6 dB PSNR (``benchmarks/bench_video_io.py``).
_X264_REPRODUCIBLE = {"x264-params": "mbtree=0"}

# Reading decodes and converts colours on the calling thread. FFmpeg's worker threads belong to
# the PyAV objects of a read (codec context, colour converter); if those outlive the read (an
# exception kept in a reference cycle, an unfinished iter_frames), a process forked afterwards (a
# DataLoader worker) that frees them waits forever on threads that exist only in its parent.
# The cost is small: decoders thread over slices, and most files hold one slice per frame.
_NO_WORKER_THREADS = {"threads": 1}


class VideoReadError(Exception):
    """A video (or PNG frame folder) could not be read; the message names the file and the cause."""


class VideoWriteError(Exception):
    """A video could not be written; the message names the destination and the cause."""


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream.

    ``num_frames`` comes from the container's index when it has one (``num_frames_exact=True``);
    otherwise it is ``round(duration_s * fps)``.
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    codec: str
    num_frames_exact: bool = True


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _check_readable_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoReadError(
            f"{path}: is a directory, not a video file (use read_frames_png for a folder of PNG frames)"
        )
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: file is empty (0 bytes)")
    return path


def _open_video(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and return it with its first video stream; every failure is a VideoReadError."""
    try:
        container = av.open(path, mode="r", timeout=_IO_TIMEOUT_S)
    except (av.FFmpegError, OSError) as err:
        raise VideoReadError(f"{path}: not a readable video container ({err})") from err
    try:
        format_name = container.format.name
        if _is_still_image_format(format_name):
            raise VideoReadError(f"{path}: is a still image ({format_name}), not a video")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoReadError(f"{path}: has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.name:
            raise VideoReadError(f"{path}: video stream has no decodable codec")
        if format_name == "tty" or stream.codec_context.name in _TEXT_CODECS:
            # FFmpeg renders any text file as "ANSI art" video; nobody means that.
            raise VideoReadError(f"{path}: is a text file ({format_name}/{stream.codec_context.name}), not a video")
        stream.codec_context.thread_count = 1  # see _NO_WORKER_THREADS
    except BaseException:
        container.close()
        raise
    return container, stream


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and 0 < value < 10_000:
                return value
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header: size, frame rate, frame count, duration and codec (nothing decoded)."""
    path = _check_readable_file(path)
    container, stream = _open_video(path)
    try:
        fps = _stream_fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        num_frames, exact = int(stream.frames or 0), True
        if num_frames <= 0:
            exact = False
            num_frames = round(duration * fps) if duration and fps else 0
        if duration is None:
            duration = num_frames / fps if fps else 0.0
        if fps is None:
            fps = num_frames / duration if duration else 0.0
        return VideoInfo(
            path=path,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=fps,
            num_frames=num_frames,
            duration_s=duration,
            codec=stream.codec_context.name,
            num_frames_exact=exact,
        )
    finally:
        container.close()


@dataclass
class _DecodeState:
    decoded: int = 0  # frames that came out of the decoder (before any selection)
    end_time: float | None = None  # end of the last decoded frame's display interval, seconds


def _timed_frames(container, stream, path: str, strict: bool, state: _DecodeState):
    """Yield ``(t, frame)`` in presentation order, ``t`` in seconds from the stream's start.

    On a decoding error after at least one frame: warn and stop (or raise when ``strict``).
    """
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    native_fps = _stream_fps(stream)
    previous_t = None
    decoder = container.decode(stream)
    while True:
        try:
            frame = next(decoder)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as err:
            if state.decoded == 0 or strict:
                where = "before the first frame" if state.decoded == 0 else f"after frame {state.decoded}"
                raise VideoReadError(f"{path}: decoding failed {where} ({err})") from err
            warnings.warn(
                f"{path}: decoding failed after frame {state.decoded} ({err}); "
                f"returning the {state.decoded} frames decoded before the error",
                stacklevel=4,
            )
            return
        if frame.pts is not None and frame.time_base is not None:
            t = float(frame.pts * frame.time_base) - origin
        elif native_fps:
            t = state.decoded / native_fps
        else:
            t = float(state.decoded)
        if frame.duration and frame.time_base is not None:
            frame_dt = float(frame.duration * frame.time_base)
        elif native_fps:
            frame_dt = 1.0 / native_fps
        elif previous_t is not None:
            frame_dt = max(t - previous_t, 0.0)
        else:
            frame_dt = 0.0
        state.decoded += 1
        state.end_time = t + frame_dt
        previous_t = t
        yield t, frame


def _select_stride(timed, stride: int, start_s: float):
    """Every ``stride``-th frame, starting at the first frame shown at or after ``start_s``."""
    kept = ((t, f) for t, f in timed if start_s <= 0 or t >= start_s - 1e-6)
    for _, frame in itertools.islice(kept, 0, None, stride):
        yield frame


def _select_fps(timed, fps: float, start_s: float, state: _DecodeState):
    """Nearest frame (by presentation time) at each target time ``start_s + k / fps``.

    Targets run while they fall before the end of the last frame's display interval, so a clip
    of duration D gives ``ceil((D - start_s) * fps)`` frames. Ties go to the earlier frame. Works
    for down- and up-sampling (up-sampling repeats frames).
    """
    k = 0
    previous = None  # (t, frame)
    for t, frame in timed:
        while True:
            target = start_s + k / fps
            if target > t:
                break
            # Target lies in [previous.t, t]: choose the closer of the two frames.
            if previous is not None and target - previous[0] <= t - target:
                yield previous[1]
            else:
                yield frame
            k += 1
        previous = (t, frame)
    if previous is None:
        return
    end = state.end_time if state.end_time is not None else previous[0]
    while start_s + k / fps < end - 1e-9:
        yield previous[1]
        k += 1


def _resize(image: Image.Image, size, crop: bool) -> Image.Image:
    """Resize with Pillow (antialiased bicubic).

    ``size`` int: the short side becomes ``size``, aspect kept. ``(h, w)`` with ``crop``: the
    largest centred region with the target aspect is cut out and scaled to ``(h, w)``; without
    ``crop``: a plain resize to ``(h, w)`` that changes the aspect ratio.
    """
    width, height = image.size
    if isinstance(size, int):
        if width <= height:
            new_w, new_h = size, max(1, round(height * size / width))
        else:
            new_w, new_h = max(1, round(width * size / height)), size
        box = None
    else:
        new_h, new_w = size
        box = None
        if crop:
            scale = max(new_w / width, new_h / height)
            src_w, src_h = new_w / scale, new_h / scale
            left, top = (width - src_w) / 2, (height - src_h) / 2
            box = (left, top, left + src_w, top + src_h)
    if (new_w, new_h) == (width, height) and box is None:
        return image
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC, box=box)


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as uint8 `[H, W, 3]`; with `size=(h, w)` resize keeping the aspect
    ratio and center-crop to exactly `(h, w)`. Unreadable files raise VideoReadError naming them."""
    path = _check_readable_file(path)
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as err:
        raise VideoReadError(f"{path}: not a readable image ({err})") from err
    if size is not None:
        image = _resize(image, tuple(size), crop=True)
    return np.asarray(image, dtype=np.uint8).copy()


def fit_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 `[H, W, 3]` keeping the aspect ratio, then center-crop to `size=(h, w)`."""
    return np.asarray(_resize(Image.fromarray(image), tuple(size), crop=True), dtype=np.uint8).copy()


def image_to_array(image) -> np.ndarray:
    """A path, PIL image, uint8 `[H, W, 3]` array or float `[3, H, W]` tensor in [-1, 1] -> uint8
    `[H, W, 3]` (floats as in `tensor_to_frames`: u = clamp(round((x + 1) * 127.5), 0, 255))."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"image tensor must be float [3, H, W] in [-1, 1], got {image.dtype} {tuple(image.shape)}")
        return tensor_to_frames(image[:, None])[0]
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


def _validate_read_args(fps, stride, max_frames, start_s, size) -> None:
    if fps is not None and stride != 1:
        raise ValueError(f"fps={fps} and stride={stride} are mutually exclusive; pass one of them")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    if not (isinstance(start_s, (int, float)) and math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"start_s must be a finite number >= 0, got {start_s!r}")
    if size is not None:
        ok = (isinstance(size, int) and not isinstance(size, bool) and size > 0) or (
            isinstance(size, (tuple, list))
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
        )
        if not ok:
            raise ValueError(f"size must be a positive int (short side) or (height, width), got {size!r}")


def iter_frames(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    start_s: float = 0.0,
    size: int | tuple[int, int] | None = None,
    crop: bool = True,
    strict: bool = False,
) -> Iterator[np.ndarray]:
    """Stream frames of a video file as uint8 ``[H, W, 3]`` RGB arrays.

    Same arguments as :func:`read_video`. Decoding is lazy: it stops as soon as ``max_frames``
    frames were produced or the caller stops iterating, and the file is closed then.
    """
    # Argument and file checks run now, at the call, not at the first next().
    _validate_read_args(fps, stride, max_frames, start_s, size)
    size = tuple(size) if isinstance(size, list) else size
    path = _check_readable_file(path)
    return _generate_frames(path, fps, stride, max_frames, float(start_s), size, crop, strict)


def _generate_frames(path, fps, stride, max_frames, start_s, size, crop, strict) -> Iterator[np.ndarray]:
    container, stream = _open_video(path)
    try:
        # Frame threading ("AUTO") would be faster on large files but hides decoding errors of
        # truncated files (they end early and silently); the default slice threading reports them.
        state = _DecodeState()
        if start_s > 0:
            # Jump to the keyframe before start_s instead of decoding everything before it; a
            # container that cannot seek is simply decoded from the beginning.
            try:
                base = stream.start_time or 0
                native = _stream_fps(stream) or 30.0
                target = base + int((start_s - 1.0 / native) / stream.time_base)
                if target > base:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
            except (av.FFmpegError, OSError, ValueError, TypeError):
                container.close()
                container, stream = _open_video(path)
        timed = _timed_frames(container, stream, path, strict, state)
        if fps is not None:
            selected = _select_fps(timed, float(fps), float(start_s), state)
        else:
            selected = _select_stride(timed, stride, float(start_s))
        produced = 0
        for frame in itertools.islice(selected, max_frames):
            if size is None:
                array = frame.to_ndarray(format="rgb24", **_NO_WORKER_THREADS)
            else:
                array = np.asarray(_resize(frame.to_image(**_NO_WORKER_THREADS), size, crop))
            produced += 1
            yield array
        if produced == 0:
            if state.decoded == 0:
                raise VideoReadError(f"{path}: contains no decodable video frames")
            raise VideoReadError(
                f"{path}: no frames at or after start_s={start_s} "
                f"(the video ends at {state.end_time:.3f} s)"
            )
    finally:
        container.close()


def read_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    start_s: float = 0.0,
    size: int | tuple[int, int] | None = None,
    crop: bool = True,
    strict: bool = False,
) -> np.ndarray:
    """Decode a video file into a uint8 ``[F, H, W, 3]`` RGB array.

    Args:
        path: any container FFmpeg demuxes (mp4, mkv, webm, mov, gif, ...).
        fps: resample to this frame rate: output frame k is the source frame whose presentation
            time is nearest to ``start_s + k / fps`` (ties to the earlier frame), for
            ``k < ceil((duration - start_s) * fps)``. Works for down- and up-sampling.
        stride: keep every ``stride``-th decoded frame. Mutually exclusive with ``fps``.
        max_frames: stop after this many output frames (decoding stops there too).
        start_s: skip to this time in seconds (seeks to the keyframe before it when possible).
        size: ``int`` sets the short side keeping the aspect ratio; ``(h, w)`` gives exactly that
            size: centre crop to the aspect ratio then resize when ``crop``, plain resize otherwise.
            Antialiased bicubic (Pillow).
        crop: see ``size``.
        strict: raise on a decoding error in the middle of the file instead of returning the
            frames decoded before it (with a warning).

    Raises:
        VideoReadError: missing, empty, non-video, corrupt file or no frames; names the file.
        ValueError: inconsistent arguments (e.g. both ``fps`` and ``stride``).
    """
    frames = list(
        iter_frames(
            path, fps=fps, stride=stride, max_frames=max_frames, start_s=start_s, size=size,
            crop=crop, strict=strict,
        )
    )
    return np.stack(frames)


def read_frames_png(directory: str | os.PathLike) -> np.ndarray:
    """Read a folder of PNG frames (sorted by file name) into a uint8 ``[F, H, W, 3]`` array.

    Uses ``frame_*.png`` when present (what :func:`write_frames_png` writes), else every ``*.png``.
    Grey or RGBA images are converted to RGB (alpha dropped).
    """
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise VideoReadError(f"{directory}: no such directory")
    if not os.path.isdir(directory):
        raise VideoReadError(f"{directory}: is a file, not a directory of PNG frames")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(".png"))
    framed = [n for n in names if n.startswith("frame_")]
    names = framed or names
    if not names:
        raise VideoReadError(f"{directory}: contains no .png frames")
    frames = []
    for name in names:
        file = os.path.join(directory, name)
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise VideoReadError(f"{file}: not a readable PNG image ({err})") from err
        if frames[-1].shape != frames[0].shape:
            raise VideoReadError(
                f"{file}: size {frames[-1].shape[1]}x{frames[-1].shape[0]} differs from the first "
                f"frame's {frames[0].shape[1]}x{frames[0].shape[0]}"
            )
    return np.stack(frames)


# ----------------------------------------------------------------------------------------------
# Conversions
# ----------------------------------------------------------------------------------------------


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float32 ``[3, F, H, W]`` in ``[-1, 1]``: ``x = u / 127.5 - 1``."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be uint8 [F, H, W, 3], got {frames.dtype} with shape {tuple(frames.shape)}"
        )
    return frames.permute(3, 0, 1, 2).to(torch.float32) / 127.5 - 1.0


def tensor_to_frames(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """float ``[3, F, H, W]`` or ``[1, 3, F, H, W]`` in ``[-1, 1]`` -> uint8 ``[F, H, W, 3]``.

    ``u = clamp(round((x + 1) * 127.5), 0, 255)``; exact inverse of :func:`frames_to_tensor` on
    its outputs. NaN becomes 0.
    """
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(video)
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"video must be a torch tensor or numpy array, got {type(video).__name__}")
    if not video.is_floating_point():
        raise ValueError(f"video must be a float tensor in [-1, 1], got dtype {video.dtype}")
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise ValueError(
                f"video batch has {video.shape[0]} videos (shape {tuple(video.shape)}); "
                "convert one video at a time"
            )
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, F, H, W] or [1, 3, F, H, W], got shape {tuple(video.shape)}")
    values = ((video.detach().to("cpu", torch.float32) + 1.0) * 127.5).round()
    values = torch.nan_to_num(values, nan=0.0).clamp(0, 255).to(torch.uint8)
    return values.permute(1, 2, 3, 0).contiguous().numpy()


def _as_frames(video) -> np.ndarray:
    """Anything write_video/contact_sheet accept -> contiguous uint8 ``[F, H, W, 3]``.

    uint8 arrays/tensors are frames ``[F, H, W, 3]``; float ones are ``[3, F, H, W]`` or
    ``[1, 3, F, H, W]`` in ``[-1, 1]``. Raises ValueError/TypeError describing the problem.
    """
    if isinstance(video, torch.Tensor):
        if video.dtype == torch.uint8:
            video = video.detach().cpu().numpy()
        elif video.is_floating_point():
            frames = tensor_to_frames(video)
            if frames.shape[0] == 0:
                raise ValueError("video has zero frames")
            return frames
        else:
            raise ValueError(f"tensor dtype {video.dtype} is neither uint8 frames nor float video")
    if not isinstance(video, np.ndarray):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(video).__name__}")
    if np.issubdtype(video.dtype, np.floating):
        try:
            frames = tensor_to_frames(video)
        except ValueError as err:
            raise ValueError(f"float input is read as a [3, F, H, W] video in [-1, 1]: {err}") from err
    elif video.dtype == np.uint8:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [F, H, W, 3], got shape {video.shape}")
        frames = np.ascontiguousarray(video)
    else:
        raise ValueError(f"dtype {video.dtype} is neither uint8 frames nor float video in [-1, 1]")
    if frames.shape[0] == 0:
        raise ValueError("video has zero frames")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames have zero size {frames.shape[2]}x{frames.shape[1]}")
    return frames


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _prepare_destination(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise VideoWriteError(f"{path}: cannot create the parent directory {parent} ({err})") from err


def _even_padded(frames: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths to even by repeating the last row/column (H.264 yuv420p needs even)."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


class _H264Encoder:
    """libx264 / yuv420p into an open container, frame by frame (frames get consecutive pts)."""

    def __init__(self, path: str, container_format: str, height: int, width: int, fps: float, crf: int,
                 preset: str):
        self._rate = Fraction(fps).limit_denominator(1001)
        self._pts = 0
        self._container = av.open(path, mode="w", format=container_format, timeout=_IO_TIMEOUT_S)
        try:
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = 1 / self._rate
            self._stream.options = {"crf": str(crf), "preset": preset, **_X264_REPRODUCIBLE}
            if container_format in ("mp4", "mov"):
                self._container.options["movflags"] = "+faststart"
        except BaseException:
            self._container.close()
            raise

    def encode(self, frames: np.ndarray) -> None:
        for array in _even_padded(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = self._pts, 1 / self._rate
            self._pts += 1
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def finish(self) -> None:
        """Flush the encoder and close the file."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()

    def close(self) -> None:
        """Close the file and let go of PyAV's objects now: a stream left for the garbage collector
        owns swscale worker threads, and a forked process (a DataLoader worker) that collects it
        would wait on those threads forever."""
        if self._container is not None:
            self._container.close()
        self._container = self._stream = None


def _gif_delay_cs(index: int, fps: float) -> int:
    """Delay of GIF frame ``index`` in centiseconds (GIF's unit): frame k starts at
    ``round(100 k / fps)`` cs, so the rounding spreads out and the average rate is exactly ``fps``
    (at least 1 cs per frame)."""
    return max(1, round(100 * (index + 1) / fps) - round(100 * index / fps))


def _gif_palette_frames(frames: np.ndarray) -> list[Image.Image]:
    """Palette images for GIF: exact when ``frames`` have at most 256 colours, else one adaptive
    palette (median cut over a sample of frames) shared by all of them, with dithering."""
    rgb = frames.astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours = np.unique(packed)
    if colours.size <= 256:
        palette = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
        indices = np.searchsorted(colours, packed).astype(np.uint8)
        flat_palette = palette.reshape(-1).tolist()
        images = []
        for frame_indices in indices:
            image = Image.fromarray(frame_indices, mode="P")
            image.putpalette(flat_palette)
            images.append(image)
        return images
    sample = frames[np.linspace(0, len(frames) - 1, min(len(frames), 8)).round().astype(int)]
    mosaic = Image.fromarray(np.concatenate(list(sample), axis=0))
    palette_image = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    return [
        Image.fromarray(frame).quantize(palette=palette_image, dither=Image.Dither.FLOYDSTEINBERG)
        for frame in frames
    ]


def _displayed_rgb(image: Image.Image) -> np.ndarray:
    """The RGB a decoder shows for a palette image."""
    palette = np.frombuffer(bytes(image.getpalette("RGB")), np.uint8).reshape(-1, 3)
    return palette[np.asarray(image)]


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    """Smallest ``(left, top, right, bottom)`` box holding every pixel that differs; a 1x1 box at
    the origin when none does (a GIF frame cannot be empty)."""
    changed = np.any(before != after, axis=-1)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if rows.size == 0:
        return 0, 0, 1, 1
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class _GifEncoder:
    """GIF89a written frame by frame, so memory does not grow with the length: each frame carries
    its own colour table (its chunk's palette, see :func:`_gif_palette_frames`) and stores only the
    rectangle that changed on screen since the previous frame ("do not dispose"), so a decoder shows
    exactly the palette image of every frame and identical frames stay separate frames. The LZW
    coding is Pillow's (``GifImagePlugin.getdata``)."""

    def __init__(self, path: str, height: int, width: int, fps: float):
        if max(height, width) > 0xFFFF:
            raise ValueError(f"GIF frames are at most 65535 pixels wide and high, got {width}x{height}")
        self._fps, self._index = fps, 0
        self._shown: np.ndarray | None = None
        self._file = open(path, "wb")
        black_table = bytes(3 * 256)  # every frame has its own table; this one is never used
        self._file.write(
            b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF7, 0, 0) + black_table
            # NETSCAPE2.0 application extension: loop forever
            + b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00"
        )

    def encode(self, frames: np.ndarray) -> None:
        for image in _gif_palette_frames(frames):
            shown = _displayed_rgb(image)
            box = (0, 0, *image.size) if self._shown is None else _changed_box(self._shown, shown)
            delay_ms = 10 * _gif_delay_cs(self._index, self._fps)
            for block in GifImagePlugin.getdata(image.crop(box), offset=box[:2], duration=delay_ms,
                                                disposal=1, include_color_table=True):
                self._file.write(block)
            self._shown, self._index = shown, self._index + 1
        self._file.flush()  # the chunk is on disk when write() returns

    def finish(self) -> None:
        """Write the trailer and close the file."""
        self._file.write(b"\x3b")
        self.close()

    def close(self) -> None:
        self._file.close()


class _PngFrames:
    """Frames saved as numbered PNGs (``frame_00000.png``, ...) into ``directory`` as they come."""

    def __init__(self, directory: str):
        self._directory, self._index = directory, 0

    def encode(self, frames: np.ndarray) -> None:
        for frame in frames:
            Image.fromarray(frame).save(os.path.join(self._directory, _PNG_FRAME_NAME.format(self._index)),
                                        format="PNG")
            self._index += 1

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _is_frame_folder(path: str) -> bool:
    return all(n.startswith("frame_") and n.endswith(".png") for n in os.listdir(path))


def _check_png_destination(path: str) -> None:
    """An existing ``path`` may be replaced only when it is a folder holding nothing but frame PNGs."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise VideoWriteError(
            f"{path}: exists and is not a directory; refusing to replace it with PNG frames"
        )
    if os.path.isdir(path) and not _is_frame_folder(path):
        raise VideoWriteError(
            f"{path}: directory exists and holds files other than frame_*.png; refusing to overwrite it"
        )


def write_frames_png(directory: str | os.PathLike, frames) -> str:
    """Write frames as ``directory/frame_00000.png, ...`` (lossless); returns the directory.

    Built in a temporary sibling folder and renamed into place. An existing ``directory`` is
    replaced only when it is empty or holds nothing but ``frame_*.png`` files.
    """
    with VideoWriter(os.path.join(os.fspath(directory), "")) as writer:  # a trailing separator: PNG frames
        writer.write(frames)
    return writer.path


def output_format(path: str | os.PathLike) -> str:
    """What :class:`VideoWriter` writes at `path`: ``"h264"`` (.mp4, .mov, .mkv), ``"gif"``, or
    ``"png"`` (a folder of PNG frames: a path with no suffix or ending in a separator).

    Example: ``output_format("out/run.v1/")`` is ``"png"``; ``output_format("out/run.v1")`` raises.

    Raises:
        VideoWriteError: any other suffix (the message says how to name a folder with a dot).
    """
    raw_path = os.fspath(path)
    suffix = os.path.splitext(raw_path)[1].lower()
    if raw_path.endswith(("/", os.sep)) or suffix == "":
        return "png"
    if suffix == ".gif":
        return "gif"
    if suffix in _H264_SUFFIXES:
        return "h264"
    raise VideoWriteError(
        f"{raw_path}: unsupported suffix {suffix!r}; use .mp4, .mov, .mkv, .gif, or a folder for PNG "
        f"frames (end a folder name that has a dot with '/', e.g. {raw_path.rstrip(os.sep + '/')}/)"
    )


class VideoWriter:
    """Write a video as its frames arrive, chunk by chunk; the format follows the path as in
    :func:`write_video` (which is this class used for one chunk).

    Example (a long video written window by window as it is generated)::

        with VideoWriter("long.mp4", fps=8) as writer:
            for chunk in iter_windows(pipe, "a large red circle bounces on a black background",
                                      num_frames=1025):
                writer.write(chunk.frames)

    Every format is encoded as the chunks come (H.264 frames, GIF frames, PNG files), so memory
    does not grow with the video's length. The file (or folder) appears at ``path`` only when the
    ``with`` block ends without an error, atomically like every write here; after an error (in the
    block or in the encoder) nothing is left behind and an older file at ``path`` is untouched.
    ``frames_written`` counts the frames so far.

    Raises:
        VideoWriteError: unsupported suffix, bad fps/crf, frames of another size than the first
            chunk's, invalid frames, no frames at all, or an encoder/file-system failure; the
            message names ``path``.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 8.0, *, crf: int = 18, preset: str = "medium"):
        raw_path = os.fspath(path)
        suffix = os.path.splitext(raw_path)[1].lower()
        self._kind = output_format(raw_path)
        if self._kind == "png":
            raw_path = raw_path.rstrip("/\\") or raw_path
        else:
            if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
                raise VideoWriteError(f"{raw_path}: fps must be a positive number, got {fps!r}")
            if not (isinstance(crf, int) and 0 <= crf <= 51):
                raise VideoWriteError(f"{raw_path}: crf must be an integer in [0, 51], got {crf!r}")
            if os.path.isdir(raw_path):
                raise VideoWriteError(f"{raw_path}: is an existing directory; cannot write a {suffix} file there")
        self.path, self.frames_written = raw_path, 0
        self._suffix, self._fps, self._crf, self._preset = suffix, float(fps), crf, preset
        self._size: tuple[int, int] | None = None
        self._encoder: _H264Encoder | _GifEncoder | _PngFrames | None = None
        self._stack: contextlib.ExitStack | None = None
        self._tmp = ""

    def __enter__(self) -> "VideoWriter":
        if self._kind == "png":
            _check_png_destination(self.path)
        _prepare_destination(self.path)
        self._stack = contextlib.ExitStack()
        atomic = atomic_directory if self._kind == "png" else atomic_file
        self._tmp = self._stack.enter_context(atomic(self.path))
        return self

    def _open_encoder(self, height: int, width: int) -> _H264Encoder | _GifEncoder | _PngFrames:
        if self._kind == "h264":
            return _H264Encoder(self._tmp, _H264_SUFFIXES[self._suffix], height, width, self._fps, self._crf,
                                self._preset)
        if self._kind == "gif":
            return _GifEncoder(self._tmp, height, width, self._fps)
        return _PngFrames(self._tmp)

    def write(self, frames) -> None:
        """Append frames: uint8 ``[n, H, W, 3]`` (numpy or torch) or a float video ``[3, n, H, W]``
        in ``[-1, 1]``, all chunks of the same size."""
        if self._stack is None:
            raise VideoWriteError(f"{self.path}: VideoWriter.write outside its `with` block")
        try:
            array = _as_frames(frames)
        except (TypeError, ValueError) as err:
            raise VideoWriteError(f"{self.path}: invalid frames to write ({err})") from err
        size = (array.shape[1], array.shape[2])
        if self._size is not None and size != self._size:
            raise VideoWriteError(f"{self.path}: frames of {size[0]}x{size[1]} after frames of "
                                  f"{self._size[0]}x{self._size[1]}; every chunk must have the same size")
        self._size = size
        try:
            if self._encoder is None:
                self._encoder = self._open_encoder(*size)
            self._encoder.encode(array)
        except (av.FFmpegError, OSError, ValueError, TypeError) as err:
            raise self._failed(err) from err
        self.frames_written += len(array)

    def _failed(self, err: Exception) -> VideoWriteError:
        what = "PNG frames" if self._kind == "png" else f"the {self._suffix} file"
        return VideoWriteError(f"{self.path}: writing {what} failed ({err})")

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        encoder, self._encoder = self._encoder, None
        failure = exc
        if failure is None:
            try:
                if self.frames_written == 0:
                    raise VideoWriteError(f"{self.path}: no frames were written")
                try:
                    encoder.finish()
                except (av.FFmpegError, OSError, ValueError, TypeError) as err:
                    raise self._failed(err) from err
            except BaseException as err:
                failure = err
        if failure is not None:
            if encoder is not None:
                with contextlib.suppress(Exception):
                    encoder.close()
            stack.__exit__(type(failure), failure, failure.__traceback__)  # removes the temporary output
            if failure is not exc:
                raise failure
            return False
        try:
            stack.close()  # sync, then rename onto the path
        except OSError as err:
            raise self._failed(err) from err
        return False


def write_video(
    path: str | os.PathLike,
    frames,
    fps: float = 8.0,
    *,
    crf: int = 18,
    preset: str = "medium",
) -> str:
    """Write a video; the format follows the path. Returns the path written.

    * ``.mp4`` / ``.mov`` / ``.mkv``: H.264 (libx264, yuv420p, constant rate factor ``crf``:
      0 lossless .. 51 worst, 18 is visually near-lossless); the same frames always give the same
      bytes (x264's MB-tree rate control, which does not, is off). yuv420p needs even sizes, so an odd
      height/width is padded by one row/column repeating the edge pixels: such a file reads
      back one pixel larger, and ``frames[:, :H, :W]`` of it is the original frame area.
    * ``.gif``: loops forever, delays spread so that the average rate is exactly ``fps`` (GIF
      counts in 1/100 s). Exact colours when the clip (for :class:`VideoWriter`: the chunk) has at
      most 256 colours, otherwise one adaptive palette per clip (chunk) with dithering. Every frame
      is kept, identical ones too, and stores only the rectangle that changed.
    * no suffix, or a path ending in ``/``: a folder of PNG frames (see :func:`write_frames_png`).

    ``frames`` is uint8 ``[F, H, W, 3]`` (numpy or torch) or a float video ``[3, F, H, W]`` /
    ``[1, 3, F, H, W]`` in ``[-1, 1]``. The write is atomic (temporary sibling, then rename).
    To write a video chunk by chunk as it is made, use :class:`VideoWriter`.

    Raises:
        VideoWriteError: bad frames, unsupported suffix, or an encoder/file-system failure; the
            message names ``path``.
    """
    with VideoWriter(path, fps, crf=crf, preset=preset) as writer:
        writer.write(frames)
    return writer.path


def __getattr__(name: str):
    # `vidiff.video.contact_sheet` predates `vidiff.contact_sheet`; resolved lazily because that
    # module imports this one.
    if name == "contact_sheet":
        from vidiff.contact_sheet import contact_sheet

        return contact_sheet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
