import numpy as np
import torch

from vidiff.world.dataset import WorldDataset, frames_to_video_tensor, scene_seed, world_batch
from vidiff.world.render import render


def test_items_shape_range_and_determinism():
    ds = WorldDataset(frames=9, size=32, num_samples=4, seed=5)
    items = list(ds)
    assert len(items) == 4
    video, caption, meta = items[0]
    assert video.shape == (3, 9, 32, 32) and video.dtype == torch.float32
    assert -1.0 <= video.min() and video.max() <= 1.0
    frames, _ = render(ds.scene(0), size=32, frames=9)
    assert torch.equal(video, frames_to_video_tensor(frames))
    assert torch.equal(list(WorldDataset(frames=9, size=32, num_samples=4, seed=5))[0][0], video)
    assert meta["index"] == 0 and meta["seed"] == scene_seed(5, 0)
    assert isinstance(caption, str) and caption.startswith("a ")


def test_frames_to_video_tensor_is_exact():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    t = frames_to_video_tensor(x)
    assert t.shape == (3, 1, 16, 16)
    assert torch.allclose(t[0, 0].flatten(), torch.arange(256) / 127.5 - 1)


def test_rank_and_worker_sharding_partition_the_stream():
    full = [m["index"] for _, _, m in WorldDataset(frames=3, size=8, num_samples=20, seed=1)]
    assert full == list(range(20))
    seen = []
    for rank in range(2):
        ds = WorldDataset(frames=3, size=8, num_samples=20, seed=1, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        got = [(int(m["index"]), c) for _, c, m in loader]
        seen += got
    assert sorted(i for i, _ in seen) == list(range(20))
    ref = {m["index"]: c for _, c, m in WorldDataset(frames=3, size=8, num_samples=20, seed=1)}
    assert all(ref[i] == c for i, c in seen)


def test_batches_fast_path_equals_items():
    ds = WorldDataset(frames=5, size=16, num_samples=7, seed=2)
    batches = list(ds.batches(3))
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    items = list(ds)
    stacked = torch.cat([b[0] for b in batches])
    assert torch.equal(stacked, torch.stack([v for v, _, _ in items]))
    assert sum((b[1] for b in batches), []) == [c for _, c, _ in items]


def test_world_batch_and_heldout_split():
    video, captions, scenes = world_batch([1, 2, 3], split="heldout", frames=4, size=16)
    assert video.shape == (3, 3, 4, 16, 16)
    assert all(s.split == "heldout" for s in scenes) and len(captions) == 3


def test_ordered_clips_from_workers_equal_the_sequential_stream():
    from vidiff.world.dataset import ordered_clips

    ds = WorldDataset(frames=3, size=8, num_samples=23, seed=4)
    sequential = list(ordered_clips(ds))
    parallel = list(ordered_clips(ds, workers=2, batch_size=4))  # shards of 4-clip batches, interleaved
    assert [m["index"] for _, _, m in parallel] == list(range(23))
    assert [c for _, c, _ in parallel] == [c for _, c, _ in sequential]
    assert all(torch.equal(a, b) for (a, _, _), (b, _, _) in zip(parallel, sequential))
