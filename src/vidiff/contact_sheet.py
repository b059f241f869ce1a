"""Contact sheets: frames of one video, or one row per video, laid out in a labelled grid image.

Accepts the same inputs as `vidiff.video.write_video` (uint8 frames or float video in [-1, 1]);
the image is written atomically, its format taken from the path's suffix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vidiff.modelio import atomic_write
from vidiff.video import VideoWriteError, _as_frames, _prepare_destination

__all__ = ["contact_sheet", "sheet_frame_indices"]


def _label_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom) + 4


def _label_strip(text: str, width: int, height: int, font) -> np.ndarray:
    # Drawn on its own strip so that long labels are clipped instead of spilling into neighbours.
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), str(text), fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def _as_video_list(frames_or_videos) -> tuple[list[np.ndarray], bool]:
    """Returns (videos, one_row_per_video)."""
    if isinstance(frames_or_videos, (list, tuple)):
        if not frames_or_videos:
            raise ValueError("contact_sheet got an empty list")
        first = frames_or_videos[0]
        if isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim == 3:
            # A list of single [H, W, 3] frames is one video.
            return [_as_frames(np.stack([np.asarray(f) for f in frames_or_videos]))], False
        videos = []
        for index, video in enumerate(frames_or_videos):
            try:
                videos.append(_as_frames(video))
            except (TypeError, ValueError) as err:
                raise ValueError(f"contact_sheet: video {index} is invalid ({err})") from err
        return videos, True
    return [_as_frames(frames_or_videos)], False


def sheet_frame_indices(num_frames: int, max_tiles: int = 64) -> list[int]:
    """Which frames a contact sheet of a `num_frames`-frame video shows: every frame when they
    fit in `max_tiles`, else every `s`-th, `s = ceil(num_frames / max_tiles)`, from frame 0 (a
    129-frame video: every 3rd frame, 43 tiles; 1025 frames: every 17th, 61 tiles).

    Example: `sheet_frame_indices(10, max_tiles=4)` is `[0, 3, 6, 9]`."""
    if num_frames < 1 or max_tiles < 1:
        raise ValueError(f"sheet_frame_indices needs num_frames >= 1 and max_tiles >= 1, got {num_frames}, {max_tiles}")
    stride = -(-num_frames // max_tiles)
    return list(range(0, num_frames, stride))


def contact_sheet(
    frames_or_videos,
    path: str | os.PathLike | None = None,
    *,
    cols: int | None = None,
    labels: Sequence[str] | None = None,
    scale: int = 1,
    pad: int = 2,
) -> np.ndarray:
    """Lay frames out in a grid on a white background; returns uint8 ``[H, W, 3]`` (and saves it
    with Pillow when ``path`` is given, atomically, format from the suffix).

    * One video (uint8 ``[F, H, W, 3]``, float ``[3, F, H, W]``, or a list of ``[H, W, 3]``
      frames): all frames, ``cols`` per row (default ``min(F, 8)``); ``labels`` has one entry
      per frame, drawn above each tile.
    * A list of videos: one row per video (e.g. baseline vs model); ``cols`` frames per row
      (default: the longest video's length), picked evenly spaced when a video is longer;
      ``labels`` has one entry per video, drawn in a strip above its row. Videos must share H, W.

    Geometry, with tile ``h = H * scale``, ``w = W * scale`` (nearest-neighbour upscaling) and
    ``s`` the label strip height (0 without labels): width ``cols * w + (cols + 1) * pad``,
    height ``rows * (s + h) + (rows + 1) * pad``; tile (r, c) has its top-left corner at
    ``(pad + r * (s + h + pad) + s, pad + c * (w + pad))``.
    """
    videos, per_row = _as_video_list(frames_or_videos)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
    if cols is not None and (not isinstance(cols, int) or cols < 1):
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    height, width = videos[0].shape[1:3]
    for index, video in enumerate(videos):
        if video.shape[1:3] != (height, width):
            raise ValueError(
                f"contact_sheet: video {index} is {video.shape[2]}x{video.shape[1]}, "
                f"video 0 is {width}x{height}; all videos must share one size"
            )

    if per_row:
        cols = cols or max(len(v) for v in videos)
        rows_of_frames = []
        for video in videos:
            if len(video) > cols:
                video = video[np.linspace(0, len(video) - 1, cols).round().astype(int)]
            rows_of_frames.append(list(video))
        expected_labels = len(videos)
    else:
        frames = videos[0]
        cols = cols or min(len(frames), 8)
        cols = min(cols, len(frames))
        rows_of_frames = [list(frames[i : i + cols]) for i in range(0, len(frames), cols)]
        expected_labels = len(frames)
    if labels is not None and len(labels) != expected_labels:
        what = "videos" if per_row else "frames"
        raise ValueError(f"contact_sheet: got {len(labels)} labels for {expected_labels} {what}")

    font = ImageFont.load_default() if labels is not None else None
    strip = _label_height(font) if font is not None else 0
    tile_h, tile_w = height * scale, width * scale
    rows = len(rows_of_frames)
    sheet = np.full(
        (rows * (strip + tile_h) + (rows + 1) * pad, cols * tile_w + (cols + 1) * pad, 3), 255, np.uint8
    )
    for r, row in enumerate(rows_of_frames):
        y = pad + r * (strip + tile_h + pad)
        if font is not None and per_row:
            sheet[y : y + strip, pad : pad + cols * tile_w + (cols - 1) * pad] = _label_strip(
                labels[r], cols * tile_w + (cols - 1) * pad, strip, font
            )
        for c, frame in enumerate(row):
            x = pad + c * (tile_w + pad)
            if font is not None and not per_row:
                sheet[y : y + strip, x : x + tile_w] = _label_strip(labels[r * cols + c], tile_w, strip, font)
            tile = frame if scale == 1 else frame.repeat(scale, axis=0).repeat(scale, axis=1)
            sheet[y + strip : y + strip + tile_h, x : x + tile_w] = tile

    if path is not None:
        _save_image(os.fspath(path), sheet)
    return sheet


def _save_image(path: str, image: np.ndarray) -> None:
    suffix = os.path.splitext(path)[1].lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None:
        raise VideoWriteError(f"{path}: unknown image suffix {suffix!r}; use .png or .jpg")
    _prepare_destination(path)
    try:
        atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format=image_format))
    except (OSError, ValueError, KeyError) as err:
        raise VideoWriteError(f"{path}: saving the contact sheet failed ({err})") from err
