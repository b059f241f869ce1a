"""Streaming training data from the shapes world: ``WorldDataset`` and a batched fast path.

Sample ``i`` of a dataset with seed ``s`` is the scene of seed ``scene_seed(s, i)``: the stream is
the same however it is sharded. Shards: global worker ``g = rank * num_workers + worker_id`` of
``world_size * num_workers`` takes the indices ``i = g, g + total, g + 2 total, ...``.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vidiff.world.render import render_batch
from vidiff.world.scene import DEFAULT_FPS, DEFAULT_FRAMES, DEFAULT_SIZE, Scene, caption, sample_scene
from vidiff.world.splits import SPLITS


def scene_seed(seed: int, index: int) -> int:
    """The scene seed of sample ``index`` of a stream seeded ``seed`` (a 63-bit integer)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def frames_to_video_tensor(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., F, H, W, 3]`` -> float32 ``[..., 3, F, H, W]`` in [-1, 1] (``x / 127.5 - 1``)."""
    t = torch.from_numpy(np.ascontiguousarray(frames_uint8))
    t = t.movedim(-1, -4)
    return t.float().div_(127.5).sub_(1.0)


def scene_metadata(scene: Scene, index: int) -> dict:
    """Collatable metadata of a sample (no None values)."""
    return {
        "index": int(index), "seed": int(scene.seed), "split": scene.split, "fps": float(scene.fps),
        "num_objects": len(scene.objects), "background": scene.background, "pan": scene.pan or "none",
    }


class WorldDataset(IterableDataset):
    """Shapes-world clips: yields ``(video [3,F,H,W] float in [-1,1], caption, metadata)``.

    Args:
        frames, size, fps: clip shape (square frames) and frame rate.
        split: "train" (never a held-out combination), "heldout" or "any".
        seed: the stream's seed; ``num_samples`` ends it (None: endless).
        rank, world_size: this process's place among distributed ranks (each rank sees a
            disjoint part of the stream; DataLoader workers split it further).
        num_objects: 1, 2 or None (either).
    """

    def __init__(
        self,
        frames: int = DEFAULT_FRAMES,
        size: int = DEFAULT_SIZE,
        fps: float = DEFAULT_FPS,
        split: str = "train",
        seed: int = 0,
        num_samples: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        num_objects: int | None = None,
    ):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if int(frames) < 2 or int(size) < 4 or not fps > 0:
            raise ValueError(f"need frames >= 2, size >= 4, fps > 0; got {frames}, {size}, {fps}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if num_samples is not None and num_samples < 0:
            raise ValueError(f"num_samples must be >= 0 or None, got {num_samples}")
        self.frames, self.size, self.fps = int(frames), int(size), float(fps)
        self.split, self.seed, self.num_samples = split, int(seed), num_samples
        self.rank, self.world_size, self.num_objects = int(rank), int(world_size), num_objects

    def scene(self, index: int) -> Scene:
        """The scene of sample ``index``."""
        return sample_scene(
            scene_seed(self.seed, index), split=self.split, frames=self.frames, fps=self.fps,
            num_objects=self.num_objects,
        )

    def indices(self) -> Iterator[int]:
        """This shard's sample indices (see the module docstring)."""
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        total = self.world_size * workers
        first = self.rank * workers + worker
        stop = self.num_samples
        return iter(range(first, stop, total)) if stop is not None else itertools.count(first, total)

    def __iter__(self):
        for batch in self.batches(1):
            video, captions, metas = batch
            yield video[0], captions[0], metas[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, list[str], list[dict]]]:
        """Fast path: whole batches ``(video [B,3,F,H,W], captions, metadata)`` rendered at once
        (the last batch of a finite stream may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        it = self.indices()
        while True:
            idx = list(itertools.islice(it, batch_size))
            if not idx:
                return
            scenes = [self.scene(i) for i in idx]
            video, _ = render_batch(scenes, size=self.size, frames=self.frames, fps=self.fps, with_truth=False)
            yield (
                frames_to_video_tensor(video), [caption(s) for s in scenes],
                [scene_metadata(s, i) for s, i in zip(scenes, idx)],
            )


class _Batches(IterableDataset):
    """`world.batches(batch_size)` as a dataset, so DataLoader workers render disjoint shards."""

    def __init__(self, world: WorldDataset, batch_size: int):
        super().__init__()
        self.world, self.batch_size = world, batch_size

    def __iter__(self):
        return self.world.batches(self.batch_size)


def ordered_clips(world: WorldDataset, workers: int = 0, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, str, dict]]:
    """The clips ``(video [3,F,H,W], caption, metadata)`` of ``world`` in index order, rendered in
    batches by ``workers`` DataLoader processes (0: in this process).

    Each worker renders its own shard of indices (see the module docstring); the clips are put
    back in the order ``world.indices()`` gives in this process, so the result is the same clip
    for clip whatever the number of workers. At most a few batches per worker wait in memory.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        for video, captions, metas in world.batches(batch_size):
            yield from zip(video, captions, metas)
        return
    loader = torch.utils.data.DataLoader(_Batches(world, batch_size), batch_size=None, num_workers=workers)
    expected = world.indices()
    want = next(expected, None)
    pending: dict[int, tuple[torch.Tensor, str, dict]] = {}
    for video, captions, metas in loader:
        for clip in zip(video, captions, metas):
            pending[clip[2]["index"]] = clip
        while want in pending:
            yield pending.pop(want)
            want = next(expected, None)


def world_batch(
    seeds, split: str = "train", frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE, fps: float = DEFAULT_FPS
) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """Render the scenes of ``seeds`` as one batch: ``(video [B,3,F,H,W] in [-1,1], captions, scenes)``."""
    scenes = [sample_scene(int(s), split=split, frames=frames, fps=fps) for s in seeds]
    video, _ = render_batch(scenes, size=size, frames=frames, fps=fps, with_truth=False)
    return frames_to_video_tensor(video), [caption(s) for s in scenes], scenes
