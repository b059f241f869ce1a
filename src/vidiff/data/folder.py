"""A folder of videos with captions: `DIR/captions.jsonl` lines `{"video": "a.mp4", "caption": "..."}`.

Each sample is a clip of `num_frames` frames resampled to `fps` (the source frame nearest each
time step, via `vidiff.video.read_video`), starting at a random time, centre-cropped and resized
to `size`, as float32 `[3, F, H, W]` in [-1, 1], with its caption replaced by "" with probability
`caption_dropout` (for classifier-free guidance). A clip shorter than `num_frames` repeats its last
frame.

Bad files never stop training: a video whose header cannot be read at construction (zero bytes,
not a video, missing), or that fails to decode later (corrupt data), is reported with a `BadVideoWarning` naming it, recorded
in `bad_files`, and replaced by the next good video.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["VideoFolderDataset", "BadVideoWarning", "read_captions"]


@contextlib.contextmanager
def _deadline(seconds: float, message: str) -> Iterator[None]:
    """Raise TimeoutError(message) if the body runs longer than `seconds` (main thread only).

    A DataLoader worker is its own process whose main thread decodes, so a video that makes the
    decoder crawl is abandoned (and reported) instead of stalling training. The check happens
    between Python-level steps of the decode loop, i.e. between frames.
    """
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class BadVideoWarning(UserWarning):
    """A video in a training folder was skipped; the message names it and the reason."""


def read_captions(path: str | Path) -> list[tuple[str, str]]:
    """(video file name, caption) pairs of a captions.jsonl; a malformed line raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist (expected lines like "
                                '{"video": "a.mp4", "caption": "..."})')
    entries = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("video"), str) or not isinstance(record.get("caption", ""), str):
                raise ValueError(f'{path}:{lineno}: expected {{"video": "<file>", "caption": "<text>"}}, got {line.strip()[:80]}')
            entries.append((record["video"], record.get("caption", "")))
    if not entries:
        raise ValueError(f"caption file {path} lists no videos")
    return entries


class VideoFolderDataset(torch.utils.data.Dataset):
    """Captioned clips from a folder; use `get(index, generator)` for seeded random clips.

    `dataset[i]` is the deterministic clip (start at 0, caption kept), e.g. for a latent cache.

    size: (height, width) after a centre crop, an int short side, or None (native). probe: read
    every header at construction (finds unreadable files and durations up front; with False that
    happens at first use). decode_timeout_s: a video whose decoding takes longer is skipped as bad.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        num_frames: int = 16,
        fps: float | None = 8.0,
        size: tuple[int, int] | int | None = (64, 64),
        caption_dropout: float = 0.0,
        random_start: bool = True,
        captions: str = "captions.jsonl",
        probe: bool = True,
        decode_timeout_s: float = 60.0,
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0 or None, got {fps}")
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        self.root = Path(root)
        self.num_frames = num_frames
        self.fps = fps
        self.size = tuple(size) if isinstance(size, (list, tuple)) else size
        self.caption_dropout = caption_dropout
        self.random_start = random_start
        self.decode_timeout_s = decode_timeout_s
        self.bad_files: dict[str, str] = {}
        self.entries: list[tuple[str, str]] = []
        self.durations: list[float | None] = []
        for name, caption in read_captions(self.root / captions):
            duration = None
            if probe:
                try:
                    duration = self._probe(name)
                except Exception as err:  # any probe failure means: skip this file
                    self._mark_bad(name, err)
                    continue
            self.entries.append((name, caption))
            self.durations.append(duration)
        if not self.entries:
            raise ValueError(f"no readable videos in {self.root} ({len(self.bad_files)} skipped: {sorted(self.bad_files)[:5]})")

    def _probe(self, name: str) -> float:
        """Duration in seconds of a video from its header; raises for anything that is not one."""
        from vidiff.video import VideoReadError, probe_video

        info = probe_video(self.root / name)  # rejects text files, still images, audio-only files
        if info.num_frames <= 0 and info.duration_s <= 0:
            raise VideoReadError(f"{self.root / name}: no frames")
        return info.duration_s

    def _mark_bad(self, name: str, err: BaseException) -> None:
        reason = str(err) or type(err).__name__
        if name not in self.bad_files:
            self.bad_files[name] = reason
            warnings.warn(f"skipping video {self.root / name}: {reason}", BadVideoWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.entries)

    def _clip_start(self, index: int, generator: torch.Generator | None) -> float:
        duration = self.durations[index]
        if not self.random_start or generator is None or duration is None:
            return 0.0
        clip_s = self.num_frames / self.fps if self.fps else 0.0
        slack = duration - clip_s
        if slack <= 0:
            return 0.0
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return u * slack

    def _load(self, index: int, generator: torch.Generator | None) -> dict[str, Any]:
        from vidiff.video import frames_to_tensor, read_video

        name, caption = self.entries[index]
        if self.durations[index] is None:  # probe=False: probe on first use (header only)
            self.durations[index] = self._probe(name)
        start_s = self._clip_start(index, generator)
        with _deadline(self.decode_timeout_s, f"{self.root / name}: decoding took longer than {self.decode_timeout_s} s"):
            frames = read_video(self.root / name, fps=self.fps, max_frames=self.num_frames, start_s=start_s,
                                size=self.size, crop=True, strict=True)
        if len(frames) < self.num_frames:
            pad = frames[-1:].repeat(self.num_frames - len(frames), axis=0)
            frames = np.concatenate([frames, pad], axis=0)
        if generator is not None and self.caption_dropout > 0:
            if float(torch.rand((), generator=generator, dtype=torch.float64)) < self.caption_dropout:
                caption = ""
        return {"video": frames_to_tensor(frames), "caption": caption}

    def get(self, index: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Clip `index` (random start and caption dropout drawn from `generator`).

        A video that fails to decode is skipped (warning, `bad_files`) for the next good one;
        the sample's "skipped" list names the files skipped on the way, so that a DataLoader
        worker's discoveries reach the main process.
        """
        skipped: list[str] = []
        n = len(self.entries)
        for attempt in range(n):
            i = (index + attempt) % n
            name = self.entries[i][0]
            if name in self.bad_files:
                continue
            try:
                sample = self._load(i, generator)
            except Exception as err:  # a decoder error of any kind must not stop training
                self._mark_bad(name, err)
                skipped.append(name)
                continue
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"no readable videos left in {self.root}; bad files: {sorted(self.bad_files)[:5]}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, None)

    def iter_clips(self) -> Iterator[dict[str, Any]]:
        """Every good video once, deterministic clip (start 0, caption kept), bad ones skipped."""
        for i, (name, _) in enumerate(self.entries):
            if name in self.bad_files:
                continue
            try:
                sample = self._load(i, None)
            except Exception as err:
                self._mark_bad(name, err)
                continue
            sample["name"] = name
            yield sample
